"""Recalibration on raw log-odds: the bias-only Platt fit, the weighted AUC, the new bundle, and what is refused."""
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from classifier.errors import InvalidDataset
from classifier.features import logmel_config
from classifier.model import GenderResNet, ModelBundle
from training.calibrate import CalibrationRefused, fit_bias, recalibrate, weighted_auc
from training.loop import fit_platt


def test_bias_only_fit_recovers_a_known_bias_with_the_scale_held():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, 20_000)
    y = rng.random(len(z)) < 1 / (1 + np.exp(-(1.5 * z - 2.0)))
    cal = fit_bias(z, y, np.ones(len(z)), scale=1.5)
    assert cal.scale == 1.5
    assert cal.bias == pytest.approx(-2.0, abs=0.1)


def test_separable_clips_give_a_finite_bias_where_a_free_scale_runs_off():
    z = np.array([-3.0, -2.5, -2.2, -1.9, -1.0, -0.6])  # every woman above every man: a channel moved them all down
    y = np.array([False, False, False, True, True, True])
    w = np.ones(len(z))
    cal = fit_bias(z, y, w, scale=1.5)
    threshold = cal.threshold_log_odds
    assert float(cal.p_female(torch.tensor(threshold))) == pytest.approx(0.5)
    assert -3.0 < threshold < -0.6  # finite, within the clips' range, far below the old 0
    assert np.mean((z >= threshold) == y) >= 5 / 6
    assert abs(fit_platt(z, y, w).scale) > 10 * abs(cal.scale)  # why the scale is held by default


def test_weighted_auc_matches_sklearn():
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(0, 1, 300), 1)  # rounded: ties count half in both
    y = rng.random(300) < 0.4
    w = rng.random(300)
    assert weighted_auc(scores, y, w) == pytest.approx(roc_auc_score(y, scores, sample_weight=w), abs=1e-12)


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    config = logmel_config(sample_rate=8000, n_mels=32)
    return ModelBundle(model=GenderResNet(config.n_bins), features=config, version="v1", metrics={"balanced_accuracy": 0.9})


def _moved_channel(n_per_speaker=10, speakers_per_gender=3, seed=0):
    """Log-odds of a channel that moved everyone 3 down: women around -1, men around -5."""
    rng = np.random.default_rng(seed)
    z, f, spk = [], [], []
    for female, centre in ((True, -1.0), (False, -5.0)):
        for k in range(speakers_per_gender):
            z += list(rng.normal(centre, 1.0, n_per_speaker))
            f += [female] * n_per_speaker
            spk += [f"{'f' if female else 'm'}{k}"] * n_per_speaker
    return np.array(z), np.array(f), spk


def test_a_moved_channel_gets_its_threshold_back_and_nothing_else_changes(bundle):
    z, f, spk = _moved_channel()
    new, report = recalibrate(bundle, z, f, spk, source="mine")
    assert report["before"]["balanced_accuracy"] <= 0.6  # raw 0 calls nearly everyone male
    assert report["after"]["balanced_accuracy"] >= 0.95
    assert -4.0 < report["after"]["threshold_log_odds"] < -2.0
    assert new.calibration.scale == bundle.calibration.scale and bundle.calibration.bias == 0.0  # the original is untouched
    assert new.model is bundle.model and new.features is bundle.features
    assert new.version.startswith("v1+cal-") and new.info["recalibrated"]["from_version"] == "v1"
    assert new.metrics["source_validation_before_recalibration"] == {"balanced_accuracy": 0.9}
    assert report["clips"] == {"female": 30, "male": 30} and report["speakers"] == {"female": 3, "male": 3}
    assert report["warnings"] == []


def test_few_clips_are_fitted_with_a_warning_and_refit_scale_moves_the_scale(bundle):
    z, f, spk = _moved_channel(n_per_speaker=4, speakers_per_gender=1)
    new, report = recalibrate(bundle, z, f, spk, refit_scale=True, version="mine-1")
    assert new.version == "mine-1" and report["method"] == "platt (scale and bias)"
    assert new.calibration.scale != bundle.calibration.scale and new.calibration.scale > 0
    assert any("only 4 female clip(s)" in w for w in report["warnings"])
    assert any("only 1 male speaker(s)" in w for w in report["warnings"])


def test_labels_the_model_ranks_backwards_are_refused(bundle):
    z, f, spk = _moved_channel()
    with pytest.raises(CalibrationRefused, match=r"backwards \(AUC 0\.0"):
        recalibrate(bundle, z, ~f, spk)


def test_one_gender_is_refused(bundle):
    with pytest.raises(InvalidDataset, match="both genders; got 2 usable clip.* of: female"):
        recalibrate(bundle, np.array([0.3, -1.0]), np.array([True, True]), ["a", "b"])
    with pytest.raises(InvalidDataset, match="got 0 usable clip.* of: none"):
        recalibrate(bundle, np.zeros(0), np.zeros(0, bool), [])
