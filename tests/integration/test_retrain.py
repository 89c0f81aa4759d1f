"""The model lifecycle end to end with real parts: a Redis broker, real worker processes,
the ``voicegender`` command in subprocesses, a synthetic AudioMNIST corpus, and the
SQLite registry read directly.

Trainings are tiny (tens of steps on 64 clips at 8 kHz): enough for a candidate that
clearly beats the untrained ``it-1`` model, and for a 1-step candidate that is clearly
worse than that one.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from classifier.synthetic import write_audiomnist, write_labelled_folder

from .conftest import REPO, wait_until

pytestmark = pytest.mark.slow
RUN_TIMEOUT_S = 600
CLI_S = 900  # a CLI start imports torch: minutes when the machine is loaded


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """AudioMNIST layout, 4 women + 4 men, 4 digits x 2 takes, 8 kHz (the features' rate: no resampling)."""
    return write_audiomnist(tmp_path_factory.mktemp("am"), n_female=4, n_male=4, digits=[1, 3, 5, 7], repetitions=2, sr=8000, seed=0)


def retrain_env(service_env, redis_url: str, corpus: Path, **extra) -> dict[str, str]:
    settings = dict(
        broker_url=redis_url, training_sources=corpus, retrain_steps=30, retrain_batch_size=16, retrain_eval_every=15,
        retrain_augment=False, retrain_val_fraction=0.25, retrain_held_out_fraction=0.25, retrain_stale_s=10,
        # A 30-step candidate on 16-crop batches: the tiny active model's 50 Hz bands, not the shipped 300 Hz
        # (which hold the F0 of no synthetic voice and need more steps; measured 0.81 held out against 0.9 wanted).
        retrain_fmin=50,
    )
    return service_env(**{**settings, **extra})


class Registry:
    """The models and training_runs tables of a data dir's SQLite database."""

    def __init__(self, data_dir: Path) -> None:
        self.engine = create_engine(f"sqlite:///{data_dir / 'voicegender.db'}")

    def rows(self, query: str, **params) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(text(query), params).mappings()]

    def run(self, run_id: int) -> dict:
        return self.rows("SELECT * FROM training_runs WHERE id = :id", id=run_id)[0]

    def active(self) -> list[str]:
        return [r["version"] for r in self.rows("SELECT version FROM models WHERE status = 'active'")]


@pytest.fixture
def registry_table(tmp_path: Path):
    table = Registry(tmp_path / "data")
    yield table
    table.engine.dispose()


def wait_for_run(table: Registry, run_id: int, *, worker, timeout_s: float = RUN_TIMEOUT_S) -> dict:
    def finished():
        if worker.proc.poll() is not None:
            pytest.fail(f"worker exited with {worker.proc.returncode}:\n{worker.log_tail()}")
        run = table.run(run_id)
        return run if run["state"] != "running" else None

    return wait_until(finished, timeout_s=timeout_s, interval_s=0.2, what=f"retrain run {run_id}")


def run_job(voicegender, env, table, folder: Path, *, worker) -> dict:
    job_id = json.loads(voicegender(env, "submit", str(folder), "--json", timeout_s=CLI_S).stdout)["id"]

    def finished():
        if worker.proc.poll() is not None:
            pytest.fail(f"worker exited with {worker.proc.returncode}:\n{worker.log_tail()}")
        job = table.job(job_id)
        return job if job["state"] in ("done", "done_with_errors", "failed", "cancelled") else None

    job = wait_until(finished, timeout_s=RUN_TIMEOUT_S, interval_s=0.1, what=f"job {job_id}")
    assert job["state"] == "done", worker.log_tail()
    return job


