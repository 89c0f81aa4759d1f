"""The API sends tasks and reads the job table: it must not carry the model code (torch, ~700 MB) at rest."""
import subprocess
import sys


def test_api_and_task_sending_modules_do_not_import_torch():
    code = (
        "import sys\n"
        "import api.app, voicegender.bootstrap, voicegender.cli, worker.app, worker.submit, worker.requests, training.registration\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'librosa', 'matplotlib') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "worker.app.import_task_code()\n"
        "assert 'torch' in sys.modules  # what a worker imports before its pool forks\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
