"""Decoding, validation and windowing on files written here, whose answer is known."""
import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classifier.audio import (
    AUDIO_EXTENSIONS,
    BAND_OVER_ROUNDING_MIN_DB,
    WIDEBAND_MIN_DB,
    Recording,
    band_over_rounding_db,
    energy_above_db,
    find_audio_files,
    is_audio_path,
    load_audio,
    quantizer_levels,
    speech_extent,
    speech_mask,
    split_windows,
    loop_to_length,
)
from classifier.errors import (
    EmptyFile,
    InvalidAudio,
    NonFiniteSamples,
    NoSamples,
    SilentAudio,
    TooLong,
    TooShort,
    UnreadableAudio,
    UnsupportedSampleRate,
)

SR = 16_000
TONE_HZ = 1_000.0


def _tone(n: int, sr: int, *, hz: float = TONE_HZ, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * hz * np.arange(n) / sr)).astype(np.float32)


def _peak_hz(y: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / sr)[np.argmax(spectrum)])


def _wav_bytes(tmp_path: Path, y: np.ndarray, sr: int, **kw) -> bytes:
    path = tmp_path / "source.wav"
    sf.write(path, y, sr, **kw)
    return path.read_bytes()


def _riff_header(*, sr: int, n_frames: int, channels: int = 1, bits: int = 16) -> bytes:
    """A canonical 44-byte PCM WAV header, written by hand."""
    block_align = channels * bits // 8
    data_bytes = n_frames * block_align
    fmt = struct.pack("<HHIIHH", 1, channels, sr, sr * block_align, block_align, bits)
    return (
        b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"data" + struct.pack("<I", data_bytes)
    )


# --- formats -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("subtype", "atol"),
    [("PCM_U8", 1 / 64), ("PCM_16", 1e-4), ("PCM_24", 1e-6), ("PCM_32", 1e-7), ("FLOAT", 0), ("DOUBLE", 1e-7)],
)
def test_wav_subtypes_decode_to_mono_float32(tmp_path, subtype, atol):
    y = _tone(SR, SR)
    path = tmp_path / f"tone_{subtype}.wav"
    sf.write(path, y, SR, subtype=subtype)
    rec = load_audio(path, sr=SR)
    assert isinstance(rec, Recording)
    assert rec.y.dtype == np.float32 and rec.y.shape == (SR,)
    assert rec.sr == rec.source_sr == SR and rec.duration_s == pytest.approx(1.0)
    np.testing.assert_allclose(rec.y, y, rtol=0, atol=atol)


def test_flac_is_lossless(tmp_path):
    y = _tone(SR, SR)
    sf.write(tmp_path / "tone.flac", y, SR, subtype="PCM_16")
    rec = load_audio(tmp_path / "tone.flac", sr=SR)
    assert rec.y.dtype == np.float32
    np.testing.assert_allclose(rec.y, y, rtol=0, atol=1e-4)


