"""One training run from sources to checkpoint(s), metrics and split files."""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from classifier.audio import INFERENCE_FILLS, check_short_fill
from classifier.features import FeatureConfig, logmel_config, seed_mfcc_config
from classifier.model import load_checkpoint
from training.data import load_waveforms
from training.loop import TrainConfig, train_split, write_run
from training.metrics import mean_std
from training.resume import STATE_FILE
from training.sources import LabelledClip, read_source
from training.splits import Split, audiomnist_gender_folds, split_by_corpus, split_by_speaker, split_random_clips

log = logging.getLogger(__name__)
SPLIT_KINDS = ("speaker", "audiomnist-folds", "random-clips", "corpus")


@dataclass
class RunResult:
    checkpoints: list[Path]
    summary: dict
    folds: list[dict] = field(default_factory=list)  # per split: name, metrics, split (for the training report)
    features: dict = field(default_factory=dict)


LOGMEL_FMIN = 50.0  # train's default lowest band edge, Hz (starters 1-7; starter-8 was trained with --fmin 300); the highest is half the rate
# The log-mel rates train accepts (validated here only) and their band counts:
# 48 bands up to 4 kHz at 8 kHz (the starters); 64 up to 8 kHz at 16 kHz keep
# about the same bands per mel below 4 kHz and add the studio band above it
# (models/EXPERIMENTS.md, "The band above 4 kHz").
LOGMEL_RATES = {8_000: 48, 16_000: 64}


def feature_config_for(kind: str, band_norm: str = "none", short_fill: str = "zeros", fmin: float | None = None, fmax: float | None = None, sample_rate: int | None = None) -> FeatureConfig:
    """``mfcc``: the seed's recipe at 48 kHz; ``logmel``: the starter models' features.

    ``fmin`` (log-mel only) moves the lowest mel band edge up from 50 Hz, so
    the bands below it, which telephone channels cut or boost, are not input;
    ``fmax`` moves the highest edge down from half the rate (3400: the
    telephone band's top). ``sample_rate`` (log-mel only, one of
    ``LOGMEL_RATES``; default 8 kHz) is the rate every clip is resampled to.
    """
    if kind == "mfcc":
        if fmin is not None or fmax is not None or sample_rate is not None:
            raise ValueError("fmin, fmax and sample_rate apply to logmel features only; the seed's MFCC recipe keeps its own rate and bands")
        return replace(seed_mfcc_config(48_000), band_norm=band_norm, short_fill=short_fill)
    if kind == "logmel":
        sr = 8_000 if sample_rate is None else int(sample_rate)
        if sr not in LOGMEL_RATES:
            raise ValueError(f"sample_rate must be one of {', '.join(str(r) for r in LOGMEL_RATES)} Hz for log-mel features, got {sample_rate}")
        top = sr / 2
        fmin = LOGMEL_FMIN if fmin is None else float(fmin)
        if not 0 <= fmin < top - 1000:
            raise ValueError(f"fmin must be in [0, {top - 1000:g}) Hz for {sr // 1000} kHz log-mel features (bands up to {top:g} Hz), got {fmin}")
        fmax = top if fmax is None else float(fmax)
        if not fmin + 500 <= fmax <= top:
            raise ValueError(f"fmax must be at least 500 Hz above fmin ({fmin:g} Hz) and at most {top:g} Hz (half the {sr // 1000} kHz rate), got {fmax:g}")
        # 8 kHz keeps every corpus in one band (telephone to studio), and a 64 ms
        # frame resolves the harmonics of low voices; see models/MODEL_CARD.md.
        return replace(logmel_config(sample_rate=sr, n_mels=LOGMEL_RATES[sr]), frame_s=0.064, fmin=fmin, fmax=fmax, band_norm=band_norm, short_fill=short_fill)
    raise ValueError(f"unknown feature kind {kind!r}: use mfcc or logmel")


def make_splits(clips: list[LabelledClip], kind: str, *, seed: int, val_fraction: float, held_out: list[str] | None = None) -> list[Split]:
    if kind == "corpus":
        if not held_out:
            raise ValueError("split 'corpus' needs the corpora to hold out (--holdout-corpus NAME)")
        return [split_by_corpus(clips, held_out)]
    if kind == "speaker":
        return [split_by_speaker(clips, val_fraction=val_fraction, seed=seed)]
    if kind == "audiomnist-folds":
        return audiomnist_gender_folds(clips)
    if kind == "random-clips":
        log.warning("random clip split: speakers are shared between train and validation (the seed's protocol)")
        return [split_random_clips(clips, val_fraction=val_fraction, seed=seed)]
    raise ValueError(f"unknown split {kind!r}: use one of {', '.join(SPLIT_KINDS)}")


