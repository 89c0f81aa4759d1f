"""Real speech codecs, round-tripped in memory, so telephone coding carries no label.

The corpora hold one kind of telephone audio (Asterisk prompts, mu-law at
8 kHz); calls and voice notes reach the product through GSM, ADPCM, Opus and
low-rate MP3 too. libsndfile (inside soundfile) carries real encoders for all
of them, so a training crop can go through the codec itself rather than an
imitation of it.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache

import numpy as np
import soundfile as sf
import soxr

CODEC_RATE = 8000  # narrowband: what GSM and the ADPCM telephone codecs take


@dataclass(frozen=True)
class Codec:
    name: str
    format: str
    subtype: str
    compression_level: float | None = None  # libsndfile's 0 (best) .. 1 (smallest), where the codec has a bitrate


CODECS = (
    Codec("gsm", "WAV", "GSM610"),  # GSM full rate, 13 kbit/s: mobile calls
    Codec("g721", "WAV", "G721_32"),  # 32 kbit/s ADPCM: DECT cordless phones
    Codec("nms16", "WAV", "NMS_ADPCM_16"),  # 16 kbit/s ADPCM: voice mail, PBXs
    Codec("nms24", "WAV", "NMS_ADPCM_24"),
    Codec("ima", "WAV", "IMA_ADPCM"),  # 32 kbit/s ADPCM: answering machines, old recorders
    Codec("alaw", "WAV", "ALAW"),  # G.711 A-law: European landlines (mu-law is augment_channel's own)
    Codec("opus", "OGG", "OPUS", 1.0),  # lowest-rate Opus: VoIP and voice messages
    Codec("mp3", "MP3", "MPEG_LAYER_III", 0.95),  # ~14 kbit/s MP3 at 8 kHz
)


@cache
def available_codecs() -> tuple[Codec, ...]:
    """The codecs this machine's libsndfile can write (MP3 needs 1.1, Opus 1.0.29)."""
    return tuple(c for c in CODECS if sf.check_format(c.format, c.subtype))


def round_trip(y: np.ndarray, sr: int, codec: Codec) -> np.ndarray:
    """``y`` (float, mono, within [-1, 1]) encoded and decoded by ``codec``; same length and rate.

    Audio at another rate goes through the codec at 8 kHz, as a call would,
    so its band above 4 kHz is lost too.
    """
    x = np.clip(np.asarray(y, dtype=np.float32), -1.0, 1.0)
    if sr != CODEC_RATE:
        x = soxr.resample(x, sr, CODEC_RATE).astype(np.float32)
    buf = io.BytesIO()
    extra = {} if codec.compression_level is None else {"compression_level": codec.compression_level}
    sf.write(buf, x, CODEC_RATE, format=codec.format, subtype=codec.subtype, **extra)
    buf.seek(0)
    z, _ = sf.read(buf, dtype="float32")
    # Block codecs pad their last frame; none of these delays the start (measured: lag 0).
    z = _fit(z, len(x))
    if sr != CODEC_RATE:
        z = _fit(soxr.resample(z, CODEC_RATE, sr).astype(np.float32), len(y))
    return z


def _fit(z: np.ndarray, n: int) -> np.ndarray:
    return z[:n] if len(z) >= n else np.pad(z, (0, n - len(z)))
