"""The training report: self-contained HTML, numbers that follow from the inputs, escaping."""
from __future__ import annotations

import re

import jinja2
import pytest

from reports.training_report import (
    TrainingReportData, fold_rows, metrics_from_confusion, pooled_evaluation, render_training_report, report_evaluation,
    training_run_report_data, write_training_report,
)


def metrics(cm: list[list[int]], *, speakers: dict[str, tuple[str, int, float]], corpus: str = "audiomnist", curve: bool = True) -> dict:
    m = metrics_from_confusion(cm)
    m["per_speaker"] = {s: {"gender": g, "n": n, "accuracy": a} for s, (g, n, a) in speakers.items()}
    m["per_corpus"] = {corpus: metrics_from_confusion(cm)}
    if curve:
        m["learning_curve"] = [{"step": 10, "train_loss": 0.6, "val_balanced_accuracy": 0.6}, {"step": 20, "train_loss": 0.3, "val_balanced_accuracy": 0.9}]
    return m


def folds() -> list[dict]:
    split = {"name": "f", "kind": "audiomnist_fold", "speaker_overlap": False, "train": [0, 1], "val": [2], "test": [],
             "train_speakers": ["a", "b"], "val_speakers": ["c"], "test_speakers": []}
    return [
        {"name": "fold0", "metrics": metrics([[4, 0], [0, 4]], speakers={"s1": ("female", 4, 1.0), "s2": ("male", 4, 1.0)}), "split": split},
        {"name": "fold1", "metrics": metrics([[3, 1], [1, 3]], speakers={"s3": ("female", 4, 0.75), "s4": ("male", 4, 0.75)}), "split": split},
    ]


def test_confusion_metrics_match_hand_computed_values():
    m = metrics_from_confusion([[3, 1], [2, 4]])  # female recall 3/4, male recall 4/6
    assert m["n"] == 10 and m["accuracy"] == pytest.approx(0.7)
    assert m["balanced_accuracy"] == pytest.approx((0.75 + 4 / 6) / 2)
    assert m["per_class"]["female"]["f1"] == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))


def test_fold_mean_and_sample_std():
    rows, stats = fold_rows(folds())
    assert [r["balanced_accuracy"] for r in rows] == [1.0, 0.75]
    assert stats["balanced_accuracy"]["mean"] == pytest.approx(0.875)
    assert stats["balanced_accuracy"]["std"] == pytest.approx(0.1767767, abs=1e-6)  # sample std of (1, 0.75)


def test_pooled_evaluation_sums_folds_and_keeps_every_speaker():
    pooled = pooled_evaluation(folds())["metrics"]
    assert pooled["confusion_matrix"] == [[7, 1], [1, 7]]
    assert sorted(pooled["per_speaker"]) == ["s1", "s2", "s3", "s4"]
    assert pooled["per_corpus"]["audiomnist"]["n"] == 16


def test_training_run_report_is_self_contained_and_shows_mean_and_std(tmp_path):
    data = training_run_report_data(
        version="v1", features={"kind": "logmel", "sample_rate": 8000}, train_config={"steps": 20},
        data_summary={"clips": {"audiomnist/female": 8, "audiomnist/male": 8}, "speakers": {"audiomnist/female": 2, "audiomnist/male": 2}},
        folds=folds(),
    )
    path = write_training_report(tmp_path / "r" / "report.html", data)
    html = path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing fetched
    assert html.count('src="data:image/png;base64,') == 4  # learning curve, confusion, per speaker, per source
    assert "0.8750 &plusmn; 0.1768" in html
    assert "Promotion decision" not in html  # a plain training run decides nothing
    assert not list(tmp_path.glob("r/*.tmp"))


def retrain_data(speaker: str = "s1") -> TrainingReportData:
    cand = metrics([[4, 0], [0, 4]], speakers={speaker: ("female", 4, 1.0), "s2": ("male", 4, 1.0)}, curve=False)
    active = metrics([[2, 2], [0, 4]], speakers={speaker: ("female", 4, 0.5), "s2": ("male", 4, 1.0)}, curve=False)
    comparison = {"candidate_version": "retrain-2", "active_version": "starter-1", "margin": 0.01, "decision": "refused",
                  "reason": "candidate worse", "held_out_speakers": [speaker, "s2"], "candidate": cand, "active": active}
    f = folds()[0]
    return TrainingReportData(
        title="Retrain", version="retrain-2", created_at="now", features={"kind": "logmel", "sample_rate": 8000}, train_config={},
        data_summary={"clips": {"jobs/female": 1}, "speakers": {"jobs/female": 1}}, splits=[f["split"]],
        folds=[{"name": "validation", "metrics": f["metrics"]}], evaluation=report_evaluation("held-out speakers", cand), comparison=comparison,
    )


def test_retrain_report_shows_both_models_and_the_decision():
    html = render_training_report(retrain_data())
    assert 'class="decision refused"' in html and "candidate worse" in html
    assert re.search(r'id="compare-candidate">.*?retrain-2.*?1\.0000', html, re.S)
    assert re.search(r'id="compare-active">.*?starter-1.*?0\.7500', html, re.S)  # (0.5 + 1.0) / 2
    assert html.count('src="data:image/png;base64,') == 5  # comparison, learning curve, confusion, per speaker, per source


def test_names_are_escaped():
    html = render_training_report(retrain_data(speaker="<script>alert(1)</script>"))
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_a_missing_value_is_an_error_not_a_blank():
    data = retrain_data()
    del data.comparison["reason"]
    with pytest.raises(jinja2.UndefinedError):
        render_training_report(data)
