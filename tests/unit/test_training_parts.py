"""Sources, splits and metrics with answers known by hand."""
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from classifier.errors import InvalidDataset
from training.data import BalancedCropSampler, augment_channel, colour_noise, wideband_clips
from training.loop import fit_platt, lr_at, TrainConfig
from training.metrics import balanced_accuracy_at, classification_metrics, expected_calibration_error, per_group_accuracy
from training.sources import LabelledClip, read_source
from training.splits import AUDIOMNIST_GENDER_FOLDS, audiomnist_gender_folds, split_by_corpus, split_by_speaker, split_random_clips


def _wav(path, seconds=0.3, sr=8000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.1 * np.sin(np.arange(int(sr * seconds)) / 3), sr)


def _clips(n_speakers_per_gender=10, per_speaker=3, corpus="c"):
    return [
        LabelledClip(path=f"/x/{g}{s}_{k}.wav", speaker=f"{corpus}_{g}{s}", gender=g, corpus=corpus)
        for g in ("female", "male") for s in range(n_speakers_per_gender) for k in range(per_speaker)
    ]


def test_metrics_by_hand():
    m = classification_metrics(["female"] * 4 + ["male"] * 2, ["female", "female", "female", "male", "male", "female"])
    assert m["confusion_matrix"] == [[3, 1], [1, 1]]
    assert m["error_rate"] == pytest.approx(2 / 6)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert m["per_class"]["female"]["f1"] == pytest.approx(2 * 0.75 * 0.75 / 1.5)
    assert m["per_class"]["male"]["precision"] == pytest.approx(0.5)
    acc = per_group_accuracy(["a", "a", "b"], ["female", "female", "male"], ["female", "male", "male"])
    assert acc["a"]["accuracy"] == 0.5 and acc["b"] == {"n": 1, "accuracy": 1.0, "gender": "male"}


def test_balanced_accuracy_at_a_raw_threshold_agrees_with_the_metrics():
    z = np.array([2.0, 0.5, -0.5, -3.0, -1.0, 1.0])
    is_female = np.array([True, True, True, True, False, False])
    for threshold in (-2.0, -0.7, 0.0, 0.7):
        pred = ["female" if v >= threshold else "male" for v in z]
        truth = ["female" if f else "male" for f in is_female]
        assert balanced_accuracy_at(z, is_female, threshold) == pytest.approx(classification_metrics(truth, pred)["balanced_accuracy"])
    # At 0: women 2 of 4, men 1 of 2.
    assert balanced_accuracy_at(z, is_female, 0.0) == pytest.approx(0.5)


def test_ece_zero_when_confidence_matches_accuracy():
    # 10 files at p=0.8 female, 8 of them female: perfectly calibrated.
    assert expected_calibration_error(np.full(10, 0.8), np.array([1] * 8 + [0] * 2)) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(10, 0.99), np.array([1] * 5 + [0] * 5)) == pytest.approx(0.49)


def test_platt_recovers_a_known_scale():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, 20_000)
    y = rng.random(20_000) < 1 / (1 + np.exp(-(0.5 * z - 1.0)))
    cal = fit_platt(z, y)
    assert cal.scale == pytest.approx(0.5, abs=0.03) and cal.bias == pytest.approx(-1.0, abs=0.06)


def test_speaker_split_is_disjoint_stratified_and_seeded():
    clips = _clips(10) + _clips(3, corpus="small")
    split = split_by_speaker(clips, val_fraction=0.2, seed=1)
    train_spk = {clips[i].speaker for i in split.train}
    val_spk = {clips[i].speaker for i in split.val}
    assert not train_spk & val_spk and len(split.train) + len(split.val) == len(clips)
    assert {clips[i].corpus for i in split.val} == {"c", "small"}  # every corpus measured
    assert split_by_speaker(clips, val_fraction=0.2, seed=1) == split
    assert split_by_speaker(clips, val_fraction=0.2, seed=2).val != split.val
    info = split.to_dict(clips)
    assert info["kind"] == "speaker_disjoint" and set(info["val_speakers"]) == val_spk


