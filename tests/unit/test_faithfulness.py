"""The deletion check on a model whose evidence is known: it reads band 3 and nothing else."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from classifier.faithfulness import band_counts, deletion_drops, mask_bands, top_bands

N_BINS, N_FRAMES, BAND = 16, 10, 3


def band_model(x: torch.Tensor) -> torch.Tensor:
    """Probabilities (N, 2) from the mean of band 3 alone: positive -> class 0."""
    score = 4.0 * x[:, BAND, :].mean(dim=1)
    return torch.softmax(torch.stack([score, -score], dim=1), dim=1)


def windows(n: int = 40, seed: int = 0) -> torch.Tensor:
    """Noise in every band; band 3 carries the class (+1 or -1)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, N_BINS, N_FRAMES, generator=g)
    sign = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)
    x[:, BAND, :] += sign[:, None]
    return x


def profiles_peaked_at(band: int, n: int) -> np.ndarray:
    p = np.full((n, N_BINS), 0.1)
    p[:, band] = 1.0
    return p


def test_top_bands_orders_by_attention_and_breaks_ties_by_index():
    p = np.array([[0.1, 0.9, 0.5, 0.9], [1.0, 0.0, 0.0, 0.0]])
    assert top_bands(p, 2).tolist() == [[1, 3], [0, 1]]
    with pytest.raises(ValueError, match="k must be in 1..4, got 5"):
        top_bands(p, 5)


def test_mask_bands_replaces_exactly_the_named_rows():
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    fill = torch.tensor([-1.0, -2.0, -3.0, -4.0])
    out = mask_bands(x, np.array([[1], [3]]), fill)
    assert torch.equal(out[0, 1], torch.full((3,), -2.0)) and torch.equal(out[1, 3], torch.full((3,), -4.0))
    untouched = torch.ones(2, 4, dtype=torch.bool)
    untouched[0, 1] = untouched[1, 3] = False
    assert torch.equal(out[untouched], x[untouched])


def test_band_counts_are_distinct_and_at_least_one():
    assert band_counts(12) == [1, 2, 3]
    assert band_counts(64) == [4, 8, 16]
    assert band_counts(2) == [1]


def test_masking_the_band_the_model_reads_drops_confidence_far_more_than_random():
    x = windows()
    result = deletion_drops(band_model, x, profiles_peaked_at(BAND, len(x)), fill=torch.zeros(N_BINS), ks=[1, 2], n_random=8).summary()
    assert result.base_confidence > 0.9
    # Masking band 3 leaves the model at 0.5: the drop is the whole margin above chance.
    assert result.top_drop[0] == pytest.approx(result.base_confidence - 0.5, abs=1e-6)
    # A random band is band 3 with probability k/16.
    assert result.random_drop[0] < 0.25 * result.top_drop[0]
    assert result.is_faithful()


def test_an_explanation_pointing_elsewhere_is_not_faithful():
    x = windows()
    result = deletion_drops(band_model, x, profiles_peaked_at(10, len(x)), fill=torch.zeros(N_BINS), ks=[1, 2], n_random=8).summary()
    assert result.top_drop == pytest.approx([0.0, 0.0], abs=1e-6)  # bands 10 and 0: never band 3
    assert result.difference[0] < 0
    assert not result.is_faithful()


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="disagree"):
        deletion_drops(band_model, windows(4), np.zeros((4, 3)), fill=torch.zeros(N_BINS), ks=[1]).summary()
