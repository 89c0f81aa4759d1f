"""The training report: data, splits, learning curves, validation per fold with mean +- std,
confusion matrix, per-speaker and per-source accuracy, and, for a retrain, the comparison
with the model in use on the same held-out speakers and the promotion decision.

:func:`render_training_report` is pure (data in, one self-contained HTML string out:
figures are embedded PNG data URIs, nothing is fetched); :func:`write_training_report`
does the I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from reports import training_figures as tfig
from reports.figures import confusion_figure, figure_to_data_uri

CLASSES = ("female", "male")
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("reports", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
)


@dataclass
class TrainingReportData:
    """Plain values (a run's metrics.json / split.json shapes); built by the CLI or the retrain task."""

    title: str
    version: str
    created_at: str
    features: dict[str, Any]
    train_config: dict[str, Any]
    data_summary: dict[str, dict[str, int]]  # {"clips": {"corpus/gender": n}, "speakers": {...}}
    splits: list[dict[str, Any]]  # Split.to_dict(): name, kind, speaker_overlap, train/val/test (+ _speakers)
    folds: list[dict[str, Any]]  # [{"name", "metrics"}]: validation metrics per fold, with learning_curve
    evaluation: dict[str, Any]  # {"name", "metrics"}: the set the confusion matrix and per-group accuracy show
    comparison: dict[str, Any] | None = None  # training.lifecycle.Comparison.as_dict()
    notes: list[str] = field(default_factory=list)


def report_evaluation(name: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "metrics": metrics}


def training_run_report_data(*, version: str, features: dict[str, Any], train_config: dict[str, Any], data_summary: dict, folds: list[dict[str, Any]]) -> TrainingReportData:
    """The report of ``voicegender train``: ``folds`` as ``[{"name", "metrics", "split"}]``, one per split."""
    return TrainingReportData(
        title=f"Training run {version}", version=version, created_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        features=features, train_config=train_config, data_summary=data_summary, splits=[f["split"] for f in folds],
        folds=[{"name": f["name"], "metrics": f["metrics"]} for f in folds], evaluation=pooled_evaluation(folds),
    )


def pooled_evaluation(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Every fold's validation files pooled: summed confusion matrix, speakers and sources merged.

    With one fold that is the fold itself; with AudioMNIST's four folds each
    speaker is validated in one fold, so the pool shows every speaker once.
    """
    if len(folds) == 1:
        return report_evaluation(folds[0]["name"], folds[0]["metrics"])
    cm = np.sum([f["metrics"]["confusion_matrix"] for f in folds], axis=0).astype(int).tolist()
    per_speaker: dict[str, Any] = {}
    per_corpus: dict[str, list[list[int]]] = {}
    for f in folds:
        per_speaker.update(f["metrics"].get("per_speaker", {}))
        for corpus, m in f["metrics"].get("per_corpus", {}).items():
            per_corpus[corpus] = np.add(per_corpus.get(corpus, [[0, 0], [0, 0]]), m["confusion_matrix"]).tolist()
    metrics = metrics_from_confusion(cm)
    metrics.update(per_speaker=per_speaker, per_corpus={c: metrics_from_confusion(m) for c, m in per_corpus.items()})
    return report_evaluation(f"validation speakers of all {len(folds)} folds, pooled", metrics)


def metrics_from_confusion(cm: list[list[int]]) -> dict[str, Any]:
    """Accuracy, balanced accuracy and per-class recall/F1 from a 2x2 matrix (rows true, in CLASSES order)."""
    m = np.asarray(cm, dtype=float)
    per_class, recalls = {}, []
    for k, name in enumerate(CLASSES):
        tp, support, predicted = m[k, k], m[k].sum(), m[:, k].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else math.nan
        f1 = 2 * precision * recall / (precision + recall) if support and precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(support)}
        if support:
            recalls.append(recall)
    n = int(m.sum())
    accuracy = float(np.trace(m) / n) if n else math.nan
    return {"n": n, "accuracy": accuracy, "error_rate": 1 - accuracy, "balanced_accuracy": float(np.mean(recalls)) if recalls else math.nan,
            "confusion_matrix": m.astype(int).tolist(), "per_class": per_class}


def data_rows(summary: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """One row per (source, gender) and a total per gender: speakers and clips."""
    rows = []
    for key in sorted(summary.get("clips", {})):
        corpus, gender = key.rsplit("/", 1)
        rows.append({"source": corpus, "gender": gender, "speakers": summary.get("speakers", {}).get(key, 0), "clips": summary["clips"][key]})
    for gender in CLASSES:
        mine = [r for r in rows if r["gender"] == gender]
        rows.append({"source": "all sources", "gender": gender, "speakers": sum(r["speakers"] for r in mine), "clips": sum(r["clips"] for r in mine), "total": True})
    return rows


def split_rows(splits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": s["name"], "kind": s["kind"], "speaker_overlap": s.get("speaker_overlap", False), "seed": s.get("seed"),
            **{f"{part}_clips": len(s.get(part, [])) for part in ("train", "val", "test")},
            **{f"{part}_speakers": len(s.get(f"{part}_speakers", [])) for part in ("train", "val", "test")},
        }
        for s in splits
    ]


def fold_rows(folds: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    """Per-fold validation numbers, and their mean and sample std (0 for one fold)."""
    keys = ("balanced_accuracy", "error_rate", "f1_female", "f1_male")
    rows = []
    for f in folds:
        m = f["metrics"]
        rows.append({"name": f["name"], "n": m["n"], "balanced_accuracy": m["balanced_accuracy"], "error_rate": m["error_rate"],
                     "f1_female": m["per_class"]["female"]["f1"], "f1_male": m["per_class"]["male"]["f1"]})
    stats = {}
    for k in keys:
        values = np.asarray([r[k] for r in rows], dtype=float)
        stats[k] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    return rows, stats


def speaker_rows(evaluation: dict[str, Any], comparison: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Per speaker of the evaluation set, worst first; with a comparison, the active model's accuracy beside it."""
    per_speaker = evaluation["metrics"].get("per_speaker", {})
    other = ((comparison or {}).get("active") or {}).get("per_speaker", {})
    rows = [{"speaker": s, "gender": v["gender"], "n": v["n"], "accuracy": v["accuracy"], "active_accuracy": other.get(s, {}).get("accuracy")}
            for s, v in per_speaker.items()]
    return sorted(rows, key=lambda r: (r["accuracy"], r["speaker"]))


def source_rows(evaluation: dict[str, Any], comparison: dict[str, Any] | None) -> list[dict[str, Any]]:
    other = ((comparison or {}).get("active") or {}).get("per_corpus", {})
    return [
        {"source": c, "n": m["n"], "accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"],
         "active_balanced_accuracy": other.get(c, {}).get("balanced_accuracy")}
        for c, m in sorted(evaluation["metrics"].get("per_corpus", {}).items())
    ]


def comparison_rows(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for role in ("candidate", "active"):
        m = comparison[role]
        rows.append({"role": role, "version": comparison[f"{role}_version"], "n": m["n"], "balanced_accuracy": m["balanced_accuracy"],
                     "accuracy": m["accuracy"], "recall_female": m["per_class"]["female"]["recall"], "recall_male": m["per_class"]["male"]["recall"]})
    return rows


def render_figures(data: TrainingReportData) -> dict[str, str]:
    """Every figure as a PNG data URI, keyed by name."""
    figs = {}
    curves = {f["name"]: f["metrics"]["learning_curve"] for f in data.folds if f["metrics"].get("learning_curve")}
    if curves:
        figs["learning_curve"] = tfig.learning_curve_figure(curves)
    m = data.evaluation["metrics"]
    figs["confusion"] = confusion_figure(m["confusion_matrix"], CLASSES)
    if m.get("per_speaker"):
        figs["per_speaker"] = tfig.per_speaker_figure(m["per_speaker"])
    if m.get("per_corpus"):
        figs["per_source"] = tfig.per_source_figure(m["per_corpus"])
    if data.comparison:
        c = data.comparison
        figs["comparison"] = tfig.comparison_figure({f"candidate {c['candidate_version']}": c["candidate"], f"active {c['active_version']}": c["active"]})
    return {name: figure_to_data_uri(f) for name, f in figs.items()}


def render_training_report(data: TrainingReportData) -> str:
    """The report as one HTML string; images embedded, no external requests."""
    folds, fold_stats = fold_rows(data.folds)
    return _ENV.get_template("training_report.html").render(
        data=data,
        data_rows=data_rows(data.data_summary),
        split_rows=split_rows(data.splits),
        folds=folds,
        fold_stats=fold_stats,
        speakers=speaker_rows(data.evaluation, data.comparison),
        sources=source_rows(data.evaluation, data.comparison),
        comparison=comparison_rows(data.comparison) if data.comparison else [],
        figures=render_figures(data),
    )


def write_training_report(path: Path, data: TrainingReportData) -> Path:
    """Render and write atomically (a reader never sees half a report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(render_training_report(data), encoding="utf-8")
    tmp.replace(path)
    return path
