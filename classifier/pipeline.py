"""The batch pipeline: files -> windows -> features -> model (+ GradCAM) -> verdicts.

Windows from many files are scored together in mini-batches, so a chunk of
short clips costs one feature call and one forward per ``batch_windows``.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from classifier.audio import fill_views, load_audio, speech_extent, speech_mask, split_windows
from classifier.errors import InvalidAudio
from classifier.features import compute_features
from classifier.gradcam import GradCAM
from classifier.model import ModelBundle

log = logging.getLogger(__name__)


@dataclass
class ClipResult:
    """The verdict on one file; ``error`` is set instead when it could not be used."""

    path: str
    prediction: str | None = None  # "female", "male", "uncertain"; None on error
    p_female: float | None = None
    duration_s: float | None = None
    windows: int = 0  # windows that voted
    error: str | None = None
    error_reason: str | None = None
    log_odds: float | None = None  # mean uncalibrated log-odds of "female"
    attention: np.ndarray | None = None  # (n_bins,) per-frequency profile
    cam: np.ndarray | None = None  # (n_bins, n_frames) mean over voting windows

    @property
    def confidence(self) -> float | None:
        return None if self.p_female is None else max(self.p_female, 1 - self.p_female)


@dataclass
class PreparedClip:
    path: str
    duration_s: float
    windows: np.ndarray  # (n_voting, window_samples); a short clip's one window may be narrower ("trim")
    # The same windows filled another way, each (n_voting, width): a short clip
    # under a two-way fill ("trim+loop"). A window's log-odds are the mean over its views.
    views: tuple[np.ndarray, ...] = ()
    wideband: bool | None = None  # the file's band test (Recording.wideband), which picked the fill


def prepare_waveform(path: str, y: np.ndarray, bundle: ModelBundle, *, wideband: bool | None = None) -> PreparedClip:
    """Window a decoded waveform and keep only the windows that hold speech.

    ``wideband``: the file carried sound above the model's band
    (``Recording.wideband``), which picks the short-clip fill and, with
    ``wideband_trim_edges``, cuts the silence around a short utterance.
    """
    cfg = bundle.features
    duration_s = len(y) / cfg.sample_rate
    if wideband and cfg.wideband_short_fill and cfg.wideband_trim_edges:
        start, stop = speech_extent(y, cfg.sample_rate)
        # Shorter than a frame, the cut could not be scored: such a blip keeps its file's length.
        if cfg.n_fft <= stop - start < cfg.window_samples:
            y = y[start:stop]
    fill, *others = fill_views(cfg.fill_for(wideband))
    windows = split_windows(y, window=cfg.window_samples, hop=cfg.hop_samples, fill=fill)
    keep = speech_mask(windows)
    # A clip of one window or more is windowed the same under every fill: no second view to score.
    views = tuple(split_windows(y, window=cfg.window_samples, hop=cfg.hop_samples, fill=f)[keep] for f in others) if len(y) < cfg.window_samples else ()
    return PreparedClip(path=path, duration_s=duration_s, windows=windows[keep], views=views, wideband=wideband)


def prepare_file(path: str | os.PathLike, bundle: ModelBundle, *, max_duration_s: float = 1200.0) -> PreparedClip:
    """Decode, validate and window one file; raises :class:`InvalidAudio`."""
    cfg = bundle.features
    rec = load_audio(path, sr=cfg.sample_rate, min_samples=cfg.n_fft, max_duration_s=max_duration_s, band_probe_samples=cfg.band_probe_samples)
    return prepare_waveform(str(path), rec.y, bundle, wideband=rec.wideband)


def bf16_is_native(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bf16 in hardware (emulated bf16 is slower than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    # Only AMX tiles count: on a CPU with AVX-512 BF16 but no AMX, bf16 measured
    # slower than fp32 (18.2 against 13.4 ms per window, starter-6). torch has
    # no public probe for the CPU's units; this private one exists since 2.1.
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return probe is not None and bool(probe())


def use_bf16(precision: str, device: str | torch.device = "cpu") -> bool:
    """``precision`` is "bf16", "fp32", or "auto" (bf16 where the hardware computes it fast)."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    if precision == "bf16" and not bf16_is_native(device):
        # Honoured, but said: emulated bf16 made a training step 14x slower on an AVX2 CPU (README, Performance).
        log.warning("bf16 asked for on %s, which does not compute it in hardware (a CPU needs AMX): it is emulated and much slower than fp32", device)
    return precision == "bf16" or (precision == "auto" and bf16_is_native(device))