def test_retrain_promotes_a_better_candidate_refuses_a_worse_one_and_jobs_follow(
    service_env, redis_url, worker, voicegender, job_table, registry_table, corpus, tmp_path
):
    env = retrain_env(service_env, redis_url, corpus)
    jobs = job_table(tmp_path / "data")
    labelled = write_labelled_folder(tmp_path / "labelled", n_clips=4, sr=8000, seed=21)  # labels from the file names
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for k, wav in enumerate(sorted(labelled.glob("*.wav"))):
        shutil.copy(wav, unlabelled / f"take_{k}.wav")  # the same voices, no label anywhere

    with worker(env) as w:
        before = run_job(voicegender, env, jobs, labelled, worker=w)
        no_labels = run_job(voicegender, env, jobs, unlabelled, worker=w)
        assert no_labels["label_source"] is None
        assert {c["model_version"] for c in jobs.clips(before["id"])} == {"it-1"} and before["model_version"] == "it-1"

        # Two requests at once: the database lock lets exactly one through.
        racers = [subprocess.Popen([sys.executable, "-m", "voicegender", "retrain"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(p.returncode, *out) for p, out in [(p, p.communicate(timeout=CLI_S)) for p in racers]]
        assert sorted(code for code, _, _ in results) == [0, 3], results
        first = int(next(out for code, out, _ in results if code == 0))
        refusal = next(err for code, _, err in results if code == 3)
        assert f"refused: a retrain is already running: run {first} (manual" in refusal

        run = wait_for_run(registry_table, first, worker=w)
        assert (run["state"], run["decision"]) == ("done", "promoted"), (run, w.log_tail())
        promoted = run["candidate_version"]
        models = {m["version"]: m for m in json.loads(voicegender(env, "models", "--json", timeout_s=CLI_S).stdout)}
        assert set(models) == {"it-1", promoted}
        assert (models[promoted]["status"], models["it-1"]["status"]) == ("active", "retired")
        assert models[promoted]["parent_version"] == "it-1" and len(models[promoted]["sha256"]) == 64
        assert models[promoted]["metrics"]["held_out"]["balanced_accuracy"] >= 0.9
        assert registry_table.active() == [promoted]

        after = run_job(voicegender, env, jobs, labelled, worker=w)  # the same worker, no restart
        assert {c["model_version"] for c in jobs.clips(after["id"])} == {promoted} and after["model_version"] == promoted

        worse = json.loads(voicegender(env, "retrain", "--steps", "1", "--wait", "--json", timeout_s=CLI_S).stdout)
    assert (worse["state"], worse["decision"]) == ("done", "refused"), worse
    assert "worse by more than the margin 0.0100" in worse["reason"]
    assert registry_table.active() == [promoted]  # the worse candidate stayed a candidate
    models = {m["version"]: m for m in json.loads(voicegender(env, "models", "--json", timeout_s=CLI_S).stdout)}
    assert models[worse["candidate_version"]]["status"] == "candidate"

    # Both runs compared on the same held-out speakers, fixed by the first.
    runs = {r["id"]: r for r in registry_table.rows("SELECT id, held_out_speakers, comparison FROM training_runs")}
    held = json.loads(runs[first]["held_out_speakers"])
    assert len(held) == 2 and json.loads(runs[worse["id"]]["held_out_speakers"]) == held
    comparison = json.loads(runs[worse["id"]]["comparison"])
    assert (comparison["active_version"], comparison["candidate"]["n"], comparison["active"]["n"]) == (promoted, 16, 16)
    assert set(comparison["candidate"]["per_speaker"]) == set(held)
    # Job clips with user labels were trained on (two labelled jobs of 4); the unlabelled job was not.
    data = models[worse["candidate_version"]]["data_summary"]["clips"]
    assert data["jobs/female"] + data["jobs/male"] == 8 and not any("take_" in k for k in data)
    for run_id in (first, worse["id"]):
        report = Path(registry_table.run(run_id)["report_path"])
        html = report.read_text()
        assert report.parent.name == registry_table.run(run_id)["candidate_version"]
        assert "data:image/png;base64," in html and 'class="decision ' in html
        assert json.loads(runs[run_id]["comparison"])["active_version"] in html
    runs_out = voicegender(env, "runs", timeout_s=CLI_S).stdout
    assert "promoted" in runs_out and "refused" in runs_out


def test_a_killed_retrain_leaves_the_active_model_and_is_marked_failed(
    service_env, redis_url, worker, voicegender, registry_table, corpus
):
    env = retrain_env(service_env, redis_url, corpus, retrain_steps=5000, retrain_eval_every=1000, retrain_stale_s=4)
    with worker(env) as w:
        w.wait_ready(timeout_s=600)
        run_id = int(voicegender(env, "retrain", timeout_s=CLI_S).stdout)
        wait_until(lambda: (registry_table.run(run_id)["stage"] or "").startswith("training ") and registry_table.run(run_id)["stage"] != "training 1/5000",
                   timeout_s=600, interval_s=0.2, what="the retrain to be training")
        w.kill()
    assert registry_table.active() == ["it-1"]
    assert registry_table.run(run_id)["state"] == "running"  # nobody knows yet; a request now would expire it first

    with worker(env) as w:  # its sweep fails the run once the heartbeat is stale
        w.wait_ready(timeout_s=600)
        run = wait_until(lambda: (r := registry_table.run(run_id))["state"] != "running" and r, timeout_s=120, interval_s=0.2, what="the sweep")
        assert run["state"] == "failed" and "the retrain died" in run["error"] and run["decision"] is None
        assert registry_table.active() == ["it-1"]
        assert [r["version"] for r in registry_table.rows("SELECT version FROM models")] == ["it-1"]
        again = json.loads(voicegender(env, "retrain", "--steps", "2", "--wait", "--json", timeout_s=900).stdout)  # the lock is free
    assert again["state"] == "done" and again["id"] != run_id, again


def test_a_retrain_killed_part_way_is_taken_up_by_the_next_one_from_its_saved_step(
    service_env, redis_url, worker, voicegender, registry_table, corpus, tmp_path
):
    env = retrain_env(service_env, redis_url, corpus, retrain_steps=60, retrain_eval_every=60, retrain_save_every=5, retrain_stale_s=4)
    state = tmp_path / "data" / "models" / "retrain_state.pt"
    with worker(env) as w:
        w.wait_ready(timeout_s=600)
        first = int(voicegender(env, "retrain", timeout_s=CLI_S).stdout)
        wait_until(lambda: state.exists(), timeout_s=600, interval_s=0.05, what="a saved training state")
        w.kill()
    import torch

    saved = torch.load(state, weights_only=False)["progress"]["step"]
    assert 5 <= saved < 60 and saved % 5 == 0
    # A heartbeat may be late by more than 4 s on a loaded machine: the run that goes on gets 30.
    env = retrain_env(service_env, redis_url, corpus, retrain_steps=60, retrain_eval_every=60, retrain_save_every=5, retrain_stale_s=30)
    with worker(env) as w:
        w.wait_ready(timeout_s=600)
        wait_until(lambda: registry_table.run(first)["state"] == "failed", timeout_s=300, interval_s=0.2, what="the sweep")
        again = json.loads(voicegender(env, "retrain", "--wait", "--json", timeout_s=900).stdout)
        log = w.log_tail(200_000)
    assert again["state"] == "done" and again["id"] != first, again
    assert f"resuming from {state} at step {saved} of 60" in log
    assert not state.exists()  # taken up and finished: nothing left to resume
    assert registry_table.run(again["id"])["candidate_version"] is not None


def test_beat_runs_the_schedule_built_from_the_setting(service_env, redis_url, tmp_path):
    for cron, expected in ((None, "beat schedule: empty (VOICEGENDER_RETRAIN_CRON is not set)"), ("30 2 * * 1", "beat schedule: {'retrain': '<crontab: 30 2 * * 1")):
        env = service_env(broker_url=redis_url, retrain_cron=cron)
        log_path = tmp_path / f"beat-{cron is None}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "voicegender", "beat"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: "beat: Starting" in log_path.read_text() or proc.poll() is not None, timeout_s=90, what="celery beat to start")
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert expected in log_path.read_text()
            # Beat logs "Starting" before it opens its schedule file, so wait for the file while it runs:
            # a SIGTERM in between would stop it before it wrote one.
            wait_until(
                lambda: (tmp_path / "data" / "celerybeat-schedule").exists() or list((tmp_path / "data").glob("celerybeat-schedule*")),
                timeout_s=60, what="beat's schedule file in the data folder",
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_api_retrain_is_token_protected_and_refuses_a_second_one(tmp_path, tiny_model):
    from fastapi.testclient import TestClient

    from api.app import create_api
    from voicegender.bootstrap import build_services
    from voicegender.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", model_path=tiny_model, api_token="a-real-secret")
    client = TestClient(create_api(build_services(settings)))
    assert client.post("/retrain").status_code == 401
    auth = {"Authorization": "Bearer a-real-secret"}
    r = client.post("/retrain", headers=auth)
    assert r.status_code == 202 and r.json()["state"] == "running" and r.json()["stage"] == "queued"
    second = client.post("/retrain", headers=auth)
    assert second.status_code == 409 and f"a retrain is already running: run {r.json()['id']}" in second.json()["detail"]
    assert client.get(f"/retrain/{r.json()['id']}").json()["id"] == r.json()["id"]
    assert client.get("/retrain/999").status_code == 404
    models = client.get("/models").json()
    assert [(m["version"], m["status"]) for m in models] == [("it-1", "active")]
    assert client.post("/models/nope/promote", headers=auth).status_code == 404
    assert client.post("/models/it-1/promote").status_code == 401
    assert client.post("/models/it-1/promote", headers=auth).json()["status"] == "active"
    queued = list((settings.broker_folder / "queue").iterdir())
    assert len([p for p in queued if b"worker.tasks.retrain" in p.read_bytes()]) == 1  # one message: the refused one sent none


# --- the same promises on PostgreSQL ---------------------------------------------------------------

from .test_migrations import postgres_server, postgres_url  # noqa: E402, F401  (fixtures: a throwaway cluster)


def test_one_active_model_and_one_running_retrain_on_postgres(postgres_url):  # noqa: F811  (the fixture)
    from sqlalchemy.exc import IntegrityError

    from db import registry
    from db.migrate import upgrade_database
    from db.schema import ModelVersion, utcnow
    from db.session import create_db_engine, make_session_factory

    upgrade_database(postgres_url)
    engine = create_db_engine(postgres_url)
    sessions = make_session_factory(engine)
    try:
        with sessions() as s:
            registry.register_model(s, version="a", path="/a", sha256="0" * 64, status="active")
            registry.register_model(s, version="b", path="/b", sha256="0" * 64)
            s.add(ModelVersion(version="c", path="/c", sha256="0" * 64, status="active", created_at=utcnow()))
            with pytest.raises(IntegrityError):  # the partial unique index, not the application
                s.commit()
            s.rollback()
            assert registry.promote(s, "b", expected_active="a") == ("a", "b")
            assert registry.active_model(s).version == "b"
            run = registry.start_run(s, trigger="manual", stale_after_s=60, unclaimed_after_s=600)
            with pytest.raises(registry.RetrainRunning, match=f"run {run.id}"):
                registry.start_run(s, trigger="schedule", stale_after_s=60, unclaimed_after_s=600)
            assert registry.claim_run(s, run.id, worker="w") and registry.heartbeat_run(s, run.id, stage="training 1/2")
            registry.update_run(s, run.id, held_out_speakers=["x", "y"])
            assert registry.fixed_held_out_speakers(s) == ["x", "y"]
            assert registry.expire_stale_runs(s, older_than=utcnow() + timedelta(seconds=1)) == [run.id]
            assert registry.labelled_job_clips(s) == []
    finally:
        engine.dispose()
