"""The model lifecycle: the fixed held-out speakers, training a candidate and the
promotion rule (registering a checkpoint is :mod:`training.registration`).

Plain functions of clips, checkpoints and a session; the worker's retrain task
(:mod:`worker.retrain`) strings them together and holds the lock.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from classifier.errors import InvalidDataset
from classifier.model import ModelBundle, load_checkpoint
from db.registry import LabelledJobClip
from training.data import load_waveforms
from training.loop import TrainConfig, evaluate, train_split, write_run
from training.run import feature_config_for, summarise_data
from training.sources import LabelledClip, read_source
from training.splits import Split, split_by_speaker

log = logging.getLogger(__name__)
JOBS_CORPUS = "jobs"


# --- data and the fixed held-out speakers --------------------------------------------------------


def job_clips_as_training(job_clips: list[LabelledJobClip], *, held_out: set[str]) -> list[LabelledClip]:
    """Labelled job clips as training clips; speakers held out from evaluation are left out.

    A clip without a known speaker counts as one speaker per job: it is only
    ever trained on, never used to validate or evaluate.
    """
    out = []
    for c in job_clips:
        speaker = c.speaker or f"job_{c.job_id}"
        if speaker in held_out:
            continue
        out.append(LabelledClip(path=Path(c.path), speaker=speaker, gender=c.gender, corpus=JOBS_CORPUS))
    return out


def choose_held_out_speakers(clips: list[LabelledClip], *, fraction: float, seed: int, active_split: dict | None = None) -> tuple[list[str], str]:
    """The held-out speakers for the first retrain, and how they were chosen.

    The active model's own validation speakers when its registry entry names
    them and the sources hold them with both genders: the active model never
    trained on them, so the comparison is fair to both. Otherwise whole
    speakers per (corpus, gender), as the speaker split picks them.
    """
    present = {c.speaker: c.gender for c in clips}
    own = [s for s in (active_split or {}).get("val_speakers", []) if s in present]
    if {present[s] for s in own} == {"female", "male"}:
        return sorted(own), "the active model's validation speakers (it never trained on them)"
    chosen = sorted({clips[i].speaker for i in split_by_speaker(clips, val_fraction=fraction, seed=seed).val})
    return chosen, "drawn from the sources; the active model's training speakers are not recorded, so it may have heard some of them"


def retrain_split(source_clips: list[LabelledClip], job_clips: list[LabelledClip], held_out: list[str], *, val_fraction: float, seed: int) -> tuple[list[LabelledClip], Split]:
    """All clips, and a split: ``test`` = the fixed held-out speakers, ``val`` = other
    source speakers (learning curve, calibration), ``train`` = the rest plus job clips."""
    held = set(held_out)
    rest = [c for c in source_clips if c.speaker not in held]
    test_clips = [c for c in source_clips if c.speaker in held]
    if {c.gender for c in test_clips} != {"female", "male"}:
        raise InvalidDataset(f"the fixed held-out speakers {held_out} are not in the training sources with both genders; restore those sources")
    inner = split_by_speaker(rest, val_fraction=val_fraction, seed=seed)
    clips = rest + job_clips + test_clips
    n_rest, n_jobs = len(rest), len(job_clips)
    split = Split(
        name="retrain", kind="speaker_disjoint", seed=seed,
        train=inner.train + list(range(n_rest, n_rest + n_jobs)), val=inner.val,
        test=list(range(n_rest + n_jobs, len(clips))),
    )
    return clips, split


def read_sources(paths: list[Path]) -> list[LabelledClip]:
    if not paths:
        raise InvalidDataset("no training sources configured: set VOICEGENDER_TRAINING_SOURCES (paths joined by ':')")
    return [c for p in paths for c in read_source(p)]


# --- training and comparison -------------------------------------------------------------------


@dataclass
class Candidate:
    bundle: ModelBundle
    checkpoint: Path
    val_metrics: dict
    held_out_metrics: dict
    split_info: dict
    data_summary: dict


@dataclass
class Comparison:
    """Both models on the same held-out speakers, and the rule's verdict."""

    candidate_version: str
    active_version: str
    candidate: dict
    active: dict
    margin: float
    decision: str = ""
    reason: str = ""
    held_out_speakers: list[str] = field(default_factory=list)
    held_out_origin: str = ""

    def as_dict(self) -> dict:
        keep = ("n", "accuracy", "error_rate", "balanced_accuracy", "confusion_matrix", "per_class", "per_corpus", "per_speaker")
        return {
            "candidate_version": self.candidate_version, "active_version": self.active_version, "margin": self.margin,
            "decision": self.decision, "reason": self.reason, "held_out_speakers": self.held_out_speakers,
            "held_out_origin": self.held_out_origin,
            "candidate": {k: self.candidate[k] for k in keep if k in self.candidate},
            "active": {k: self.active[k] for k in keep if k in self.active},
        }


def promotion_decision(*, candidate_bacc: float, active_bacc: float, margin: float) -> tuple[str, str]:
    """Promote unless the candidate's balanced accuracy is worse than the active model's by more than ``margin``."""
    if not np.isfinite(candidate_bacc):
        return "refused", "the candidate has no balanced accuracy on the held-out speakers"
    diff = candidate_bacc - active_bacc
    verdict = f"candidate {candidate_bacc:.4f} vs active {active_bacc:.4f} balanced accuracy on the held-out speakers ({diff:+.4f})"
    if diff >= -margin - 1e-12:  # exactly at the margin counts as not worse, whatever the float rounding
        return "promoted", f"{verdict}: not worse by more than the margin {margin:.4f}"
    return "refused", f"{verdict}: worse by more than the margin {margin:.4f}"


def train_candidate(
    clips: list[LabelledClip], split: Split, *, feature_kind: str, cfg: TrainConfig, version: str, out_dir: Path,
    cache_dir: Path | None, progress: Callable[[int, float], None] | None = None, band_norm: str = "none",
    short_fill: str = "zeros", fmin: float | None = None, state_path: Path | None = None, wideband_short_fill: str | None = None,
) -> Candidate:
    """Train on ``split.train`` (curve and calibration on ``split.val``), evaluate on ``split.test``.

    ``state_path``: where the training state is saved; a state found there goes
    on when it is of the same data and options, and is replaced when not.
    """
    features = replace(
        feature_config_for(feature_kind, band_norm, short_fill, fmin), wideband_short_fill=wideband_short_fill, wideband_trim_edges=bool(wideband_short_fill)
    )
    waves = load_waveforms(clips, sr=features.sample_rate, cache_dir=cache_dir)
    bundle, val_metrics = train_split(clips, waves, split, features, cfg, version=version, progress=progress, state_path=state_path, other_state="replace")
    held_out_metrics = evaluate(bundle, clips, waves, split.test)
    split_info = split.to_dict(clips)
    data = summarise_data(clips)
    checkpoint = write_run(out_dir, bundle, val_metrics, split_info, cfg, data)
    if state_path is not None:
        state_path.unlink(missing_ok=True)
    return Candidate(bundle=bundle, checkpoint=checkpoint, val_metrics=val_metrics, held_out_metrics=held_out_metrics, split_info=split_info, data_summary=data)


def evaluate_checkpoint(path: Path, clips: list[LabelledClip], indices: list[int], *, cache_dir: Path | None) -> dict:
    """A registered model on ``clips[indices]``, decoded at its own sample rate."""
    bundle = load_checkpoint(path)
    held = [clips[i] for i in indices]
    waves = load_waveforms(held, sr=bundle.features.sample_rate, cache_dir=cache_dir)
    return evaluate(bundle, held, waves, list(range(len(held))))
