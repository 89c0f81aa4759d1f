"""Figures as matplotlib ``Figure`` objects (no pyplot), embedded as PNG data URIs."""
from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib.figure import Figure


def figure_to_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def attention_profile_figure(axis: np.ndarray, axis_label: str, profiles: dict[str, np.ndarray]) -> Figure:
    """Mean per-frequency attention per predicted class, plus female minus male."""
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    for name, profile in profiles.items():
        ax.plot(axis, profile, marker=".", label=name)
    if {"female", "male"} <= profiles.keys():
        ax.plot(axis, profiles["female"] - profiles["male"], linestyle="--", color="grey", label="female - male")
    ax.set_xlabel(axis_label)
    ax.set_ylabel("mean GradCAM attention")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend(loc="best", fontsize="small")
    return fig


def confusion_figure(matrix: list[list[int]], classes: tuple[str, ...]) -> Figure:
    fig = Figure(figsize=(3.4, 3.0))
    ax = fig.add_subplot(1, 1, 1)
    m = np.asarray(matrix)
    ax.imshow(m, cmap="Blues")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return fig
