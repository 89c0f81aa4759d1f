"""The job report: summary, labelled metrics or prediction distribution, attention, faithfulness, per-file table.

:func:`render_job_report` is pure (data in, one self-contained HTML string
out: figures and audio embedded as data URIs, no external request);
:func:`write_job_report` does the I/O. User-supplied text (file names,
labels, speakers, errors) reaches the page only through jinja2's
autoescaping, never as markup.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from reports import figures as fig
from reports.job_evidence import AUDIO_MAX_S, AUDIO_MAX_SR, JobEvidence

CLASSES = ("female", "male")
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("reports", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
)
LABEL_SOURCES = {
    "labels.csv": "labels.csv in the submitted folder",
    "audiomnist": "AudioMNIST layout (audioMNIST_meta.txt)",
    "folders": "female/ and male/ folders",
    "filename": "a trailing _female / _male in the file name",
}
MFCC_NOT_FREQUENCY = (
    "Each cepstral coefficient is a cosine-weighted sum over all mel bands (a DCT of the log-mel spectrum), "
    "so it describes the overall shape of the spectrum, not the energy at any one frequency."
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
    # path, label, speaker, prediction, p_female, duration_s, windows, error, error_reason, attention, processing_ms
    clips: list[dict[str, Any]] = field(default_factory=list)
    started_at: str | None = None
    feature_kind: str = "logmel"  # "logmel" (axis in Hz) or "mfcc" (cepstral coefficients)
    gradcam_layer: str = "net.layer1"
    window_s: float = 1.0
    evidence: JobEvidence = field(default_factory=JobEvidence)


def confidence(clip: dict[str, Any]) -> float | None:
    p = clip.get("p_female")
    return None if p is None else max(p, 1 - p)


def is_misclassified(clip: dict[str, Any]) -> bool:
    return clip.get("label") in CLASSES and clip.get("prediction") in CLASSES and clip["label"] != clip["prediction"]


def summarise(data: JobReportData) -> dict[str, Any]:
    """Counts, timings, and the labelled metrics when at least one classified clip has a true label."""
    done = [c for c in data.clips if c["prediction"] in (*CLASSES, "uncertain")]
    failed = [c for c in data.clips if c["error"]]
    labelled = [c for c in done if c["label"] in CLASSES and c["prediction"] in CLASSES]
    out: dict[str, Any] = {
        "total": len(data.clips),
        "done": len(done),
        "failed": len(failed),
        "not_run": len(data.clips) - len(done) - len(failed),
        "by_prediction": {k: sum(c["prediction"] == k for c in data.clips) for k in (*CLASSES, "uncertain")},
        "labelled": len(labelled),
        "errors_by_reason": errors_by_reason(failed),
        "timings": timings(data, done),
    }
    if labelled:
        out["metrics"] = label_metrics([c["label"] for c in labelled], [c["prediction"] for c in labelled])
        out["per_speaker"] = per_speaker_accuracy(labelled, done)
        if out["per_speaker"]:
            out["speaker_metrics"] = label_metrics([r["label"] for r in out["per_speaker"]], [r["verdict"] for r in out["per_speaker"]])
    return out


def errors_by_reason(failed: list[dict[str, Any]], *, examples: int = 3) -> list[dict[str, Any]]:
    """[{reason, count, examples: [(path, message)]}], most frequent first."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in failed:
        groups.setdefault(c.get("error_reason") or "error", []).append(c)
    return [
        {"reason": reason, "count": len(cs), "examples": [(c["path"], c["error"]) for c in cs[:examples]]}
        for reason, cs in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]


def timings(data: JobReportData, done: list[dict[str, Any]]) -> dict[str, Any]:
    ms = [c["processing_ms"] for c in done if c.get("processing_ms") is not None]
    audio_s = sum(c["duration_s"] or 0.0 for c in done)
    return {
        "wall_s": _seconds_between(data.started_at or data.created_at, data.finished_at),
        "audio_s": audio_s,
        "mean_ms_per_file": float(np.mean(ms)) if ms else None,
    }


def _seconds_between(start: str, end: str) -> float | None:
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except (TypeError, ValueError):
        return None


def label_metrics(y_true: list[str], y_pred: list[str]) -> dict[str, Any]:
    """Confusion matrix (rows true, columns predicted, in CLASSES order), accuracy, balanced accuracy, F1 per class."""
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