def summarise_data(clips: list[LabelledClip]) -> dict:
    speakers = {(c.corpus, c.gender, c.speaker) for c in clips}
    return {
        "clips": dict(Counter(f"{c.corpus}/{c.gender}" for c in clips)),
        "speakers": dict(Counter(f"{corpus}/{gender}" for corpus, gender, _ in speakers)),
    }


def run_training(
    sources: list[Path],
    out_dir: Path,
    *,
    feature_kind: str = "logmel",
    band_norm: str = "none",
    short_fill: str | None = None,
    wideband_short_fill: str | None = None,
    fmin: float | None = None,
    fmax: float | None = None,
    sample_rate: int | None = None,
    split_kind: str = "speaker",
    val_fraction: float = 0.15,
    cfg: TrainConfig,
    version: str,
    cache_dir: Path | None = None,
    progress_factory=None,
    held_out_corpora: list[str] | None = None,
    init: Path | None = None,
) -> RunResult:
    """Train one model per split (one, or four AudioMNIST folds) and write each beside its metrics.

    A run stopped part-way (killed, crashed) leaves its state in the fold's
    folder; the same call goes on from it (training/resume.py).

    ``init``: a checkpoint to fine-tune; its feature configuration is kept
    (``short_fill`` and ``wideband_short_fill``, when given, replace its own).
    ``wideband_short_fill``: the fill stored for short clips of wideband files
    (``FeatureConfig.wideband_short_fill``; inference only).
    """
    clips = [c for s in sources for c in read_source(s)]
    start = load_checkpoint(init) if init else None
    if start is not None:
        features = replace(start.features, short_fill=short_fill or start.features.short_fill)
        log.info("fine-tuning %s (%s); its features are kept: %s", init, start.version, features)
    else:
        features = feature_config_for(feature_kind, band_norm, short_fill or "zeros", fmin, fmax, sample_rate)
    if wideband_short_fill:
        check_short_fill(wideband_short_fill, INFERENCE_FILLS)
        # A studio file's silent edges do not make its word longer (inference only, as the fill).
        features = replace(features, wideband_short_fill=wideband_short_fill, wideband_trim_edges=True)
    log.info("decoding %d clips at %d Hz", len(clips), features.sample_rate)
    waves = load_waveforms(clips, sr=features.sample_rate, cache_dir=cache_dir)
    splits = make_splits(clips, split_kind, seed=cfg.seed, val_fraction=val_fraction, held_out=held_out_corpora)
    checkpoints, fold_metrics, folds = [], [], []
    for k, split in enumerate(splits):
        progress = progress_factory(split.name, cfg.steps) if progress_factory else None
        fold_dir = out_dir if len(splits) == 1 else out_dir / f"fold{k}"
        state_path = fold_dir / STATE_FILE  # the same command after a crash goes on from here
        bundle, metrics = train_split(clips, waves, split, features, cfg, version=version if len(splits) == 1 else f"{version}-fold{k}", progress=progress, init=start, state_path=state_path)
        metrics["speaker_overlap"] = split.speaker_overlap
        if start is not None:
            metrics["fine_tuned_from"] = {"version": start.version, "path": str(init)}
        checkpoints.append(write_run(fold_dir, bundle, metrics, split.to_dict(clips), cfg, summarise_data(clips)))
        state_path.unlink(missing_ok=True)
        fold_metrics.append(metrics)
        folds.append({"name": split.name, "metrics": metrics, "split": split.to_dict(clips)})
    summary = {
        "split": split_kind,
        "speaker_overlap": splits[0].speaker_overlap,
        "folds": len(splits),
        "error_rate": mean_std([m["error_rate"] for m in fold_metrics]),
        "balanced_accuracy": mean_std([m["balanced_accuracy"] for m in fold_metrics]),
        "f1_female": mean_std([m["per_class"]["female"]["f1"] for m in fold_metrics]),
        "f1_male": mean_std([m["per_class"]["male"]["f1"] for m in fold_metrics]),
        "data": summarise_data(clips),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return RunResult(checkpoints=checkpoints, summary=summary, folds=folds, features=features.to_dict())
