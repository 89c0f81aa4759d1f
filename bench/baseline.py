"""The seed notebook's loop, per file, as the yardstick the service is held to.

For each file: ``librosa.load``, librosa features, the feature matrix saved
as an image and read back (the notebook fed images to its learner), a
one-clip prediction, and a one-clip GradCAM done the common notebook way:
hooks on the layer, a second forward with gradients on, and a full
``backward()`` that also computes every parameter's gradient. Same model,
same window and GradCAM layer as the service, fp32, torch's default threads.
"""
from __future__ import annotations

import io
import time
from pathlib import Path

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import image as mpimg

from classifier.features import FeatureConfig
from classifier.model import ModelBundle


def measure_seed_baseline(
    paths: list[Path], bundle: ModelBundle, *, threads: int, device: str = "cpu", progress=None
) -> dict:
    """Clips per second of the notebook's per-file loop over ``paths``."""
    torch.set_num_threads(threads)
    model = bundle.model.to(device, memory_format=torch.contiguous_format).eval()
    seed_style_clip(paths[0], model, bundle)  # first-call costs are not the loop's
    started = time.perf_counter()
    for path in paths:
        seed_style_clip(path, model, bundle)
        if progress:
            progress(1)
    return {"cps": len(paths) / (time.perf_counter() - started), "clips": len(paths), "threads": threads}


def seed_style_clip(path: Path, model: torch.nn.Module, bundle: ModelBundle) -> tuple[int, np.ndarray]:
    """Predicted class index and GradCAM map (F, T) of one file, the notebook's way."""
    cfg = bundle.features
    y, sr = librosa.load(path, sr=None)  # the notebook read each file at its own rate
    if sr != cfg.sample_rate:
        y = librosa.resample(y, orig_sr=sr, target_sr=cfg.sample_rate)
    feats = librosa_features(_one_window(y, cfg.window_samples), cfg)
    _image_round_trip(feats)
    x = torch.from_numpy(feats)[None].to(next(model.parameters()).device)  # (1, F, T)
    with torch.no_grad():
        predicted = int(model(x).argmax(dim=1))
    return predicted, _notebook_gradcam(model, bundle.gradcam_layer, x, predicted)


def librosa_features(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """One clip's features by librosa: the seed's MFCC call, or the log-mel equivalent (F, T) float32."""
    if cfg.preemphasis is not None:
        y = librosa.effects.preemphasis(y, coef=cfg.preemphasis)
    common = dict(sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, center=False, window="hann", power=2.0, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    if cfg.kind == "mfcc":
        out = librosa.feature.mfcc(y=y, n_mfcc=cfg.n_mfcc, dct_type=2, norm="ortho", lifter=cfg.lifter, **common)
    else:
        mel = librosa.feature.melspectrogram(y=y, **common)
        out = librosa.power_to_db(mel, ref=np.max if cfg.ref_max else 1.0)
    return out.astype(np.float32)


def _one_window(y: np.ndarray, n: int) -> np.ndarray:
    # The model's input length: shorter clips centred in zeros, longer ones cut.
    out = np.zeros(n, dtype=np.float32)
    y = y[:n]
    start = (n - len(y)) // 2
    out[start : start + len(y)] = y
    return out


def _image_round_trip(feats: np.ndarray) -> np.ndarray:
    """The feature matrix as a PNG, read back (the notebook's image files, in memory)."""
    buf = io.BytesIO()
    mpimg.imsave(buf, feats, format="png", origin="lower")
    buf.seek(0)
    return mpimg.imread(buf, format="png")


def _notebook_gradcam(model: torch.nn.Module, layer: str, x: torch.Tensor, target: int) -> np.ndarray:
    saved: dict[str, torch.Tensor] = {}

    def keep(module, inputs, output):
        saved["act"] = output
        output.register_hook(lambda grad: saved.__setitem__("grad", grad))

    handle = model.get_submodule(layer).register_forward_hook(keep)
    try:
        logits = model(x)
        logits[0, target].backward()  # parameters require grad: their gradients are computed too
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    weights = saved["grad"].mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * saved["act"]).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    return (cam / cam.max().clamp_min(1e-12)).detach().cpu().numpy()