def _write_lossy(path: Path, y: np.ndarray, sr: int, fmt: str) -> None:
    if fmt not in sf.available_formats():
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {fmt}")
    subtype = {"OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}[fmt]
    try:
        sf.write(path, y, sr, format=fmt, subtype=subtype)
    except (sf.LibsndfileError, ValueError, TypeError) as exc:
        pytest.skip(f"this libsndfile cannot write {fmt}/{subtype}: {exc}")


@pytest.mark.parametrize(("fmt", "name"), [("OGG", "tone.ogg"), ("OGG", "tone.oga"), ("MP3", "tone.mp3")])
def test_lossy_formats_keep_pitch_and_duration(tmp_path, fmt, name):
    y = _tone(SR, SR)
    _write_lossy(tmp_path / name, y, SR, fmt)
    rec = load_audio(tmp_path / name, sr=SR)
    assert rec.y.dtype == np.float32 and rec.y.ndim == 1
    # Encoder delay and padding may add a frame or two (1152 samples for MP3).
    assert abs(len(rec.y) - SR) <= 2 * 1152
    assert _peak_hz(rec.y, SR) == pytest.approx(TONE_HZ, abs=2)
    assert np.abs(rec.y).max() == pytest.approx(0.5, rel=0.2)


@pytest.mark.parametrize(("name", "fmt"), [("LOUD.WAV", "WAV"), ("LOUD.FLAC", "FLAC"), ("Mixed.Wav", "WAV")])
def test_upper_case_extensions_load(tmp_path, name, fmt):
    y = _tone(SR // 2, SR)
    sf.write(tmp_path / name, y, SR, format=fmt)
    assert is_audio_path(tmp_path / name)
    assert len(load_audio(tmp_path / name, sr=SR).y) == SR // 2


def test_stereo_is_averaged_to_mono(tmp_path):
    y = _tone(SR, SR)
    sf.write(tmp_path / "stereo.wav", np.stack([y, 0.5 * y], axis=1), SR, subtype="FLOAT")
    rec = load_audio(tmp_path / "stereo.wav", sr=SR)
    assert rec.y.shape == (SR,)
    np.testing.assert_allclose(rec.y, 0.75 * y, atol=1e-7)


def test_six_channels_are_averaged_to_mono(tmp_path):
    y = _tone(SR // 4, SR)
    gains = np.array([1.0, 0.0, -0.5, 0.25, 0.75, 0.5], dtype=np.float32)
    sf.write(tmp_path / "surround.wav", y[:, None] * gains, SR, subtype="FLOAT")
    rec = load_audio(tmp_path / "surround.wav", sr=SR)
    assert rec.y.shape == (SR // 4,)
    np.testing.assert_allclose(rec.y, y * gains.mean(), atol=1e-7)


@pytest.mark.parametrize("source_sr", [8_000, 11_025, 22_050, 44_100, 48_000])
def test_resampling_keeps_frequency_and_duration(tmp_path, source_sr):
    sf.write(tmp_path / "tone.wav", _tone(source_sr, source_sr), source_sr, subtype="FLOAT")
    rec = load_audio(tmp_path / "tone.wav", sr=SR)
    assert rec.y.dtype == np.float32
    assert rec.source_sr == source_sr and rec.sr == SR
    assert abs(len(rec.y) - SR) <= 1 and rec.duration_s == pytest.approx(1.0, abs=1 / SR)
    assert _peak_hz(rec.y, SR) == pytest.approx(TONE_HZ, abs=1)
    # A resampler that keeps the tone keeps its level too (away from the edges).
    assert np.sqrt(np.mean(rec.y[1000:-1000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


# --- bad input: each gives its named error carrying the value ------------------


def test_wideband_says_whether_the_file_carried_sound_above_the_target_band(tmp_path):
    """Studio audio has sound above the model's band; 8 kHz audio, also when stored at a higher rate, has none."""
    rng = np.random.default_rng(0)
    voice8 = _tone(8_000, 8_000, hz=200.0) + 0.01 * rng.standard_normal(8_000).astype(np.float32)
    studio = np.repeat(voice8, 6) + _tone(48_000, 48_000, hz=6_000.0, amp=0.02)
    sf.write(tmp_path / "studio.wav", studio, 48_000, subtype="FLOAT")
    sf.write(tmp_path / "phone.wav", voice8, 8_000, subtype="PCM_16")
    sf.write(tmp_path / "phone_at_48k.wav", soxr.resample(voice8, 8_000, 48_000), 48_000, subtype="PCM_16")
    assert load_audio(tmp_path / "studio.wav", sr=8_000, band_probe_samples=8_000).wideband
    assert not load_audio(tmp_path / "phone.wav", sr=8_000, band_probe_samples=8_000).wideband
    assert not load_audio(tmp_path / "phone_at_48k.wav", sr=8_000, band_probe_samples=8_000).wideband  # 16-bit rounding stays below -50 dB
    assert load_audio(tmp_path / "studio.wav", sr=48_000, band_probe_samples=48_000).wideband is False  # nothing is cut at the file's own rate
    # Only recordings that fit the probe are measured: a clip's band matters only when it is shorter than a window.
    assert load_audio(tmp_path / "studio.wav", sr=8_000, band_probe_samples=7_999).wideband is None
    assert load_audio(tmp_path / "studio.wav", sr=8_000).wideband is None
    assert energy_above_db(np.zeros(100, np.float32), 8_000, 1_000.0) == float("-inf")
    assert energy_above_db(_tone(8_000, 8_000, hz=3_000.0), 8_000, 1_000.0) == pytest.approx(0.0, abs=0.01)



def test_speech_extent_spans_the_first_to_the_last_loud_frame():
    sr = 8_000
    word = _tone(4_000, sr, hz=200.0, amp=0.3)  # 0.5 s
    y = np.concatenate([np.zeros(8_000, np.float32), word, np.zeros(4_000, np.float32), 0.3 * word[:800], np.zeros(8_000, np.float32)])
    start, stop = speech_extent(y, sr, margin_s=0.0)
    assert start == 8_000 and stop == 8_000 + 4_000 + 4_000 + 800  # the pause between the sounds is kept
    # Low noise in the silence (-70 dBFS) is not sound; the margin widens the cut on both sides.
    rng = np.random.default_rng(0)
    noisy = y + (10 ** (-70 / 20) * rng.standard_normal(len(y))).astype(np.float32)
    assert speech_extent(noisy, sr, margin_s=0.01) == (8_000 - 80, 8_000 + 8_800 + 80)
    # A sound within below_loudest_db of the loudest frame counts; one further below does not.
    assert speech_extent(y, sr, margin_s=0.0, below_loudest_db=5.0)[1] == 12_000
    assert speech_extent(word, sr) == (0, len(word)) and speech_extent(word[:100], sr) == (0, 100)

@pytest.mark.parametrize(("subtype", "told"), [("PCM_U8", False), ("ULAW", False), ("ALAW", False), ("IMA_ADPCM", None), ("MS_ADPCM", None)])
def test_telephone_audio_in_a_coarse_sample_format_is_not_taken_for_studio_audio(tmp_path, subtype, told):
    """8 kHz audio stored at 16 kHz in 8-bit, mu-law, A-law or ADPCM samples carries their rounding noise
    above 4 kHz, as loud as studio speech there. The fixed-level formats' band is read over their rounding
    (False: nothing above it); ADPCM's is left untold (None). Either way a short clip keeps the model's own
    fill, as the same audio stored in 16-bit samples does."""
    rng = np.random.default_rng(0)
    voice8 = _tone(4_000, 8_000, hz=200.0, amp=0.2) + 0.01 * rng.standard_normal(4_000).astype(np.float32)
    up = soxr.resample(voice8, 8_000, 16_000)
    sf.write(tmp_path / "phone16.wav", up, 16_000, subtype="PCM_16")
    sf.write(tmp_path / "coarse.wav", up, 16_000, subtype=subtype)
    coarse, _ = sf.read(tmp_path / "coarse.wav", dtype="float32")
    assert energy_above_db(coarse, 16_000, 4_000.0) >= WIDEBAND_MIN_DB  # its own noise passes the level test
    assert load_audio(tmp_path / "phone16.wav", sr=8_000, band_probe_samples=8_000).wideband is False
    assert load_audio(tmp_path / "coarse.wav", sr=8_000, band_probe_samples=8_000).wideband is told


@pytest.mark.parametrize("subtype", ["PCM_U8", "ULAW", "ALAW"])
def test_studio_audio_in_a_fixed_level_format_reads_wideband_above_its_rounding(tmp_path, subtype):
    """Sound above 4 kHz well over the format's own rounding noise is the recording's: wideband. The rounding
    alone reads about 0 dB over its expected level, TPDF-dithered 8-bit about +5 dB: both stay below the 10 dB margin."""
    rng = np.random.default_rng(2)
    voice = _tone(8_000, 16_000, hz=200.0, amp=0.2)
    studio = voice + 0.02 * rng.standard_normal(8_000).astype(np.float32)  # a fricative's band, to 8 kHz
    sf.write(tmp_path / "studio.wav", studio, 16_000, subtype=subtype)
    assert load_audio(tmp_path / "studio.wav", sr=8_000, band_probe_samples=8_000).wideband is True
    sf.write(tmp_path / "adpcm.wav", studio, 16_000, subtype="IMA_ADPCM")
    assert load_audio(tmp_path / "adpcm.wav", sr=8_000, band_probe_samples=8_000).wideband is None  # steps adapt: untold

    phone = soxr.resample(_tone(4_000, 8_000, hz=200.0, amp=0.2) + 0.01 * rng.standard_normal(4_000).astype(np.float32), 8_000, 16_000)
    sf.write(tmp_path / "phone.wav", phone, 16_000, subtype=subtype)
    rounded, _ = sf.read(tmp_path / "phone.wav", dtype="float32")
    assert abs(band_over_rounding_db(rounded, 16_000, 4_000.0, subtype)) < 3.0
    if subtype == "PCM_U8":
        step = 1 / 128
        assert np.allclose(np.diff(quantizer_levels(subtype)), step)
        dither = (rng.uniform(-step / 2, step / 2, len(phone)) + rng.uniform(-step / 2, step / 2, len(phone))).astype(np.float32)
        sf.write(tmp_path / "dithered.wav", phone + dither, 16_000, subtype=subtype)
        dithered, _ = sf.read(tmp_path / "dithered.wav", dtype="float32")
        assert 3.0 < band_over_rounding_db(dithered, 16_000, 4_000.0, subtype) < BAND_OVER_ROUNDING_MIN_DB - 3.0
        assert load_audio(tmp_path / "dithered.wav", sr=8_000, band_probe_samples=8_000).wideband is False


def test_the_band_is_read_from_formats_that_keep_an_empty_band_empty_and_never_from_opus(tmp_path):
    """FLAC, Vorbis and MP3 of studio audio still read wideband; Opus fills empty bands with noise of its own, so
    its band is left untold (None) even for studio audio."""
    rng = np.random.default_rng(1)
    studio = (0.1 * rng.standard_normal(24_000)).astype(np.float32)  # sound up to 24 kHz, 0.5 s
    for name, fmt, subtype in (("s.flac", "FLAC", "PCM_16"), ("s.ogg", "OGG", "VORBIS"), ("s.mp3", "MP3", "MPEG_LAYER_III")):
        sf.write(tmp_path / name, studio, 48_000, format=fmt, subtype=subtype)
        assert load_audio(tmp_path / name, sr=8_000, band_probe_samples=8_000).wideband is True, name
    sf.write(tmp_path / "s.opus.ogg", studio, 48_000, format="OGG", subtype="OPUS")
    assert load_audio(tmp_path / "s.opus.ogg", sr=8_000, band_probe_samples=8_000).wideband is None


def test_empty_file(tmp_path):
    (tmp_path / "empty.wav").touch()
    with pytest.raises(EmptyFile, match="0 bytes") as info:
        load_audio(tmp_path / "empty.wav", sr=SR)
    assert info.value.path == str(tmp_path / "empty.wav") and info.value.reason == "empty_file"


def test_truncated_header(tmp_path):
    data = _wav_bytes(tmp_path, _tone(SR, SR), SR)
    (tmp_path / "cut.wav").write_bytes(data[:20])
    with pytest.raises(UnreadableAudio, match="not a readable audio file"):
        load_audio(tmp_path / "cut.wav", sr=SR)


@pytest.mark.parametrize(("subtype", "block_align"), [("PCM_16", 2), ("PCM_24", 3), ("FLOAT", 4)])
def test_truncated_data(tmp_path, subtype, block_align):
    data = _wav_bytes(tmp_path, _tone(SR, SR), SR, subtype=subtype)
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    header_bytes = len(data) - SR * block_align  # 44 for PCM, more for FLOAT (a 'fact' chunk)
    held = (len(data) // 2 - header_bytes) // block_align
    with pytest.raises(UnreadableAudio, match=rf"truncated: header declares {SR} frames, file holds {held}\b"):
        load_audio(tmp_path / "cut.wav", sr=SR)


def test_truncated_stereo_data_cut_inside_a_frame(tmp_path):
    y = _tone(SR, SR)
    data = _wav_bytes(tmp_path, np.stack([y, y], axis=1), SR)
    (tmp_path / "cut.wav").write_bytes(data[:-3])
    with pytest.raises(UnreadableAudio, match=rf"header declares {SR} frames, file holds {SR - 1}\b"):
        load_audio(tmp_path / "cut.wav", sr=SR)


def test_truncated_aiff_named_wav(tmp_path):
    path = tmp_path / "aiff.wav"
    sf.write(path, _tone(SR, SR), SR, format="AIFF")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableAudio, match=rf"truncated: header declares {SR} frames"):
        load_audio(path, sr=SR)


def test_wav_with_chunks_after_data_is_not_truncated(tmp_path):
    """A LIST chunk after the audio is metadata, not missing samples."""
    y = _tone(SR // 4, SR)
    header = _riff_header(sr=SR, n_frames=len(y))
    body = (y * 32767).astype("<i2").tobytes()
    info_chunk = b"LIST" + struct.pack("<I", 12) + b"INFOISFT" + struct.pack("<I", 0)
    riff = header + body + info_chunk
    riff = riff[:4] + struct.pack("<I", len(riff) - 8) + riff[8:]
    (tmp_path / "meta.wav").write_bytes(riff)
    assert len(load_audio(tmp_path / "meta.wav", sr=SR).y) == len(y)


def test_streamed_wav_with_unknown_data_size_loads(tmp_path):
    """Pipes write 0xFFFFFFFF as the sizes they cannot know; that is not truncation."""
    y = _tone(SR // 4, SR)
    header = bytearray(_riff_header(sr=SR, n_frames=len(y)))
    header[4:8] = header[40:44] = b"\xff\xff\xff\xff"
    (tmp_path / "piped.wav").write_bytes(bytes(header) + (y * 32767).astype("<i2").tobytes())
    assert len(load_audio(tmp_path / "piped.wav", sr=SR).y) == len(y)


def test_random_bytes_named_wav(tmp_path):
    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(UnreadableAudio, match="not a readable audio file"):
        load_audio(tmp_path / "noise.wav", sr=SR)


def test_text_file_named_flac(tmp_path):
    (tmp_path / "notes.flac").write_text("these are my notes, not a recording\n" * 20)
    with pytest.raises(UnreadableAudio, match=r"notes\.flac: not a readable audio file"):
        load_audio(tmp_path / "notes.flac", sr=SR)


def test_zero_length_wav(tmp_path):
    sf.write(tmp_path / "nothing.wav", np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(NoSamples, match="zero samples"):
        load_audio(tmp_path / "nothing.wav", sr=SR)


def test_all_zero_samples(tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros(SR, dtype=np.float32), SR)
    with pytest.raises(SilentAudio, match=r"peak level -inf dBFS is below -80\.0 dBFS"):
        load_audio(tmp_path / "silence.wav", sr=SR)


def test_near_silence_reports_its_level(tmp_path):
    sf.write(tmp_path / "hiss.wav", np.full(SR, 1e-5, dtype=np.float32), SR, subtype="FLOAT")
    with pytest.raises(SilentAudio, match=r"peak level -100\.0 dBFS"):
        load_audio(tmp_path / "hiss.wav", sr=SR)


def test_nan_and_inf_samples_are_counted(tmp_path):
    y = _tone(SR, SR)
    y[[3, 10, 20]] = [np.nan, np.inf, -np.inf]
    sf.write(tmp_path / "broken.wav", y, SR, subtype="FLOAT")
    with pytest.raises(NonFiniteSamples, match=rf"\b3 of {SR} samples are NaN or infinite"):
        load_audio(tmp_path / "broken.wav", sr=SR)


def test_one_sample_file(tmp_path):
    sf.write(tmp_path / "click.wav", np.array([0.5], dtype=np.float32), SR)
    assert len(load_audio(tmp_path / "click.wav", sr=SR).y) == 1
    with pytest.raises(TooShort, match=r"\b1 samples at 16000 Hz; at least 400 are needed"):
        load_audio(tmp_path / "click.wav", sr=SR, min_samples=400)


def _write_rate(path: Path, rate: int, writer: str) -> None:
    y = _tone(256, SR)
    if writer == "soundfile":
        try:
            sf.write(path, y, rate, subtype="PCM_16")
        except (sf.LibsndfileError, ValueError) as exc:
            pytest.skip(f"soundfile refuses to write {rate} Hz: {exc}")
    else:
        path.write_bytes(_riff_header(sr=rate, n_frames=len(y)) + (y * 32767).astype("<i2").tobytes())


@pytest.mark.parametrize("writer", ["soundfile", "struct"])
@pytest.mark.parametrize("rate", [1, 2_000_000])
def test_unsupported_sample_rate(tmp_path, rate, writer):
    _write_rate(tmp_path / "odd.wav", rate, writer)
    with pytest.raises(UnsupportedSampleRate, match=rf"sample rate {rate} Hz is outside"):
        load_audio(tmp_path / "odd.wav", sr=SR)


def test_too_long(tmp_path):
    sf.write(tmp_path / "long.wav", _tone(SR, SR), SR)
    with pytest.raises(TooLong, match=r"1\.0 s is longer than the limit of 0\.5 s"):
        load_audio(tmp_path / "long.wav", sr=SR, max_duration_s=0.5)


def test_directory_named_like_a_file(tmp_path):
    (tmp_path / "x.wav").mkdir()
    with pytest.raises(UnreadableAudio, match="directory"):
        load_audio(tmp_path / "x.wav", sr=SR)


def test_missing_file(tmp_path):
    with pytest.raises(UnreadableAudio, match=r"gone\.wav: file not found"):
        load_audio(tmp_path / "gone.wav", sr=SR)


def test_non_utf8_file_name_loads(tmp_path):
    name = os.fsencode(tmp_path) + b"/caf\xe9_\xff.wav"
    try:
        with open(name, "wb") as f:
            sf.write(f, _tone(SR // 4, SR), SR, format="WAV")
    except (OSError, UnicodeError) as exc:
        pytest.skip(f"this file system refuses non-UTF-8 names: {exc}")
    for path in (os.fsdecode(name), Path(os.fsdecode(name)), name):
        assert len(load_audio(path, sr=SR).y) == SR // 4


def test_long_file_names(tmp_path):
    deep = tmp_path.joinpath(*(["d" * 200] * 5))
    deep.mkdir(parents=True)
    longest = deep / ("n" * 251 + ".wav")  # 255 bytes, the usual NAME_MAX
    with open(longest, "wb") as f:  # libsndfile itself refuses paths over ~1 kB
        sf.write(f, _tone(SR // 4, SR), SR, format="WAV")
    assert len(load_audio(longest, sr=SR).y) == SR // 4
    with pytest.raises(UnreadableAudio, match="cannot be opened"):
        load_audio(deep / ("n" * 300 + ".wav"), sr=SR)
    with pytest.raises(UnreadableAudio, match="cannot be opened"):
        load_audio(tmp_path.joinpath(*(["d" * 200] * 30), "x.wav"), sr=SR)


def test_invalid_target_rate_is_a_caller_error(tmp_path):
    sf.write(tmp_path / "tone.wav", _tone(SR, SR), SR)
    with pytest.raises(ValueError, match="sr must be a positive"):
        load_audio(tmp_path / "tone.wav", sr=0)


_PREFIXES = [
    b"",
    b"RIFF",
    b"RIFF\x24\x00\x00\x00WAVEfmt ",
    _riff_header(sr=SR, n_frames=100),
    _riff_header(sr=44_100, n_frames=10, channels=2, bits=24),
    b"fLaC",
    b"fLaC\x00\x00\x00\x22",
    b"OggS",
    b"OggS\x00\x02",
    b"ID3\x03\x00\x00\x00\x00\x00\x00",
    b"\xff\xfb\x90\x64",
    b"FORM\x00\x00\x01\x00AIFFCOMM",
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.sampled_from(_PREFIXES), body=st.binary(max_size=2048),
       ext=st.sampled_from(AUDIO_EXTENSIONS))
def test_hostile_bytes_give_a_recording_or_invalid_audio(tmp_path, prefix, body, ext):
    path = tmp_path / f"hostile{ext}"
    path.write_bytes(prefix + body)
    try:
        rec = load_audio(path, sr=SR, max_duration_s=60.0)
    except InvalidAudio:
        return
    assert rec.y.dtype == np.float32 and rec.y.ndim == 1 and len(rec.y) >= 1
    assert np.isfinite(rec.y).all()


def _encoded(y: np.ndarray, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, SR, format=fmt, subtype=subtype)
    return buf.getvalue()


_VALID = [
    (fmt, ext, sub) for fmt, ext, sub in [
        ("WAV", ".wav", "PCM_16"), ("WAV", ".wav", "FLOAT"), ("WAVEX", ".wav", "PCM_24"), ("AIFF", ".wav", "PCM_16"),
        ("FLAC", ".flac", "PCM_16"), ("OGG", ".ogg", "VORBIS"), ("MP3", ".mp3", "MPEG_LAYER_III"),
    ] if fmt in sf.available_formats()
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(_VALID), cut=st.floats(0.0, 1.0),
       patches=st.lists(st.tuples(st.integers(0, 300), st.binary(min_size=1, max_size=4)), max_size=6))
def test_damaged_valid_files_give_a_recording_or_invalid_audio(tmp_path, which, cut, patches):
    """Truncated and byte-patched real files: the shapes of damage decoders meet in practice."""
    fmt, ext, subtype = which
    data = bytearray(_encoded(_tone(SR // 8, SR), fmt, subtype))
    data = data[: max(1, int(len(data) * cut))] if cut < 0.95 else data
    for offset, patch in patches:
        data[offset : offset + len(patch)] = patch
    path = tmp_path / f"damaged{ext}"
    path.write_bytes(bytes(data))
    try:
        rec = load_audio(path, sr=SR, max_duration_s=60.0)
    except InvalidAudio:
        return
    assert rec.y.dtype == np.float32 and rec.y.ndim == 1 and np.isfinite(rec.y).all()


# --- windows -------------------------------------------------------------------


def test_short_clip_is_centred_in_one_window():
    y = np.arange(1, 4, dtype=np.float32)
    windows = split_windows(y, window=8, hop=4)
    assert windows.shape == (1, 8) and windows.dtype == np.float32
    np.testing.assert_array_equal(windows[0], [0, 0, 1, 2, 3, 0, 0, 0])


def test_short_clip_can_be_looped_to_fill_its_window():
    y = np.arange(1, 4, dtype=np.float32)
    windows = split_windows(y, window=8, hop=4, fill="loop")
    assert windows.shape == (1, 8) and windows.dtype == np.float32
    np.testing.assert_array_equal(windows[0], [1, 2, 3, 1, 2, 3, 1, 2])
    long = np.arange(2_300, dtype=np.float32)  # only clips under a window are filled
    np.testing.assert_array_equal(split_windows(long, window=1_000, hop=500, fill="loop"), split_windows(long, window=1_000, hop=500))
    with pytest.raises(ValueError, match="fill must be one of zeros, loop, trim, got 'mirror'"):
        split_windows(y, window=8, hop=4, fill="mirror")


def test_short_clip_can_be_left_its_own_length():
    y = np.arange(1, 4, dtype=np.float64)
    windows = split_windows(y, window=8, hop=4, fill="trim")
    assert windows.shape == (1, 3) and windows.dtype == np.float32
    np.testing.assert_array_equal(windows[0], [1, 2, 3])
    long = np.arange(2_300, dtype=np.float32)  # clips of a window or more are cut as always
    np.testing.assert_array_equal(split_windows(long, window=1_000, hop=500, fill="trim"), split_windows(long, window=1_000, hop=500))


def test_loop_to_length_reads_from_any_start():
    y = np.arange(3, dtype=np.float64)
    out = loop_to_length(y, 7, start=2)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [2, 0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(loop_to_length(y, 2, start=1), [1, 2])


def test_clip_of_exactly_one_window():
    y = np.arange(8, dtype=np.float32)
    np.testing.assert_array_equal(split_windows(y, window=8, hop=4), y[None])


def test_long_clip_last_window_is_aligned_to_the_end():
    sr = 1_000
    y = np.arange(int(2.3 * sr), dtype=np.float32)  # the sample index is its value
    windows = split_windows(y, window=sr, hop=sr // 2)
    assert windows.shape == (4, sr)
    np.testing.assert_array_equal(windows[:, 0], [0, 500, 1000, 1300])
    assert windows[-1, -1] == len(y) - 1


def test_exact_fit_adds_no_duplicate_window():
    y = np.arange(2_000, dtype=np.float32)
    np.testing.assert_array_equal(split_windows(y, window=1_000, hop=500)[:, 0], [0, 500, 1000])


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 400), window=st.integers(1, 64), hop_frac=st.floats(0.01, 1.0))
def test_windows_cover_every_sample(n, window, hop_frac):
    hop = max(1, int(window * hop_frac))
    y = np.arange(1, n + 1, dtype=np.float32)
    windows = split_windows(y, window=window, hop=hop)
    assert windows.shape[1] == window
    assert set(np.unique(windows[windows > 0]).astype(int)) == set(range(1, n + 1))
    if n > window:
        starts = windows[:, 0].astype(int) - 1
        assert starts[0] == 0 and starts[-1] == n - window
        assert np.all(np.diff(starts) > 0) and np.all(np.diff(starts) <= hop)


@pytest.mark.parametrize(("window", "hop"), [(0, 1), (8, 0), (8, -2), (8, 9)])
def test_bad_window_or_hop_is_refused(window, hop):
    with pytest.raises(ValueError, match=rf"window={window}, hop={hop}"):
        split_windows(np.ones(20, dtype=np.float32), window=window, hop=hop)


def _level(db: float, n: int = 1_600) -> np.ndarray:
    """A sine window whose RMS is ``db`` dBFS."""
    return _tone(n, SR, amp=np.sqrt(2) * 10 ** (db / 20))


def test_silent_windows_do_not_vote():
    windows = np.stack([_level(-10), np.zeros(1_600, dtype=np.float32), _level(-60), _level(-20)])
    np.testing.assert_array_equal(speech_mask(windows), [True, False, False, True])


def test_pauses_far_below_the_loudest_do_not_vote():
    windows = np.stack([_level(-10), _level(-40), _level(-30)])  # 30 dB and 20 dB below
    np.testing.assert_array_equal(speech_mask(windows), [True, False, True])


@pytest.mark.parametrize("db", [-200.0, -70.0])
def test_the_loudest_window_always_votes(db):
    windows = np.stack([np.zeros(1_600, dtype=np.float32), _level(db), np.zeros(1_600, dtype=np.float32)])
    np.testing.assert_array_equal(speech_mask(windows), [False, True, False])


def test_no_windows_give_an_empty_mask():
    assert speech_mask(np.zeros((0, 100), dtype=np.float32)).shape == (0,)


def test_all_zero_windows_still_give_one_vote():
    assert speech_mask(np.zeros((3, 100), dtype=np.float32)).sum() == 1


# --- finding files ---------------------------------------------------------------


def test_find_audio_files_recursive_sorted(tmp_path):
    for rel in ["b/z.wav", "b/deep/er/a.FLAC", "a.mp3", "b/C.Ogg", "b/x.oga", "notes.txt", "b/cover.jpg",
                "b/wav", "b/deep/readme.md"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "b" / "folder.wav").mkdir()
    found = find_audio_files([tmp_path])
    rel = [p.relative_to(tmp_path).as_posix() for p in found]
    assert rel == ["a.mp3", "b/C.Ogg", "b/deep/er/a.FLAC", "b/x.oga", "b/z.wav"]


def test_find_audio_files_keeps_named_files_and_argument_order(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "2.wav").write_bytes(b"x")
    (tmp_path / "d" / "1.WAV").write_bytes(b"x")
    named = tmp_path / "named.bin"
    assert find_audio_files([named, str(tmp_path / "d")]) == [named, tmp_path / "d/1.WAV", tmp_path / "d/2.wav"]


@pytest.mark.parametrize(("name", "ok"), [("a.wav", True), ("A.MP3", True), ("x.Flac", True), ("y.oga", True),
                                          ("z.ogg", True), ("wav", False), ("a.wav.txt", False), ("a.m4a", False)])
def test_is_audio_path(name, ok):
    assert is_audio_path(name) is ok