def test_corpus_split_holds_out_whole_corpora():
    clips = _clips(4) + _clips(3, corpus="emo") + _clips(2, corpus="tel")
    split = split_by_corpus(clips, ["emo", "tel"])
    assert {clips[i].corpus for i in split.val} == {"emo", "tel"}
    assert {clips[i].corpus for i in split.train} == {"c"}
    assert len(split.train) + len(split.val) == len(clips)
    with pytest.raises(InvalidDataset, match="no corpus named nope"):
        split_by_corpus(clips, ["nope"])
    with pytest.raises(InvalidDataset, match="only"):  # a corpus of one gender cannot be the whole validation
        split_by_corpus(clips + _clips(2, corpus="men")[6:], ["men"])


def test_random_clip_split_is_labelled_overlapping():
    split = split_random_clips(_clips(5), val_fraction=0.2, seed=0)
    assert split.speaker_overlap and split.kind == "random_clip"


def test_audiomnist_official_gender_folds():
    for fold in AUDIOMNIST_GENDER_FOLDS:
        assert len(fold["train"]) == 12 and len(fold["validate"]) == 6 and len(fold["test"]) == 6
        assert not set(fold["train"]) & set(fold["validate"]) | set(fold["test"]) & set(fold["validate"])
    clips = [LabelledClip(path=f"/x/{s}.wav", speaker=f"audiomnist_{s:02d}", gender="male", corpus="audiomnist") for s in range(1, 61)]
    folds = audiomnist_gender_folds(clips)
    assert len(folds) == 4 and [len(f.train) for f in folds] == [12] * 4
    assert {clips[i].speaker for i in folds[0].val} == {f"audiomnist_{s:02d}" for s in (43, 28, 52, 48, 53, 41)}


def test_audiomnist_layout_is_read_as_published(tmp_path):
    data = tmp_path / "AudioMNIST" / "data"
    _wav(data / "01" / "0_01_0.wav")
    _wav(data / "01" / "7_01_49.wav")
    _wav(data / "02" / "3_02_5.wav")
    (data / "01" / "notes.txt").write_text("ignored")
    meta = {"01": {"gender": "male", "age": 30}, "02": {"gender": "Female", "age": 25}}
    (data / "audioMNIST_meta.txt").write_text(json.dumps(meta))
    for root in (data, tmp_path / "AudioMNIST"):
        clips = read_source(root)
        assert [(c.speaker, c.gender, c.text) for c in clips] == [
            ("audiomnist_01", "male", "0"), ("audiomnist_01", "male", "7"), ("audiomnist_02", "female", "3")]


def test_audiomnist_unknown_speaker_is_named(tmp_path):
    _wav(tmp_path / "data" / "05" / "0_05_0.wav")
    (tmp_path / "data" / "audioMNIST_meta.txt").write_text(json.dumps({"01": {"gender": "male"}}))
    with pytest.raises(InvalidDataset, match="speaker 05"):
        read_source(tmp_path)


def test_manifest_and_gender_folders(tmp_path):
    _wav(tmp_path / "a" / "x.flac")
    (tmp_path / "m.csv").write_text("path,corpus,speaker,gender\na/x.flac,k,s1,F\n")
    (clip,) = read_source(tmp_path / "m.csv")
    assert clip.path == tmp_path / "a" / "x.flac" and clip.gender == "female" and clip.corpus == "k"
    (tmp_path / "bad.csv").write_text("path,gender\na/x.flac,female\n")
    with pytest.raises(InvalidDataset, match="speaker"):
        read_source(tmp_path / "bad.csv")
    (tmp_path / "odd.csv").write_text("path,speaker,gender\na/x.flac,s,other\n")
    with pytest.raises(InvalidDataset, match="line 2: gender 'other'"):
        read_source(tmp_path / "odd.csv")
    _wav(tmp_path / "g" / "female" / "ann" / "1.wav")
    _wav(tmp_path / "g" / "male" / "bob" / "1.WAV")
    clips = read_source(tmp_path / "g")
    assert sorted((c.speaker, c.gender) for c in clips) == [("g_female_ann", "female"), ("g_male_bob", "male")]
    with pytest.raises(InvalidDataset, match="not a manifest"):
        read_source(tmp_path / "a")


def test_sampler_balances_gender_not_clips():
    clips = _clips(2, per_speaker=1) + [LabelledClip("/m", "c_male0", "male", "c")] * 200
    waves = [np.ones(4000, np.float32)] * len(clips)
    sampler = BalancedCropSampler(clips, waves, list(range(len(clips))), window=8000, seed=0)
    _, labels = sampler.draw(4000)
    assert abs(labels.mean() - 0.5) < 0.03


