"""Band-statistics mixing (Freq-MixStyle) for training: what moves, what stays, and how often."""
import pytest
import torch

from classifier.features import logmel_config
from training.bandmix import mix_band_statistics
from training.loop import TrainConfig, training_features


def _feats(b=64, f=48, t=98, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Each crop its own band levels and spreads, as crops from different channels have.
    return torch.randn(b, f, 1, generator=g) * 5 + torch.randn(b, f, t, generator=g) * torch.rand(b, f, 1, generator=g).add(0.5)


def _changed(out, x):
    return ~torch.isclose(out, x, atol=1e-5).all(dim=(1, 2))


def test_prob_zero_changes_nothing():
    x = _feats()
    assert torch.equal(mix_band_statistics(x, prob=0.0, generator=torch.Generator().manual_seed(3)), x)


def test_a_mixed_crop_keeps_its_pattern_within_each_band_and_takes_band_statistics_between_its_own_and_another_crops():
    x = _feats()
    out = mix_band_statistics(x, prob=1.0, generator=torch.Generator().manual_seed(1))
    mean, std = x.mean(2), x.std(2)
    out_mean, out_std = out.mean(2), out.std(2)
    for k in range(x.shape[0]):
        # The time course within each band is the crop's own, only shifted and scaled.
        z = (x[k] - mean[k, :, None]) / std[k, :, None]
        z_out = (out[k] - out_mean[k, :, None]) / out_std[k, :, None]
        assert torch.allclose(z, z_out, atol=1e-3)
        # One mixing share and one partner for all bands: the new statistics lie on the segment
        # from the crop's own to exactly one other crop's.
        fits = []
        for j in range(x.shape[0]):
            span = mean[j] - mean[k]
            lam = float(((out_mean[k] - mean[k]) * span).sum() / span.pow(2).sum().clamp_min(1e-12)) if j != k else 0.0
            if -1e-4 <= lam <= 1 + 1e-4 and torch.allclose(out_mean[k], mean[k] + lam * span, atol=1e-3) and torch.allclose(out_std[k], std[k] + lam * (std[j] - std[k]), atol=1e-3):
                fits.append(j)
        assert fits, f"crop {k}: its band statistics are no mix of its own and another crop's"
    # Small alpha: most crops end far from their own statistics or near them, and many move.
    moved = (out_mean - mean).abs().mean(1) > 0.5
    assert 0.2 < moved.float().mean() < 0.95


def test_prob_sets_the_share_of_mixed_crops_and_a_seed_repeats_it():
    x = _feats(b=2000, t=20)
    a = mix_band_statistics(x, prob=0.3, generator=torch.Generator().manual_seed(7))
    b = mix_band_statistics(x, prob=0.3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    share = _changed(a, x).float().mean().item()
    # A crop drawn as its own partner, or with a share near 1, is left (nearly) as it was.
    assert 0.2 < share < 0.32


@pytest.mark.parametrize("kwargs, match", [({"prob": 1.5}, "1.5"), ({"prob": 0.5, "alpha": 0.0}, "alpha")])
def test_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mix_band_statistics(_feats(b=2), generator=torch.Generator(), **kwargs)


def test_training_features_mix_only_when_asked_and_masking_still_fills_with_the_bins_mean():
    features = logmel_config(sample_rate=8000, n_mels=48)
    crops = torch.randn(8, features.window_samples, generator=torch.Generator().manual_seed(0)) * 0.1

    class Standardised(torch.nn.Module):
        feature_mean = torch.full((1, 1, 48, 1), -123.0)

    def feats(**cfg):
        return training_features(Standardised(), crops, TrainConfig(batch_size=8, bf16=False, **cfg), features, torch.Generator().manual_seed(5))

    plain, mixed = feats(), feats(band_mix_prob=1.0)
    assert _changed(mixed, plain).any()
    masked = feats(band_mix_prob=1.0, spec_mask_prob=1.0)
    assert (masked == -123.0).any()  # the fill is applied after the mix, so it is not rescaled
