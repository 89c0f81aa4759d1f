"""Recalibration's fitting pieces: the bias-only Platt fit, the weighted AUC, refusals before any audio is scored."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from classifier.errors import InvalidDataset
from classifier.features import logmel_config
from classifier.model import GenderResNet, ModelBundle
from training.calibrate import fit_bias, recalibrate, weighted_auc
from training.loop import fit_platt
from training.sources import LabelledClip


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
    threshold = -cal.bias / cal.scale
    assert -3.0 < threshold < -0.6  # finite, within the clips' range, far below the old 0
    assert np.mean((z >= threshold) == y) >= 5 / 6
    assert abs(fit_platt(z, y, w).scale) > 10 * abs(cal.scale)  # why the scale is held by default


def test_weighted_auc_matches_sklearn():
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(0, 1, 300), 1)  # rounded: ties count half in both
    y = rng.random(300) < 0.4
    w = rng.random(300)
    assert weighted_auc(scores, y, w) == pytest.approx(roc_auc_score(y, scores, sample_weight=w), abs=1e-12)


def test_one_gender_is_refused_before_any_audio_is_scored(tmp_path):
    config = logmel_config(sample_rate=8000, n_mels=32)
    bundle = ModelBundle(model=GenderResNet(config.n_bins), features=config, version="t")
    clips = [LabelledClip(tmp_path / f"{i}.wav", speaker=f"s{i}", gender="female", corpus="c") for i in range(3)]
    waves = [np.zeros(8000, np.float32), np.zeros(8000, np.float32), None]
    with pytest.raises(InvalidDataset, match="both genders; got 2 clip"):
        recalibrate(bundle, clips, waves)
