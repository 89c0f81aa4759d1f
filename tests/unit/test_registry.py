"""The registry and the retrain lock on a real SQLite database migrated by Alembic;
the promotion rule, the retrain split and the beat schedule as pure functions."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from db import jobs as repo
from db import registry
from db.migrate import upgrade_database
from db.schema import ModelVersion, TrainingRun, utcnow
from db.session import create_db_engine, make_session_factory
from training.lifecycle import job_clips_as_training, promotion_decision, retrain_split
from training.sources import LabelledClip


@pytest.fixture
def sessions(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'vg.db'}"
    upgrade_database(url)
    engine = create_db_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


def add_model(s, version: str, status: str = "candidate") -> None:
    registry.register_model(s, version=version, path=f"/m/{version}.pt", sha256="0" * 64, status=status)


# --- one active model ----------------------------------------------------------------------------


def test_the_database_refuses_a_second_active_model(sessions):
    with sessions() as s:
        add_model(s, "a", "active")
        with pytest.raises(registry.RegistryConflict, match="another version is active"):
            add_model(s, "b", "active")
        # Not only through the repository: a raw insert hits the partial unique index too.
        with pytest.raises(IntegrityError):
            s.execute(insert(ModelVersion).values(version="c", path="/c", sha256="0" * 64, status="active", created_at=utcnow()))
            s.commit()
        s.rollback()
        add_model(s, "d", "retired")  # any number of retired and candidate rows
        add_model(s, "e", "candidate")
        assert [m.version for m in s.scalars(select(ModelVersion).where(ModelVersion.status == "active"))] == ["a"]


def test_promote_swaps_the_active_model_in_one_step_and_back(sessions):
    with sessions() as s:
        add_model(s, "a", "active")
        add_model(s, "b")
        assert registry.promote(s, "b") == ("a", "b")
        assert {m.version: m.status for m in registry.list_models(s)} == {"a": "retired", "b": "active"}
        assert registry.promote(s, "a") == ("b", "a")  # a retired version can come back
        assert registry.active_model(s).version == "a"
        with pytest.raises(registry.ModelNotFound, match="no model version 'zz'.*known: "):
            registry.promote(s, "zz")
        with pytest.raises(registry.RegistryConflict, match="changed from b to a"):
            registry.promote(s, "b", expected_active="b")
        assert registry.active_model(s).version == "a"


def test_promotion_and_run_settle_together_or_not_at_all(sessions):
    with sessions() as s:
        add_model(s, "a", "active")
        add_model(s, "b")
        run = registry.start_run(s, trigger="manual", stale_after_s=60, unclaimed_after_s=60)
        registry.finish_run(s, run.id, state="failed", error="heartbeat lost")  # e.g. the sweep failed it
        with pytest.raises(registry.RegistryConflict, match="was failed meanwhile"):
            registry.promote(s, "b", expected_active="a", settle_run=run.id, decision="promoted")
        assert registry.active_model(s).version == "a"  # rolled back with the run update


# --- the retrain lock ----------------------------------------------------------------------------


def test_only_one_retrain_runs_and_the_refusal_names_it(sessions):
    with sessions() as s:
        first = registry.start_run(s, trigger="manual", stale_after_s=60, unclaimed_after_s=600)
        with pytest.raises(registry.RetrainRunning, match=rf"already running: run {first.id} \(manual, queued\)"):
            registry.start_run(s, trigger="schedule", stale_after_s=60, unclaimed_after_s=600)
        assert registry.claim_run(s, first.id, worker="host:1")
        assert not registry.claim_run(s, first.id, worker="host:2")  # a redelivered message does not train twice
        assert registry.finish_run(s, first.id, state="done", decision="refused", reason="worse")
        assert not registry.finish_run(s, first.id, state="failed")  # settled once
        second = registry.start_run(s, trigger="schedule", stale_after_s=60, unclaimed_after_s=600)
        assert second.id != first.id


def test_a_run_whose_worker_stopped_beating_is_failed_and_frees_the_lock(sessions):
    with sessions() as s:
        run = registry.start_run(s, trigger="manual", stale_after_s=60, unclaimed_after_s=600)
        registry.claim_run(s, run.id, worker="host:1")
        assert registry.expire_stale_runs(s, older_than=utcnow() - timedelta(seconds=60)) == []  # fresh heartbeat
        s.query(TrainingRun).filter_by(id=run.id).update({"heartbeat_at": utcnow() - timedelta(seconds=120)})
        s.commit()
        assert not registry.heartbeat_run(s, 999)
        later = registry.start_run(s, trigger="manual", stale_after_s=60, unclaimed_after_s=600)  # expires it first
        failed = registry.get_run(s, run.id)
        assert failed.state == "failed" and "retrain died" in failed.error and "active model was left" in failed.error
        assert not registry.heartbeat_run(s, run.id)  # the dead run's late heartbeat is refused
        assert registry.get_run(s, later.id).state == "running"


def test_an_unclaimed_run_waits_longer_than_a_claimed_one(sessions):
    with sessions() as s:
        run = registry.start_run(s, trigger="manual", stale_after_s=60, unclaimed_after_s=600)
        s.query(TrainingRun).filter_by(id=run.id).update({"heartbeat_at": utcnow() - timedelta(seconds=120)})
        s.commit()
        now = utcnow()
        assert registry.expire_stale_runs(s, older_than=now - timedelta(seconds=60), unclaimed_older_than=now - timedelta(seconds=600)) == []
        assert registry.expire_stale_runs(s, older_than=now - timedelta(seconds=60), unclaimed_older_than=now - timedelta(seconds=30)) == [run.id]
        assert "no worker took it up" in registry.get_run(s, run.id).error


# --- training data from jobs ---------------------------------------------------------------------


def make_job(s, job_id: str, *, label_source, labels, predictions, state="done") -> None:
    clips = [repo.NewClip(path=f"{k}.wav", sha256=None, size_bytes=None, label=lab, speaker=None) for k, lab in enumerate(labels)]
    repo.create_job(s, job_id=job_id, source="x", input_dir=f"/in/{job_id}", clips=clips, chunk_size=10, label_source=label_source)
    for clip, pred in zip(repo.chunk_clips(s, job_id, 0), predictions):
        repo.write_clip_result(s, clip.id, {"state": "done" if pred else "failed", "prediction": pred})
    s.query(repo.Job).filter_by(id=job_id).update({"state": state})
    s.commit()


def test_job_clips_for_training_carry_user_labels_never_predictions(sessions):
    with sessions() as s:
        make_job(s, "labelled", label_source="filename", labels=["female", "male", "male"], predictions=["male", "male", None])
        make_job(s, "unlabelled", label_source=None, labels=[None, None], predictions=["female", "male"])
        make_job(s, "running", label_source="labels.csv", labels=["female"], predictions=["female"], state="running")
        rows = registry.labelled_job_clips(s)
    # The first clip was predicted male; its label (female) is what training gets. The failed clip is left out.
    assert [(r.path, r.gender, r.job_id) for r in rows] == [("/in/labelled/0.wav", "female", "labelled"), ("/in/labelled/1.wav", "male", "labelled")]


# --- pure parts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "active", "decision"),
    [(0.90, 0.80, "promoted"), (0.795, 0.80, "promoted"), (0.79, 0.80, "promoted"), (0.7899, 0.80, "refused"), (0.5, 0.95, "refused")],
)
def test_promotion_rule_with_its_margin(candidate, active, decision):
    got, reason = promotion_decision(candidate_bacc=candidate, active_bacc=active, margin=0.01)
    assert got == decision
    assert f"{candidate:.4f}" in reason and f"{active:.4f}" in reason and "margin 0.0100" in reason


def test_promotion_rule_refuses_a_candidate_without_a_score():
    assert promotion_decision(candidate_bacc=float("nan"), active_bacc=0.5, margin=0.01)[0] == "refused"


def corpus(n_per_gender: int) -> list[LabelledClip]:
    return [
        LabelledClip(path=Path(f"/c/{g}{k}_{t}.wav"), speaker=f"{g}{k}", gender=g, corpus="c")
        for g in ("female", "male") for k in range(n_per_gender) for t in range(3)
    ]


def test_retrain_split_keeps_held_out_speakers_out_of_training_and_validation():
    from db.registry import LabelledJobClip

    sources = corpus(5)
    held = ["female0", "male3"]
    jobs = job_clips_as_training(
        [LabelledJobClip(path="/j/a.wav", gender="male", speaker="male3", job_id="j1"),  # a held-out voice, from a job
         LabelledJobClip(path="/j/b.wav", gender="female", speaker=None, job_id="j1")],
        held_out=set(held),
    )
    assert [(c.speaker, c.corpus) for c in jobs] == [("job_j1", "jobs")]
    clips, split = retrain_split(sources, jobs, held, val_fraction=0.25, seed=0)
    speakers = lambda part: {clips[i].speaker for i in part}  # noqa: E731
    assert speakers(split.test) == set(held)
    assert not speakers(split.train) & set(held) and not speakers(split.val) & set(held)
    assert not speakers(split.train) & speakers(split.val)
    assert "job_j1" in speakers(split.train)  # job clips are trained on, never validated on
    assert sorted(split.train + split.val + split.test) == list(range(len(clips)))


def test_retrain_split_refuses_when_the_held_out_speakers_are_gone():
    from classifier.errors import InvalidDataset

    with pytest.raises(InvalidDataset, match="held-out speakers"):
        retrain_split(corpus(4), [], ["female9", "male9"], val_fraction=0.25, seed=0)


def test_beat_schedule_has_the_retrain_entry_only_when_the_cron_is_set(tmp_path):
    from celery.schedules import crontab

    from voicegender.settings import Settings
    from worker.app import RETRAIN, create_celery
    from worker.beat import beat_schedule

    assert beat_schedule(Settings(data_dir=tmp_path)) == {}
    assert create_celery(Settings(data_dir=tmp_path)).conf.beat_schedule == {}
    entry = create_celery(Settings(data_dir=tmp_path, retrain_cron="30 2 * * 1")).conf.beat_schedule["retrain"]
    assert entry["task"] == RETRAIN and entry["kwargs"] == {"run_id": None}
    assert entry["schedule"] == crontab(minute="30", hour="2", day_of_week="1")
    with pytest.raises(ValueError, match="5 fields"):
        Settings(data_dir=tmp_path, retrain_cron="every sunday")


def test_first_held_out_set_prefers_the_active_models_own_validation_speakers():
    from training.lifecycle import choose_held_out_speakers

    clips = corpus(5)
    chosen, how = choose_held_out_speakers(clips, fraction=0.2, seed=0, active_split={"val_speakers": ["female2", "male4", "gone"]})
    assert chosen == ["female2", "male4"] and "never trained on them" in how
    # Only one gender of them left in the sources: draw afresh, and say the comparison may favour the active model.
    chosen, how = choose_held_out_speakers(clips, fraction=0.2, seed=0, active_split={"val_speakers": ["female2"]})
    assert {"female", "male"} == {next(c.gender for c in clips if c.speaker == s) for s in chosen} and "may have heard" in how
    assert choose_held_out_speakers(clips, fraction=0.2, seed=0, active_split=None)[0] == chosen  # seeded


def test_a_registered_run_folder_keeps_its_speaker_lists(sessions, tmp_path):
    import json

    import torch

    from classifier.features import logmel_config
    from classifier.model import GenderResNet, ModelBundle, save_checkpoint
    from training.registration import ensure_active_model

    cfg = logmel_config(sample_rate=8000, n_mels=32)
    save_checkpoint(ModelBundle(model=GenderResNet(cfg.n_bins), features=cfg, version="run-1"), tmp_path / "run" / "model.pt")
    (tmp_path / "run" / "split.json").write_text(json.dumps({"name": "s", "kind": "speaker_disjoint", "train": [0], "val": [1], "val_speakers": ["a"], "train_speakers": ["b"]}))
    torch.manual_seed(0)
    with sessions() as s:
        row = ensure_active_model(s, tmp_path / "run" / "model.pt")
        assert (row.version, row.status, row.split["val_speakers"]) == ("run-1", "active", ["a"])
        assert "val" not in row.split  # clip indices are the run's own business
        assert ensure_active_model(s, tmp_path / "elsewhere.pt").version == "run-1"  # a registry with an active model keeps it


# --- an upgrade that ships a new default model --------------------------------------------------


def test_a_new_version_in_the_default_file_is_adopted_and_a_changed_file_of_the_same_version_refused(tmp_path, sessions):
    """The shipped model's file is rewritten in place by an upgrade: its old row cannot be served, so the new version
    it carries is registered and made active; the same version with other bytes, or a file that is not the default, stays an error."""
    import dataclasses

    import torch

    from classifier.errors import InvalidCheckpoint
    from classifier.features import logmel_config
    from classifier.model import GenderResNet, ModelBundle, save_checkpoint
    from voicegender.settings import Settings
    from worker.runtime import Runtime

    torch.manual_seed(0)
    cfg = logmel_config(sample_rate=8_000, n_mels=16)
    bundle = ModelBundle(model=GenderResNet(cfg.n_bins).eval(), features=cfg, version="ship-1")
    default = tmp_path / "models" / "starter.pt"
    save_checkpoint(bundle, default)
    settings = Settings(data_dir=tmp_path / "data", model_path=default)
    assert Runtime(settings=settings, sessions=sessions).model().version == "ship-1"

    save_checkpoint(dataclasses.replace(bundle, version="ship-2"), default)  # the upgrade
    assert Runtime(settings=settings, sessions=sessions).model().version == "ship-2"
    with sessions() as s:
        rows = {m.version: (m.status, m.parent_version) for m in registry.list_models(s)}
    assert rows == {"ship-1": ("retired", None), "ship-2": ("active", "ship-1")}

    save_checkpoint(dataclasses.replace(bundle, version="ship-2", features=dataclasses.replace(cfg, short_fill="loop")), default)
    with pytest.raises(InvalidCheckpoint, match="changed since model ship-2 was registered"):
        Runtime(settings=settings, sessions=sessions).model()

    other = tmp_path / "elsewhere.pt"
    save_checkpoint(dataclasses.replace(bundle, version="mine"), other)
    with sessions() as s:
        from training.registration import register_checkpoint

        register_checkpoint(s, other, status="candidate")
        registry.promote(s, "mine")
    save_checkpoint(dataclasses.replace(bundle, version="mine-2"), other)
    with pytest.raises(InvalidCheckpoint, match="changed since model mine was registered"):
        Runtime(settings=settings, sessions=sessions).model()
