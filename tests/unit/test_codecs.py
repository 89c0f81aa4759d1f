"""Real speech codecs round-tripped in memory, and the augmentation that uses them."""
import math

import numpy as np
import pytest
import torch

from classifier.synthetic import make_speaker, synthesize_digit
from training.codecs import CODECS, available_codecs, round_trip
from training.data import augment_channel


def _voice(sr: int = 8000) -> np.ndarray:
    """One second of a synthetic woman saying a digit."""
    y = synthesize_digit(speaker=make_speaker(speaker_id=1, gender="female", seed=0), digit=3, repetition=0, sr=sr, seed=0)
    y = np.pad(y, (0, max(0, sr - len(y))))[:sr]
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def _snr_db(clean: np.ndarray, coded: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(clean**2) / np.sum((clean - coded) ** 2)))


def test_the_telephone_codecs_are_all_here():
    # soundfile's wheels carry libsndfile 1.2: every codec is available, so runs compare across machines.
    assert [c.name for c in available_codecs()] == [c.name for c in CODECS]


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_each_codec_codes_a_voice_lossily_in_place_and_the_same_way_twice(codec):
    y = _voice()
    z = round_trip(y, 8000, codec)
    assert z.dtype == np.float32 and z.shape == y.shape
    assert not np.array_equal(z, y)
    # Lossy but aligned: no codec here delays the start, so the difference is coding noise only.
    assert 8 < _snr_db(y, z) < 60, codec
    assert np.array_equal(z, round_trip(y, 8000, codec))


def test_audio_at_another_rate_is_coded_narrowband_and_comes_back_at_its_rate():
    sr = 16000
    t = np.arange(sr) / sr
    voice = np.repeat(_voice(), 2)[:sr]  # 8 kHz voice held at 16 kHz: only sub-4 kHz content
    y = (0.8 * voice + 0.1 * np.sin(2 * math.pi * 6000 * t)).astype(np.float32)
    z = round_trip(y, sr, next(c for c in CODECS if c.name == "g721"))
    assert z.shape == y.shape

    def band_power(x, lo, hi):
        spec, f = np.abs(np.fft.rfft(x)) ** 2, np.fft.rfftfreq(len(x), 1 / sr)
        return spec[(f > lo) & (f < hi)].sum()

    assert band_power(z, 5900, 6100) < 1e-3 * band_power(y, 5900, 6100)  # a call has no 6 kHz
    assert band_power(z, 150, 1000) > 0.5 * band_power(y, 150, 1000)


def test_codec_augmentation_draws_nothing_when_off_and_codes_the_asked_share():
    y = torch.from_numpy(np.stack([_voice()] * 40))
    plain = augment_channel(y, sr=8000, generator=torch.Generator().manual_seed(3))
    off = augment_channel(y, sr=8000, generator=torch.Generator().manual_seed(3), codec_prob=0.0)
    assert torch.equal(plain, off)  # off draws nothing: runs without it keep their batches
    half = augment_channel(y, sr=8000, generator=torch.Generator().manual_seed(3), codec_prob=0.5)
    again = augment_channel(y, sr=8000, generator=torch.Generator().manual_seed(3), codec_prob=0.5)
    assert torch.equal(half, again) and half.dtype == y.dtype
    # Any share above 0 draws the same numbers (which crops, which codec), so a share of
    # almost 0 keeps every other draw of the batch and shows which rows the codec changed.
    all_coded = augment_channel(y, sr=8000, generator=torch.Generator().manual_seed(3), codec_prob=1.0)
    none_coded = augment_channel(y, sr=8000, generator=torch.Generator().manual_seed(3), codec_prob=1e-9)
    rows_changed = (all_coded - none_coded).abs().amax(dim=1) > 1e-4
    assert rows_changed.all()
    half_changed = (half - none_coded).abs().amax(dim=1) > 1e-4
    assert 8 <= int(half_changed.sum()) <= 32
    with pytest.raises(ValueError, match="codec_prob"):
        augment_channel(y, sr=8000, generator=torch.Generator(), codec_prob=-0.1)


def test_a_run_refuses_a_bad_codec_share_and_a_libsndfile_without_codecs_before_it_builds_anything(monkeypatch):
    from training import loop

    # Nothing of the run is needed: the options are checked first.
    with pytest.raises(ValueError, match=r"codec_prob must be in \[0, 1\], got 1.5"):
        loop.train_split([], [], None, None, loop.TrainConfig(codec_prob=1.5), version="v")
    monkeypatch.setattr(loop, "available_codecs", lambda: ())
    with pytest.raises(ValueError, match="writes none"):
        loop.train_split([], [], None, None, loop.TrainConfig(codec_prob=0.3), version="v")
