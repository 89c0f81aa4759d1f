"""The training loop, evaluation and calibration for one split."""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.optimize
import torch
import torch.nn.functional as F

from classifier.features import FeatureConfig, compute_features
from classifier.model import Calibration, GenderResNet, ModelBundle, build_model, load_checkpoint, save_checkpoint
from classifier.pipeline import Classifier, prepare_waveform
from training.averaging import TailAverage
from training.babble import add_babble
from training.bandmix import mix_band_statistics
from training.codecs import available_codecs
from training.data import BalancedCropSampler, augment_channel, load_waveforms, wideband_clips
from training.masking import mask_features
from training.metrics import classification_metrics, expected_calibration_error, per_group_accuracy, speaker_balanced_weights
from training.pitch import pitch_ratios, shift_pitch, speed_ratios
from training.resume import Progress, StateMismatch, restore_state, run_identity, save_state
from training.sources import LabelledClip
from training.splits import Split

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 200
    label_smoothing: float = 0.05
    augment: bool = True
    short_crop_prob: float = 0.0  # share of crops that are short excerpts set in silence (see BalancedCropSampler; EXPERIMENTS.md: 0.25 did not help)
    # share of crops from wideband (studio) clips that are short excerpts looped to fill the window,
    # as inference fills a short studio clip (BalancedCropSampler; telephone clips keep their silence;
    # EXPERIMENTS.md: 0.3 moved short studio clips within noise and ranked telephone digits lower)
    wideband_short_crop_prob: float = 0.0
    pitch_shift_prob: float = 0.0  # share of crops whose F0 moves towards the other gender's range, formants kept (training/pitch.py)
    pitch_male_up: float = 1.8  # most a male F0 is raised (120 Hz -> 216 Hz: a shouting man)
    pitch_female_down: float = 0.75  # most a female F0 is lowered (210 Hz -> 158 Hz)
    pitch_both_ways: bool = False  # shift either gender anywhere in [female_down, male_up], so the shift's trace carries no label
    speed_perturb_prob: float = 0.0  # share of crops played 1/speed_max..speed_max times faster, F0 and formants together (training/pitch.py)
    speed_max: float = 1.1
    spec_mask_prob: float = 0.0  # share of crops with random bands and stretches of their features hidden (training/masking.py)
    band_mix_prob: float = 0.0  # share of crops given another crop's per-band level and spread, mixed (training/bandmix.py)
    babble_prob: float = 0.0  # share of crops with three other crops of the batch mixed in 5-25 dB below them (training/babble.py)
    low_shelf_prob: float = 0.0  # share of crops with the level below 150-500 Hz moved +-12 dB (training/data.py:augment_channel)
    coloured_noise_prob: float = 0.0  # share of the noise added to crops that is coloured, white to brown (training/data.py:augment_channel)
    codec_prob: float = 0.0  # share of crops coded and decoded by a real speech codec: GSM, ADPCM, A-law, Opus, MP3 (training/codecs.py)
    # With short_fill "trim" (short clips scored at their own length): the share of batches
    # whose crops are narrower than the window, uniform from trim_min_width of it up to all of it.
    trim_width_prob: float = 0.5
    trim_min_width: float = 0.25
    bf16: bool = True
    eval_every: int = 500
    save_every: int = 100  # steps between saved training states, when the run has a state file (training/resume.py)
    # Ship the mean of the weights after every step past this fraction of the run, not the last
    # step's (training/averaging.py); None: the last step's. BatchNorm is then re-measured.
    average_from: float | None = None
    seed: int = 0
    features: dict = field(default_factory=dict)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def measure_standardization(sampler: BalancedCropSampler, features: FeatureConfig, n: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and std of training features (unaugmented crops)."""
    crops, _ = sampler.draw(n)
    feats = compute_features(torch.from_numpy(crops), features)  # (n, F, T)
    return feats.mean(dim=(0, 2)), feats.std(dim=(0, 2))


def training_features(model, crops: torch.Tensor, cfg: TrainConfig, features: FeatureConfig, gen) -> torch.Tensor:
    """A batch of crops as the model trains on it: channel-augmented, featurised, band-mixed, masked."""
    if cfg.augment and cfg.babble_prob > 0:  # before the channel: one room, one microphone; no draws when off
        crops = add_babble(crops, prob=cfg.babble_prob, generator=gen)
    if cfg.augment:
        crops = augment_channel(crops, sr=features.sample_rate, generator=gen, low_shelf_prob=cfg.low_shelf_prob, codec_prob=cfg.codec_prob, coloured_noise_prob=cfg.coloured_noise_prob)
    feats = compute_features(crops, features).contiguous(memory_format=torch.contiguous_format)
    if cfg.augment and cfg.band_mix_prob > 0:  # before masking: a masked cell stays at its bin's mean
        feats = mix_band_statistics(feats, prob=cfg.band_mix_prob, generator=gen)
    if cfg.augment and cfg.spec_mask_prob > 0:  # no draws when off: a seed's batches stay what they were
        feats = mask_features(feats, model.feature_mean.flatten(), prob=cfg.spec_mask_prob, generator=gen)
    return feats


def train_one_step(model, opt, crops: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, features: FeatureConfig, gen) -> float:
    feats = training_features(model, crops, cfg, features, gen)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
        loss = F.cross_entropy(model(feats), labels, label_smoothing=cfg.label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def draw_batch(sampler: BalancedCropSampler, cfg: TrainConfig, features: FeatureConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One training batch of window-length crops, pitch-shifted and sped up or down where the config asks for it.

    Under ``short_fill="trim"`` some batches are narrower (``batch_width``), so
    a short clip scored at its own length looks like what training saw, from
    every corpus.
    """
    n = batch_width(cfg, features, gen)
    pitch = cfg.augment and cfg.pitch_shift_prob > 0
    speed = cfg.augment and cfg.speed_perturb_prob > 0
    if not (pitch or speed):
        crops, labels = sampler.draw(cfg.batch_size, length=n)  # no extra draws: a seed's crops stay what they were
        return torch.from_numpy(crops), torch.from_numpy(labels)
    longest = (cfg.pitch_male_up if pitch else 1.0) * (cfg.speed_max if speed else 1.0)
    crops, labels = sampler.draw(cfg.batch_size, length=math.ceil(n * longest))
    labels = torch.from_numpy(labels)
    if pitch:
        ratios = pitch_ratios(labels, prob=cfg.pitch_shift_prob, male_up=cfg.pitch_male_up, female_down=cfg.pitch_female_down, both_ways=cfg.pitch_both_ways, generator=gen)
    else:
        ratios = torch.ones(cfg.batch_size)
    # Drawn after the pitch ratios, and only when on: a pitch-shift run's batches stay what they were.
    speeds = speed_ratios(cfg.batch_size, prob=cfg.speed_perturb_prob, max_ratio=cfg.speed_max, generator=gen) if speed else None
    return shift_pitch(list(crops), ratios, n=n, sr=features.sample_rate, speeds=speeds), labels


def batch_width(cfg: TrainConfig, features: FeatureConfig, gen: torch.Generator) -> int:
    """Samples per crop in the next batch: the window, or under "trim" sometimes fewer."""
    n = features.window_samples
    if features.short_fill != "trim" or not cfg.augment:  # no draws: other recipes' batches stay what they were
        return n
    if float(torch.rand(1, generator=gen)) >= cfg.trim_width_prob:
        return n
    low = cfg.trim_min_width + (1 - cfg.trim_min_width) * float(torch.rand(1, generator=gen))
    return max(features.n_fft, int(n * low))


def train_split(
    clips: list[LabelledClip],
    waves: list[np.ndarray | None],
    split: Split,
    features: FeatureConfig,
    cfg: TrainConfig,
    *,
    version: str,
    progress=None,
    init: ModelBundle | None = None,
    state_path: Path | None = None,
    other_state: Literal["refuse", "replace"] = "refuse",
) -> tuple[ModelBundle, dict]:
    """Train on ``split.train`` and evaluate on ``split.val``; returns the calibrated bundle and metrics.

    ``init`` starts from that model's weights and standardisation (fine-tuning)
    instead of from scratch; its features must have the same bins.
    ``state_path``: save the run's state there every ``cfg.save_every`` steps,
    and go on from the state found there (the same steps as without a stop).
    A state of other data or options raises :class:`StateMismatch`, or with
    ``other_state="replace"`` is set aside and the run starts afresh.
    """
    if cfg.save_every < 1:
        raise ValueError(f"save_every must be at least 1 step, got {cfg.save_every}")
    if cfg.average_from is not None and not 0 <= cfg.average_from < 1:
        raise ValueError(f"average_from must be in [0, 1) (a fraction of the steps), got {cfg.average_from}")
    if not 0 <= cfg.speed_perturb_prob <= 1:
        raise ValueError(f"speed_perturb_prob must be in [0, 1], got {cfg.speed_perturb_prob}")
    if cfg.speed_max < 1:
        raise ValueError(f"speed_max must be at least 1, got {cfg.speed_max}")
    if not 0 <= cfg.band_mix_prob <= 1:
        raise ValueError(f"band_mix_prob must be in [0, 1], got {cfg.band_mix_prob}")
    if not 0 <= cfg.babble_prob <= 1:
        raise ValueError(f"babble_prob must be in [0, 1], got {cfg.babble_prob}")
    if not 0 <= cfg.codec_prob <= 1:
        raise ValueError(f"codec_prob must be in [0, 1], got {cfg.codec_prob}")
    if not 0 <= cfg.coloured_noise_prob <= 1:
        raise ValueError(f"coloured_noise_prob must be in [0, 1], got {cfg.coloured_noise_prob}")
    if cfg.codec_prob > 0 and not available_codecs():
        raise ValueError("codec_prob needs a libsndfile that writes GSM, ADPCM, Opus or MP3; this one writes none (soundfile's own wheels do)")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    wide_short = cfg.wideband_short_crop_prob if cfg.augment else 0.0
    sampler = BalancedCropSampler(
        clips, waves, split.train, window=features.window_samples, seed=cfg.seed, short_prob=cfg.short_crop_prob if cfg.augment else 0.0, fill=features.short_fill,
        wideband=wideband_clips(clips, sr=features.sample_rate) if wide_short > 0 else None, wideband_short_prob=wide_short,
    )
    if init is None:
        model = build_model(features.n_bins)
        model.set_standardization(*measure_standardization(sampler, features))
    else:
        if init.features.n_bins != features.n_bins:
            raise ValueError(f"cannot fine-tune a model of {init.features.n_bins} feature bins on features of {features.n_bins}")
        # Not build_model: its ImageNet look-up would be overwritten at once, and its log would say "from scratch".
        model = GenderResNet(features.n_bins)
        model.load_state_dict(init.model.state_dict())  # float32 already: load_checkpoint widens fp16 weights
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    average = None if cfg.average_from is None else TailAverage(model, start_step=int(cfg.steps * cfg.average_from))
    bundle = ModelBundle(model=model, features=features, version=version)
    done, identity = Progress(), None
    if state_path is not None:
        identity = run_identity(asdict(cfg), features.to_dict(), split.to_dict(clips), init.sha256 if init else None)
        try:
            done = restore_state(state_path, identity, model=model, opt=opt, gen=gen, rng=sampler.rng, average=average) or done
        except StateMismatch as exc:
            if other_state != "replace":
                raise
            log.warning("%s; it will be replaced: starting afresh", exc.reason)
        if done.step:
            log.info("resuming from %s at step %d of %d", state_path, done.step, cfg.steps)
    curve, losses, started = done.curve, done.losses, time.monotonic() - done.elapsed_s
    for step in range(done.step, cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        crops, labels = draw_batch(sampler, cfg, features, gen)
        losses.append(train_one_step(model, opt, crops, labels, cfg, features, gen))
        if average is not None:
            average.update(model, step + 1)
        if progress:
            progress(step, losses[-1])
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            model.eval()  # BatchNorm must use its running statistics, never the validation batch's
            val = evaluate(bundle, clips, waves, split.val)
            model.train()
            curve.append({"step": step + 1, "train_loss": float(np.mean(losses[-cfg.eval_every :])), "val_balanced_accuracy": val["balanced_accuracy"], "elapsed_s": time.monotonic() - started})
            log.info("step %d: loss %.4f, val balanced accuracy %.4f", step + 1, curve[-1]["train_loss"], val["balanced_accuracy"])
        if identity is not None and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
            save_state(state_path, identity, Progress(step + 1, losses, curve, time.monotonic() - started), model=model, opt=opt, gen=gen, rng=sampler.rng, average=average)
    if average is not None:
        average.apply(model, _batchnorm_batches(model, sampler, cfg, features, gen), bf16=cfg.bf16)
        log.info("weights averaged over the last %d steps; BatchNorm re-measured on %d training batches", average.count, BATCHNORM_BATCHES)
    model.eval()
    log_odds, is_female = file_log_odds(bundle, clips, waves, split.val)
    kept = [i for i in split.val if waves[i] is not None]
    bundle.calibration, ece = fit_calibration(log_odds, is_female, groups=[clips[i].speaker for i in kept])
    metrics = metrics_from_log_odds(bundle.calibration, log_odds, clips, kept)
    if average is not None:
        # The learning curve is the last step's weights; these metrics are the averaged model's.
        metrics["weight_average"] = {"from_step": average.start_step + 1, "models": average.count, "batchnorm_batches": BATCHNORM_BATCHES}
    metrics.update(ece, learning_curve=curve, train_seconds=time.monotonic() - started, crops_seen=cfg.steps * cfg.batch_size)
    return bundle, metrics


BATCHNORM_BATCHES = 50  # training batches that re-measure BatchNorm for averaged weights (3,200 crops)


def _batchnorm_batches(model, sampler: BalancedCropSampler, cfg: TrainConfig, features: FeatureConfig, gen):
    """Features of fresh training batches, drawn and augmented as training draws them."""
    for _ in range(BATCHNORM_BATCHES):
        crops, _ = draw_batch(sampler, cfg, features, gen)
        yield training_features(model, crops, cfg, features, gen)


def file_log_odds(bundle: ModelBundle, clips, waves, indices: list[int], *, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Uncalibrated per-file log-odds of "female", exactly as ``classify`` combines windows.

    ``progress(n)`` is called after every batch with the number of files it held.
    """
    clf = Classifier(bundle, explain=False, bf16=False)
    prepared = [prepare_waveform(str(clips[i].path), waves[i], bundle) for i in indices if waves[i] is not None]
    results = []
    for start in range(0, len(prepared), 32):
        batch = clf.classify_prepared(prepared[start : start + 32])
        results.extend(batch)
        if progress:
            progress(len(batch))
    truth = [clips[i].gender == "female" for i in indices if waves[i] is not None]
    return np.array([r.log_odds for r in results]), np.array(truth)


def run_validation_log_odds(run_dir: Path, clips, *, cache_dir: Path | None = None) -> tuple[ModelBundle, list[int], np.ndarray, np.ndarray]:
    """A finished run's model scored on its own validation clips (its ``split.json``'s ``val``).

    Returns the bundle, the validation indices that decoded, their raw log-odds and whether each is female.
    """
    bundle = load_checkpoint(run_dir / "model.pt")
    val = json.loads((run_dir / "split.json").read_text())["val"]
    waves = load_waveforms(clips, sr=bundle.features.sample_rate, cache_dir=cache_dir)
    z, is_female = file_log_odds(bundle, clips, waves, val)
    return bundle, [i for i in val if waves[i] is not None], z, is_female


def evaluate(bundle: ModelBundle, clips, waves, indices: list[int]) -> dict:
    """File-level metrics overall, per corpus and per speaker."""
    log_odds, _ = file_log_odds(bundle, clips, waves, indices)
    return metrics_from_log_odds(bundle.calibration, log_odds, clips, [i for i in indices if waves[i] is not None])


def metrics_from_log_odds(calibration: Calibration, log_odds: np.ndarray, clips, kept: list[int]) -> dict:
    p = calibration.p_female(torch.from_numpy(log_odds)).numpy()
    y_true = [clips[i].gender for i in kept]
    y_pred = ["female" if q >= 0.5 else "male" for q in p]
    metrics = classification_metrics(y_true, y_pred)
    metrics["per_corpus"] = {}
    for corpus in sorted({clips[i].corpus for i in kept}):
        sel = [k for k, i in enumerate(kept) if clips[i].corpus == corpus]
        metrics["per_corpus"][corpus] = classification_metrics([y_true[k] for k in sel], [y_pred[k] for k in sel])
    metrics["per_speaker"] = per_group_accuracy([clips[i].speaker for i in kept], y_true, y_pred)
    # Clip counts per speaker vary 1..500 here: also score each speaker equally within each gender.
    by_gender = {g: [v["accuracy"] for v in metrics["per_speaker"].values() if v["gender"] == g] for g in ("female", "male")}
    metrics["speaker_balanced_accuracy"] = float(np.mean([np.mean(v) for v in by_gender.values() if v]))
    return metrics


def fit_platt(log_odds: np.ndarray, is_female: np.ndarray, weights: np.ndarray | None = None) -> Calibration:
    """Platt scaling: minimise the (weighted) logistic loss of ``scale * z + bias`` (stable form, L-BFGS)."""
    x, y = np.asarray(log_odds, float), np.asarray(is_female, float)
    w = np.full(len(x), 1 / len(x)) if weights is None else np.asarray(weights, float) / np.sum(weights)

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        s = theta[0] * x + theta[1]
        loss = np.sum(w * (np.logaddexp(0, s) - y * s))
        r = w * (1 / (1 + np.exp(-np.clip(s, -500, 500))) - y)
        return float(loss), np.array([np.sum(r * x), np.sum(r)])

    res = scipy.optimize.minimize(loss_and_grad, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return Calibration(scale=float(res.x[0]), bias=float(res.x[1]))


def fit_calibration(log_odds: np.ndarray, is_female: np.ndarray, *, groups: list[str]) -> tuple[Calibration, dict]:
    """Calibrate on validation speakers, each gender weighing half and each speaker equally.

    ECE is measured by 2-fold cross-fitting over speakers (halves stratified by
    gender), with the same weights, so it is not scored on the data it was fit on.
    """
    is_female = np.asarray(is_female, dtype=bool)
    weights = speaker_balanced_weights(groups, is_female)
    gender_of = {g: bool(f) for g, f in zip(groups, is_female)}
    rng = np.random.default_rng(0)
    half: set[str] = set()
    for female in (True, False):
        speakers = sorted(g for g, f in gender_of.items() if f == female)
        half.update(rng.permutation(speakers)[: len(speakers) // 2].tolist())
    fold = np.array([g in half for g in groups])
    p_cross = np.zeros(len(log_odds))
    for part in (True, False):
        cal = fit_platt(log_odds[fold != part], is_female[fold != part], weights[fold != part])
        p_cross[fold == part] = cal.p_female(torch.from_numpy(log_odds[fold == part])).numpy()
    raw = 1 / (1 + np.exp(-log_odds))
    final = fit_platt(log_odds, is_female, weights)
    return final, {
        "calibration": asdict(final),
        "calibration_weighting": "speaker-balanced: each gender half, each speaker equal within it",
        "ece_uncalibrated": expected_calibration_error(raw, is_female, weights=weights),
        "ece_calibrated_crossfit": expected_calibration_error(p_cross, is_female, weights=weights),
    }


def write_run(out_dir: Path, bundle: ModelBundle, metrics: dict, split_info: dict, train_cfg: TrainConfig, data_summary: dict) -> Path:
    """Checkpoint + metrics JSON + split JSON, side by side."""
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle.metrics = {k: v for k, v in metrics.items() if k not in ("per_speaker", "learning_curve")}
    bundle.info = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "train_config": asdict(train_cfg), "data": data_summary, "split": split_info["name"]}
    ckpt = out_dir / "model.pt"
    bundle.sha256 = save_checkpoint(bundle, ckpt)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    (out_dir / "split.json").write_text(json.dumps(split_info, indent=2))
    return ckpt
