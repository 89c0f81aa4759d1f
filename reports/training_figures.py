"""Figures of the training report, as matplotlib ``Figure`` objects (no pyplot)."""
from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

GENDER_COLOURS = {"female": "#c2185b", "male": "#1565c0"}
MAX_SPEAKER_BARS = 60  # beyond this the plot shows the worst speakers; the table lists all


def learning_curve_figure(curves: dict[str, list[dict[str, float]]]) -> Figure:
    """Training loss and validation balanced accuracy against step, one line per fold."""
    fig = Figure(figsize=(8, 3.2))
    loss_ax, acc_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, points in curves.items():
        steps = [p["step"] for p in points]
        loss_ax.plot(steps, [p["train_loss"] for p in points], marker=".", label=name)
        acc_ax.plot(steps, [p["val_balanced_accuracy"] for p in points], marker=".", label=name)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("training loss (mean since last point)")
    acc_ax.set_xlabel("step")
    acc_ax.set_ylabel("validation balanced accuracy")
    acc_ax.set_ylim(0.0, 1.02)
    acc_ax.axhline(0.5, color="grey", linewidth=0.6, linestyle=":")
    if len(curves) > 1:
        acc_ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def per_speaker_figure(per_speaker: dict[str, dict[str, Any]]) -> Figure:
    """Accuracy per speaker (worst first), coloured by the speaker's gender."""
    rows = sorted(per_speaker.items(), key=lambda kv: (kv[1]["accuracy"], kv[0]))[:MAX_SPEAKER_BARS]
    fig = Figure(figsize=(7, 0.6 + 0.22 * max(1, len(rows))))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(rows))
    ax.barh(y, [r["accuracy"] for _, r in rows], color=[GENDER_COLOURS.get(r["gender"], "grey") for _, r in rows])
    ax.set_yticks(y, [f"{name} ({r['n']})" for name, r in rows], fontsize="small")
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (files)")
    for gender, colour in GENDER_COLOURS.items():
        ax.bar([0], [0], color=colour, label=gender)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")  # outside: never over a bar
    fig.tight_layout()
    return fig


def per_source_figure(per_corpus: dict[str, dict[str, Any]]) -> Figure:
    """Balanced accuracy per source corpus, with its file count."""
    names = sorted(per_corpus)
    fig = Figure(figsize=(max(3.5, 1.1 * len(names) + 1.5), 3.0))
    ax = fig.add_subplot(1, 1, 1)
    values = [per_corpus[n]["balanced_accuracy"] for n in names]
    ax.bar(range(len(names)), values, color="#607d8b")
    ax.set_xticks(range(len(names)), [f"{n}\n(n={per_corpus[n]['n']})" for n in names], fontsize="small")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("balanced accuracy")
    ax.axhline(0.5, color="grey", linewidth=0.6, linestyle=":")
    fig.tight_layout()
    return fig


def comparison_figure(models: dict[str, dict[str, Any]]) -> Figure:
    """Balanced accuracy and recall per class of each model, on the same held-out files."""
    measures = ("balanced_accuracy", "recall female", "recall male")
    fig = Figure(figsize=(6, 3.0))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(models))
    for k, (name, m) in enumerate(models.items()):
        values = [m["balanced_accuracy"], m["per_class"]["female"]["recall"], m["per_class"]["male"]["recall"]]
        ax.bar(np.arange(len(measures)) + k * width, values, width=width, label=name)
    ax.set_xticks(np.arange(len(measures)) + width * (len(models) - 1) / 2, list(measures))
    ax.set_ylim(0, 1.05)
    ax.axhline(0.5, color="grey", linewidth=0.6, linestyle=":")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig
