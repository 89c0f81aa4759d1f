"""Training data in memory: decoded waveforms, balanced crops, channel augmentation."""
from __future__ import annotations

import hashlib
import logging
import math
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from classifier.audio import check_short_fill, load_audio, loop_to_length
from classifier.errors import InvalidAudio
from training.codecs import available_codecs, round_trip
from training.sources import LabelledClip

log = logging.getLogger(__name__)


def _decode_one(args: tuple[str, int]) -> np.ndarray | str:
    path, sr = args
    try:
        return load_audio(path, sr=sr, min_samples=1).y
    except InvalidAudio as exc:
        return str(exc)


def load_waveforms(
    clips: list[LabelledClip], *, sr: int, cache_dir: Path | None = None, workers: int = 2, progress=None
) -> list[np.ndarray | None]:
    """Decode every clip at ``sr``; unreadable clips become None (and are logged).

    With ``cache_dir`` the decoded set is kept as one .npy so the next run
    starts in seconds instead of decoding everything again.
    """
    key = hashlib.sha256(f"{sr}|".encode() + "\n".join(str(c.path) for c in clips).encode()).hexdigest()[:16]
    cache = cache_dir / f"waves-{sr}-{key}.npz" if cache_dir else None
    if cache and cache.is_file():
        data = np.load(cache)
        flat, offsets = data["flat"], data["offsets"]
        return [None if offsets[i] == offsets[i + 1] else flat[offsets[i] : offsets[i + 1]].astype(np.float32) for i in range(len(clips))]
    waves: list[np.ndarray | None] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for clip, y in zip(clips, pool.map(_decode_one, [(str(c.path), sr) for c in clips], chunksize=16)):
            if isinstance(y, str):
                log.warning("skipping unreadable training clip: %s", y)
                y = None
            waves.append(y)
            if progress:
                progress(1)
    if cache:
        lengths = [0 if w is None else len(w) for w in waves]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        flat = np.concatenate([w for w in waves if w is not None]).astype(np.float16)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, flat=flat, offsets=offsets)
    return waves


