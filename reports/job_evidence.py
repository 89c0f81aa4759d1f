"""What the job report needs beyond the job table, computed once at finalize with the model.

- per-class mean GradCAM maps, summed from the chunk files (:mod:`reports.attention`);
- a few clips explained again (most and least confident, misclassified), each with
  its first voting window's features, GradCAM map and a short audio excerpt;
- the deletion check (:mod:`classifier.faithfulness`) on a bounded sample of clips,
  spread over the job. Each chunk scores its part of the sample as it runs
  (:func:`record_chunk_deletion`, 15 masked copies per window), so on several
  workers that work runs in parallel; finalize only sums the chunk files.
Bad files are skipped here: their reason is already in the table. The model runs
through the worker's :class:`Classifier`, so with its device and precision.
"""
from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch

from classifier.audio import load_audio
from classifier.errors import InvalidAudio
from classifier.faithfulness import DeletionDrops, DeletionResult, band_counts, deletion_drops
from classifier.features import compute_features
from classifier.pipeline import Classifier, centre_in_window, group_by_width, prepare_waveform
from reports.attention import ClassMaps, read_job_cams, save_npz

log = logging.getLogger(__name__)
EXAMPLES_PER_KIND = 2
AUDIO_MAX_S = 4.0  # excerpt length embedded per example: keeps the report small
AUDIO_MAX_SR = 8000  # enough for pitch and the first formants
FAITHFULNESS_CLIPS = 12
FAITHFULNESS_WINDOWS_PER_CLIP = 2
# Below this many classified files the check's standard errors are too wide to
# read, and it would be most of a small job's time (15 masked copies per window).
FAITHFULNESS_MIN_CLIPS = 20


@dataclass
class ClipExample:
    """One clip explained again for the report."""

    kind: str  # "most confident", "least confident", "misclassified"
    clip: dict[str, Any]
    features: np.ndarray  # (F, T) of the first voting window
    cam: np.ndarray  # (F, T) GradCAM of that window, max 1
    window_p_female: float
    audio_uri: str  # data:audio/wav;base64,...
    audio_s: float


@dataclass
class JobEvidence:
    class_maps: ClassMaps | None = None
    examples: list[ClipExample] = field(default_factory=list)
    faithfulness: DeletionResult | None = None
    faithfulness_clips: int = 0
    faithfulness_note: str | None = None  # why the check was not run


def collect_evidence(
    clf: Classifier, input_dir: Path, cams_dir: Path, clips: list[dict[str, Any]], *, min_faithfulness_clips: int = FAITHFULNESS_MIN_CLIPS
) -> JobEvidence:
    """Everything model-derived the report shows; the clips are the report's row dicts.

    ``clf`` must explain (``explain=True``): the examples' maps are GradCAM's.
    """
    if not clf.explain:
        raise ValueError("collect_evidence needs a classifier made with explain=True")
    bundle = clf.bundle
    evidence = JobEvidence(class_maps=read_job_cams(cams_dir, bundle.class_names))
    evidence.examples = explain_examples(clf, input_dir, pick_examples(clips))
    classified = sum(c.get("p_female") is not None for c in clips)
    if classified < min_faithfulness_clips:
        evidence.faithfulness_note = (
            f"Not run: the deletion check needs at least {min_faithfulness_clips} classified files to be readable; this job has {classified}."
        )
        return evidence
    drops, n_clips = read_job_deletion(cams_dir)
    if drops is not None:
        evidence.faithfulness = drops.summary()
        evidence.faithfulness_clips = n_clips
    return evidence


def pick_examples(clips: list[dict[str, Any]], n: int = EXAMPLES_PER_KIND) -> list[tuple[str, dict[str, Any]]]:
    """Most confident, least confident and misclassified (most confident first) clips; each clip once."""
    done = [c for c in clips if c.get("p_female") is not None]
    confidence = lambda c: max(c["p_female"], 1 - c["p_female"])  # noqa: E731
    by_confidence = sorted(done, key=lambda c: (-confidence(c), c["path"]))
    wrong = [c for c in by_confidence if c.get("label") in ("female", "male") and c["label"] != _verdict(c)]
    picked: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for kind, candidates in (("misclassified", wrong), ("most confident", by_confidence), ("least confident", by_confidence[::-1])):
        for c in [c for c in candidates if c["path"] not in seen][:n]:
            picked.append((kind, c))
            seen.add(c["path"])
    return picked


def _verdict(clip: dict[str, Any]) -> str:
    return "female" if clip["p_female"] >= 0.5 else "male"


def faithfulness_positions(total: int, n: int = FAITHFULNESS_CLIPS, *, min_clips: int = FAITHFULNESS_MIN_CLIPS) -> set[int]:
    """Positions of the clips the deletion check uses: up to ``n``, spread evenly over the job (deterministic).

    Chosen from the job's size alone, so each chunk knows its part before the
    others have run; a chosen clip that fails is simply left out. None for a
    job too small for the check to be shown: a small job's chunk must not
    pay for it.
    """
    if total < min_clips:
        return set()
    return set(range(total)) if total <= n else {int(i) for i in np.linspace(0, total - 1, n).round()}