class Classifier:
    """Scores prepared clips with one model; the core of ``classify`` and the worker.

    The model runs in channels-last layout; ``bf16`` adds bf16 autocast
    (together about 2x fp32 on a CPU with bf16 units); features, GradCAM
    maps and the combination stay fp32. ``device`` moves the bundle's model
    there once, when the classifier is made.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        *,
        batch_windows: int = 64,
        explain: bool = True,
        bf16: bool = False,
        device: str | torch.device = "cpu",
        max_duration_s: float = 1200.0,
    ):
        self.bundle = bundle
        self.batch_windows = batch_windows
        self.max_duration_s = max_duration_s
        self.explain = explain
        self.bf16 = bf16
        self.device = torch.device(device)
        # channels_last is the layout oneDNN's convolutions run natively (fp32
        # and bf16); it changes no values, so a shared model stays usable elsewhere.
        bundle.model.to(device=self.device, memory_format=torch.channels_last)

    def classify_files(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        min_confidence: float | None = None,
        on_done: Callable[[ClipResult], None] | None = None,
        on_prepared: Callable[[PreparedClip], None] | None = None,
    ) -> list[ClipResult]:
        """Classify files in order; a bad file yields an error result, never an exception.

        ``on_prepared`` sees each readable clip's voting windows before they
        are scored, so a caller that needs them again need not decode again.
        """
        results: list[ClipResult] = []
        for group in _groups(list(paths), self.batch_windows):
            prepared: list[PreparedClip | ClipResult] = [self._prepare_or_error(p) for p in group]
            if on_prepared is not None:
                for item in prepared:
                    if isinstance(item, PreparedClip):
                        on_prepared(item)
            results_group = self.classify_prepared(prepared, min_confidence=min_confidence)
            for r in results_group:
                if on_done is not None:
                    on_done(r)
            results.extend(results_group)
        return results

    def _prepare_or_error(self, path: str | os.PathLike) -> PreparedClip | ClipResult:
        try:
            return prepare_file(path, self.bundle, max_duration_s=self.max_duration_s)
        except InvalidAudio as exc:
            return ClipResult(path=str(path), error=str(exc), error_reason=exc.reason)

    def classify_prepared(
        self, items: list[PreparedClip | ClipResult], *, min_confidence: float | None = None
    ) -> list[ClipResult]:
        """Score every voting window (every view of it) of the prepared clips at once, then combine per clip."""
        views = [(c.windows, *c.views) for c in items if isinstance(c, PreparedClip)]
        scored = iter(self.score_clips([w for clip_views in views for w in clip_views]))
        per_clip = iter([[next(scored) for _ in clip_views] for clip_views in views])
        return [item if isinstance(item, ClipResult) else self._combine(item, next(per_clip), min_confidence) for item in items]

    def score_clips(self, clip_windows: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Per clip, the log-odds (n,) and maps (n, F, T) of its windows (n, width).

        Clips whose windows have one width share batches; a short clip under
        ``short_fill="trim"`` has a narrower one window of its own.
        """
        out: list = [None] * len(clip_windows)
        for ks in group_by_width(clip_windows):
            log_odds, cams = self.score_windows(np.concatenate([clip_windows[k] for k in ks]))
            start = 0
            for k in ks:
                n = len(clip_windows[k])
                out[k] = (log_odds[start : start + n], None if cams is None else cams[start : start + n])
                start += n
        return out

    def score_windows(self, windows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Log-odds of "female" (N,) and GradCAM maps (N, F, T) for raw windows (N, n)."""
        if windows is None or len(windows) == 0:
            return np.zeros(0), None
        log_odds, cams = [], []
        for batch in _groups(windows, self.batch_windows):
            y = torch.from_numpy(np.asarray(batch, dtype=np.float32)).to(self.device)
            logits, cam = self.forward_features(compute_features(y, self.bundle.features))
            log_odds.append((logits[:, 0] - logits[:, 1]).cpu().numpy())
            if cam is not None:
                cams.append(cam.cpu().numpy())
        return np.concatenate(log_odds), (np.concatenate(cams) if cams else None)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits (B, 2) on the CPU for features (B, F, T), in batches, without GradCAM."""
        model = self.bundle.model
        out = []
        for batch in _groups(feats, self.batch_windows):
            with torch.inference_mode(), self._autocast():
                out.append(model(batch.to(self.device)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self.bundle.class_names))

    def forward_features(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, 2) and, when explaining, GradCAM maps (B, F, T) for features (B, F, T).

        One forward for both: GradCAM's targeted backward reuses the forward
        that gave the logits.
        """
        model = self.bundle.model
        if not self.explain:
            with torch.inference_mode(), self._autocast():
                return model(feats).float(), None
        with GradCAM(model, self.bundle.gradcam_layer) as cam, self._autocast():
            result = cam.explain(feats)
        return result.logits, result.cam

    def _combine(
        self, clip: PreparedClip, views: list[tuple[np.ndarray, np.ndarray | None]], min_confidence: float | None
    ) -> ClipResult:
        """One verdict from each view's (log-odds (n,), maps (n, F, t) or None) of the clip's n voting windows."""
        # A window's log-odds: the mean over its views. The clip's: the mean over
        # windows that hold speech, so each voting window counts once.
        log_odds = np.mean([lo for lo, _ in views], axis=0)
        mean_log_odds = float(np.mean(log_odds))
        p_female = float(self.bundle.calibration.p_female(torch.tensor(mean_log_odds)))
        prediction = "female" if p_female >= 0.5 else "male"
        if min_confidence is not None and max(p_female, 1 - p_female) < min_confidence:
            prediction = "uncertain"
        cam = attention = None
        if views[0][1] is not None:
            maps = [cams.mean(axis=0) for _, cams in views]  # (F, t) per view, over the voting windows
            attention = np.mean([m.mean(axis=-1) for m in maps], axis=0)  # over each view's own frames: padding does not dilute it
            n_frames = self.bundle.features.n_frames
            cam = np.mean([centre_in_window(m, n_frames) if m.shape[-1] < n_frames else m for m in maps], axis=0)
        return ClipResult(
            path=clip.path,
            prediction=prediction,
            p_female=p_female,
            duration_s=clip.duration_s,
            windows=len(log_odds),
            log_odds=mean_log_odds,
            attention=attention,
            cam=cam,
        )


def group_by_width(windows: list[np.ndarray]) -> list[list[int]]:
    """Indices of ``windows`` ((n, width) or (width,) each) grouped by width: each group stacks into one batch."""
    groups: dict[int, list[int]] = {}
    for k, w in enumerate(windows):
        groups.setdefault(w.shape[-1], []).append(k)
    return list(groups.values())


def centre_in_window(cam: np.ndarray, n_frames: int, *, fill: float = 0.0) -> np.ndarray:
    """A trimmed clip's map (F, t) placed where its sound sits in a zero-filled window (F, n_frames).

    Every clip's map then has one shape (a job's per-class mean maps add them),
    and the frames that would be padding get no attention (``fill``; for
    features, their floor).
    """
    out = np.full((*cam.shape[:-1], n_frames), fill, dtype=cam.dtype)
    start = (n_frames - cam.shape[-1]) // 2
    out[..., start : start + cam.shape[-1]] = cam
    return out


def _groups(items, size: int) -> Iterator:
    for start in range(0, len(items), size):
        yield items[start : start + size]
