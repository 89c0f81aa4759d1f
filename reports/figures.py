"""Figures as matplotlib ``Figure`` objects (no pyplot), embedded as PNG data URIs."""
from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

CLASS_COLOURS = {"female": "#c2185b", "male": "#1565c0", "uncertain": "#888888"}


# Margins in inches, the same for every figure: room for tick labels and an axis
# label on the left and below, a title above, a colour bar's labels on the right.
MARGINS_IN = {"left": 0.85, "right": 0.65, "bottom": 0.55, "top": 0.35}


def figure_to_data_uri(fig: Figure, *, dpi: int = 80) -> str:
    """PNG data URI. Fixed margins rather than ``bbox_inches="tight"``, which draws
    every figure twice: the figures are most of a small job's finalize time."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=MARGINS_IN["left"] / width, right=1 - MARGINS_IN["right"] / width,
        bottom=MARGINS_IN["bottom"] / height, top=1 - MARGINS_IN["top"] / height,
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _is_hz(axis_label: str) -> bool:
    return "Hz" in axis_label


def _bin_ticks(ax, axis: np.ndarray, axis_label: str, *, which: str = "y", n_ticks: int = 8) -> None:
    """Image rows are feature bins; label a few of them with their value (Hz or coefficient)."""
    idx = np.unique(np.linspace(0, len(axis) - 1, min(n_ticks, len(axis))).round().astype(int))
    labels = [f"{axis[i]:.0f}" for i in idx]
    (ax.set_yticks if which == "y" else ax.set_xticks)(idx, labels)
    (ax.set_ylabel if which == "y" else ax.set_xlabel)(axis_label)


def attention_profile_figure(axis: np.ndarray, axis_label: str, profiles: dict[str, np.ndarray]) -> Figure:
    """Mean per-bin attention per predicted class (one marker per bin); female minus male below when both exist."""
    both = {"female", "male"} <= profiles.keys()
    fig = Figure(figsize=(7.5, 4.6 if both else 3.2))
    axes = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1)) if both else [fig.add_subplot(1, 1, 1)]
    top = axes[0]
    for name, profile in profiles.items():
        top.plot(axis, profile, marker=".", color=CLASS_COLOURS.get(name), label=f"predicted {name}")
    top.set_ylabel("mean GradCAM")
    top.legend(loc="best", fontsize="small")
    if both:
        diff = profiles["female"] - profiles["male"]
        axes[1].bar(axis, diff, width=_bar_widths(axis), color=np.where(diff >= 0, CLASS_COLOURS["female"], CLASS_COLOURS["male"]))
        axes[1].axhline(0, color="black", linewidth=0.5)
        axes[1].set_ylabel("female - male")
    axes[-1].set_xlabel(axis_label)
    if _is_hz(axis_label):
        _log_hz_axis(axes[-1], axis)
    return fig


def _log_hz_axis(ax, axis: np.ndarray) -> None:
    """Log frequency axis (mel bands are about evenly spaced on it above ~1 kHz) with plain Hz labels."""
    ax.set_xscale("log")
    ticks = [t for t in (50, 100, 200, 500, 1000, 2000, 4000, 8000, 16000) if axis.min() * 0.9 <= t <= axis.max() * 1.1]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _bar_widths(axis: np.ndarray) -> np.ndarray:
    """Each bar as wide as the gap to its neighbours, so bins on a log axis neither overlap nor vanish."""
    if len(axis) < 2:
        return np.ones_like(axis, dtype=float)
    gaps = np.diff(axis)
    return 0.8 * np.concatenate([gaps[:1], np.minimum(gaps[:-1], gaps[1:]), gaps[-1:]])


def class_maps_figure(axis: np.ndarray, axis_label: str, maps: dict[str, np.ndarray], window_s: float) -> Figure:
    """Mean GradCAM per predicted class over (feature bin x time), and female minus male."""
    panels = list(maps.items())
    if {"female", "male"} <= maps.keys():
        panels.append(("female - male", maps["female"] - maps["male"]))
    fig = Figure(figsize=(3.3 * len(panels), 3.2))
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    for ax, (name, m) in zip(axes, panels):
        is_diff = " - " in name
        lim = float(np.abs(m).max()) or 1.0
        image = ax.imshow(m, origin="lower", aspect="auto", interpolation="nearest", extent=(0, window_s, -0.5, len(axis) - 0.5),
                          cmap="RdBu_r" if is_diff else "magma", vmin=-lim if is_diff else 0, vmax=lim)
        ax.set_title(name if is_diff else f"predicted {name}", fontsize="medium")
        ax.set_xlabel("time in window (s)")
        fig.colorbar(image, ax=ax, shrink=0.8)
    _bin_ticks(axes[0], axis, axis_label)
    return fig


def example_figure(axis: np.ndarray, axis_label: str, features: np.ndarray, cam: np.ndarray, window_s: float) -> Figure:
    """A window's features (grey) with its GradCAM map over them."""
    fig = Figure(figsize=(4.6, 2.8))
    ax = fig.add_subplot(1, 1, 1)
    extent = (0, window_s, -0.5, len(axis) - 0.5)
    ax.imshow(features, origin="lower", aspect="auto", interpolation="nearest", extent=extent, cmap="gray")
    image = ax.imshow(cam, origin="lower", aspect="auto", interpolation="nearest", extent=extent, cmap="inferno", alpha=0.55, vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="GradCAM")
    ax.set_xlabel("time (s)")
    _bin_ticks(ax, axis, axis_label)
    return fig


def confusion_figure(matrix: list[list[int]], classes: tuple[str, ...]) -> Figure:
    fig = Figure(figsize=(3.4, 3.0))
    ax = fig.add_subplot(1, 1, 1)
    m = np.asarray(matrix)
    ax.imshow(m, cmap="Blues", vmin=0)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return fig


def prediction_counts_figure(counts: dict[str, int]) -> Figure:
    fig = Figure(figsize=(3.6, 2.6))
    ax = fig.add_subplot(1, 1, 1)
    names = list(counts)
    bars = ax.bar(names, [counts[k] for k in names], color=[CLASS_COLOURS.get(k, "#555") for k in names])
    ax.bar_label(bars)
    ax.set_ylabel("files")
    ax.set_title("predictions", fontsize="medium")
    return fig


def confidence_histogram_figure(confidence_by_class: dict[str, Sequence[float]]) -> Figure:
    """Confidence (probability of the predicted class, 0.5-1) per predicted class."""
    fig = Figure(figsize=(4.6, 2.6))
    ax = fig.add_subplot(1, 1, 1)
    bins = np.linspace(0.5, 1.0, 11)
    names = [k for k, v in confidence_by_class.items() if len(v)]
    if names:  # matplotlib refuses an empty list of datasets
        ax.hist([confidence_by_class[k] for k in names], bins=bins, stacked=True, label=names,
                color=[CLASS_COLOURS.get(k) for k in names])
        ax.legend(fontsize="small")
    ax.set_xlim(0.5, 1.0)
    ax.set_xlabel("confidence in the predicted class")
    ax.set_ylabel("files")
    return fig


def deletion_figure(ks: Sequence[int], top_drop: Sequence[float], random_drop: Sequence[float], unit: str) -> Figure:
    fig = Figure(figsize=(4.2, 2.8))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(ks, top_drop, marker="o", color="#d84315", label="most-attended masked")
    ax.plot(ks, random_drop, marker="s", color="#546e7a", label="random masked")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xticks(list(ks))
    ax.set_xlabel(f"{unit} masked")
    ax.set_ylabel("drop in confidence")
    ax.legend(fontsize="small")
    return fig
