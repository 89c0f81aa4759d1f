"""The ResNet-34 gender model and its checkpoint format.

The checkpoint carries its preprocessing (feature config, sample rate),
class names, calibration, version and metrics; :func:`load_checkpoint` is the
one place that reads it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from classifier.errors import InvalidCheckpoint
from classifier.features import FeatureConfig

log = logging.getLogger(__name__)

CLASS_NAMES = ("female", "male")  # logit index 0 is female
CHECKPOINT_FORMAT = "voicegender-checkpoint/1"
# Where torchvision caches ImageNet weights; we only look, never download.
IMAGENET_FILE = "resnet34-b627a593.pth"


class GenderResNet(nn.Module):
    """torchvision ResNet-34, one input channel, two classes.

    The stem keeps the full frequency resolution (stride 1 along frequency in
    ``conv1`` and ``maxpool``), so ``layer1`` has one row per feature bin and
    GradCAM there resolves every MFCC coefficient / mel band. Deeper layers
    keep torchvision's strides. Inputs are standardised per feature bin with
    statistics from the training set, held as buffers so they travel with the
    weights.
    """

    def __init__(self, n_bins: int) -> None:
        super().__init__()
        net = torchvision.models.resnet34(weights=None, num_classes=len(CLASS_NAMES))
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=(1, 2), padding=3, bias=False)
        net.maxpool = nn.MaxPool2d(kernel_size=3, stride=(1, 2), padding=1)
        self.net = net
        self.register_buffer("feature_mean", torch.zeros(1, 1, n_bins, 1))
        self.register_buffer("feature_std", torch.ones(1, 1, n_bins, 1))

    @property
    def n_bins(self) -> int:
        return self.feature_mean.shape[2]

    def set_standardization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-bin mean and std (n_bins,) measured on training features."""
        self.feature_mean.copy_(mean.reshape(1, 1, -1, 1))
        self.feature_std.copy_(std.clamp_min(1e-3).reshape(1, 1, -1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, F, T) features -> (B, 2) logits
        x = (x.unsqueeze(1) - self.feature_mean) / self.feature_std  # (B, 1, F, T)
        return self.net(x)


def build_model(n_bins: int, *, imagenet_dir: Path | None = None) -> GenderResNet:
    """A fresh model; ImageNet weights are used only if already on disk."""
    model = GenderResNet(n_bins)
    weights_path = (imagenet_dir or Path(torch.hub.get_dir()) / "checkpoints") / IMAGENET_FILE
    if weights_path.is_file():
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        state["conv1.weight"] = state["conv1.weight"].mean(dim=1, keepdim=True)  # RGB -> 1 channel
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        model.net.load_state_dict(state, strict=False)
        log.info("initialised from ImageNet weights in %s (the seed's transfer learning)", weights_path)
    else:
        log.info("no ImageNet weights at %s (nothing is downloaded): training from scratch", weights_path)
    return model


@dataclass
class Calibration:
    """Platt scaling of the file-level log-odds of 'female'."""

    scale: float = 1.0
    bias: float = 0.0

    def p_female(self, log_odds: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.scale * log_odds + self.bias)

    @property
    def threshold_log_odds(self) -> float:
        """The raw log-odds at which p_female is 0.5: where the verdict turns."""
        return -self.bias / self.scale


@dataclass
class ModelBundle:
    """A loaded model with everything needed to use it."""

    model: GenderResNet
    features: FeatureConfig
    version: str
    calibration: Calibration = field(default_factory=Calibration)
    class_names: tuple[str, ...] = CLASS_NAMES
    gradcam_layer: str = "net.layer1"
    metrics: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""


def save_checkpoint(bundle: ModelBundle, path: Path, *, half: bool = True) -> str:
    """Write ``bundle`` to ``path`` atomically; returns the file's sha256.

    ``half`` stores float weights as fp16 (half the size; predictions are
    computed in fp32 after loading).
    """
    state = {
        k: (v.half() if half and v.is_floating_point() and not k.endswith(("feature_mean", "feature_std")) else v)
        for k, v in bundle.model.state_dict().items()
    }
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": bundle.version,
        "features": bundle.features.to_dict(),
        "class_names": list(bundle.class_names),
        "calibration": {"scale": bundle.calibration.scale, "bias": bundle.calibration.bias},
        "gradcam_layer": bundle.gradcam_layer,
        # Plain JSON types only, so torch.load(weights_only=True) can read it back.
        "metrics": json.loads(json.dumps(bundle.metrics, default=float)),
        "info": json.loads(json.dumps(bundle.info, default=str)),
        "state_dict": state,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return file_sha256(path)


def load_checkpoint(path: str | Path) -> ModelBundle:
    """Read a checkpoint written by :func:`save_checkpoint`; model in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise InvalidCheckpoint(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise InvalidCheckpoint(f"{path} is not a readable checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InvalidCheckpoint(f"{path} is not a {CHECKPOINT_FORMAT} file")
    features = FeatureConfig.from_dict(payload["features"])
    model = GenderResNet(features.n_bins)
    model.load_state_dict({k: v.float() for k, v in payload["state_dict"].items()})
    model.eval()
    return ModelBundle(
        model=model,
        features=features,
        version=payload["version"],
        calibration=Calibration(**payload["calibration"]),
        class_names=tuple(payload["class_names"]),
        gradcam_layer=payload["gradcam_layer"],
        metrics=payload.get("metrics", {}),
        info=payload.get("info", {}),
        sha256=file_sha256(path),
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
