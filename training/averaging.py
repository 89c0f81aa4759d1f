"""Weight averaging over the tail of a run (SWA; SWAD for unseen domains).

The mean of the weights a run passes through late in training lies in a
flatter region of the loss than its last step; for models that must transfer
to recording setups they never saw (Cha et al. 2021, "SWAD: domain
generalization by seeking flat minima") that is what helps. The result is one
model of the same size and speed as any other.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.swa_utils import AveragedModel, update_bn


class TailAverage:
    """Uniform mean of a model's weights after every step from ``start_step`` on.

    Parameters only: BatchNorm statistics of averaged weights are none of the
    averaged models' own, so :meth:`apply` recomputes them from training
    batches (as ``torch.optim.swa_utils.update_bn``).
    """

    def __init__(self, model: torch.nn.Module, *, start_step: int) -> None:
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        self.start_step = start_step
        self.averaged = AveragedModel(model, use_buffers=False)

    @property
    def count(self) -> int:
        return int(self.averaged.n_averaged)

    def update(self, model: torch.nn.Module, steps_done: int) -> None:
        """Called after each step with the number of steps done so far."""
        if steps_done > self.start_step:
            self.averaged.update_parameters(model)

    def apply(self, model: torch.nn.Module, batches: Iterable[torch.Tensor], *, bf16: bool) -> None:
        """Put the mean weights into ``model`` and recompute its BatchNorm statistics from ``batches`` (features)."""
        if self.count == 0:
            raise RuntimeError(f"no weights were averaged: the run ended before step {self.start_step + 1}")
        with torch.no_grad():
            for own, mean in zip(model.parameters(), self.averaged.module.parameters(), strict=True):
                own.copy_(mean)
        # update_bn resets the statistics, takes a cumulative mean over every batch and restores
        # the model's mode; it runs the forward passes with autograd on, which nothing here needs.
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            update_bn(batches, model)

    def state_dict(self) -> dict:
        return {"start_step": self.start_step, "averaged": self.averaged.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state["start_step"] != self.start_step:
            raise ValueError(f"the saved average starts at step {state['start_step']}, this run's at {self.start_step}")
        self.averaged.load_state_dict(state["averaged"])
