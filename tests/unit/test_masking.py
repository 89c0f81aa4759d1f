"""Feature masking (SpecAugment) for training: what is hidden, with what, and how much."""
import pytest
import torch

from classifier.features import logmel_config
from classifier.model import build_model
from training.loop import TrainConfig, train_one_step
from training.masking import mask_features

FILL = torch.arange(48, dtype=torch.float32) - 100.0  # no feature value below -20 here, so fill cells are unmistakable


def _feats(b=64, f=48, t=98, seed=0):
    return torch.randn(b, f, t, generator=torch.Generator().manual_seed(seed))


def _hidden(out):
    return out == FILL.reshape(1, -1, 1)


def test_prob_zero_changes_nothing():
    x = _feats()
    assert torch.equal(mask_features(x, FILL, prob=0.0, generator=torch.Generator().manual_seed(3)), x)


def test_hidden_cells_take_their_bins_fill_and_form_whole_bands_and_stretches():
    x = _feats()
    out = mask_features(x, FILL, prob=1.0, generator=torch.Generator().manual_seed(1), max_bins=8, max_frames=10)
    hidden = _hidden(out)
    assert torch.equal(out[~hidden], x[~hidden])  # nothing else touched
    for k in range(x.shape[0]):
        bands = hidden[k].all(dim=1)  # bins hidden at every frame
        frames = hidden[k].all(dim=0)  # frames hidden at every bin
        # Every hidden cell lies in a hidden band or a hidden stretch: masks are rectangles across the map.
        assert torch.equal(hidden[k], bands[:, None] | frames[None, :])
        assert int(bands.sum()) <= 2 * 8 and int(frames.sum()) <= 2 * 10
    assert hidden.any(dim=(1, 2)).float().mean() > 0.9  # widths start at 0, so a few crops draw no mask at all


def test_prob_sets_the_share_of_masked_crops_and_a_seed_repeats_it():
    x = _feats(b=2000, t=40)
    a = mask_features(x, FILL, prob=0.3, generator=torch.Generator().manual_seed(7))
    b = mask_features(x, FILL, prob=0.3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    share = _hidden(a).any(dim=(1, 2)).float().mean().item()
    assert 0.25 < share < 0.32


def test_rejects_a_probability_outside_0_1():
    with pytest.raises(ValueError, match="1.5"):
        mask_features(_feats(b=2), FILL, prob=1.5, generator=torch.Generator())


def test_a_training_step_with_masking_runs_and_is_seeded():
    features = logmel_config(sample_rate=8000, n_mels=48)
    crops = torch.randn(4, features.window_samples, generator=torch.Generator().manual_seed(0)) * 0.1
    labels = torch.tensor([0, 1, 0, 1])
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model(features.n_bins).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        cfg = TrainConfig(batch_size=4, spec_mask_prob=1.0, bf16=False)
        losses.append(train_one_step(model, opt, crops, labels, cfg, features, torch.Generator().manual_seed(5)))
    assert losses[0] == losses[1] and losses[0] > 0
