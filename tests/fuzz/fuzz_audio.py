"""Fuzz the audio loader and validator: any bytes, any name, any target rate.

Not part of the default test run (the file name does not match ``test_*.py``);
run it for a while with ``make fuzz`` or::

    .venv/bin/python -m tests.fuzz.fuzz_audio --seconds 300

It passes when every input either loads as a valid recording or raises one of
the named errors in :mod:`classifier.errors`; anything else (another exception,
a non-finite sample, a wrong dtype, a crash of the process) is a finding,
printed with the input that caused it and saved under ``--findings``.
Hypothesis drives the inputs: real files of every format the decoder writes,
then truncated, patched, spliced or replaced by noise behind a format's magic.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from classifier.audio import AUDIO_EXTENSIONS, check_submitted_entry, load_audio, speech_mask, split_windows
from classifier.errors import InvalidAudio

SR_CHOICES = (8_000, 16_000, 22_050, 48_000)
MAGIC = (b"", b"RIFF", b"RIFF\xff\xff\xff\xffWAVEfmt ", b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00", b"fLaC",
         b"fLaC\x00\x00\x00\x22", b"OggS\x00\x02", b"ID3\x03\x00\x00\x00\x00\x00\x00", b"\xff\xfb\x90\x64",
         b"FORM\x00\x00\x01\x00AIFFCOMM", b"FORM\x00\x00\x01\x00AIFCFVER", b"caff", b".snd", b"RF64\xff\xff\xff\xffWAVEds64")
# (format, subtype) pairs libsndfile writes here; MP3/OGG only when this build has them.
FORMATS = [
    (fmt, sub) for fmt, sub in [
        ("WAV", "PCM_U8"), ("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"), ("WAV", "FLOAT"), ("WAV", "DOUBLE"),
        ("WAV", "ULAW"), ("WAV", "ALAW"), ("WAV", "IMA_ADPCM"), ("WAVEX", "PCM_24"), ("AIFF", "PCM_16"), ("FLAC", "PCM_16"),
        ("FLAC", "PCM_24"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III"), ("RF64", "PCM_16"), ("CAF", "PCM_16"),
    ] if fmt in sf.available_formats()
]


def encode(fmt: str, subtype: str, sr: int, channels: int, n: int, kind: str) -> bytes:
    """A real file: tones, noise, silence, NaN or over-full samples in any format libsndfile writes."""
    t = np.arange(n) / sr
    y = {"tone": 0.5 * np.sin(2 * np.pi * 440 * t), "noise": np.random.default_rng(n).uniform(-1, 1, n),
         "silence": np.zeros(n), "nan": np.where(np.arange(n) > n // 2, np.nan, 0.3), "loud": np.full(n, 4.0)}[kind]
    y = np.repeat(y[:, None], channels, axis=1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, y, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def build_corpus(folder: Path, *, size: int, seed: int) -> tuple[list[bytes], int]:
    """``size`` encoded files of random formats; returns them and how many encodes crashed.

    Each encode runs in a forked child: libsndfile's writers (LAME above all)
    abort or segfault on some inputs (NaN, |y| > 1, odd channel counts). That
    is the encoder, which the service never runs, so those inputs are left out.
    """
    rng = np.random.default_rng(seed)
    crashed = 0
    for i in range(size):
        fmt, subtype = FORMATS[rng.integers(len(FORMATS))]
        combo = (fmt, subtype, int(rng.choice((8_000, 11_025, 16_000, 44_100, 48_000, 96_000))), int(rng.integers(1, 7)),
                 int(rng.choice((0, 1, 64, 1000, 4096))), str(rng.choice(("tone", "noise", "silence", "nan", "loud"))))
        pid = os.fork()
        if pid == 0:  # the child: encode, write, leave without running the parent's clean-up
            try:
                (folder / f"{i:05d}.bin").write_bytes(encode(*combo))
                os._exit(0)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        crashed += os.WIFSIGNALED(status)
    return [p.read_bytes() for p in sorted(folder.glob("*.bin"))], crashed


@st.composite
def damaged(draw, corpus: list[bytes]) -> bytes:
    """Real files damaged the ways files are: cut, patched, spliced, or noise behind a magic number."""
    how = draw(st.sampled_from(("intact", "cut", "patch", "splice", "magic")))
    if how == "magic":
        return draw(st.sampled_from(MAGIC)) + draw(st.binary(max_size=4096))
    data = bytearray(draw(st.sampled_from(corpus)))
    if how == "cut" and data:
        data = data[: draw(st.integers(0, len(data)))]
    elif how == "patch":
        for offset, patch in draw(st.lists(st.tuples(st.integers(0, 400), st.binary(min_size=1, max_size=8)), max_size=8)):
            data[offset : offset + len(patch)] = patch
    elif how == "splice":
        other = draw(st.sampled_from(corpus))
        data = data[: draw(st.integers(0, len(data)))] + other[draw(st.integers(0, len(other))) :]
    return bytes(data)


class Fuzzer:
    def __init__(self, folder: Path, findings: Path) -> None:
        self.folder, self.findings = folder, findings
        self.tried = self.loaded = 0
        self.reasons: dict[str, int] = {}

    def check(self, data: bytes, ext: str, sr: int, max_duration_s: float, min_samples: int) -> None:
        path = self.folder / f"input{ext}"
        path.write_bytes(data)
        self.tried += 1
        try:
            check_submitted_entry(path)
            rec = load_audio(path, sr=sr, min_samples=min_samples, max_duration_s=max_duration_s)
        except InvalidAudio as exc:
            self.reasons[exc.reason] = self.reasons.get(exc.reason, 0) + 1
            assert str(exc) and exc.path == str(path), exc
            return
        except BaseException as exc:
            self._save(data, ext, f"{type(exc).__name__}: {exc}")
            raise
        self.loaded += 1
        problems = []
        if rec.y.dtype != np.float32 or rec.y.ndim != 1 or len(rec.y) < min_samples:
            problems.append(f"shape/dtype {rec.y.shape} {rec.y.dtype}")
        if not np.isfinite(rec.y).all():
            problems.append("non-finite samples in a loaded recording")
        if rec.sr != sr:
            problems.append(f"rate {rec.sr} != {sr}")
        if problems:
            self._save(data, ext, "; ".join(problems))
            raise AssertionError(problems)
        windows = split_windows(rec.y, window=sr // 2, hop=sr // 4)  # the next steps of the pipeline take it too
        assert speech_mask(windows).any()

    def _save(self, data: bytes, ext: str, what: str) -> None:
        self.findings.mkdir(parents=True, exist_ok=True)
        name = self.findings / f"finding-{self.tried:07d}{ext}"
        name.write_bytes(data)
        print(f"FINDING {what} -> {name}", file=sys.stderr)


def run(seconds: float, batch: int, findings: Path, corpus_size: int) -> Fuzzer:
    with tempfile.TemporaryDirectory(prefix="vg-fuzz-") as tmp:
        (Path(tmp) / "corpus").mkdir()
        corpus, crashed = build_corpus(Path(tmp) / "corpus", size=corpus_size, seed=0)
        print(f"fuzz_audio: corpus of {len(corpus)} encoded files ({crashed} encodes crashed the encoder, left out)")
        fuzzer = Fuzzer(Path(tmp), findings)

        @settings(max_examples=batch, deadline=None, database=None, derandomize=False,
                  phases=(Phase.generate, Phase.shrink), suppress_health_check=list(HealthCheck))
        @given(data=damaged(corpus), ext=st.sampled_from(AUDIO_EXTENSIONS + (".WAV", ".Flac")),
               sr=st.sampled_from(SR_CHOICES), max_duration_s=st.sampled_from((0.01, 1.0, 60.0, 1200.0)),
               min_samples=st.sampled_from((1, 200, 400)))
        def one_batch(data, ext, sr, max_duration_s, min_samples):
            fuzzer.check(data, ext, sr, max_duration_s, min_samples)

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            one_batch()
        return fuzzer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="how long to fuzz (default 300)")
    parser.add_argument("--batch", type=int, default=500, help="examples per hypothesis run")
    parser.add_argument("--corpus", type=int, default=200, help="encoded seed files to damage")
    parser.add_argument("--findings", type=Path, default=Path("fuzz-findings"))
    args = parser.parse_args(argv)
    started = time.monotonic()
    fuzzer = run(args.seconds, args.batch, args.findings, args.corpus)
    elapsed = time.monotonic() - started
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(fuzzer.reasons.items(), key=lambda kv: -kv[1]))
    print(f"fuzz_audio: {fuzzer.tried} inputs in {elapsed:.0f} s, no finding; "
          f"{fuzzer.loaded} loaded as recordings, refused: {reasons}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
