"""Checkpoint format: preprocessing travels with the weights; one loader."""
import pytest
import torch

from classifier.errors import InvalidCheckpoint
from classifier.features import logmel_config, seed_mfcc_config
from classifier.model import Calibration, GenderResNet, ModelBundle, build_model, load_checkpoint, save_checkpoint


def test_round_trip_keeps_config_calibration_and_predictions(tmp_path):
    torch.manual_seed(0)
    cfg = logmel_config(sample_rate=8_000, n_mels=48)
    model = GenderResNet(48).eval()
    model.set_standardization(torch.linspace(-40, -10, 48), torch.full((48,), 7.0))
    bundle = ModelBundle(model=model, features=cfg, version="t1", calibration=Calibration(1.5, -0.2), metrics={"balanced_accuracy": 0.9})
    sha = save_checkpoint(bundle, tmp_path / "m.pt")
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.features == cfg and loaded.version == "t1" and loaded.sha256 == sha
    assert loaded.calibration == Calibration(1.5, -0.2)
    assert loaded.metrics["balanced_accuracy"] == 0.9
    assert not loaded.model.training
    x = torch.randn(3, 48, 94)
    with torch.inference_mode():
        # fp16 storage: logits agree closely, decisions exactly.
        torch.testing.assert_close(loaded.model(x), model(x), atol=5e-2, rtol=5e-2)
        assert torch.equal(loaded.model(x).argmax(1), model(x).argmax(1))


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(InvalidCheckpoint, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidCheckpoint, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(InvalidCheckpoint, match="voicegender-checkpoint/1"):
        load_checkpoint(tmp_path / "other.pt")


def test_build_model_without_cached_imagenet_weights_says_so(tmp_path, caplog):
    caplog.set_level("INFO")
    model = build_model(12, imagenet_dir=tmp_path)
    assert model.net.conv1.in_channels == 1 and model.net.fc.out_features == 2
    assert "training from scratch" in caplog.text


def test_build_model_uses_cached_imagenet_weights(tmp_path, caplog):
    import torchvision

    caplog.set_level("INFO")
    reference = torchvision.models.resnet34(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet34-b627a593.pth")
    model = build_model(12, imagenet_dir=tmp_path)
    assert "ImageNet weights" in caplog.text
    torch.testing.assert_close(model.net.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    torch.testing.assert_close(model.net.conv1.weight, reference.conv1.weight.mean(dim=1, keepdim=True))


def test_mfcc_model_input_shape():
    cfg = seed_mfcc_config()
    model = GenderResNet(cfg.n_bins).eval()
    with torch.inference_mode():
        assert model(torch.zeros(2, cfg.n_bins, cfg.n_frames)).shape == (2, 2)