def test_short_crops_are_short_excerpts_set_in_silence():
    clips = _clips(2, per_speaker=1)
    waves = [np.full(24000, 0.5, np.float32) for _ in clips]  # 3 s of constant sound
    sampler = BalancedCropSampler(clips, waves, list(range(len(clips))), window=8000, seed=0, short_prob=1.0)
    crops, _ = sampler.draw(200)
    lengths = (crops != 0).sum(axis=1)
    assert lengths.min() >= 0.25 * 8000 - 2 and lengths.max() <= 0.8 * 8000
    assert len(set(lengths.tolist())) > 50  # lengths vary
    starts = (crops != 0).argmax(axis=1)
    assert len(set(starts.tolist())) > 50  # and so do places
    assert np.all(crops <= 0.5) and np.any(crops[crops > 0] < 0.5)  # faded ends, nothing louder than the source
    assert all(np.all(w == 0.5) for w in waves)  # the cached waveforms are untouched
    plain = BalancedCropSampler(clips, waves, list(range(len(clips))), window=8000, seed=0).draw(50)[0]
    assert np.all(plain == 0.5)  # short_prob 0: full-length crops only
    with pytest.raises(ValueError, match="short_prob"):
        BalancedCropSampler(clips, waves, [0], window=8000, seed=0, short_prob=1.5)


def test_loop_fill_repeats_short_clips_and_excerpts_from_random_points():
    """With fill="loop" no crop holds padding: a short clip, or a short excerpt, repeats to fill the window."""
    clips = _clips(2, per_speaker=1)
    waves = [np.arange(1, 3001, dtype=np.float32) for _ in clips]  # 0.375 s; the value tells the place
    crops, _ = BalancedCropSampler(clips, waves, list(range(len(clips))), window=8000, seed=0, fill="loop").draw(100)
    assert np.all(crops > 0)
    for crop in crops:  # consecutive samples, wrapping from the clip's end to its start
        np.testing.assert_array_equal(np.diff(crop) % 3000, np.ones(7999))
    assert len({float(c[0]) for c in crops}) > 50  # from random points
    zeros = BalancedCropSampler(clips, waves, list(range(len(clips))), window=8000, seed=0).draw(100)[0]
    assert np.all((zeros != 0).sum(axis=1) == 3000)  # the default still sets it in silence
    long = [np.full(24000, 0.5, np.float32) for _ in clips]
    short = BalancedCropSampler(clips, long, list(range(len(clips))), window=8000, seed=0, short_prob=1.0, fill="loop").draw(100)[0]
    assert np.all(short.max(axis=1) == 0.5) and (short == 0).mean() < 0.01  # looped excerpts: only their faded ends touch 0
    with pytest.raises(ValueError, match="fill must be one of zeros, loop, trim"):
        BalancedCropSampler(clips, waves, [0], window=8000, seed=0, fill="edge")


def test_wideband_short_crops_loop_studio_excerpts_and_leave_telephone_clips_alone():
    """Only clips flagged wideband become short looped excerpts; 8 kHz clips keep full crops, and off draws nothing."""
    clips = _clips(2, per_speaker=2)
    wide = [k % 2 == 0 for k in range(len(clips))]  # each speaker: one studio clip, one telephone clip
    waves = [np.full(24000, 0.25 if w else 0.5, np.float32) for w in wide]  # 3 s each; the level tells the source
    idx = list(range(len(clips)))
    sampler = BalancedCropSampler(clips, waves, idx, window=8000, seed=0, wideband=wide, wideband_short_prob=1.0)
    crops, _ = sampler.draw(400)
    studio = crops.max(axis=1) == 0.25
    assert 0.35 < studio.mean() < 0.65  # speaker, then clip, uniformly: about half
    assert np.all(crops[~studio] == 0.5)  # telephone clips: plain full crops
    for c in crops[studio]:
        assert (c == 0).mean() < 0.01  # looped, not set in silence: only the fades' first samples touch 0
        dips = np.flatnonzero(np.diff((c < 0.125).astype(int)) == 1)
        assert len(dips) >= 1  # a 0.25-0.8 s excerpt repeats inside the 1 s window: a faded seam
    assert all(np.all(w == (0.25 if f else 0.5)) for w, f in zip(waves, wide))  # the cached waveforms are untouched
    plain = BalancedCropSampler(clips, waves, idx, window=8000, seed=0).draw(100)[0]
    off = BalancedCropSampler(clips, waves, idx, window=8000, seed=0, wideband=wide, wideband_short_prob=0.0).draw(100)[0]
    np.testing.assert_array_equal(plain, off)  # off: a seed's crops are what they were
    with pytest.raises(ValueError, match="one wideband flag per clip"):
        BalancedCropSampler(clips, waves, idx, window=8000, seed=0, wideband_short_prob=0.5)
    with pytest.raises(ValueError, match="wideband_short_prob"):
        BalancedCropSampler(clips, waves, idx, window=8000, seed=0, wideband=wide, wideband_short_prob=2.0)


