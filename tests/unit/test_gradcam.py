"""GradCAM: every feature bin resolved, attention where the evidence is, no side effects."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from classifier.gradcam import GradCAM, class_mean_maps, layer_frequency_rows
from classifier.model import GenderResNet


@pytest.mark.parametrize("n_bins,n_frames", [(12, 98), (40, 98), (48, 94)])
def test_target_layer_has_one_row_per_feature_bin(n_bins, n_frames):
    model = GenderResNet(n_bins).eval()
    assert layer_frequency_rows(model, "net.layer1", torch.zeros(1, n_bins, n_frames)) == n_bins


def _bin_task(n: int, seed: int, bin_: int = 5, n_bins: int = 12, n_frames: int = 24):
    """Class is decided by the level of one feature bin; all others are noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_bins, n_frames, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    x[:, bin_, :] += torch.where(y == 0, 3.0, -3.0)[:, None]
    return x, y


@pytest.fixture(scope="module")
def bin5_model():
    torch.manual_seed(0)
    model = GenderResNet(12)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(30):
        x, y = _bin_task(32, step)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_attention_peaks_at_the_deciding_bin(bin5_model):
    x, y = _bin_task(64, 999)
    with GradCAM(bin5_model, "net.layer1") as cam:
        result = cam.explain(x)
    assert (result.logits.argmax(1) == y).float().mean() > 0.9
    assert result.cam.shape == (64, 12, 24)
    profile = result.profile.mean(dim=0)  # (12,)
    # layer1's receptive field spans about +-9 bins (7x7 stem, max-pool, six 3x3
    # convs), so the map is blurred around the evidence: its centre of mass must
    # sit at the deciding bin and the band around it must outweigh distant bins.
    excess = profile - profile.min()
    centroid = float((torch.arange(12) * excess).sum() / excess.sum())
    assert abs(centroid - 5) <= 1.5, profile
    assert profile[4:7].mean() > 1.5 * profile[[0, 1, 10, 11]].mean(), profile
    # Every bin gets its own value: nothing was interpolated from fewer rows.
    assert len(torch.unique(profile.round(decimals=6))) == 12


def test_maps_are_scaled_per_clip(bin5_model):
    x, _ = _bin_task(8, 7)
    with GradCAM(bin5_model, "net.layer1") as cam:
        maps = cam.explain(x).cam
    assert torch.allclose(maps.amax(dim=(1, 2)), torch.ones(8))
    assert (maps >= 0).all()


def test_no_parameter_gradients_and_state_restored(bin5_model):
    model = bin5_model
    model.train()
    model.net.fc.weight.requires_grad_(False)  # a caller's own choice must survive
    x, _ = _bin_task(4, 3)
    with GradCAM(model, "net.layer1") as cam:
        cam.explain(x)
        assert not model.training
    assert model.training
    assert model.net.fc.weight.requires_grad is False
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "net.fc.weight")
    assert not model.net.layer1._forward_hooks
    model.net.fc.weight.requires_grad_(True)
    model.eval()


def test_explain_never_writes_parameter_grads():
    model = GenderResNet(12).eval()
    for p in model.parameters():
        p.grad = None
    with GradCAM(model, "net.layer1") as cam:
        cam.explain(torch.randn(2, 12, 24))
    assert all(p.grad is None for p in model.parameters())


def test_hooks_removed_and_exception_propagates():
    model = GenderResNet(12).eval()
    with pytest.raises(RuntimeError, match="boom"):
        with GradCAM(model, "net.layer1"):
            raise RuntimeError("boom")
    assert not model.net.layer1._forward_hooks
    assert all(p.requires_grad for p in model.parameters())


def test_explain_outside_context_is_an_error():
    with pytest.raises(RuntimeError, match="context manager"):
        GradCAM(GenderResNet(12), "net.layer1").explain(torch.randn(1, 12, 24))


def test_explicit_target_class(bin5_model):
    x, _ = _bin_task(4, 11)
    with GradCAM(bin5_model, "net.layer1") as cam:
        r = cam.explain(x, target=torch.zeros(4, dtype=torch.long))
    assert (r.target == 0).all()


def test_class_mean_maps():
    cam = np.stack([np.full((2, 3), v) for v in (1.0, 3.0, 5.0)])
    means = class_mean_maps(cam, np.array([0, 0, 1]), 2)
    assert means[0, 0, 0] == 2.0 and means[1, 0, 0] == 5.0
    assert np.isnan(class_mean_maps(cam, np.array([0, 0, 0]), 2)[1]).all()