class BalancedCropSampler:
    """Draws 1 s training crops balanced by gender, then corpus, then speaker.

    Gender is 50/50; within a gender, corpora are weighted by the square root
    of their speaker count (so a corpus of 400 readers does not drown one of
    12 actors); then a speaker uniformly, a clip uniformly, a crop that holds
    sound. Clip counts per speaker never matter.

    With probability ``short_prob`` a crop is instead a short excerpt
    (``short_fraction``: its length range as a fraction of the window, faded at both ends) set
    in silence, as ``split_windows`` pads a short clip at inference. Without
    it the only short padded examples are a few digit and prompt voices, and
    their corpus, not the voice, decides the answer on other short clips.

    ``fill`` is the features' ``short_fill``: a clip (or short excerpt)
    shorter than the window is set in silence (``"zeros"``) or repeated from
    a random point (``"loop"``), as ``split_windows`` will fill it at inference.
    Under ``"trim"`` it is set in silence too, but only up to the batch's
    width (``training.loop.batch_width``), which is often narrower.

    With ``wideband_short_prob``, that share of the crops drawn from a
    wideband clip (``wideband[i]``: its file was stored at a rate above the
    model's, see :func:`wideband_clips`) is a short excerpt looped to fill the
    window, as inference fills a short studio clip
    (``FeatureConfig.wideband_short_fill``); telephone clips never are, as
    inference keeps their silence.
    """

    def __init__(
        self,
        clips: list[LabelledClip],
        waves: list[np.ndarray | None],
        indices: list[int],
        *,
        window: int,
        seed: int,
        short_prob: float = 0.0,
        short_fraction: tuple[float, float] = (0.25, 0.8),
        fill: str = "zeros",
        wideband: list[bool] | None = None,
        wideband_short_prob: float = 0.0,
    ):
        if not 0.0 <= short_prob <= 1.0:
            raise ValueError(f"short_prob must be in [0, 1], got {short_prob}")
        if not 0.0 <= wideband_short_prob <= 1.0:
            raise ValueError(f"wideband_short_prob must be in [0, 1], got {wideband_short_prob}")
        if wideband_short_prob > 0 and (wideband is None or len(wideband) != len(waves)):
            raise ValueError("wideband_short_prob needs one wideband flag per clip")
        self.wideband = wideband
        self.wideband_short_prob = wideband_short_prob
        check_short_fill(fill)
        self.fill = fill
        self.waves = waves
        self.window = window
        self.short_prob = short_prob
        self.short_fraction = short_fraction
        self.rng = np.random.default_rng(seed)
        tree: dict[str, dict[str, dict[str, list[int]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
        for i in indices:
            if waves[i] is not None:
                c = clips[i]
                tree[c.gender][c.corpus][c.speaker].append(i)
        self.tree = {g: {corp: dict(spk) for corp, spk in corpora.items()} for g, corpora in tree.items()}
        self.genders = sorted(self.tree)
        self.corpus_weights = {
            g: self._normalise([math.sqrt(len(self.tree[g][c])) for c in sorted(self.tree[g])]) for g in self.genders
        }

    @staticmethod
    def _normalise(w: list[float]) -> np.ndarray:
        a = np.asarray(w, dtype=float)
        return a / a.sum()

    def draw(self, n: int, *, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``n`` crops (n, length or window) float32 and labels (n,) with 0 = female, 1 = male.

        A ``length`` above the window gives source material for a pitch shift
        (training/pitch.py), which reads more samples than it writes.
        """
        length = length or self.window
        crops = np.zeros((n, length), dtype=np.float32)
        labels = np.zeros(n, dtype=np.int64)
        for k in range(n):
            gender = self.genders[self.rng.integers(len(self.genders))]
            corpora = sorted(self.tree[gender])
            corpus = corpora[self.rng.choice(len(corpora), p=self.corpus_weights[gender])]
            speakers = sorted(self.tree[gender][corpus])
            clip_ids = self.tree[gender][corpus][speakers[self.rng.integers(len(speakers))]]
            i = clip_ids[self.rng.integers(len(clip_ids))]
            y = self.waves[i]
            # No draw at all when off: the crop sequence of a seed stays what it was before short crops existed.
            short = self.short_prob > 0 and self.rng.random() < self.short_prob
            looped = not short and self.wideband_short_prob > 0 and self.wideband[i] and self.rng.random() < self.wideband_short_prob
            crops[k] = self._short_crop(y, length, fill="loop" if looped else None) if short or looped else self._crop(y, length)
            labels[k] = 0 if gender == "female" else 1
        return crops, labels

    def _crop(self, y: np.ndarray, length: int) -> np.ndarray:
        if len(y) <= length:
            return self._fill(y, length)
        # Try a few offsets and keep the loudest: long readings have pauses.
        best, best_rms = None, -1.0
        for _ in range(3):
            start = self.rng.integers(len(y) - length + 1)
            crop = y[start : start + length]
            rms = float(np.mean(crop.astype(np.float64) ** 2))
            if rms > best_rms:
                best, best_rms = crop, rms
        return best.astype(np.float32)

    def _short_crop(self, y: np.ndarray, length: int, fill: str | None = None) -> np.ndarray:
        """The loudest of a few short excerpts, faded in and out, at a random place in silence (or filled by ``fill``)."""
        lo, hi = self.short_fraction
        n = max(16, int(self.window * self.rng.uniform(lo, hi)))
        if len(y) > n:
            starts = self.rng.integers(len(y) - n + 1, size=4)
            energy = [float(np.mean(np.square(y[s : s + n], dtype=np.float64))) for s in starts]
            y = y[int(starts[int(np.argmax(energy))]) :][:n]
        piece = y.astype(np.float32)  # a copy: the fade must not touch the cached waveform
        fade = min(len(piece) // 4, self.window // 50)  # 20 ms at most: no click, no lost syllable
        if fade > 0:
            ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
            piece[:fade] *= ramp
            piece[-fade:] *= ramp[::-1]
        return self._fill(piece, length, fill)

    def _fill(self, y: np.ndarray, length: int, fill: str | None = None) -> np.ndarray:
        """A clip no longer than ``length`` at a random place in silence, or looped from a random point."""
        if (fill or self.fill) == "loop":
            return loop_to_length(y, length, start=int(self.rng.integers(len(y))))
        out = np.zeros(length, dtype=np.float32)
        start = self.rng.integers(length - len(y) + 1)
        out[start : start + len(y)] = y
        return out


def wideband_clips(clips: list[LabelledClip], *, sr: int) -> list[bool]:
    """Per clip: was its file stored at a rate above ``sr``, so it can carry sound above the model's band?

    Read from the file header only (the decoded training cache holds ``sr``
    audio, which has lost that band). Inference measures the band's energy
    instead (``classifier.audio.Recording.wideband``); in the training
    corpora the two agree by corpus: 8 kHz telephone and digit corpora, 16-48 kHz
    studio ones. An unreadable file counts as narrow band.
    """
    flags = []
    for c in clips:
        try:
            flags.append(sf.info(str(c.path)).samplerate > sr)
        except (RuntimeError, OSError):  # soundfile raises these for unreadable files; load_waveforms reports them
            flags.append(False)
    return flags


def augment_channel(
    y: torch.Tensor, *, sr: int, generator: torch.Generator, low_shelf_prob: float = 0.0, codec_prob: float = 0.0, coloured_noise_prob: float = 0.0
) -> torch.Tensor:
    """Random channel so that channel carries no label (B, n) -> (B, n).

    Band limits (telephone low- and high-pass), a smooth random EQ tilt,
    reverberation, mu-law coding, noise at a random SNR and a random gain,
    each applied to a random subset of the batch. With ``low_shelf_prob``,
    that share of crops also has everything below a random corner
    (150-500 Hz) raised or lowered by up to 12 dB: bass-heavy microphones,
    close talking and handsets move that level. Off by default: on the
    digit hold-out it did not stop strong lows reading male
    (models/EXPERIMENTS.md, "Random low shelf"). With ``codec_prob``, that
    share of crops goes through a real speech codec (GSM, ADPCM, A-law, Opus,
    MP3; training/codecs.py), drawn uniformly, after the band and before the
    noise, as a call codes what the microphone hears. With
    ``coloured_noise_prob``, that share of the noise is coloured, its power
    falling as f**-s with s drawn from 0-2 (white to brown: hiss, much
    environmental noise, rumble), as white noise alone leaves steady noise
    pulling men toward "female". Off by default: one seed on the digit
    hold-out ranked better than its pair (AUC 0.960 against 0.947), inside
    the seeds' spread and short of the shipped length (models/EXPERIMENTS.md,
    "A paired baseline in fp32").
    """
    if not 0 <= low_shelf_prob <= 1:
        raise ValueError(f"low_shelf_prob must be in [0, 1], got {low_shelf_prob}")
    if not 0 <= codec_prob <= 1:
        raise ValueError(f"codec_prob must be in [0, 1], got {codec_prob}")
    if not 0 <= coloured_noise_prob <= 1:
        raise ValueError(f"coloured_noise_prob must be in [0, 1], got {coloured_noise_prob}")
    b, n = y.shape
    u = lambda: torch.rand(b, 1, generator=generator)  # noqa: E731
    spec = torch.fft.rfft(y, dim=-1)
    freqs = torch.fft.rfftfreq(n, d=1 / sr)[None, :]  # (1, n//2+1)
    gain = torch.ones_like(freqs).expand(b, -1).clone()
    lowpass = torch.where(u() < 0.4, 2500 + 1500 * u(), torch.full((b, 1), 1e9))
    gain *= torch.sigmoid((lowpass - freqs) / 100)
    highpass = torch.where(u() < 0.3, 100 + 250 * u(), torch.zeros(b, 1))
    gain *= torch.sigmoid((freqs - highpass) / 30)
    tilt_db = torch.where(u() < 0.5, (u() - 0.5) * 12, torch.zeros(b, 1))  # +-6 dB across the band
    gain *= 10 ** (tilt_db * (freqs / (sr / 2) - 0.5) / 20)
    if low_shelf_prob > 0:  # no draws when off: a seed's batches stay what they were
        shelf_db = torch.where(u() < low_shelf_prob, (u() - 0.5) * 24, torch.zeros(b, 1))
        corner = 150 + 350 * u()
        gain *= 10 ** (shelf_db * torch.sigmoid((corner - freqs) / 40) / 20)
    y = torch.fft.irfft(spec * gain, n=n, dim=-1)
    y = _reverberate(y, sr=sr, apply=u()[:, 0] < 0.25, generator=generator)
    y = _normalise_peak(y)
    mu = (u() < 0.2).float()
    y = mu * _mu_law(y) + (1 - mu) * y
    if codec_prob > 0:  # no draws when off
        y = _code(y, sr=sr, prob=codec_prob, generator=generator)
    snr_db = 5 + 35 * u()
    noise = torch.randn(b, n, generator=generator)
    if coloured_noise_prob > 0:  # no draws when off
        noise = colour_noise(noise, sr=sr, slope=torch.where(u() < coloured_noise_prob, 2 * u(), torch.zeros(b, 1)))
    signal_power = y.square().mean(dim=-1, keepdim=True).clamp_min(1e-10)
    noise_scale = torch.sqrt(signal_power / 10 ** (snr_db / 10))
    y = y + torch.where(u() < 0.5, noise_scale, torch.zeros(b, 1)) * noise
    return y * 10 ** ((u() - 0.5) * 24 / 20)


def colour_noise(noise: torch.Tensor, *, sr: int, slope: torch.Tensor, floor_hz: float = 20.0) -> torch.Tensor:
    """White noise (B, n) reshaped so its power falls as f**-slope (slope (B, 1); 0 leaves it white), at unit mean power.

    Below ``floor_hz`` the spectrum is flat, so no crop drifts near DC.
    """
    freqs = torch.fft.rfftfreq(noise.shape[-1], d=1 / sr)[None, :].clamp_min(floor_hz)
    shaped = torch.fft.irfft(torch.fft.rfft(noise, dim=-1) * freqs ** (-slope / 2), n=noise.shape[-1], dim=-1)
    return shaped / shaped.square().mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-12)


def _reverberate(y: torch.Tensor, *, sr: int, apply: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    if not apply.any():
        return y
    b, n = y.shape
    rt60 = 0.15 + 0.6 * torch.rand(b, 1, generator=generator)
    t = torch.arange(int(0.5 * sr))[None, :] / sr
    rir = torch.randn(b, t.shape[1], generator=generator) * torch.exp(-6.9 * t / rt60)
    rir[:, 0] = 1.0
    wet = torch.fft.irfft(torch.fft.rfft(y, n=2 * n) * torch.fft.rfft(rir, n=2 * n), n=2 * n)[:, :n]
    return torch.where(apply[:, None], wet, y)


def _code(y: torch.Tensor, *, sr: int, prob: float, generator: torch.Generator) -> torch.Tensor:
    codecs = available_codecs()
    b = y.shape[0]
    apply = torch.rand(b, generator=generator) < prob
    pick = torch.randint(len(codecs), (b,), generator=generator)
    rows = [torch.from_numpy(round_trip(y[i].numpy(), sr, codecs[int(pick[i])])) if apply[i] else y[i] for i in range(b)]
    return torch.stack(rows).to(y.dtype)


def _normalise_peak(y: torch.Tensor) -> torch.Tensor:
    return y / y.abs().amax(dim=-1, keepdim=True).clamp_min(1e-6) * 0.5


def _mu_law(y: torch.Tensor, mu: float = 255.0) -> torch.Tensor:
    # Telephone companding: 8-bit mu-law encode then decode.
    x = y.clamp(-1, 1)
    q = torch.round(torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu) * 127) / 127
    return torch.sign(q) * ((1 + mu) ** q.abs() - 1) / mu