def explain_examples(clf: Classifier, input_dir: Path, picked: list[tuple[str, dict[str, Any]]]) -> list[ClipExample]:
    """Each picked clip's first voting window with its GradCAM map (one batch for all), and an audio excerpt.

    Clips that can no longer be read are left out.
    """
    bundle = clf.bundle
    found = []
    for kind, clip in picked:
        path = input_dir / clip["path"]
        try:
            rec = load_audio(path, sr=bundle.features.sample_rate, min_samples=bundle.features.n_fft, band_probe_samples=bundle.features.band_probe_samples)
        except InvalidAudio as exc:
            log.info("evidence: %s skipped: %s", path, exc)
            continue
        windows = prepare_waveform(str(path), rec.y, bundle, wideband=rec.wideband).windows
        if len(windows):
            found.append((kind, clip, rec, windows[0]))
    if not found:
        return []
    explained: list = [None] * len(found)
    n_frames = bundle.features.n_frames
    # One batch per window width: under short_fill "trim" a short clip's one window is its own length.
    for ks in group_by_width([window for *_, window in found]):
        feats = compute_features(torch.from_numpy(np.stack([found[k][3] for k in ks]).astype(np.float32)), bundle.features)  # (N, F, T)
        logits, cams = clf.forward_features(feats.to(clf.device))
        p_female = bundle.calibration.p_female((logits[:, 0] - logits[:, 1]).float().cpu())
        for j, k in enumerate(ks):
            f, c = feats[j].numpy(), cams[j].float().cpu().numpy()
            if f.shape[-1] < n_frames:  # drawn as the window a padded clip would fill
                f, c = centre_in_window(f, n_frames, fill=float(f.min())), centre_in_window(c, n_frames)
            explained[k] = (f, c, float(p_female[j]))
    examples = []
    for (kind, clip, rec, _), (f, c, p) in zip(found, explained):
        uri, seconds = audio_data_uri(rec.y, rec.sr)
        examples.append(ClipExample(kind=kind, clip=clip, features=f, cam=c, window_p_female=p, audio_uri=uri, audio_s=seconds))
    return examples


def audio_data_uri(y: np.ndarray, sr: int, *, max_s: float = AUDIO_MAX_S, max_sr: int = AUDIO_MAX_SR) -> tuple[str, float]:
    """The first ``max_s`` seconds as 16-bit mono WAV at most ``max_sr`` Hz, as a data URI; and its length."""
    y = np.asarray(y[: int(max_s * sr)], dtype=np.float32)
    if sr > max_sr:
        y, sr = soxr.resample(y, sr, max_sr).astype(np.float32), max_sr
    buf = io.BytesIO()
    sf.write(buf, np.clip(y, -1.0, 1.0), sr, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), len(y) / sr


def record_chunk_deletion(clf: Classifier, clip_windows: list[np.ndarray], folder: Path, index: int) -> Path | None:
    """Score the deletion check on this chunk's part of the sample and save it for finalize.

    ``clip_windows`` holds each sampled clip's voting windows, as the chunk
    scored them (:meth:`Classifier.classify_files`'s ``on_prepared``), so no
    clip is decoded twice. Up to :data:`FAITHFULNESS_WINDOWS_PER_CLIP` windows
    per clip; seeded by the chunk's index, so a chunk run again writes the
    same file. None when no clip had a voting window.
    """
    per_clip = [w[:FAITHFULNESS_WINDOWS_PER_CLIP] for w in clip_windows]
    windows = [w for ws in per_clip for w in ws]
    if not windows:
        return None
    # One call per window width (short_fill "trim" leaves a short clip's window its own length).
    groups = group_by_width(windows)
    drops = DeletionDrops.concat([faithfulness_drops(clf, np.stack([windows[k] for k in ks]), seed=index + 7919 * g) for g, ks in enumerate(groups)])
    return save_npz(
        folder / f"deletion-{index:06d}.npz",
        ks=np.array(drops.ks), base=drops.base, top=drops.top, random=drops.random, clips=np.array(sum(len(ws) > 0 for ws in per_clip)),
    )


def read_job_deletion(folder: Path) -> tuple[DeletionDrops | None, int]:
    """Every chunk's deletion scores of a job, concatenated, and how many clips they came from."""
    parts, clips = [], 0
    for path in sorted(folder.glob("deletion-*.npz")):
        with np.load(path) as data:
            parts.append(DeletionDrops(ks=data["ks"].tolist(), base=data["base"], top=data["top"], random=data["random"]))
            clips += int(data["clips"])
    parts = [p for p in parts if p.ks == parts[0].ks]  # a model changed mid-job: keep the first model's bands
    return (DeletionDrops.concat(parts) if parts else None), clips


def faithfulness_drops(clf: Classifier, windows: np.ndarray, *, n_random: int = 4, seed: int = 0) -> DeletionDrops:
    """Deletion check on raw windows (N, n): GradCAM profiles per window, masked bands set to the training mean."""
    bundle = clf.bundle
    feats = compute_features(torch.from_numpy(np.asarray(windows, dtype=np.float32)), bundle.features)  # (N, F, T)
    _, cams = clf.forward_features(feats.to(clf.device))
    profiles = cams.float().mean(dim=-1).cpu().numpy()  # (N, F)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(clf.logits(x), dim=1)

    # The per-bin training mean: after the model's standardisation a masked band reads exactly 0.
    fill = bundle.model.feature_mean.reshape(-1).cpu()
    return deletion_drops(predict, feats, profiles, fill=fill, ks=band_counts(feats.shape[1]), n_random=n_random, seed=seed)
