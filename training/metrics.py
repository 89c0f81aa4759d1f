"""Evaluation metrics: error rate, balanced accuracy, confusion matrix, F1, per speaker."""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

CLASSES = ("female", "male")


def confusion_matrix(y_true: list[str], y_pred: list[str]) -> list[list[int]]:
    """Rows are true classes, columns predicted, in ``CLASSES`` order."""
    m = [[0, 0], [0, 0]]
    for t, p in zip(y_true, y_pred):
        m[CLASSES.index(t)][CLASSES.index(p)] += 1
    return m


def classification_metrics(y_true: list[str], y_pred: list[str]) -> dict:
    """Error rate, accuracy, balanced accuracy, per-class precision/recall/F1, confusion matrix."""
    cm = np.array(confusion_matrix(y_true, y_pred), dtype=float)
    n = cm.sum()
    per_class = {}
    recalls = []
    for k, name in enumerate(CLASSES):
        tp, support, predicted = cm[k, k], cm[k].sum(), cm[:, k].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if support and (precision + recall) else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(support)}
        if support:
            recalls.append(recall)
    accuracy = float(np.trace(cm) / n) if n else float("nan")
    return {
        "n": int(n),
        "accuracy": accuracy,
        "error_rate": 1 - accuracy,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
        "confusion_matrix": cm.astype(int).tolist(),
        "per_class": per_class,
    }


def balanced_accuracy_at(scores: np.ndarray, is_female: np.ndarray, threshold: float) -> float:
    """Balanced accuracy per clip when "female" means a score at or above ``threshold`` (raw log-odds, or p_female at 0.5)."""
    right = (scores >= threshold) == is_female
    return float((right[is_female].mean() + right[~is_female].mean()) / 2)


def per_group_accuracy(groups: list[str], y_true: list[str], y_pred: list[str]) -> dict[str, dict]:
    """Accuracy per group (speaker, corpus): {group: {"n", "accuracy", "gender"}}."""
    acc: dict[str, list] = defaultdict(list)
    gender: dict[str, str] = {}
    for g, t, p in zip(groups, y_true, y_pred):
        acc[g].append(t == p)
        gender.setdefault(g, t)
    return {g: {"n": len(v), "accuracy": float(np.mean(v)), "gender": gender[g]} for g, v in sorted(acc.items())}


def mean_std(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "values": arr.tolist()}


def expected_calibration_error(p_female: np.ndarray, is_female: np.ndarray, *, n_bins: int = 10, weights: np.ndarray | None = None) -> float:
    """ECE of the predicted class's probability, equal-width confidence bins (optionally weighted clips)."""
    p_female = np.asarray(p_female, dtype=float)
    w = np.ones_like(p_female) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.sum()
    pred_female = p_female >= 0.5
    conf = np.where(pred_female, p_female, 1 - p_female)
    correct = pred_female == np.asarray(is_female, dtype=bool)
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf >= lo) & ((conf < hi) | (hi == 1.0))
        if in_bin.any():
            wb = w[in_bin]
            ece += wb.sum() * abs(np.average(conf[in_bin], weights=wb) - np.average(correct[in_bin], weights=wb))
    return float(ece)


def speaker_balanced_weights(speakers: list[str], is_female: np.ndarray) -> np.ndarray:
    """Clip weights under which each gender weighs half and each speaker equally within it.

    A validation set is counted in clips, and one corpus can hand it 500 clips of a
    single voice; fitting or scoring unweighted would tune the model to that voice.
    """
    is_female = np.asarray(is_female, dtype=bool)
    clips_of = Counter(speakers)
    speakers_of = Counter(f for _, f in {(s, bool(f)) for s, f in zip(speakers, is_female)})
    w = np.array([1.0 / (clips_of[s] * speakers_of[bool(f)]) for s, f in zip(speakers, is_female)])
    return w / w.sum()
