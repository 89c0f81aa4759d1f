"""The CLI end to end in subprocesses: train on synthetic AudioMNIST, then classify."""
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "voicegender", *args], capture_output=True, text=True, env=env, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"voicegender {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def trained_run(synthetic_audiomnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run_cli("train", str(synthetic_audiomnist), "--out", str(out), "--features", "mfcc", "--steps", "60",
            "--batch-size", "32", "--eval-every", "30", "--lr", "1e-3", "--val-fraction", "0.2", "--version", "synthetic-1")
    return out


def test_tiny_model_classifies_held_out_synthetic_speakers(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    split = json.loads((trained_run / "split.json").read_text())
    assert split["kind"] == "speaker_disjoint"
    assert not set(split["train_speakers"]) & set(split["val_speakers"])
    assert metrics["balanced_accuracy"] >= 0.8, metrics["confusion_matrix"]
    assert metrics["speaker_overlap"] is False
    assert {"per_class", "per_speaker", "per_corpus", "ece_calibrated_crossfit", "learning_curve"} <= metrics.keys()
    assert len(metrics["learning_curve"]) == 2


def test_classify_csv_columns_and_bad_file(trained_run, synthetic_audiomnist, tmp_path):
    split = json.loads((trained_run / "split.json").read_text())
    held_out = sorted(p for p in synthetic_audiomnist.rglob("*.wav") if f"audiomnist_{p.parent.name}" in split["val_speakers"])
    (tmp_path / "broken.wav").write_bytes(b"definitely not audio")
    proc = run_cli("classify", *map(str, held_out), str(tmp_path / "broken.wav"), "--model", str(trained_run / "model.pt"))
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert list(rows[0].keys()) == ["path", "prediction", "p_female", "duration_s", "windows", "error"]
    assert len(rows) == len(held_out) + 1
    broken = rows[-1]
    assert broken["prediction"] == "" and "not a readable audio file" in broken["error"]
    meta = json.loads((synthetic_audiomnist / "audioMNIST_meta.txt").read_text())
    truth = [meta[Path(r["path"]).parent.name]["gender"] for r in rows[:-1]]
    correct = sum(r["prediction"] == t for r, t in zip(rows[:-1], truth))
    assert correct / len(truth) >= 0.8
    assert all(r["windows"] == "1" and 0 <= float(r["p_female"]) <= 1 for r in rows[:-1])


def test_classify_json_and_folder_recursion(trained_run, synthetic_audiomnist):
    proc = run_cli("classify", str(synthetic_audiomnist / "01"), "--model", str(trained_run / "model.pt"), "--format", "json", "--min-confidence", "0.999999")
    out = json.loads(proc.stdout)
    assert out["model_version"] == "synthetic-1"
    assert len(out["results"]) == len(list((synthetic_audiomnist / "01").glob("*.wav")))
    assert {r["prediction"] for r in out["results"]} <= {"female", "male", "uncertain"}


def test_missing_model_is_one_clear_line(tmp_path):
    proc = run_cli("classify", str(tmp_path), "--model", str(tmp_path / "none.pt"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("voicegender: error: model file not found")


def test_audiomnist_official_folds_report_mean_and_std(tmp_path):
    from classifier.synthetic import AUDIOMNIST_FEMALE_IDS, write_audiomnist

    data = write_audiomnist(tmp_path / "am", n_female=12, n_male=48, digits=[3], repetitions=1, female_ids=AUDIOMNIST_FEMALE_IDS)
    out = tmp_path / "folds"
    proc = run_cli("train", str(data.parent), "--out", str(out), "--features", "mfcc", "--split", "audiomnist-folds",
                   "--steps", "3", "--batch-size", "8", "--eval-every", "3")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["folds"] == 4 and len(summary["balanced_accuracy"]["values"]) == 4
    assert "+-" in proc.stdout
    for k in range(4):
        split = json.loads((out / f"fold{k}" / "split.json").read_text())
        assert len(split["train_speakers"]) == 12 and len(split["val_speakers"]) == 6 and len(split["test_speakers"]) == 6
        assert (out / f"fold{k}" / "model.pt").is_file()


def test_record_without_a_microphone_fails_with_one_line(tmp_path):
    proc = run_cli("record", "--out", str(tmp_path / "r.wav"), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("voicegender: error:") and ("microphone" in lines[-1] or "sounddevice" in lines[-1])
    assert not (tmp_path / "r.wav").exists()