def test_wideband_clips_reads_the_stored_rate(tmp_path):
    _wav(tmp_path / "tel.wav", sr=8000)
    _wav(tmp_path / "studio.flac", sr=16000)
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    clips = [LabelledClip(tmp_path / n, "s", "female", "c") for n in ("tel.wav", "studio.flac", "broken.wav")]
    assert wideband_clips(clips, sr=8000) == [False, True, False]


def test_augmentation_keeps_shape_and_is_seeded():
    y = torch.randn(8, 8000)
    a = augment_channel(y, sr=8000, generator=torch.Generator().manual_seed(0))
    b = augment_channel(y, sr=8000, generator=torch.Generator().manual_seed(0))
    assert a.shape == y.shape and torch.equal(a, b) and torch.isfinite(a).all()


def test_low_shelf_moves_the_lows_and_leaves_other_runs_as_they_were():
    sr = 8000
    t = torch.arange(sr) / sr
    y = (0.3 * torch.sin(2 * math.pi * 200 * t) + 0.3 * torch.sin(2 * math.pi * 1500 * t)).repeat(256, 1)

    def lows_over_highs_db(z: torch.Tensor) -> torch.Tensor:
        power, f = torch.fft.rfft(z).abs() ** 2, torch.fft.rfftfreq(sr, 1 / sr)
        return 10 * torch.log10(power[:, (f > 190) & (f < 210)].sum(1) / power[:, (f > 1490) & (f < 1510)].sum(1))

    plain = augment_channel(y, sr=sr, generator=torch.Generator().manual_seed(0))
    off = augment_channel(y, sr=sr, generator=torch.Generator().manual_seed(0), low_shelf_prob=0.0)
    assert torch.equal(plain, off)  # off draws nothing: runs without it keep their batches
    shelved = augment_channel(y, sr=sr, generator=torch.Generator().manual_seed(0), low_shelf_prob=1.0)
    # Tilt alone moves 200 Hz against 1.5 kHz by about 2 dB; the shelf by up to 12.
    raised_plain = (lows_over_highs_db(plain) > 6).float().mean()
    raised_shelved = (lows_over_highs_db(shelved) > 6).float().mean()
    assert raised_shelved > 0.12 and raised_shelved > 3 * raised_plain
    with pytest.raises(ValueError, match="low_shelf_prob"):
        augment_channel(y, sr=sr, generator=torch.Generator(), low_shelf_prob=1.5)


@pytest.mark.parametrize("slope", [0.0, 1.0, 2.0])
def test_coloured_noise_falls_3_db_per_octave_per_unit_of_slope(slope):
    sr = 8000
    noise = colour_noise(torch.randn(4, 10 * sr, generator=torch.Generator().manual_seed(0)), sr=sr, slope=torch.full((4, 1), slope))
    assert noise.square().mean(dim=-1) == pytest.approx(torch.ones(4), rel=1e-4)
    power, f = torch.fft.rfft(noise).abs().square().mean(0), torch.fft.rfftfreq(10 * sr, 1 / sr)
    # 150 Hz against 2,400 Hz: four octaves, 12 dB per unit of slope.
    drop_db = 10 * torch.log10(power[(f >= 100) & (f < 200)].mean() / power[(f >= 1600) & (f < 3200)].mean())
    assert float(drop_db) == pytest.approx(12.0 * slope, abs=1.0)


