"""The batch pipeline: windows vote per file, bad files stay local, GradCAM per file."""
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from classifier.features import compute_features, logmel_config
from classifier.model import Calibration, GenderResNet, ModelBundle
from classifier.pipeline import Classifier, prepare_file, prepare_waveform

SR = 8_000


@pytest.fixture(scope="module")
def bundle():
    torch.manual_seed(0)
    cfg = logmel_config(sample_rate=SR, n_mels=32)
    return ModelBundle(model=GenderResNet(cfg.n_bins).eval(), features=cfg, version="test")


def _tone(seconds: float, f0: float = 150.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


def test_short_clip_is_one_padded_window(bundle):
    clip = prepare_waveform("a", _tone(0.4), bundle)
    assert clip.windows.shape == (1, SR)
    assert clip.duration_s == pytest.approx(0.4)


def test_the_checkpoints_short_fill_decides_how_a_short_file_is_filled(bundle, tmp_path):
    """A file under one window is looped, not padded, when the checkpoint says so, from the file on disk too."""
    looped = ModelBundle(model=bundle.model, features=replace(bundle.features, short_fill="loop"), version="loop")
    y = _tone(0.4, 180.0)
    sf.write(tmp_path / "short.wav", y, SR, subtype="FLOAT")
    clip = Classifier(looped, explain=False).classify_files([tmp_path / "short.wav"])[0]
    tiled = Classifier(looped, explain=False).classify_prepared([prepare_waveform("t", np.tile(y, 3)[:SR], bundle)])[0]
    padded = Classifier(bundle, explain=False).classify_prepared([prepare_waveform("p", y, bundle)])[0]
    assert clip.windows == 1 and clip.duration_s == pytest.approx(0.4)
    assert clip.log_odds == pytest.approx(tiled.log_odds, abs=1e-4)
    assert abs(clip.log_odds - padded.log_odds) > 1e-3  # the fill does reach the model


def test_a_short_wideband_file_takes_the_wideband_fill(bundle, tmp_path):
    """wideband_short_fill="trim": a short studio file (sound above 4 kHz) is scored at its own length;
    the same words at 8 kHz, or upsampled from 8 kHz, are centred in silence as before."""
    wide = ModelBundle(model=bundle.model, features=replace(bundle.features, wideband_short_fill="trim"), version="wide")
    rng = np.random.default_rng(0)
    y8 = _tone(0.4, 180.0) + 0.01 * rng.standard_normal(int(0.4 * SR)).astype(np.float32)
    t = np.arange(int(0.4 * 16_000)) / 16_000
    studio = (np.repeat(y8, 2) + 0.02 * np.sin(2 * np.pi * 6_000 * t)).astype(np.float32)  # a fricative's band
    sf.write(tmp_path / "studio.wav", studio, 16_000, subtype="FLOAT")
    sf.write(tmp_path / "phone.wav", y8, SR, subtype="FLOAT")
    sf.write(tmp_path / "phone_at_16k.wav", soxr.resample(y8, SR, 16_000), 16_000, subtype="FLOAT")
    studio_prepared = prepare_file(tmp_path / "studio.wav", wide)
    assert studio_prepared.windows.shape == (1, int(0.4 * SR)) and studio_prepared.wideband is True
    for name in ("phone.wav", "phone_at_16k.wav"):
        phone_prepared = prepare_file(tmp_path / name, wide)
        assert phone_prepared.windows.shape == (1, SR) and phone_prepared.wideband is False, name
    plain = prepare_file(tmp_path / "studio.wav", bundle)
    assert plain.windows.shape == (1, SR) and plain.wideband is None  # without the field: short_fill for all, no band probed
    studio_clip = Classifier(wide, explain=False).classify_files([tmp_path / "studio.wav"])[0]
    assert studio_clip.windows == 1 and studio_clip.error is None


def test_a_two_way_fill_scores_a_short_clip_both_ways_and_averages(bundle):
    """wideband_short_fill="trim+loop": a short studio clip's log-odds are the mean of its trimmed and
    looped views, its map one window wide; longer clips and telephone clips are scored as before."""
    both = ModelBundle(model=bundle.model, features=replace(bundle.features, wideband_short_fill="trim+loop"), version="both")
    y = _tone(0.4, 180.0) + 0.05 * _tone(0.4, 1_234.0)
    clip = prepare_waveform("s", y, both, wideband=True)
    assert clip.windows.shape == (1, len(y)) and [v.shape for v in clip.views] == [(1, SR)]
    clf = Classifier(both)
    result = clf.classify_prepared([clip])[0]
    trimmed, _ = clf.score_windows(y[None])
    looped, _ = clf.score_windows(np.tile(y, 3)[None, :SR])
    assert abs(trimmed[0] - looped[0]) > 1e-3  # the two views differ, so the mean is a real test
    assert result.log_odds == pytest.approx((trimmed[0] + looped[0]) / 2, abs=1e-4)
    assert result.windows == 1
    assert result.cam.shape == (both.features.n_bins, both.features.n_frames) and result.attention.shape == (both.features.n_bins,)
    long_clip = prepare_waveform("l", _tone(2.5), both, wideband=True)
    assert long_clip.views == ()
    assert clf.classify_prepared([long_clip])[0].log_odds == pytest.approx(clf.classify_prepared([prepare_waveform("l", _tone(2.5), bundle)])[0].log_odds)
    phone = prepare_waveform("p", y, both, wideband=False)
    assert phone.windows.shape == (1, SR) and phone.views == ()  # short_fill ("zeros"): one view


def test_a_short_word_in_a_longer_studio_file_is_scored_as_that_short_clip(bundle, tmp_path):
    """wideband_trim_edges: 0.4 s of sound inside 1.5 s of silence in a studio file is prepared as that
    0.4 s clip (both views, 10 ms of margin); the file's duration is still reported. Telephone files, files without the
    field and files whose sound lasts a window or more are prepared as before."""
    both = replace(bundle.features, wideband_short_fill="trim+loop")
    edged = ModelBundle(model=bundle.model, features=replace(both, wideband_trim_edges=True), version="edged")
    plain = ModelBundle(model=bundle.model, features=both, version="plain")
    word = _tone(0.4, 180.0) + 0.05 * _tone(0.4, 1_234.0)
    padded = np.concatenate([np.zeros(int(0.6 * SR), np.float32), word, np.zeros(int(0.5 * SR), np.float32)])
    # The cut keeps a 10 ms margin of the file around the word.
    bare = prepare_waveform("w", padded[int(0.6 * SR) - 80 : int(1.0 * SR) + 80], edged, wideband=True)
    clip = prepare_waveform("p", padded, edged, wideband=True)
    assert clip.duration_s == pytest.approx(1.5)
    assert clip.windows.shape == bare.windows.shape == (1, len(word) + 160)
    np.testing.assert_array_equal(clip.windows, bare.windows)
    np.testing.assert_array_equal(clip.views[0], bare.views[0])
    clf = Classifier(edged, explain=False)
    assert clf.classify_prepared([clip])[0].log_odds == pytest.approx(clf.classify_prepared([bare])[0].log_odds, abs=1e-5)
    # Before the field, the same file is two windows of one second holding the word and its silence.
    assert prepare_waveform("p", padded, plain, wideband=True).windows.shape == (2, SR)
    assert prepare_waveform("p", padded, edged, wideband=False).windows.shape == (2, SR)  # telephone: as trained
    speech = np.concatenate([np.zeros(SR // 2, np.float32), _tone(1.2, 180.0), np.zeros(SR // 2, np.float32)])
    assert prepare_waveform("s", speech, edged, wideband=True).windows.shape == prepare_waveform("s", speech, plain, wideband=True).windows.shape


def test_the_band_of_a_file_is_probed_up_to_four_windows_when_edges_are_cut(bundle, tmp_path):
    """A 3 s studio file may hold a short word: its band is measured; without the edge cut only files under a window are."""
    both = replace(bundle.features, wideband_short_fill="trim+loop")
    assert both.band_probe_samples == SR and replace(both, wideband_trim_edges=True).band_probe_samples == 4 * SR
    assert bundle.features.band_probe_samples == 0 and replace(bundle.features, wideband_trim_edges=True).band_probe_samples == 0
    rng = np.random.default_rng(2)
    word = (0.3 * rng.standard_normal(int(0.3 * 16_000))).astype(np.float32)  # sound up to 8 kHz
    y = np.concatenate([np.zeros(16_000, np.float32), word, np.zeros(int(1.7 * 16_000), np.float32)])
    sf.write(tmp_path / "word_in_3s.wav", y, 16_000, subtype="PCM_16")
    edged = ModelBundle(model=bundle.model, features=replace(both, wideband_trim_edges=True), version="edged")
    clip = prepare_file(tmp_path / "word_in_3s.wav", edged)
    assert clip.duration_s == pytest.approx(3.0) and clip.windows.shape[0] == 1 and clip.windows.shape[1] < SR


def test_a_two_way_fill_is_for_inference_only():
    from classifier.audio import check_short_fill, fill_views
    from training.data import BalancedCropSampler

    assert fill_views("trim+loop") == ("trim", "loop") and fill_views("zeros") == ("zeros",)
    with pytest.raises(ValueError, match="trim\\+loop"):
        check_short_fill("trim+loop")  # training's fills: a crop has one
    with pytest.raises(ValueError):
        BalancedCropSampler([], [], [], window=SR, seed=0, fill="trim+loop")
    with pytest.raises(ValueError):
        fill_views("mirror")


def test_long_file_windows_and_silence_does_not_vote(bundle):
    y = np.concatenate([_tone(3.0), np.zeros(4 * SR, np.float32), _tone(3.0)])
    clip = prepare_waveform("a", y, bundle)
    # 10 s at 1 s windows, 0.5 s hop -> 19 windows; those wholly inside the 4 s gap stay silent.
    assert 10 <= len(clip.windows) < 19
    result = Classifier(bundle, explain=False).classify_prepared([clip])[0]
    assert result.windows == len(clip.windows)


def test_one_bad_file_does_not_affect_the_others(bundle, tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, _tone(1.5), SR)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....not audio")
    (tmp_path / "empty.flac").write_bytes(b"")
    clf = Classifier(bundle, explain=True)
    alone = clf.classify_files([good])[0]
    results = clf.classify_files([tmp_path / "bad.wav", good, tmp_path / "empty.flac"])
    assert [r.error is None for r in results] == [False, True, False]
    assert results[0].error_reason == "unreadable_audio" and results[2].error_reason == "empty_file"
    assert results[0].prediction is None and results[0].p_female is None
    assert results[1].p_female == pytest.approx(alone.p_female, abs=1e-6)
    assert results[1].attention.shape == (bundle.features.n_bins,)
    assert results[1].cam.shape == (bundle.features.n_bins, bundle.features.n_frames)


def test_min_confidence_marks_uncertain(bundle, tmp_path):
    sf.write(tmp_path / "x.wav", _tone(1.0), SR)
    clf = Classifier(bundle, explain=False)
    plain = clf.classify_files([tmp_path / "x.wav"])[0]
    assert plain.prediction in ("female", "male")
    strict = clf.classify_files([tmp_path / "x.wav"], min_confidence=plain.confidence + 1e-6)[0]
    assert strict.prediction == "uncertain" and strict.p_female == plain.p_female


def test_calibration_decides_p_female(bundle):
    clip = prepare_waveform("a", _tone(1.0), bundle)
    raw = Classifier(bundle, explain=False).classify_prepared([clip])[0]
    shifted = ModelBundle(model=bundle.model, features=bundle.features, version="t", calibration=Calibration(0.0, 3.0))
    r = Classifier(shifted, explain=False).classify_prepared([clip])[0]
    assert r.log_odds == pytest.approx(raw.log_odds)
    assert r.p_female == pytest.approx(1 / (1 + np.exp(-3.0)))


def test_batching_does_not_change_results(bundle):
    clips = [prepare_waveform(str(i), _tone(0.5 + 0.7 * i, 120 + 20 * i), bundle) for i in range(5)]
    big = Classifier(bundle, batch_windows=64, explain=False).classify_prepared(clips)
    small = Classifier(bundle, batch_windows=2, explain=False).classify_prepared(clips)
    # An untrained model's log-odds are in the hundreds: float32 sums in another batch shape differ in the 7th digit.
    assert [r.log_odds for r in big] == pytest.approx([r.log_odds for r in small], rel=1e-5, abs=1e-4)


def test_duration_limit_is_the_classifiers_own(bundle, tmp_path):
    # The service's VOICEGENDER_MAX_DURATION_S reaches the loader through the classifier.
    path = tmp_path / "long.wav"
    sf.write(path, _tone(3.0), SR)
    strict = Classifier(bundle, explain=False, max_duration_s=2.0).classify_files([path])[0]
    assert strict.error_reason == "too_long" and strict.prediction is None
    assert Classifier(bundle, explain=False).classify_files([path])[0].error is None


def test_trim_scores_a_short_file_at_its_own_length_beside_long_ones(bundle, tmp_path):
    """Under short_fill="trim" a short file is its own one window; in a mixed batch every clip scores as it does alone."""
    trimmed = ModelBundle(model=bundle.model, features=replace(bundle.features, short_fill="trim"), version="trim")
    short, long = _tone(0.4, 180.0), _tone(2.5, 120.0)
    sf.write(tmp_path / "short.wav", short, SR, subtype="FLOAT")
    clf = Classifier(trimmed, explain=True)
    mixed = clf.classify_files([tmp_path / "short.wav"])[0]
    with torch.inference_mode():
        logits = bundle.model(compute_features(torch.from_numpy(short)[None], bundle.features))
    assert mixed.windows == 1 and mixed.log_odds == pytest.approx(float(logits[0, 0] - logits[0, 1]), rel=1e-5, abs=1e-4)
    padded = Classifier(bundle, explain=False).classify_prepared([prepare_waveform("p", short, bundle)])[0]
    assert abs(mixed.log_odds - padded.log_odds) > 1e-3  # no silence reached the model

    together = clf.classify_prepared([prepare_waveform("s", short, trimmed), prepare_waveform("l", long, trimmed), prepare_waveform("s2", short, trimmed)])
    alone = [clf.classify_prepared([prepare_waveform(n, y, trimmed)])[0] for n, y in (("s", short), ("l", long))]
    assert [r.windows for r in together] == [1, 4, 1]
    for r, a in zip(together, [alone[0], alone[1], alone[0]]):
        assert r.log_odds == pytest.approx(a.log_odds, rel=1e-5, abs=1e-4)
    # Every map has the window's shape (a job adds them up); a trimmed clip's sits centred, zero where padding would be.
    n_frames = bundle.features.n_frames
    assert all(r.cam.shape == (bundle.features.n_bins, n_frames) for r in together)
    own = compute_features(short[None], bundle.features).shape[-1]
    start = (n_frames - own) // 2
    assert 0 < own < n_frames and not together[0].cam[:, :start].any() and not together[0].cam[:, start + own :].any()
    assert together[0].attention == pytest.approx(together[0].cam[:, start : start + own].mean(axis=-1), abs=1e-5)
