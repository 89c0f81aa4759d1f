"""A training run's state on disk, so a run killed mid-way goes on where it stopped.

A ResNet-34 run on CPU takes hours; a crash, a reboot or a killed session
should cost the steps since the last save, not the run. The state holds
everything the next step depends on (weights, BatchNorm statistics,
optimiser moments, every random generator, the loss history), so a resumed
run takes exactly the steps an uninterrupted one would have taken.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "train_state.pt"
FORMAT = 1


class StateMismatch(ValueError):
    """The state on disk belongs to a run with other options or data, or cannot be read.

    ``reason`` says what is wrong; the message adds what a person can do about it.
    """

    def __init__(self, reason: str, advice: str = "remove it to start again") -> None:
        super().__init__(f"{reason}; {advice}")
        self.reason = reason


@dataclass
class Progress:
    """What a run has done so far: steps taken, their losses, the learning curve, time spent."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    curve: list[dict] = field(default_factory=list)
    elapsed_s: float = 0.0


def run_identity(train_config: dict, features: dict, split: dict, init_sha256: str | None) -> dict:
    """What must be equal for a saved state to continue this run.

    How often it saves may change, and so may the version label (the CLI's
    default is the start time).
    """
    cfg = {k: v for k, v in train_config.items() if k != "save_every"}
    # The wideband fill and edge cut act at inference only (training reads band-limited
    # copies), and leaving them out keeps states saved before the fields existed resumable.
    features = {k: v for k, v in features.items() if k not in ("wideband_short_fill", "wideband_trim_edges")}
    split_digest = hashlib.sha256(json.dumps(split, sort_keys=True).encode()).hexdigest()
    return {"train_config": cfg, "features": features, "split_sha256": split_digest, "init_sha256": init_sha256}


def save_state(path: Path, identity: dict, progress: Progress, *, model, opt, gen: torch.Generator, rng: np.random.Generator, average=None) -> None:
    """Write the state atomically: a kill during the write leaves the previous state whole."""
    state = {
        "format": FORMAT,
        "identity": identity,
        "progress": asdict(progress),
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "generator": gen.get_state(),
        "sampler_rng": rng.bit_generator.state,
        "average": None if average is None else average.state_dict(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def restore_state(path: Path, identity: dict, *, model, opt, gen: torch.Generator, rng: np.random.Generator, average=None) -> Progress | None:
    """Load a saved state into the run's objects (``average``: the run's weight average, if any); None when there is none.

    Raises :class:`StateMismatch` naming what differs when the state is another run's.
    """
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # written atomically, so only damage or another program's file gets here
        raise StateMismatch(f"{path} cannot be read as a training state ({exc.__class__.__name__}: {exc})") from exc
    if state.get("format") != FORMAT:
        raise StateMismatch(f"{path} is a training state of format {state.get('format')!r}, this version reads {FORMAT}")
    saved = state["identity"]
    if saved != identity:
        differs = sorted(_differences(saved, identity))
        raise StateMismatch(f"{path} belongs to another run ({', '.join(differs)} differ)", "continue it with its own options, or remove it to start again")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    gen.set_state(state["generator"])
    rng.bit_generator.state = state["sampler_rng"]
    if average is not None:  # the identity holds average_from, so a state of this run has one
        average.load_state_dict(state["average"])
    return Progress(**state["progress"])


def _differences(a: dict, b: dict) -> set[str]:
    out = set()
    for key in a.keys() | b.keys():
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out |= {f"{key}.{k}" for k in _differences(x, y)}
        elif x != y:
            out.add(key)
    return out

