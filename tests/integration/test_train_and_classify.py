"""The CLI end to end in subprocesses: train on synthetic AudioMNIST, then classify."""
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``env``: variables set for this run on top of the test's own."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "voicegender", *args], capture_output=True, text=True, env=env, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"voicegender {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def trained_run(synthetic_audiomnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run_cli("train", str(synthetic_audiomnist), "--out", str(out), "--features", "mfcc", "--steps", "60",
            "--batch-size", "32", "--eval-every", "30", "--lr", "1e-3", "--val-fraction", "0.2", "--version", "synthetic-1")
    return out


def test_tiny_model_classifies_held_out_synthetic_speakers(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    split = json.loads((trained_run / "split.json").read_text())
    assert split["kind"] == "speaker_disjoint"
    assert not set(split["train_speakers"]) & set(split["val_speakers"])
    assert metrics["balanced_accuracy"] >= 0.8, metrics["confusion_matrix"]
    assert metrics["speaker_overlap"] is False
    assert {"per_class", "per_speaker", "per_corpus", "ece_calibrated_crossfit", "learning_curve"} <= metrics.keys()
    assert len(metrics["learning_curve"]) == 2


def test_classify_csv_columns_and_bad_file(trained_run, synthetic_audiomnist, tmp_path):
    split = json.loads((trained_run / "split.json").read_text())
    held_out = sorted(p for p in synthetic_audiomnist.rglob("*.wav") if f"audiomnist_{p.parent.name}" in split["val_speakers"])
    (tmp_path / "broken.wav").write_bytes(b"definitely not audio")
    proc = run_cli("classify", *map(str, held_out), str(tmp_path / "broken.wav"), "--model", str(trained_run / "model.pt"))
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert list(rows[0].keys()) == ["path", "prediction", "p_female", "duration_s", "windows", "error"]
    assert len(rows) == len(held_out) + 1
    broken = rows[-1]
    assert broken["prediction"] == "" and "not a readable audio file" in broken["error"]
    meta = json.loads((synthetic_audiomnist / "audioMNIST_meta.txt").read_text())
    truth = [meta[Path(r["path"]).parent.name]["gender"] for r in rows[:-1]]
    correct = sum(r["prediction"] == t for r, t in zip(rows[:-1], truth))
    assert correct / len(truth) >= 0.8
    assert all(r["windows"] == "1" and 0 <= float(r["p_female"]) <= 1 for r in rows[:-1])


def test_classify_json_and_folder_recursion(trained_run, synthetic_audiomnist):
    proc = run_cli("classify", str(synthetic_audiomnist / "01"), "--model", str(trained_run / "model.pt"), "--format", "json", "--min-confidence", "0.999999")
    out = json.loads(proc.stdout)
    assert out["model_version"] == "synthetic-1"
    assert len(out["results"]) == len(list((synthetic_audiomnist / "01").glob("*.wav")))
    assert {r["prediction"] for r in out["results"]} <= {"female", "male", "uncertain"}


def test_fine_tuning_keeps_the_models_features_and_starts_from_its_weights(trained_run, synthetic_audiomnist, tmp_path):
    """train --init: the checkpoint's features (mfcc here, despite the logmel default) and weights, short_fill changed to trim."""
    import torch

    from classifier.model import load_checkpoint

    out = tmp_path / "ft"
    proc = run_cli("train", str(synthetic_audiomnist), "--out", str(out), "--init", str(trained_run / "model.pt"), "--short-fill", "trim",
                   "--steps", "6", "--warmup-steps", "2", "--batch-size", "16", "--eval-every", "6", "--lr", "1e-4", "--val-fraction", "0.2", "--version", "ft-1")
    assert "fine-tuning" in proc.stderr and "from scratch" not in proc.stderr  # the log says where the weights came from
    parent, child = load_checkpoint(trained_run / "model.pt"), load_checkpoint(out / "model.pt")
    assert child.features.kind == "mfcc" and child.features.short_fill == "trim"
    assert child.features == parent.features.__class__(**{**parent.features.to_dict(), "short_fill": "trim"})
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fine_tuned_from"]["version"] == "synthetic-1"
    assert json.loads((out / "split.json").read_text())["val_speakers"] == json.loads((trained_run / "split.json").read_text())["val_speakers"]
    # Six small steps move the weights a little from the parent's, nowhere near a fresh model's.
    w_parent, w_child = parent.model.net.conv1.weight.float(), child.model.net.conv1.weight.float()
    assert 0 < (w_child - w_parent).abs().max() < 0.1 * w_parent.abs().max()
    assert torch.equal(child.model.feature_mean, parent.model.feature_mean)  # the parent's standardisation, not re-measured
    assert metrics["balanced_accuracy"] >= 0.8, metrics["confusion_matrix"]
    held_out = _speaker_wavs(synthetic_audiomnist, json.loads((out / "split.json").read_text())["val_speakers"])[:3]
    rows = list(csv.DictReader(io.StringIO(run_cli("classify", *map(str, held_out), "--model", str(out / "model.pt")).stdout)))
    assert [r["windows"] for r in rows] == ["1"] * 3 and all(r["error"] == "" for r in rows)  # short digits scored at their own length


def test_a_killed_training_goes_on_from_its_saved_state(synthetic_audiomnist, tmp_path):
    """SIGKILL during ``train``, then the same command: it resumes at the last saved step, finishes, and leaves no state behind."""
    import time

    import torch

    out = tmp_path / "run"
    args = ["train", str(synthetic_audiomnist), "--out", str(out), "--steps", "12", "--save-every", "3", "--batch-size", "8",
            "--eval-every", "12", "--warmup-steps", "2", "--val-fraction", "0.2", "--version", "resume-1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "voicegender", *args], env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state, deadline = out / "train_state.pt", time.monotonic() + 600
    try:
        while not state.exists():
            assert proc.poll() is None, f"train exited {proc.returncode} before saving a state"
            assert time.monotonic() < deadline, "no training state after 600 s"
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
    saved = torch.load(state, weights_only=False)["progress"]["step"]
    assert saved in (3, 6, 9)
    done = run_cli(*args)
    assert f"resuming from {state} at step {saved} of 12" in done.stderr
    assert not state.exists() and (out / "model.pt").exists()
    assert json.loads((out / "metrics.json").read_text())["learning_curve"][-1]["step"] == 12


def test_the_hold_out_codec_and_noise_scripts_score_a_runs_validation_clips(trained_run, synthetic_audiomnist, tmp_path):
    """scripts/holdout_report.py, codec_robustness.py and noise_robustness.py on a real run, so the commands of
    models/EXPERIMENTS.md and the model card keep working."""
    split = json.loads((trained_run / "split.json").read_text())
    n_val = len(split["val"])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for script, args in (
        ("holdout_report.py", [str(trained_run), str(synthetic_audiomnist)]),
        ("codec_robustness.py", [str(trained_run / "model.pt"), str(trained_run / "split.json"), str(synthetic_audiomnist), "--codec", "gsm", "--codec", "opus", "--threshold", "0"]),
        ("noise_robustness.py", [str(trained_run / "model.pt"), str(trained_run / "split.json"), str(synthetic_audiomnist), "--kind", "brown", "--kind", "babble", "--snr", "0", "--threshold", "0"]),
    ):
        proc = subprocess.run([sys.executable, f"scripts/{script}", *args, "--json", str(tmp_path / f"{script}.json")], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    held = json.loads((tmp_path / "holdout_report.py.json").read_text())
    assert held["clips"] == n_val and held["balanced_accuracy_at_best"] >= held["balanced_accuracy_at_0"]
    assert set(held["accuracy_at_0"]) == {"audiomnist/female", "audiomnist/male"}
    # An ensemble of the run with itself is the run: the --with path averages the same log-odds.
    proc = subprocess.run(
        [sys.executable, "scripts/holdout_report.py", str(trained_run), str(synthetic_audiomnist), "--with", str(trained_run), "--json", str(tmp_path / "self.json")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )
    assert proc.returncode == 0 and proc.stdout.count("member ") == 2, proc.stderr[-3000:]
    assert json.loads((tmp_path / "self.json").read_text()) == held
    # AudioMNIST's text is the digit, with no emotion= tag: the breakdown is empty and says why.
    proc = subprocess.run(
        [sys.executable, "scripts/holdout_report.py", str(trained_run), str(synthetic_audiomnist), "--by-tag", "emotion", "--json", str(tmp_path / "tag.json")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )
    assert proc.returncode == 0 and "no held-out clip's text has a 'emotion=' tag" in proc.stderr, proc.stderr[-3000:]
    assert json.loads((tmp_path / "tag.json").read_text())["accuracy_by_style"] == {}
    coded = json.loads((tmp_path / "codec_robustness.py.json").read_text())
    assert list(coded) == ["as recorded", "gsm", "opus"] and {r["clips"] for r in coded.values()} == {n_val}
    # The codec reached the model: its log-odds move (a tiny model on synthetic voices may stay right on every clip).
    assert coded["gsm"]["median_log_odds"] != coded["as recorded"]["median_log_odds"]
    noise = json.loads((tmp_path / "noise_robustness.py.json").read_text())
    conditions = noise["conditions"]
    assert list(conditions) == ["as recorded", "brown 0 dB", "babble 0 dB"] and {r["clips"] for r in conditions.values()} == {n_val}
    # Both scored at the threshold asked for (log-odds 0), not the run's calibrated one: the clips as recorded read the same in both.
    assert noise["threshold"] == 0.0
    assert conditions["as recorded"] == coded["as recorded"]
    assert all(conditions[c]["median_log_odds"] != conditions["as recorded"]["median_log_odds"] for c in ("brown 0 dB", "babble 0 dB"))
    # The babble's six voices are training speakers, three of each gender: never a validation speaker.
    talkers = noise["babble_talkers"]
    assert len(set(talkers)) == 6 and set(talkers) <= set(split["train_speakers"]) and not set(talkers) & set(split["val_speakers"])


def test_the_scripts_default_to_the_calibrated_threshold_and_short_clips_takes_one_for_both_models(trained_run, synthetic_audiomnist, tmp_path):
    """Without --threshold, codec_robustness.py scores at the model's calibrated threshold: its as-recorded row is the
    noise script's at that threshold asked for. short_clips.py --threshold cuts both of --against-model's models there."""
    from classifier.model import load_checkpoint

    calibrated = load_checkpoint(trained_run / "model.pt").calibration.threshold_log_odds
    assert calibrated != 0.0  # else the default and the threshold 0 of the test above would not be told apart
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run_args = [str(trained_run / "model.pt"), str(trained_run / "split.json"), str(synthetic_audiomnist)]
    for script, args in (
        ("codec_robustness.py", [*run_args, "--codec", "gsm", "--json", str(tmp_path / "codec.json")]),
        ("noise_robustness.py", [*run_args, "--kind", "brown", "--snr", "0", "--threshold", repr(calibrated), "--json", str(tmp_path / "noise.json")]),
        ("short_clips.py", [*run_args, "--length", "0.2", "--per-clip", "1", "--against-model", str(trained_run / "model.pt"), "--threshold", "0",
                            "--out", str(tmp_path / "short.json")]),
    ):
        proc = subprocess.run([sys.executable, f"scripts/{script}", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    noise = json.loads((tmp_path / "noise.json").read_text())
    assert noise["threshold"] == calibrated
    assert json.loads((tmp_path / "codec.json").read_text())["as recorded"] == noise["conditions"]["as recorded"]
    short = json.loads((tmp_path / "short.json").read_text())
    against = short["0.2 s excerpts"]["against_model"]
    # The same model, cut at the same place: nothing differs, and neither was cut at its calibrated threshold.
    assert short["threshold"] == 0.0 and against["threshold"] == 0.0
    assert against["delta"] == 0.0 and against["ci95"] == [0.0, 0.0]


def test_the_calibration_transfer_script_scores_a_runs_validation_clips(trained_run, synthetic_audiomnist, tmp_path):
    """scripts/calibration_transfer.py (the `calibrate` figures of models/EXPERIMENTS.md) on a real run."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def transfer(run: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "scripts/calibration_transfer.py", str(run), str(synthetic_audiomnist), "--draws", "5"],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=600)

    # The run validates on one speaker per gender: nobody would be left to score, and the script says so.
    proc = transfer(trained_run)
    assert proc.returncode == 1 and "has 1 women and 1 men" in proc.stderr, proc.stderr[-3000:]
    # The same model with every speaker in validation (a smoke test of the path, not a transfer figure).
    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "model.pt").symlink_to(trained_run / "model.pt")
    split = json.loads((trained_run / "split.json").read_text())
    (wide / "split.json").write_text(json.dumps({**split, "val": sorted(split["train"] + split["val"])}))
    proc = transfer(wide)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wide: {len(split['train']) + len(split['val'])} clips; balanced accuracy at raw 0 " in proc.stdout
    for k in ("1 woman + 1 man", "2 women + 2 men"):
        for n in (5, 10, 20):
            assert f"{k}, {n} clips each: calibrated " in proc.stdout, proc.stdout


def test_the_format_sweep_stores_a_runs_validation_clips_each_way_and_scores_them(trained_run, synthetic_audiomnist, tmp_path):
    """scripts/format_sweep.py (the model card's storage table) on a real run: every copy is scored through the product's path."""
    n_val = len(json.loads((trained_run / "split.json").read_text())["val"])
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def sweep(*args: str) -> dict:
        out = tmp_path / f"sweep{len(list(tmp_path.glob('*.json')))}.json"
        proc = subprocess.run([sys.executable, "scripts/format_sweep.py", str(trained_run / "model.pt"), str(trained_run / "split.json"), str(synthetic_audiomnist),
                               "--work", str(tmp_path / "copies"), "--out", str(out), *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(out.read_text())

    whole = sweep("--only", "wav16-native", "--only", "wav8u-16k")
    assert whole["clips"] == n_val and list(whole["storages"]) == ["as-recorded", "wav16-native", "wav8u-16k"]
    assert all(r["clips"] == n_val and not r["errors"] for r in whole["storages"].values())
    assert set(whole["storages"]["as-recorded"]["accuracy_per_corpus"]) == {"audiomnist/female", "audiomnist/male"}
    # 16-bit copies of 16-bit files are the files; 8-bit rounding reaches the model.
    assert whole["storages"]["wav16-native"]["verdicts_changed"] == 0
    assert whole["storages"]["wav16-native"]["max_abs_log_odds_change"] < 1e-3
    assert whole["storages"]["wav8u-16k"]["max_abs_log_odds_change"] > 1e-3
    short = sweep("--excerpt", "0.3", "--only", "mp3dec-16k")
    assert short["excerpt_s"] == 0.3 and {r["clips"] for r in short["storages"].values()} == {n_val}
    assert len(list((tmp_path / "copies" / "mp3dec-16k").glob("*.wav"))) == n_val  # decoded MP3 stored as WAV, the MP3 gone


def test_missing_model_is_one_clear_line(tmp_path):
    proc = run_cli("classify", str(tmp_path), "--model", str(tmp_path / "none.pt"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("voicegender: error: model file not found")


def test_audiomnist_official_folds_report_mean_and_std(tmp_path):
    from classifier.synthetic import AUDIOMNIST_FEMALE_IDS, write_audiomnist

    data = write_audiomnist(tmp_path / "am", n_female=12, n_male=48, digits=[3], repetitions=1, female_ids=AUDIOMNIST_FEMALE_IDS)
    out = tmp_path / "folds"
    proc = run_cli("train", str(data.parent), "--out", str(out), "--features", "mfcc", "--split", "audiomnist-folds",
                   "--steps", "3", "--batch-size", "8", "--eval-every", "3")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["folds"] == 4 and len(summary["balanced_accuracy"]["values"]) == 4
    assert "+-" in proc.stdout
    for k in range(4):
        split = json.loads((out / f"fold{k}" / "split.json").read_text())
        assert len(split["train_speakers"]) == 12 and len(split["val_speakers"]) == 6 and len(split["test_speakers"]) == 6
        assert (out / f"fold{k}" / "model.pt").is_file()


def test_record_without_a_microphone_fails_with_one_line(tmp_path):
    proc = run_cli("record", "--out", str(tmp_path / "r.wav"), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("voicegender: error:") and ("microphone" in lines[-1] or "sounddevice" in lines[-1])
    assert not (tmp_path / "r.wav").exists()


def test_record_classifies_what_the_microphone_hears(trained_run, synthetic_audiomnist, tmp_path):
    """`record` through real sounddevice, PortAudio and ALSA; only the sound card is a file.

    ALSA's ``file`` plugin serves a raw recording as the default capture
    device, so the WAV that `record` saves must hold exactly those samples, and
    its verdict must be what `classify` says of the same samples.
    """
    try:
        import sounddevice  # noqa: F401  (loads PortAudio)
    except ImportError:  # a .venv made before `make setup` installed the record extra
        pytest.skip("sounddevice is not installed (pip install -e '.[record]'): `record` needs it")
    except OSError:
        pytest.skip("PortAudio is not installed (apt-get install libportaudio2): `record` needs it")
    import soundfile as sf
    import soxr

    seconds, rate = 1.5, 16_000  # rate: what `record` captures at
    clip = min(synthetic_audiomnist.rglob("*.wav"))
    y, sr = sf.read(clip, dtype="float64")
    voice = np.round(soxr.resample(y, sr, rate) * 32767).astype("<i2")
    heard = np.concatenate([voice, np.zeros(2 * rate, dtype="<i2")])  # more than is recorded: no EOF mid-take
    (tmp_path / "mic.raw").write_bytes(heard.tobytes())
    (tmp_path / ".asoundrc").write_text(
        'pcm.!default {\n type file\n slave.pcm "null"\n file "/dev/null"\n'
        f' infile "{tmp_path / "mic.raw"}"\n format "raw"\n}}\n'
    )
    out = tmp_path / "take.wav"
    proc = run_cli("record", "--seconds", str(seconds), "--out", str(out), "--model", str(trained_run / "model.pt"),
                   env={"HOME": str(tmp_path)})  # ALSA reads ~/.asoundrc
    taken = heard[: int(seconds * rate)]

    saved, saved_sr = sf.read(out, dtype="int16")
    assert saved_sr == rate and sf.info(out).subtype == "PCM_16"
    np.testing.assert_array_equal(saved, taken)
    expected = tmp_path / "expected.wav"
    sf.write(expected, taken, rate, subtype="PCM_16")
    direct = run_cli("classify", str(expected), "--model", str(trained_run / "model.pt"))
    recorded, = list(csv.DictReader(io.StringIO(proc.stdout)))
    classified, = list(csv.DictReader(io.StringIO(direct.stdout)))
    assert recorded["path"] == str(out) and recorded["error"] == "" and recorded["prediction"] in ("female", "male")
    assert {k: v for k, v in recorded.items() if k != "path"} == {k: v for k, v in classified.items() if k != "path"}
    assert recorded["duration_s"].startswith(str(seconds)) and recorded["windows"] == "2"


def _write_manifest(path: Path, wavs: list[Path], meta: dict, *, swap: bool = False) -> Path:
    other = {"female": "male", "male": "female"}
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "speaker", "gender"])
        for w in wavs:
            gender = meta[w.parent.name]["gender"]
            writer.writerow([str(w), w.parent.name, other[gender] if swap else gender])
    return path


def _speaker_wavs(synthetic_audiomnist: Path, speakers: list[str]) -> list[Path]:
    return sorted(p for p in synthetic_audiomnist.rglob("*.wav") if f"audiomnist_{p.parent.name}" in speakers)


@pytest.fixture(scope="module")
def moved_threshold(trained_run, tmp_path_factory) -> Path:
    """The trained model with its threshold moved so far that it calls everyone female,
    as an unseen recording setup can move the log-odds of a whole channel."""
    from classifier.model import load_checkpoint, save_checkpoint

    bundle = load_checkpoint(trained_run / "model.pt")
    bundle.calibration.bias += 40.0
    path = tmp_path_factory.mktemp("moved") / "moved.pt"
    save_checkpoint(bundle, path)
    return path


def test_calibrate_on_labelled_clips_restores_the_threshold_and_keeps_the_weights(trained_run, moved_threshold, synthetic_audiomnist, tmp_path):
    import torch

    from classifier.model import load_checkpoint

    split = json.loads((trained_run / "split.json").read_text())
    meta = json.loads((synthetic_audiomnist / "audioMNIST_meta.txt").read_text())
    held_out = _speaker_wavs(synthetic_audiomnist, split["val_speakers"])

    def accuracy(model: Path) -> float:
        rows = json.loads(run_cli("classify", *map(str, held_out), "--model", str(model), "--format", "json").stdout)["results"]
        return sum(r["prediction"] == meta[Path(r["path"]).parent.name]["gender"] for r in rows) / len(rows)

    assert accuracy(moved_threshold) <= 0.6  # everyone female: the held-out men are all wrong

    # Labelled clips of other speakers (the training speakers), the held-out ones untouched.
    labelled = _write_manifest(tmp_path / "labels.csv", _speaker_wavs(synthetic_audiomnist, split["train_speakers"]), meta)
    out = tmp_path / "calibrated.pt"
    proc = run_cli("calibrate", str(labelled), "--model", str(moved_threshold), "--out", str(out), "--version", "synthetic-1-cal")
    report = json.loads(proc.stdout)
    assert report["method"] == "bias only (scale kept)" and report["in_sample"] is True
    assert report["before"]["balanced_accuracy"] == 0.5 and report["after"]["balanced_accuracy"] >= 0.8
    assert report["after"]["threshold_log_odds"] > report["before"]["threshold_log_odds"] + 5  # the bias moved 40 / scale back
    assert "threshold (raw log-odds)" in proc.stderr

    assert accuracy(out) >= 0.8
    old, new = load_checkpoint(moved_threshold), load_checkpoint(out)
    assert new.version == "synthetic-1-cal" and new.calibration.scale == old.calibration.scale
    assert new.info["recalibrated"]["from_version"] == "synthetic-1"
    assert new.metrics["source_validation_before_recalibration"]["balanced_accuracy"] == old.metrics["balanced_accuracy"]
    old_state, new_state = old.model.state_dict(), new.model.state_dict()
    assert old_state.keys() == new_state.keys() and all(torch.equal(old_state[k], new_state[k]) for k in old_state)


def test_calibrate_refuses_labels_the_model_ranks_backwards_and_one_gender(trained_run, synthetic_audiomnist, tmp_path):
    split = json.loads((trained_run / "split.json").read_text())
    meta = json.loads((synthetic_audiomnist / "audioMNIST_meta.txt").read_text())
    wavs = _speaker_wavs(synthetic_audiomnist, split["train_speakers"])
    swapped = _write_manifest(tmp_path / "swapped.csv", wavs, meta, swap=True)
    out = tmp_path / "never.pt"
    proc = run_cli("calibrate", str(swapped), "--model", str(trained_run / "model.pt"), "--out", str(out), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("voicegender: error: the model ranks these clips no better than chance or backwards (AUC 0.")
    assert not out.exists()

    women = [w for w in wavs if meta[w.parent.name]["gender"] == "female"]
    proc = run_cli("calibrate", str(_write_manifest(tmp_path / "women.csv", women, meta)), "--model", str(trained_run / "model.pt"), "--out", str(out), check=False)
    assert proc.returncode == 2 and "both genders" in proc.stderr.strip().splitlines()[-1]
    assert not out.exists()


def test_calibrate_registers_a_candidate_that_promote_activates(trained_run, synthetic_audiomnist, service_env, voicegender, tmp_path):
    """The service's path: registry on SQLite migrated by Alembic, as ``voicegender worker`` would read it."""
    env = service_env(model_path=trained_run / "model.pt")
    split = json.loads((trained_run / "split.json").read_text())
    meta = json.loads((synthetic_audiomnist / "audioMNIST_meta.txt").read_text())
    labelled = _write_manifest(tmp_path / "labels.csv", _speaker_wavs(synthetic_audiomnist, split["train_speakers"]), meta)
    out = tmp_path / "models" / "cal.pt"
    voicegender(env, "calibrate", str(labelled), "--out", str(out), "--register", "--version", "synthetic-1-cal")

    def registry() -> dict:
        return {m["version"]: m for m in json.loads(voicegender(env, "models", "--json").stdout)}

    models = registry()
    assert models["synthetic-1"]["status"] == "active"  # the configured default, adopted by the empty registry
    assert models["synthetic-1-cal"]["status"] == "candidate" and models["synthetic-1-cal"]["parent_version"] == "synthetic-1"
    assert models["synthetic-1-cal"]["path"] == str(out.resolve())

    again = voicegender(env, "calibrate", str(labelled), "--out", str(tmp_path / "again.pt"), "--register", "--version", "synthetic-1-cal", check=False)
    assert again.returncode == 2 and "was written but not registered" in again.stderr.strip().splitlines()[-1]

    voicegender(env, "promote", "synthetic-1-cal")
    # Without --model, a registered calibration starts from the model the workers use now.
    proc = voicegender(env, "calibrate", str(labelled), "--out", str(tmp_path / "models" / "cal2.pt"), "--register")
    second = json.loads(proc.stdout)["version"]
    assert second.startswith("synthetic-1-cal+cal-")
    models = registry()
    assert models["synthetic-1-cal"]["status"] == "active" and models["synthetic-1"]["status"] == "retired"
    assert models[second]["status"] == "candidate" and models[second]["parent_version"] == "synthetic-1-cal"


def test_calibrate_from_a_labelled_job_uses_the_scores_the_service_stored(trained_run, synthetic_audiomnist, service_env, voicegender, tmp_path, monkeypatch):
    """A job on a real (embedded) worker, then ``calibrate --job``: the same threshold as from the files,
    and clips scored by another model version are not fitted."""
    import shutil

    split = json.loads((trained_run / "split.json").read_text())
    folder = tmp_path / "in"
    for speaker in split["train_speakers"]:
        number = speaker.removeprefix("audiomnist_")
        shutil.copytree(synthetic_audiomnist / number, folder / number)
    shutil.copy(synthetic_audiomnist / "audioMNIST_meta.txt", folder)
    n_clips = len(list(folder.rglob("*.wav")))
    # fp32 on both paths: on a CPU with AMX, bf16 is on, and the worker's batches and classify's differ,
    # which moved the fitted threshold by 0.06 on one machine; this test is about which scores are used.
    monkeypatch.setenv("VOICEGENDER_PRECISION", "fp32")
    env = service_env(model_path=trained_run / "model.pt", precision="fp32")
    status = json.loads(voicegender(env, "submit", str(folder), "--wait", "--json").stdout.strip().splitlines()[-1])
    assert (status["state"], status["label_source"], status["done"]) == ("done", "audiomnist", n_clips)

    from_job = json.loads(voicegender(env, "calibrate", "--job", status["id"], "--out", str(tmp_path / "job.pt"), "--register", "--version", "synthetic-1-job").stdout)
    assert sum(from_job["clips"].values()) == n_clips and from_job["source"] == f"job {status['id']}"
    from_files = json.loads(run_cli("calibrate", str(folder), "--model", str(trained_run / "model.pt"), "--out", str(tmp_path / "files.pt")).stdout)
    assert from_files["clips"] == from_job["clips"] and from_files["speakers"] == from_job["speakers"]
    assert from_job["after"]["threshold_log_odds"] == pytest.approx(from_files["after"]["threshold_log_odds"], abs=0.05)

    voicegender(env, "promote", "synthetic-1-job")
    stale = voicegender(env, "calibrate", "--job", status["id"], "--out", str(tmp_path / "stale.pt"), check=False)
    assert stale.returncode == 2
    assert f"{n_clips} labelled clip(s) were scored by synthetic-1, not synthetic-1-job: skipped" in stale.stderr
    assert "got 0 usable clip(s)" in stale.stderr.strip().splitlines()[-1] and not (tmp_path / "stale.pt").exists()
    missing = voicegender(env, "calibrate", "--job", "no-such-job", "--out", str(tmp_path / "none.pt"), check=False)
    assert missing.returncode == 2 and "no-such-job" in missing.stderr.strip().splitlines()[-1]