def test_coloured_noise_in_the_channel_moves_the_noise_to_the_lows_and_leaves_other_runs_as_they_were():
    sr = 8000
    # A 3.5 kHz tone: below 2.5 kHz there is only the noise.
    y = (0.3 * torch.sin(2 * math.pi * 3500 * torch.arange(sr) / sr)).repeat(256, 1)

    def lows_over_mids(z: torch.Tensor) -> torch.Tensor:
        power, f = torch.fft.rfft(z).abs() ** 2, torch.fft.rfftfreq(sr, 1 / sr)
        return power[:, f < 500].sum(1) / power[:, (f > 1000) & (f < 2500)].sum(1).clamp_min(1e-20)

    plain = augment_channel(y, sr=sr, generator=torch.Generator().manual_seed(0))
    off = augment_channel(y, sr=sr, generator=torch.Generator().manual_seed(0), coloured_noise_prob=0.0)
    assert torch.equal(plain, off)  # off draws nothing: runs without it keep their batches
    coloured = augment_channel(y, sr=sr, generator=torch.Generator().manual_seed(0), coloured_noise_prob=1.0)
    assert torch.isfinite(coloured).all()
    # White noise puts a third as much power below 500 Hz as at 1-2.5 kHz (tilted +-6 dB); brown 7 times as much.
    assert (lows_over_mids(plain) > 2).float().mean() < 0.05
    assert (lows_over_mids(coloured) > 2).float().mean() > 0.15
    with pytest.raises(ValueError, match="coloured_noise_prob"):
        augment_channel(y, sr=sr, generator=torch.Generator(), coloured_noise_prob=-0.1)


def test_schedule_warms_up_then_decays():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.5) and lr_at(100, cfg) == pytest.approx(0.0)


def test_speaker_balanced_calibration_is_not_pulled_by_one_loud_speaker():
    from training.loop import fit_calibration
    from training.metrics import speaker_balanced_weights

    rng = np.random.default_rng(0)
    # 20 female and 20 male speakers with 5 clips each, separable around 0, plus one
    # male speaker with 500 clips that all look female (log-odds +2).
    speakers = [f"f{k}" for k in range(20) for _ in range(5)] + [f"m{k}" for k in range(20) for _ in range(5)] + ["loud"] * 500
    is_female = np.array([True] * 100 + [False] * 600)
    z = np.concatenate([rng.normal(3, 1, 100), rng.normal(-3, 1, 100), np.full(500, 2.0)])
    w = speaker_balanced_weights(speakers, is_female)
    assert w.sum() == pytest.approx(1) and w[is_female].sum() == pytest.approx(0.5)
    assert w[-1] == pytest.approx(0.5 / 21 / 500)  # one of 21 male speakers, spread over its 500 clips
    balanced, info = fit_calibration(z, is_female, groups=speakers)
    unweighted = fit_platt(z, is_female)
    # Unweighted, the loud speaker drags the boundary past +2, so typical female clips near +2.2 flip to male.
    assert float(unweighted.p_female(torch.tensor(2.2))) < 0.5
    assert float(balanced.p_female(torch.tensor(2.2))) > 0.5
    assert 0 <= info["ece_calibrated_crossfit"] <= 1


def test_trim_draws_narrower_batches_and_other_fills_draw_nothing():
    """Under short_fill="trim" about half the batches are 0.25-1 window wide; the other recipes' batches stay as they were."""
    from dataclasses import replace

    from classifier.features import logmel_config
    from training.loop import batch_width, draw_batch

    features = logmel_config(sample_rate=8000, n_mels=32)
    cfg = TrainConfig(batch_size=4)
    gen = torch.Generator().manual_seed(0)
    assert {batch_width(cfg, features, gen) for _ in range(20)} == {8000}
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(0).get_state())  # zeros drew no number
    trim = replace(features, short_fill="trim")
    widths = np.array([batch_width(cfg, trim, gen) for _ in range(400)])
    assert 0.4 < (widths < 8000).mean() < 0.6 and widths.min() >= 2000 and widths.max() == 8000
    assert len(set(widths[widths < 8000].tolist())) > 150  # uniform, not a few fixed widths
    assert {batch_width(replace(cfg, augment=False), trim, gen) for _ in range(20)} == {8000}  # evaluation-like runs stay whole

    clips = _clips(2, per_speaker=1)
    waves = [np.full(16000, 0.5, np.float32) for _ in clips]
    sampler = BalancedCropSampler(clips, waves, list(range(len(clips))), window=8000, seed=0, fill="trim")
    shifted = TrainConfig(batch_size=4, pitch_shift_prob=0.5, pitch_both_ways=True)
    shapes = {draw_batch(sampler, shifted, trim, gen)[0].shape for _ in range(12)}
    assert len(shapes) > 2 and all(s[0] == 4 and 2000 <= s[1] <= 8000 for s in shapes)  # pitch-shifted crops come out at the batch's width