def per_speaker_accuracy(labelled: list[dict[str, Any]], done: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """[{speaker, label, n, accuracy, p_female, verdict}] for clips with a known speaker, wrong verdicts first, then worst.

    ``accuracy`` is per file. ``verdict`` is the speaker's files voting as a
    file's windows do (mean log-odds; files marked uncertain vote too): one
    person rarely changes gender between recordings, so a speaker's verdict
    is steadier than any one short file's.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in labelled:
        if c.get("speaker"):
            groups.setdefault(str(c["speaker"]), []).append(c)
    voters: dict[str, list[float]] = {}
    for c in done:
        if c.get("speaker") and c.get("p_female") is not None:
            voters.setdefault(str(c["speaker"]), []).append(_log_odds(c["p_female"]))
    rows = []
    for s, cs in groups.items():
        z = float(np.mean(voters[s]))
        rows.append({
            "speaker": s, "label": cs[0]["label"], "n": len(cs), "accuracy": float(np.mean([c["label"] == c["prediction"] for c in cs])),
            "p_female": float(1 / (1 + np.exp(-z))), "verdict": "female" if z >= 0 else "male",
        })
    return sorted(rows, key=lambda r: (r["verdict"] == r["label"], r["accuracy"], r["speaker"]))


def _log_odds(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)  # a saturated p_female still votes, with a finite weight
    return float(np.log(p / (1 - p)))


def model_metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """The checkpoint's scalar validation metrics (and F1 per class) as (name, value) text."""
    rows = [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for name, values in (metrics.get("per_class") or {}).items():
        if isinstance(values, dict) and isinstance(values.get("f1"), (int, float)):
            rows.append((f"F1 {name}", f"{values['f1']:.4f}"))
    for k in ("split", "protocol", "speaker_overlap"):
        if isinstance(metrics.get(k), (str, bool)):
            rows.append((k, str(metrics[k])))
    return rows


def attention_profiles(data: JobReportData) -> dict[str, np.ndarray]:
    """Mean per-bin attention over the clips predicted each class (from the per-clip profiles in the table)."""
    out = {}
    for name in CLASSES:
        rows = [c["attention"] for c in data.clips if c["prediction"] == name and c["attention"]]
        if rows and all(len(r) == len(data.feature_axis) for r in rows):
            out[name] = np.mean(rows, axis=0)
    return out


def render_figures(data: JobReportData, summary: dict[str, Any], profiles: dict[str, np.ndarray]) -> dict[str, str]:
    """Every figure of the report as a PNG data URI, keyed by name."""
    axis, label = np.asarray(data.feature_axis), data.feature_axis_label
    counts = {k: n for k, n in summary["by_prediction"].items() if n or k != "uncertain"}
    out = {"predictions": fig.prediction_counts_figure(counts)}
    out["confidence"] = fig.confidence_histogram_figure(
        {k: [confidence(c) for c in data.clips if c["prediction"] == k] for k in (*CLASSES, "uncertain")}
    )
    if "metrics" in summary:
        out["confusion"] = fig.confusion_figure(summary["metrics"]["confusion_matrix"], CLASSES)
    if profiles:
        out["attention"] = fig.attention_profile_figure(axis, label, profiles)
    maps = class_mean_maps(data)
    if maps:
        out["maps"] = fig.class_maps_figure(axis, label, maps, data.window_s)
    faith = data.evidence.faithfulness
    if faith is not None:
        unit = "mel bands" if data.feature_kind == "logmel" else "coefficients"
        out["faithfulness"] = fig.deletion_figure(faith.ks, faith.top_drop, faith.random_drop, unit)
    for i, ex in enumerate(data.evidence.examples):
        out[f"example{i}"] = fig.example_figure(axis, label, ex.features, ex.cam, data.window_s)
    return {name: fig.figure_to_data_uri(f) for name, f in out.items()}


def class_mean_maps(data: JobReportData) -> dict[str, np.ndarray]:
    maps = data.evidence.class_maps
    if maps is None or maps.sums.shape[1] != len(data.feature_axis):
        return {}
    return {name: m for name in CLASSES if (m := maps.mean(name)) is not None}


def profile_rows(data: JobReportData, profiles: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One row per feature bin: its axis value and each class's mean attention (the plot, as numbers)."""
    return [
        {"bin": i, "value": v, **{name: float(p[i]) for name, p in profiles.items()},
         "difference": float(profiles["female"][i] - profiles["male"][i]) if len(profiles) == 2 else None}
        for i, v in enumerate(data.feature_axis)
    ]


def faithfulness_reading(data: JobReportData) -> str | None:
    faith = data.evidence.faithfulness
    if faith is None:
        return None
    if faith.is_faithful():
        return ("Masking the most-attended bands lowers the model's confidence clearly more than masking as many random bands "
                "(at every size, by more than two standard errors): the maps point at evidence the model uses.")
    return ("Masking the most-attended bands does not lower confidence clearly more than random bands: "
            "for this job the maps are weak evidence of what the model relies on.")


def table_rows(data: JobReportData) -> list[dict[str, Any]]:
    """The per-file rows, misclassified first, then failed, then by path."""
    optional = {"speaker": None, "label": None, "error": None, "duration_s": None, "windows": None}
    rows = [{**optional, **c, "confidence": confidence(c), "misclassified": is_misclassified(c)} for c in data.clips]
    return sorted(rows, key=lambda c: (not c["misclassified"], not c["error"], c["path"]))


def render_job_report(data: JobReportData) -> str:
    """The report as one self-contained HTML string."""
    summary = summarise(data)
    profiles = attention_profiles(data)
    return _ENV.get_template("job_report.html").render(
        data=data,
        summary=summary,
        figures=render_figures(data, summary, profiles),
        rows=table_rows(data),
        profile_rows=profile_rows(data, profiles) if profiles else [],
        profile_classes=list(profiles),
        model_rows=model_metric_rows(data.model_metrics),
        faithfulness=data.evidence.faithfulness,
        faithfulness_reading=faithfulness_reading(data),
        mfcc_note=MFCC_NOT_FREQUENCY,
        label_source=LABEL_SOURCES.get(data.label_source or "", data.label_source),
        any_speaker=any(c.get("speaker") for c in data.clips),
        audio_max_s=AUDIO_MAX_S,
        audio_max_sr=AUDIO_MAX_SR,
    )


def write_job_report(path: Path, data: JobReportData) -> Path:
    """Render and write atomically (a reader never sees half a report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(render_job_report(data), encoding="utf-8")
    os.replace(tmp, path)
    return path
