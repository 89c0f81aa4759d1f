"""The ``voicegender`` command. Prints its output; logs go to stderr."""
from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

from pydantic import ValidationError

from classifier.audio import INFERENCE_FILLS, SHORT_FILLS
from classifier.errors import InvalidCheckpoint, InvalidDataset
from voicegender.service_cli import JobNotFound, add_service_commands
from voicegender.settings import Settings

log = logging.getLogger("voicegender")
CLASSIFY_COLUMNS = ("path", "prediction", "p_female", "duration_s", "windows", "error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicegender", description="Male/female speaker classification with attention over frequency.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("classify", help="classify files or folders in-process (no queue)")
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--model", type=Path, help="checkpoint (default: the starter model or VOICEGENDER_MODEL_PATH)")
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument("--min-confidence", type=float, default=None, help="mark files below this confidence 'uncertain'")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("train", help="train a model on AudioMNIST, a manifest CSV or female/ male/ folders")
    p.add_argument("sources", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True, help="run folder: model.pt, metrics.json, split.json")
    p.add_argument("--features", choices=("logmel", "mfcc"), default="logmel")
    p.add_argument("--band-norm", choices=("none", "lows", "all"), default="none", help="remove each window's long-term level of the bands below 400 Hz (lows) or of every band (all), so a channel's bass cannot decide (default none; see models/MODEL_CARD.md)")
    p.add_argument("--short-fill", choices=SHORT_FILLS, default=None, help="how a clip shorter than the 1 s window fills it, in training and at inference: centred in silence (zeros), repeated (loop) or not at all, scored at its own length with half the training batches narrower than 1 s (trim); stored in the checkpoint (default zeros, or --init's)")
    p.add_argument("--wideband-short-fill", choices=INFERENCE_FILLS, default=None, help="the fill for a short clip whose file carries sound above the model's band (studio audio, not telephone): stored in the checkpoint and used at inference only; trim+loop scores the clip both ways and averages the log-odds; silence around a short utterance in such a file is cut first, so a word in a longer file is that short clip (the shipped model: trim+loop; default: --short-fill for every clip, or --init's)")
    p.add_argument("--fmin", type=float, default=None, metavar="HZ", help="log-mel only: the lowest mel band edge in Hz (default 50); 300 leaves out the band telephone channels cut or boost. Stored in the checkpoint (see models/MODEL_CARD.md)")
    p.add_argument("--fmax", type=float, default=None, metavar="HZ", help="log-mel only: the highest mel band edge in Hz (default half the rate: 4000 at 8 kHz); 3400 is the top of the telephone band. Stored in the checkpoint (see models/MODEL_CARD.md)")
    p.add_argument("--sample-rate", type=int, default=None, metavar="HZ", help="log-mel only: the rate every clip is resampled to, 8000 (48 bands up to 4 kHz: one band for telephone and studio audio, the starters) or 16000 (64 bands up to 8 kHz). Stored in the checkpoint (default 8000; see models/MODEL_CARD.md)")
    p.add_argument("--init", type=Path, default=None, metavar="MODEL", help="fine-tune this checkpoint instead of starting from scratch: its weights, standardisation and features (--features, --band-norm, --fmin, --fmax and --sample-rate are ignored; --short-fill may change). Validate on speakers it never trained on: the same --split and --seed as its own run, or new speakers")
    p.add_argument("--split", choices=("speaker", "audiomnist-folds", "random-clips", "corpus"), default="speaker")
    p.add_argument("--holdout-corpus", action="append", default=[], metavar="NAME", help="with --split corpus: validate on this whole corpus (repeatable)")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup-steps", type=int, default=200, help="steps of linear learning-rate warm-up before the cosine decay (default 200)")
    p.add_argument("--save-every", type=int, default=100, metavar="N", help="save the run's state to OUT every N steps; the same command after a crash or kill goes on from it (default 100)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--average-from", type=float, default=None, metavar="F", help="ship the mean of the weights after every step past this fraction of the run (e.g. 0.5: the second half), BatchNorm re-measured, instead of the last step's (default: the last step's; see models/MODEL_CARD.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--short-crops", type=float, default=0.0, metavar="P", help="share of training crops that are short excerpts set in silence, like short clips at inference (default 0; see models/MODEL_CARD.md)")
    p.add_argument("--pitch-shift", type=float, default=0.0, metavar="P", help="share of training crops whose pitch moves towards the other gender's range with the formants kept (default 0; see models/MODEL_CARD.md)")
    p.add_argument("--pitch-both-ways", action="store_true", help="with --pitch-shift: shift crops of either gender up or down (x0.75-x1.8), not only towards the other gender")
    p.add_argument("--low-shelf", type=float, default=0.0, metavar="P", help="share of training crops whose level below a random 150-500 Hz corner moves by up to +-12 dB (default 0; see models/MODEL_CARD.md)")
    p.add_argument("--codec", type=float, default=0.0, metavar="P", help="share of training crops coded and decoded by a real speech codec, drawn from GSM, ADPCM, A-law, Opus and low-rate MP3 (default 0; see models/MODEL_CARD.md)")
    p.add_argument("--spec-mask", type=float, default=0.0, metavar="P", help="share of training crops with two random bands and two stretches of their features hidden (default 0; see models/MODEL_CARD.md)")
    p.add_argument("--wideband-short-crops", type=float, default=0.0, metavar="P", help="share of crops from studio (wideband) clips that are 0.25-0.8 s excerpts looped to fill the window, as inference fills a short studio clip; telephone clips keep their silence (default 0; see models/MODEL_CARD.md)")
    p.add_argument("--speed-perturb", type=float, default=0.0, metavar="P", help="share of training crops played up to 10%% faster or slower, F0 and formants moving together (speed perturbation; default 0; see models/MODEL_CARD.md)")
    p.add_argument("--band-mix", type=float, default=0.0, metavar="P", help="share of training crops given another crop's per-band level and spread over time, mixed in a random share (Freq-MixStyle; default 0; see models/MODEL_CARD.md)")
    p.add_argument("--babble", type=float, default=0.0, metavar="P", help="share of training crops with three other crops of the batch mixed in 5-25 dB below them, the label kept (default 0; see models/MODEL_CARD.md)")
    p.add_argument("--coloured-noise", type=float, default=0.0, metavar="P", help="share of the noise added to training crops that is coloured, its power falling as f**-s with s drawn from 0-2 (white to brown; default 0: white only; see models/MODEL_CARD.md)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=None, help="bf16 autocast or fp32; auto takes bf16 where the hardware computes it fast (default: VOICEGENDER_PRECISION, auto)")
    p.add_argument("--no-bf16", action="store_true", help="the same as --precision fp32")
    p.add_argument("--version", default=None, help="model version (default: a timestamp)")
    p.add_argument("--cache-dir", type=Path, default=None, help="keep decoded audio here between runs")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("calibrate", help="refit a model's threshold on labelled clips of your own recordings (weights unchanged)")
    p.add_argument("sources", nargs="*", type=Path, help="labelled clips: AudioMNIST, a manifest CSV or female/ male/ folders")
    p.add_argument("--job", action="append", default=[], metavar="JOB_ID", help="also the labelled clips of this finished job, as the service scored them (repeatable; no audio is decoded again)")
    p.add_argument("--out", type=Path, required=True, help="the recalibrated checkpoint to write")
    p.add_argument("--model", type=Path, help="checkpoint to start from (default: the registry's active model with --job or --register, else the starter model or VOICEGENDER_MODEL_PATH)")
    p.add_argument("--refit-scale", action="store_true", help="fit the Platt scale too, not only the bias (for a few hundred clips or more)")
    p.add_argument("--version", default=None, help="version of the new checkpoint (default: the old one + '+cal-' and a timestamp)")
    p.add_argument("--register", action="store_true", help="add it to the service's model registry as a candidate (then: voicegender promote VERSION)")
    p.add_argument("--cache-dir", type=Path, default=None, help="keep decoded audio here between runs")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("record", help="record your own voice from the microphone and classify it")
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--out", type=Path, default=Path("recording.wav"))
    p.add_argument("--model", type=Path)
    p.set_defaults(func=cmd_record)
    add_service_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migrations at start-up are routine
    try:
        settings = Settings()
    except ValidationError as exc:
        # One line per refused setting, never its value (a token or a password may be the value).
        for err in exc.errors():
            name = "VOICEGENDER_" + "_".join(str(x) for x in err["loc"]).upper() if err["loc"] else "settings"
            print(f"voicegender: error: {name}: {err['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    _limit_threads(settings)
    try:
        return args.func(args, settings)
    except (InvalidCheckpoint, InvalidDataset, FileNotFoundError, ValueError, JobNotFound) as exc:
        print(f"voicegender: error: {exc}", file=sys.stderr)
        return 2


def _limit_threads(settings: Settings) -> None:
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)


def cmd_classify(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from classifier.audio import find_audio_files
    from classifier.model import load_checkpoint
    from classifier.pipeline import Classifier

    bundle = load_checkpoint(args.model or settings.model_path)
    paths = find_audio_files(args.paths)
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no such file or folder: {missing[0]}")
    clf = Classifier(bundle, batch_windows=settings.batch_windows, explain=False, max_duration_s=settings.max_duration_s)
    with tqdm(total=len(paths), unit="file", file=sys.stderr, disable=len(paths) < 20 or None) as bar:
        results = clf.classify_files(paths, min_confidence=args.min_confidence, on_done=lambda r: bar.update(1))
    rows = [_classify_row(r) for r in results]
    if args.format == "json":
        print(json.dumps({"model_version": bundle.version, "results": rows}, indent=2))
    else:
        writer = csv.DictWriter(sys.stdout, fieldnames=CLASSIFY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return 0


def _classify_row(r) -> dict:
    return {
        "path": r.path,
        "prediction": r.prediction or "",
        "p_female": "" if r.p_female is None else round(r.p_female, 4),
        "duration_s": "" if r.duration_s is None else round(r.duration_s, 3),
        "windows": r.windows,
        "error": r.error or "",
    }


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from reports.training_report import training_run_report_data, write_training_report
    from classifier.pipeline import use_bf16
    from training.loop import TrainConfig
    from training.run import run_training

    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, eval_every=args.eval_every, save_every=args.save_every, seed=args.seed, augment=not args.no_augment, short_crop_prob=args.short_crops, wideband_short_crop_prob=args.wideband_short_crops, pitch_shift_prob=args.pitch_shift, pitch_both_ways=args.pitch_both_ways, spec_mask_prob=args.spec_mask, band_mix_prob=args.band_mix, babble_prob=args.babble, speed_perturb_prob=args.speed_perturb, low_shelf_prob=args.low_shelf, codec_prob=args.codec, coloured_noise_prob=args.coloured_noise, average_from=args.average_from, bf16=use_bf16('fp32' if args.no_bf16 else args.precision or settings.precision), warmup_steps=args.warmup_steps)
    version = args.version or datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")

    def progress_factory(name: str, total: int):
        bar = tqdm(total=total, desc=name, unit="step", file=sys.stderr, mininterval=5)

        def update(step: int, loss: float) -> None:
            bar.update(step + 1 - bar.n)  # a resumed run starts part-way
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

        return update

    result = run_training(args.sources, args.out, feature_kind=args.features, band_norm=args.band_norm, short_fill=args.short_fill, wideband_short_fill=args.wideband_short_fill, fmin=args.fmin, fmax=args.fmax, sample_rate=args.sample_rate, split_kind=args.split, val_fraction=args.val_fraction, cfg=cfg, version=version, cache_dir=args.cache_dir, progress_factory=progress_factory, held_out_corpora=args.holdout_corpus, init=args.init)
    s = result.summary
    print(f"balanced accuracy {s['balanced_accuracy']['mean']:.4f} +- {s['balanced_accuracy']['std']:.4f} over {s['folds']} split(s)" + (" (speakers shared between train and validation)" if s["speaker_overlap"] else ""))
    for ckpt in result.checkpoints:
        print(ckpt)
    print(write_training_report(args.out / "report.html", training_run_report_data(
        version=version, features=result.features, train_config={k: getattr(cfg, k) for k in ("steps", "batch_size", "lr", "augment", "seed")},
        data_summary=s["data"], folds=result.folds,
    )))
    return 0


def cmd_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    import numpy as np

    from classifier.model import load_checkpoint, save_checkpoint
    from training.calibrate import recalibrate

    if not args.sources and not args.job:
        raise ValueError("calibrate needs labelled clips: a SOURCE (AudioMNIST, manifest CSV, female/ male/ folders) or --job JOB_ID")
    services = None
    if args.register or args.job:
        from voicegender.bootstrap import build_services

        services = build_services(settings)
    bundle = load_checkpoint(args.model or (_active_model_path(services) if services else settings.model_path))
    log_odds, is_female, speakers, skipped = _source_scores(args.sources, bundle, cache_dir=args.cache_dir)
    for job_id in args.job:
        z, f, spk, n_skipped = _job_scores(services, job_id, bundle.version)
        log_odds, is_female, speakers, skipped = np.concatenate([log_odds, z]), np.concatenate([is_female, f]), speakers + spk, skipped + n_skipped
    source = " ".join([*map(str, args.sources), *(f"job {j}" for j in args.job)])
    # CalibrationRefused is a ValueError: main() prints it as a named error, exit 2.
    new, report = recalibrate(bundle, log_odds, is_female, speakers, refit_scale=args.refit_scale, version=args.version, source=source, skipped=skipped)
    save_checkpoint(new, args.out)
    if args.register:
        _register_candidate(services, args.out, parent_version=bundle.version)
    for w in report["warnings"]:
        log.warning("%s", w)
    before, after = report["before"], report["after"]
    print(json.dumps({"checkpoint": str(args.out), "version": new.version, **report}, indent=2))
    print(
        f"threshold (raw log-odds) {before['threshold_log_odds']:.2f} -> {after['threshold_log_odds']:.2f}; "
        f"balanced accuracy on these clips {before['balanced_accuracy']:.3f} -> {after['balanced_accuracy']:.3f} (in-sample)",
        file=sys.stderr,
    )
    return 0


def _source_scores(sources: list[Path], bundle, *, cache_dir: Path | None):
    """Raw log-odds, truth and speakers of labelled recordings on disk, and how many could not be decoded."""
    import numpy as np
    from tqdm import tqdm

    from training.calibrate import score_labelled_clips
    from training.data import load_waveforms
    from training.sources import read_source

    clips = [c for s in sources for c in read_source(s)]
    if not clips:
        return np.zeros(0), np.zeros(0, bool), [], 0
    quiet = len(clips) < 20 or None  # None: tqdm shows bars only on a terminal
    with tqdm(total=len(clips), desc="decoding", unit="file", file=sys.stderr, disable=quiet) as bar:
        waves = load_waveforms(clips, sr=bundle.features.sample_rate, cache_dir=cache_dir, progress=bar.update)
    with tqdm(total=sum(w is not None for w in waves), desc="scoring", unit="file", file=sys.stderr, disable=quiet) as bar:
        log_odds, is_female, speakers = score_labelled_clips(bundle, clips, waves, progress=bar.update)
    return log_odds, is_female, speakers, sum(w is None for w in waves)


def _job_scores(services, job_id: str, model_version: str):
    """Raw log-odds, truth and speakers of a job's labelled clips that ``model_version`` scored.

    Log-odds from another model (the job ran before a promotion) would fit this
    model's threshold to that model's scale: those clips are skipped and counted.
    """
    import numpy as np

    from db.jobs import labelled_clip_scores

    with services.sessions() as s:
        rows = labelled_clip_scores(s, job_id)
    if rows is None:
        raise JobNotFound(f"no job {job_id!r}")
    scored = [r for r in rows if r["log_odds"] is not None]  # failed clips have no score
    usable = [r for r in scored if r["model_version"] == model_version]
    if len(usable) < len(scored):
        others = ", ".join(sorted({r["model_version"] for r in scored} - {model_version}))
        log.warning("job %s: %d labelled clip(s) were scored by %s, not %s: skipped", job_id, len(scored) - len(usable), others, model_version)
    z = np.array([r["log_odds"] for r in usable], float)
    f = np.array([r["label"] == "female" for r in usable], bool)
    # A clip without a speaker counts as a speaker of its own, as loose files do in training.
    spk = [r["speaker"] or f"{job_id}:{r['path']}" for r in usable]
    return z, f, spk, len(rows) - len(usable)


def _active_model_path(services) -> Path:
    """What the workers classify with now (a promoted retrain, say), not the configured default."""
    from db import registry

    with services.sessions() as s:
        active = registry.active_model(s)
    if active is None:
        raise ValueError("the model registry has no active model; name one with --model")
    return Path(active.path)


def _register_candidate(services, path: Path, *, parent_version: str) -> None:
    """The registry row workers read; the path must be one every worker can open."""
    from db.registry import RegistryConflict
    from training.registration import register_checkpoint

    with services.sessions() as s:
        try:
            row = register_checkpoint(s, path, status="candidate", parent_version=parent_version)
        except RegistryConflict as exc:  # the same --version twice
            raise ValueError(f"{path} was written but not registered: {exc}") from None
    log.info("registered %s as a candidate: voicegender promote %s", row.version, row.version)


class MicrophoneUnavailable(RuntimeError):
    pass


def record_wav(path: Path, *, seconds: float, sr: int = 16_000) -> None:
    """Record mono 16-bit audio with sounddevice (the ``record`` extra)."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as exc:  # OSError: PortAudio library missing
        raise MicrophoneUnavailable(f"recording needs the sounddevice package and PortAudio ({exc}); pip install 'voicegender[record]'") from None
    try:
        sd.query_devices(kind="input")
        print("Speak now!", file=sys.stderr)
        y = sd.rec(int(seconds * sr), samplerate=sr, channels=1, dtype="int16")
        sd.wait()
    except Exception as exc:  # PortAudio raises its own error types
        raise MicrophoneUnavailable(f"no microphone available ({exc})") from None
    import soundfile as sf

    sf.write(path, y, sr, subtype="PCM_16")


def cmd_record(args: argparse.Namespace, settings: Settings) -> int:
    try:
        record_wav(args.out, seconds=args.seconds)
    except MicrophoneUnavailable as exc:
        print(f"voicegender: error: {exc}", file=sys.stderr)
        return 2
    print(f"saved {args.out}", file=sys.stderr)
    return cmd_classify(argparse.Namespace(paths=[args.out], model=args.model, format="csv", min_confidence=None), settings)