def test_fmin_moves_the_lowest_mel_band_and_the_features_leave_out_what_lies_below():
    from classifier.features import compute_features
    from training.run import feature_config_for

    default, raised = feature_config_for("logmel"), feature_config_for("logmel", fmin=300)
    assert (default.fmin, raised.fmin, raised.n_mels) == (50.0, 300.0, 48)
    t = torch.arange(default.window_samples) / default.sample_rate
    hum, voice = torch.sin(2 * math.pi * 80 * t)[None], torch.sin(2 * math.pi * 1000 * t)[None]
    # An 80 Hz hum added to a 1 kHz tone moves the default features by tens of dB; above 300 Hz only its window leakage is seen.
    moved = lambda cfg: (compute_features(0.3 * voice + 0.3 * hum, cfg) - compute_features(0.3 * voice, cfg)).abs().max().item()  # noqa: E731
    assert moved(default) > 20 and moved(raised) < 0.1 * moved(default)
    with pytest.raises(ValueError, match="fmin must be in"):
        feature_config_for("logmel", fmin=4000)
    with pytest.raises(ValueError, match="apply to logmel features only"):
        feature_config_for("mfcc", fmin=300)


def test_fmax_moves_the_highest_mel_band_and_the_features_leave_out_what_lies_above():
    from classifier.features import compute_features
    from training.run import feature_config_for

    default, lowered = feature_config_for("logmel", fmin=300), feature_config_for("logmel", fmin=300, fmax=3400)
    assert (default.fmax, lowered.fmax, lowered.n_mels) == (4000.0, 3400.0, 48)
    t = torch.arange(default.window_samples) / default.sample_rate
    hiss, voice = torch.sin(2 * math.pi * 3800 * t)[None], torch.sin(2 * math.pi * 1000 * t)[None]
    # A 3.8 kHz tone (above the telephone band) moves the default features by tens of dB, those up to 3.4 kHz hardly.
    moved = lambda cfg: (compute_features(0.3 * voice + 0.3 * hiss, cfg) - compute_features(0.3 * voice, cfg)).abs().max().item()  # noqa: E731
    assert moved(default) > 20 and moved(lowered) < 0.1 * moved(default)
    for fmax in (700, 4100):
        with pytest.raises(ValueError, match="fmax must be at least 500 Hz above fmin"):
            feature_config_for("logmel", fmin=300, fmax=fmax)
    with pytest.raises(ValueError, match="apply to logmel features only"):
        feature_config_for("mfcc", fmax=3400)


def test_sample_rate_16k_adds_the_band_above_4khz_with_the_starters_band_density_below_it():
    from classifier.features import compute_features, mel_band_centres
    from training.run import feature_config_for

    narrow, wide = feature_config_for("logmel", fmin=300), feature_config_for("logmel", fmin=300, sample_rate=16000)
    assert (wide.sample_rate, wide.fmax, wide.n_mels, wide.frame_s) == (16000, 8000.0, 64, narrow.frame_s)
    # Below 4 kHz the 16 kHz bands are about as dense as the starters' 48 (within two bands of the count).
    below = int((mel_band_centres(wide) < 4000).sum())
    assert abs(below - narrow.n_mels) <= 2
    t = torch.arange(wide.window_samples) / wide.sample_rate
    fricative, voice = torch.sin(2 * math.pi * 6000 * t)[None], torch.sin(2 * math.pi * 1000 * t)[None]
    # A 6 kHz tone is input at 16 kHz: it moves the features by tens of dB.
    moved = (compute_features(0.3 * voice + 0.3 * fricative, wide) - compute_features(0.3 * voice, wide)).abs().max().item()
    assert moved > 20
    with pytest.raises(ValueError, match="sample_rate must be one of 8000, 16000"):
        feature_config_for("logmel", sample_rate=22050)
    with pytest.raises(ValueError, match="at most 8000 Hz"):
        feature_config_for("logmel", sample_rate=16000, fmax=9000)
    with pytest.raises(ValueError, match="apply to logmel features only"):
        feature_config_for("mfcc", sample_rate=16000)
