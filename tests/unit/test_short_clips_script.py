"""scripts/short_clips.py's paired bootstrap on scores whose answers are known by hand."""
import sys
from pathlib import Path

import numpy as np
import pytest

# As when the script runs: its folder on sys.path, for the helpers it shares with codec_robustness.py.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import short_clips


def _excerpts():
    # 10 women and 10 men, 3 excerpts each.
    speakers = [(g, k) for g in ("f", "m") for k in range(10) for _ in range(3)]
    is_female = np.array([g == "f" for g, _ in speakers])
    return speakers, is_female


def test_a_fill_that_fixes_the_wrong_womens_excerpts_gains_by_exactly_that_and_its_interval_excludes_zero():
    speakers, is_female = _excerpts()
    before = np.where(is_female, 1.0, -1.0)
    before[:12] = -1.0  # the first 4 women wrong on every excerpt: balanced accuracy (18/30 + 1) / 2
    after = before.copy()
    after[:12] = 1.0  # the fill puts them right
    delta, lo, hi = short_clips.paired_bootstrap(after, before, is_female, speakers, 0.0, draws=500)
    assert delta == pytest.approx(1.0 - (18 / 30 + 1) / 2)
    # No draw can lose; one misses all 4 of those women (gains 0) only 0.6**10 of the time, under the 2.5 % tail.
    assert 0 < lo <= delta <= hi


def test_the_same_scores_differ_by_nothing_and_a_draw_keeps_both_genders():
    speakers, is_female = _excerpts()
    z = np.where(is_female, 0.5, -0.5)
    z[0] = -0.5
    assert short_clips.paired_bootstrap(z, z, is_female, speakers, 0.0, draws=200) == (0.0, 0.0, 0.0)


def test_a_second_model_is_cut_at_its_own_threshold():
    """Another model's log-odds, shifted by its calibration, score the same once each is cut at its own threshold."""
    speakers, is_female = _excerpts()
    z = np.where(is_female, 0.5, -0.5)
    z[:3] = -0.5  # one woman wrong on all three excerpts
    other = z - 2.0  # the same ranking, calibrated 2 log-odds lower
    assert short_clips.paired_bootstrap(z, other, is_female, speakers, 0.0, threshold_other=-2.0, draws=200) == (0.0, 0.0, 0.0)
    delta, _, _ = short_clips.paired_bootstrap(z, other, is_female, speakers, 0.0, draws=200)  # cut at 0, every excerpt of other reads male
    assert delta == pytest.approx((27 / 30 + 1) / 2 - 0.5)
