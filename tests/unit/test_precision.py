"""bf16 autocast against fp32 on synthetic speech: the same verdicts, close log-odds and maps.

The model has to be decisive for agreement to mean anything (an untrained
net sits at log-odds ~0, where any rounding flips the verdict), so the
fixture trains one briefly on synthetic voices, re-estimates its BatchNorm
statistics, and the tests score those voices' windows with both precisions.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from classifier.audio import split_windows
from classifier.features import compute_features, logmel_config
from classifier.model import GenderResNet, ModelBundle
from classifier.pipeline import Classifier, prepare_waveform, use_bf16
from classifier.synthetic import make_speakers, synthesize_digit

SR = 8_000
STEPS = 10


@pytest.fixture(scope="module")
def voices() -> tuple[list[np.ndarray], np.ndarray]:
    """16 speakers x 3 digits (< 1 s each), and which are women's."""
    speakers = make_speakers(n_female=8, n_male=8, seed=11)
    waves = [synthesize_digit(speaker=s, digit=d, repetition=0, sr=SR, seed=11) for s in speakers for d in range(3)]
    return waves, np.array([s.gender == "female" for s in speakers for _ in range(3)])


@pytest.fixture(scope="module")
def bundle(voices) -> ModelBundle:
    waves, is_female = voices
    cfg = logmel_config(sample_rate=SR, n_mels=32)
    windows = np.stack([split_windows(y, window=cfg.window_samples, hop=cfg.hop_samples)[0] for y in waves])
    feats = compute_features(torch.from_numpy(windows), cfg)  # (48, F, T)
    target = torch.from_numpy(~is_female).long()  # logit 0 is female
    torch.manual_seed(0)
    model = GenderResNet(cfg.n_bins)
    model.set_standardization(feats.mean(dim=(0, 2)), feats.std(dim=(0, 2)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(STEPS):
        batch = torch.randperm(len(feats), generator=torch.Generator().manual_seed(step))[:32]
        loss = F.cross_entropy(model(feats[batch]), target[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative: one pass over every window sets the statistics eval mode uses
    with torch.no_grad():
        model(feats)
    return ModelBundle(model=model.eval(), features=cfg, version="bf16-test")


@pytest.fixture(scope="module")
def scored(bundle, voices):
    waves, is_female = voices
    clips = [prepare_waveform(f"c{i}", y, bundle) for i, y in enumerate(waves)]
    fp32 = Classifier(bundle, explain=True, bf16=False).classify_prepared(clips)
    bf16 = Classifier(bundle, explain=True, bf16=True).classify_prepared(clips)
    return fp32, bf16, is_female


def test_the_model_is_decisive(scored):
    """Otherwise agreement would be a coin toss, and the test below could not tell."""
    fp32, _, is_female = scored
    predicted = np.array([r.prediction == "female" for r in fp32])
    assert (predicted == is_female).mean() >= 0.9
    assert np.median([abs(r.log_odds) for r in fp32]) > 1.0


def test_bf16_and_fp32_give_the_same_verdicts(scored):
    fp32, bf16, _ = scored
    assert [r.prediction for r in bf16] == [r.prediction for r in fp32]


def test_bf16_log_odds_and_maps_stay_close(scored):
    fp32, bf16, _ = scored
    a, b = np.array([r.log_odds for r in fp32]), np.array([r.log_odds for r in bf16])
    # bf16 keeps 8 bits of mantissa: a few per cent of the log-odds' range.
    assert np.abs(a - b).max() <= 0.05 * np.abs(a).max()
    # The maps come from a bf16 backward as well; they may move more than the
    # verdicts, but must still point at the same bands.
    corr = [np.corrcoef(r32.attention, r16.attention)[0, 1] for r32, r16 in zip(fp32, bf16)]
    assert np.mean(corr) > 0.8


def test_precision_setting():
    assert use_bf16("bf16") and not use_bf16("fp32")
    assert use_bf16("auto", "meta") is False  # no bf16 units: fp32
    with pytest.raises(ValueError, match="'half'"):
        use_bf16("half")


@pytest.mark.parametrize(("avx512_bf16", "amx", "expected"), [(True, False, False), (True, True, True), (False, False, False)])
def test_auto_takes_bf16_on_a_cpu_only_with_amx(monkeypatch, avx512_bf16, amx, expected):
    # AVX-512 BF16 without AMX measured slower than fp32 (README, Performance).
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert use_bf16("auto", "cpu") is expected
    assert use_bf16("bf16", "cpu") and not use_bf16("fp32", "cpu")


@pytest.mark.parametrize("amx", [False, True])
def test_bf16_asked_for_without_bf16_units_is_honoured_with_a_warning(monkeypatch, caplog, amx):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    with caplog.at_level("WARNING", logger="classifier.pipeline"):
        assert use_bf16("bf16", "cpu") is True
        use_bf16("auto", "cpu")
        use_bf16("fp32", "cpu")
    warned = [r.getMessage() for r in caplog.records if "emulated" in r.getMessage()]
    assert warned == ([] if amx else ["bf16 asked for on cpu, which does not compute it in hardware (a CPU needs AMX): it is emulated and much slower than fp32"])
