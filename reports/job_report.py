"""The job report: summary, confusion matrix and F1 where labels exist, attention, per-file table."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from reports.figures import attention_profile_figure, confusion_figure, figure_to_data_uri

CLASSES = ("female", "male")
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("reports", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
)


@dataclass
class JobReportData:
    """Everything the report shows, as plain values (the worker gathers it from the job table)."""

    job_id: str
    state: str
    source: str
    label_source: str | None
    model_version: str
    model_metrics: dict[str, Any]
    feature_axis: list[float]
    feature_axis_label: str
    created_at: str
    finished_at: str
    clips: list[dict[str, Any]] = field(default_factory=list)  # path, label, prediction, p_female, duration_s, windows, error, attention


def summarise(data: JobReportData) -> dict[str, Any]:
    """Counts, and the labelled metrics when at least one classified clip has a true label."""
    done = [c for c in data.clips if c["prediction"] in CLASSES]
    failed = [c for c in data.clips if c["error"]]
    labelled = [c for c in done if c["label"] in CLASSES]
    out: dict[str, Any] = {
        "total": len(data.clips),
        "done": len(done),
        "failed": len(failed),
        "by_prediction": {k: sum(c["prediction"] == k for c in data.clips) for k in (*CLASSES, "uncertain")},
        "labelled": len(labelled),
        "errors_by_reason": _count(c.get("error_reason") or "error" for c in failed),
    }
    if labelled:
        out["metrics"] = _label_metrics([c["label"] for c in labelled], [c["prediction"] for c in labelled])
    return out


def _count(items) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return dict(sorted(counts.items()))


def _label_metrics(y_true: list[str], y_pred: list[str]) -> dict[str, Any]:
    cm = [[sum(t == a and p == b for t, p in zip(y_true, y_pred)) for b in CLASSES] for a in CLASSES]
    recalls, f1 = [], {}
    for k, name in enumerate(CLASSES):
        tp, support, predicted = cm[k][k], sum(cm[k]), cm[0][k] + cm[1][k]
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1[name] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if support:
            recalls.append(recall)
    return {
        "confusion_matrix": cm,
        "accuracy": (cm[0][0] + cm[1][1]) / len(y_true),
        "balanced_accuracy": float(np.mean(recalls)),
        "f1": f1,
    }


def render_job_report(data: JobReportData) -> str:
    """The report as one self-contained HTML string (figures embedded)."""
    summary = summarise(data)
    figures = {}
    if "metrics" in summary:
        figures["confusion"] = figure_to_data_uri(confusion_figure(summary["metrics"]["confusion_matrix"], CLASSES))
    profiles = {
        name: np.mean([c["attention"] for c in data.clips if c["prediction"] == name and c["attention"]], axis=0)
        for name in CLASSES
        if any(c["prediction"] == name and c["attention"] for c in data.clips)
    }
    if profiles:
        fig = attention_profile_figure(np.asarray(data.feature_axis), data.feature_axis_label, profiles)
        figures["attention"] = figure_to_data_uri(fig)
    misclassified_first = sorted(data.clips, key=lambda c: (not (c["label"] and c["prediction"] in CLASSES and c["label"] != c["prediction"]), c["path"]))
    return _ENV.get_template("job_report.html").render(data=data, summary=summary, figures=figures, clips=misclassified_first)


def write_job_report(path: Path, data: JobReportData) -> Path:
    """Render and write atomically (a reader never sees half a report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_job_report(data), encoding="utf-8")
    os.replace(tmp, path)
    return path
