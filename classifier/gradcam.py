"""GradCAM over (frequency x time), batched, without parameter gradients.

The backward pass is targeted: ``torch.autograd.grad`` from the class score
to the chosen layer's activation only, with every parameter frozen for the
duration, so no weight gradient is ever computed (about 6x cheaper than a
full backward here). Hooks live in a context manager and are removed on exit;
the caller's train/eval mode and ``requires_grad`` flags are restored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Explanation:
    """Logits and attention for a batch of feature windows."""

    logits: torch.Tensor  # (B, n_classes)
    target: torch.Tensor  # (B,) class index each map explains
    cam: torch.Tensor  # (B, n_bins, n_frames), each clip scaled to max 1

    @property
    def profile(self) -> torch.Tensor:
        """Per-frequency attention (B, n_bins): the map's mean over time."""
        return self.cam.mean(dim=-1)


class GradCAM:
    """Class activation maps at one layer of ``model``.

    Subclasses change how channels are weighted by overriding
    :meth:`weight_channels` (as pytorch-grad-cam does).

    Use as a context manager::

        with GradCAM(model, "net.layer1") as cam:
            result = cam.explain(features)  # (B, F, T) -> Explanation
    """

    def __init__(self, model: nn.Module, layer: str) -> None:
        self.model = model
        self.layer_name = layer
        self.layer = model.get_submodule(layer)
        self._activation: torch.Tensor | None = None
        self._handle = None
        self._was_training = False
        self._requires_grad: list[tuple[nn.Parameter, bool]] = []

    def __enter__(self) -> "GradCAM":
        self._was_training = self.model.training
        self._requires_grad = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in self._requires_grad:
            p.requires_grad_(False)
        self.model.eval()
        self._handle = self.layer.register_forward_hook(self._keep_activation)
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Restore everything, and let any exception propagate (return None).
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        for p, flag in self._requires_grad:
            p.requires_grad_(flag)
        self.model.train(self._was_training)
        self._activation = None

    def _keep_activation(self, module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        # A leaf that requires grad: the backward stops here, upstream is not recorded.
        activation = output.detach().requires_grad_(True)
        self._activation = activation
        return activation

    def weight_channels(self, activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """GradCAM: channel weights are the gradients' mean over (F, T)."""
        weights = grad.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        return (weights * activation).sum(dim=1)  # (B, F', T')

    def explain(self, features: torch.Tensor, target: torch.Tensor | None = None) -> Explanation:
        """Maps for ``features`` (B, F, T); ``target`` defaults to the predicted class."""
        if self._handle is None:
            raise RuntimeError("use GradCAM as a context manager: `with GradCAM(model, layer) as cam:`")
        with torch.enable_grad():
            logits = self.model(features)
            activation = self._activation
            if target is None:
                target = logits.argmax(dim=1)
            score = logits.gather(1, target[:, None]).sum()
            (grad,) = torch.autograd.grad(score, activation)
        cam = F.relu(self.weight_channels(activation.float(), grad.float()))  # (B, F', T')
        cam = self._to_input_grid(cam, features.shape[-2:])
        peak = cam.amax(dim=(1, 2), keepdim=True)
        cam = torch.where(peak > 0, cam / peak.clamp_min(1e-12), cam)
        return Explanation(logits=logits.detach().float(), target=target, cam=cam.detach())

    @staticmethod
    def _to_input_grid(cam: torch.Tensor, size: torch.Size) -> torch.Tensor:
        # Time is coarser than the input at any layer past the stem; frequency
        # is already 1:1 at layer1 of GenderResNet, so only time is stretched.
        return F.interpolate(cam[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def class_mean_maps(cam: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean map per predicted class (n_classes, F, T); NaN where a class is absent."""
    out = np.full((n_classes, *cam.shape[1:]), np.nan, dtype=np.float64)
    for k in range(n_classes):
        if (predicted == k).any():
            out[k] = cam[predicted == k].mean(axis=0)
    return out


def layer_frequency_rows(model: nn.Module, layer: str, features: torch.Tensor) -> int:
    """How many frequency rows ``layer`` has for an input of this shape."""
    rows: list[int] = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: rows.append(o.shape[-2]))
    try:
        with torch.inference_mode():
            model(features)
    finally:
        handle.remove()
    return rows[0]
