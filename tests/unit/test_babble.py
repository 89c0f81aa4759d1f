"""Babble for training: other crops of the batch behind a share of the crops, at what level, and never the crop itself."""
import pytest
import torch

from classifier.features import logmel_config
from training.babble import add_babble
from training.loop import TrainConfig, train_split, training_features

SR = 8_000


def _voices(b=16, n=SR):
    """Crops that are each a tone of its own frequency and level: orthogonal, so who was mixed in can be read back."""
    t = torch.arange(n) / SR
    freqs = 100.0 + 50.0 * torch.arange(b)[:, None]  # whole cycles per second: exactly orthogonal over 1 s
    levels = 0.05 + 0.05 * torch.arange(b)[:, None] / b
    return levels * torch.sin(2 * torch.pi * freqs * t)


def test_prob_zero_changes_nothing_and_prob_one_changes_every_crop():
    x = _voices()
    assert torch.equal(add_babble(x, prob=0.0, generator=torch.Generator().manual_seed(0)), x)
    out = add_babble(x, prob=1.0, generator=torch.Generator().manual_seed(0))
    assert not torch.isclose(out, x, atol=1e-6).all(dim=1).any()


def test_each_chosen_crop_carries_up_to_three_other_crops_5_to_25_db_below_it_and_never_itself():
    x = _voices()
    out = add_babble(x, prob=1.0, generator=torch.Generator().manual_seed(1))
    behind = out - x
    snr_db = 10 * torch.log10(x.square().mean(dim=1) / behind.square().mean(dim=1))
    assert ((snr_db > 5.0 - 1e-3) & (snr_db < 25.0 + 1e-3)).all()
    # Projections on each unit-level voice: the crop's own is absent, 1-3 others present (a voice drawn twice counts once).
    unit = x / x.norm(dim=1, keepdim=True)
    weights = behind @ unit.T  # (B, B)
    assert torch.allclose(torch.diagonal(weights), torch.zeros(len(x)), atol=1e-4)
    present = (weights.abs() > 1e-3).sum(dim=1)
    assert ((present >= 1) & (present <= 3)).all()
    # The voices behind are at one level each, whatever their own level was.
    for row in weights:
        nonzero = row[row.abs() > 1e-3].abs()
        ratios = nonzero / nonzero.min()
        assert torch.all(torch.isclose(ratios, ratios.round(), atol=1e-3))  # 1x, or 2x/3x for a voice drawn twice


def test_share_of_crops_and_silence():
    x = _voices(b=64)
    out = add_babble(x, prob=0.3, generator=torch.Generator().manual_seed(2))
    changed = ~torch.isclose(out, x, atol=1e-7).all(dim=1)
    assert 5 <= int(changed.sum()) <= 35
    silent = torch.zeros(4, SR)
    silent[1] = _voices(b=1)[0]
    out = add_babble(silent, prob=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(out).all() and out[0].abs().max() < 1e-4  # a silent crop gets next to nothing behind it
    assert torch.equal(add_babble(x[:1], prob=1.0, generator=torch.Generator()), x[:1])  # no one else in the batch


def test_the_same_generator_gives_the_same_babble_and_bad_settings_are_refused():
    x = _voices()
    a = add_babble(x, prob=0.5, generator=torch.Generator().manual_seed(4))
    b = add_babble(x, prob=0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="babble prob"):
        add_babble(x, prob=1.5, generator=torch.Generator())
    with pytest.raises(ValueError, match="babble_prob must be in"):
        train_split([], [], None, logmel_config(sample_rate=SR, n_mels=48), TrainConfig(babble_prob=-0.1), version="x")


def test_training_features_carry_babble_only_when_asked():
    features = logmel_config(sample_rate=SR, n_mels=48)
    crops = _voices(b=8, n=features.window_samples)

    def feats(**cfg):
        return training_features(None, crops, TrainConfig(batch_size=8, bf16=False, augment=True, **cfg), features, torch.Generator().manual_seed(5))

    assert torch.equal(feats(), feats(babble_prob=0.0))  # off: no draws, the batch is the same
    assert not torch.allclose(feats(babble_prob=1.0), feats())
