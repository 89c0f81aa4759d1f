"""scripts/holdout_report.py's figures on scores whose answers are known by hand."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("holdout_report", Path(__file__).resolve().parents[2] / "scripts" / "holdout_report.py")
holdout_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(holdout_report)


def test_figures_of_a_model_that_ranks_well_but_sits_its_threshold_wrong():
    # Women at -1.5 .. -0.5 (all below 0: called male), men at -3 .. -2: perfectly ranked.
    women = [-1.5, -1.0, -0.5, 0.5]
    men = [-3.0, -2.5, -2.0, -2.2]
    z = np.array(women + men)
    is_female = np.array([True] * 4 + [False] * 4)
    corpus = ["tel"] * 3 + ["studio"] + ["tel"] * 4
    speaker = ["w1"] * 3 + ["w2"] + ["m1"] * 4
    f = holdout_report.holdout_figures(z, is_female, corpus, speaker)
    assert f["clips"] == 8 and f["auc"] == pytest.approx(1.0)
    assert f["balanced_accuracy_at_0"] == pytest.approx((0.25 + 1.0) / 2)
    assert f["best_threshold"] == -1.5 and f["balanced_accuracy_at_best"] == pytest.approx(1.0)
    assert f["accuracy_at_0"] == {"studio/female": 1.0, "tel/female": 0.0, "tel/male": 1.0}
    assert f["speakers_with_50_clips_at_0"] == {}
    # w1's clips vote -1.0 (male: wrong), w2's 0.5 (right), m1's -2.425 (right).
    assert f["speaker_votes_right_at_0"] == {"female": "1 of 2", "male": "1 of 1"}


def test_only_speakers_with_50_clips_are_listed():
    z = np.r_[np.full(60, 1.0), np.full(40, -1.0), np.full(50, -1.0)]
    z[:6] = -1.0  # six of the first woman's 60 clips read male
    is_female = np.r_[np.ones(100, bool), np.zeros(50, bool)]
    speaker = ["a"] * 60 + ["b"] * 40 + ["m"] * 50
    f = holdout_report.holdout_figures(z, is_female, ["c"] * 150, speaker)
    assert f["speakers_with_50_clips_at_0"] == {"a": 0.9, "m": 1.0}


def test_also_at_scores_the_clips_at_another_models_threshold():
    z = np.array([-1.5, -1.0, 0.5, -3.0, -2.0, -0.8])
    is_female = np.array([True, True, True, False, False, False])
    f = holdout_report.holdout_figures(z, is_female, ["c"] * 6, ["w"] * 3 + ["m"] * 3, also_at=(-1.2, 0.0))
    # At -1.2 two of three women and two of three men are right; at 0 one woman and every man.
    assert f["balanced_accuracy_at"] == {"-1.2": pytest.approx(2 / 3), "0": pytest.approx((1 / 3 + 1) / 2)}
    assert f["accuracy_by_corpus"] == {"c/female": {"0": 0.333, "-1.2": 0.667}, "c/male": {"0": 1.0, "-1.2": 0.667}}
    # At 0 the woman is right on one clip of three; at -1.2 she and the man (-0.8 reads female) tie at two of three: the first by name.
    assert f["weakest_speaker_at"] == {
        "0": {"speaker": "w", "gender": "female", "accuracy": 0.333, "clips": 3},
        "-1.2": {"speaker": "m", "gender": "male", "accuracy": 0.667, "clips": 3},
    }


def test_an_ensemble_averages_each_clips_log_odds_and_refuses_members_of_another_split():
    a = ([3, 5, 9], np.array([1.0, -2.0, 0.5]))
    b = ([3, 5, 9], np.array([-3.0, 0.0, 0.5]))
    assert holdout_report.ensemble_log_odds([a, b]).tolist() == [-1.0, -1.0, 0.5]
    with pytest.raises(ValueError, match="different clips"):
        holdout_report.ensemble_log_odds([a, ([3, 5, 10], np.zeros(3))])


def test_a_manifest_tag_splits_the_clips_by_style_at_each_threshold():
    assert holdout_report.tag_value("emotion=angry; intensity=strong; text=Kids are talking", "emotion") == "angry"
    assert holdout_report.tag_value("emotion=angry; intensity=strong", "intensity") == "strong"
    assert holdout_report.tag_value("7", "emotion") == "" and holdout_report.tag_value("", "emotion") == ""
    # An angry man at -0.5 is male at 0 but female at -1.0; a calm man at -2 is male at both; a woman without a tag is left out.
    z = np.array([-0.5, 0.7, -2.0, -0.6, 1.0])
    is_female = np.array([False, False, False, True, True])
    styles = ["angry", "angry", "calm", "angry", ""]
    f = holdout_report.holdout_figures(z, is_female, ["c"] * 5, ["m", "m", "m", "w", "v"], also_at=(-1.0,), styles=styles)
    assert f["accuracy_by_style"] == {
        "angry/female": {"0": 0.0, "-1": 1.0},
        "angry/male": {"0": 0.5, "-1": 0.0},
        "calm/male": {"0": 1.0, "-1": 1.0},
    }
    assert holdout_report.holdout_figures(z, is_female, ["c"] * 5, ["m"] * 5)["accuracy_by_style"] == {}
