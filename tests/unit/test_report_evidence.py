"""What finalize adds to the report with the model: examples, audio excerpts, the deletion check, mean maps."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from classifier.features import logmel_config
from classifier.model import GenderResNet, ModelBundle
from classifier.pipeline import Classifier
from classifier.synthetic import write_labelled_folder
from reports.attention import write_chunk_cams
from reports.job_evidence import audio_data_uri, collect_evidence, faithfulness_positions, pick_examples, read_job_deletion, record_chunk_deletion
from reports.job_report import JobReportData, render_job_report


def _voting_windows(paths: list[Path], bundle: ModelBundle) -> list[np.ndarray]:
    """Each clip's voting windows as the worker's chunk keeps them for the deletion check."""
    kept: dict[str, np.ndarray] = {}
    Classifier(bundle).classify_files(paths, on_prepared=lambda c: kept.__setitem__(c.path, c.windows))
    return [kept[str(p)] for p in paths if str(p) in kept]


def row(path: str, p_female: float | None, label: str | None = None) -> dict:
    return {"path": path, "p_female": p_female, "label": label, "prediction": None if p_female is None else ("female" if p_female >= 0.5 else "male")}


def test_examples_are_misclassified_then_most_then_least_confident_each_once():
    clips = [row("a", 0.99, "male"), row("b", 0.98, "female"), row("c", 0.02, "male"), row("d", 0.55), row("e", 0.4, "male"),
             row("f", None)]
    picked = [(kind, c["path"]) for kind, c in pick_examples(clips, n=2)]
    assert picked == [("misclassified", "a"), ("most confident", "b"), ("most confident", "c"),
                      ("least confident", "d"), ("least confident", "e")]


def test_audio_excerpt_is_capped_in_length_and_rate():
    sr = 16000
    y = 0.1 * np.sin(2 * np.pi * 200 * np.arange(10 * sr) / sr).astype(np.float32)
    uri, seconds = audio_data_uri(y, sr, max_s=3.0, max_sr=8000)
    assert uri.startswith("data:audio/wav;base64,") and seconds == pytest.approx(3.0)
    decoded, decoded_sr = sf.read(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert decoded_sr == 8000 and len(decoded) == 3 * 8000
    assert len(uri) < 3 * 8000 * 2 * 4 / 3 + 200  # 16-bit samples, base64


@pytest.fixture(scope="module")
def tiny_bundle() -> ModelBundle:
    torch.manual_seed(0)
    cfg = logmel_config(sample_rate=8000, n_mels=32)
    return ModelBundle(model=GenderResNet(cfg.n_bins).eval(), features=cfg, version="unit")


def test_evidence_in_bf16_agrees_with_fp32(tiny_bundle: ModelBundle, tmp_path: Path):
    # The worker runs evidence through its own classifier, bf16 where the CPU has it.
    folder = write_labelled_folder(tmp_path / "in", n_clips=4, sr=16000, seed=9)
    clips = [{"path": p.name, "label": None, "p_female": 0.2 + 0.2 * k} for k, p in enumerate(sorted(folder.glob("*.wav")))]
    paths = sorted(folder.glob("*.wav"))
    evidence = {}
    for name, clf in (("fp32", Classifier(tiny_bundle)), ("bf16", Classifier(tiny_bundle, bf16=True))):
        record_chunk_deletion(clf, _voting_windows(paths, tiny_bundle), tmp_path / name, 0)
        evidence[name] = collect_evidence(clf, folder, tmp_path / name, clips, min_faithfulness_clips=1)
    fp32, bf16 = evidence["fp32"], evidence["bf16"]
    assert [e.clip["path"] for e in fp32.examples] == [e.clip["path"] for e in bf16.examples]
    for a, b in zip(fp32.examples, bf16.examples):
        assert abs(a.window_p_female - b.window_p_female) < 0.02
        assert np.abs(a.cam - b.cam).mean() < 0.05
    assert fp32.faithfulness.ks == bf16.faithfulness.ks
    assert np.allclose(fp32.faithfulness.top_drop, bf16.faithfulness.top_drop, atol=0.02)
    with pytest.raises(ValueError, match="explain=True"):
        collect_evidence(Classifier(tiny_bundle, explain=False), folder, tmp_path / "cams", clips)


def test_collect_evidence_on_real_files_and_the_report_shows_it(tiny_bundle: ModelBundle, tmp_path: Path):
    folder = write_labelled_folder(tmp_path / "in", n_clips=6, sr=16000, seed=5)
    (folder / "broken.wav").write_bytes(b"RIFF....WAVE")
    paths = sorted(folder.glob("*.wav"))
    results = Classifier(tiny_bundle).classify_files(paths)
    write_chunk_cams(tmp_path / "cams", 0, results, tiny_bundle.class_names)
    clips = [
        {"path": p.name, "label": None if r.error else p.stem.rsplit("_", 1)[1], "speaker": None, "prediction": r.prediction,
         "p_female": r.p_female, "duration_s": r.duration_s, "windows": r.windows, "error": r.error, "error_reason": r.error_reason,
         "attention": None if r.attention is None else r.attention.tolist(), "processing_ms": 1.0}
        for p, r in zip(paths, results)
    ]
    # The deletion check as two chunks score it: the clips in two parts, each its own file.
    checked = [p for p, r in zip(paths, results) if r.p_female is not None]
    record_chunk_deletion(Classifier(tiny_bundle), _voting_windows(checked[:2], tiny_bundle), tmp_path / "cams", 0)
    record_chunk_deletion(Classifier(tiny_bundle), _voting_windows(checked[2:], tiny_bundle), tmp_path / "cams", 1)
    evidence = collect_evidence(Classifier(tiny_bundle), folder, tmp_path / "cams", clips, min_faithfulness_clips=6)

    assert evidence.class_maps is not None and evidence.class_maps.counts.sum() == 6
    assert evidence.class_maps.sums.shape[1:] == (32, tiny_bundle.features.n_frames)
    assert 3 <= len(evidence.examples) <= 6 and all(ex.cam.shape == ex.features.shape == (32, tiny_bundle.features.n_frames) for ex in evidence.examples)
    assert all(0 <= ex.cam.min() and ex.cam.max() <= 1 + 1e-6 for ex in evidence.examples)
    faith = evidence.faithfulness
    assert faith is not None and evidence.faithfulness_clips == 6 and faith.n_windows == 6  # one voting window per short clip
    assert faith.ks == [2, 4, 8] and 0.5 <= faith.base_confidence <= 1

    data = JobReportData(
        job_id="e1", state="done_with_errors", source="in", label_source="filename", model_version="unit", model_metrics={},
        feature_axis=np.linspace(100, 3800, 32).tolist(), feature_axis_label="mel band centre (Hz)", created_at="2026-01-01 00:00:00",
        finished_at="2026-01-01 00:00:09", clips=clips, evidence=evidence,
    )
    html = render_job_report(data)
    assert html.count("<audio controls") == len(evidence.examples)
    assert 'id="faithfulness"' in html and 'alt="deletion check"' in html and 'alt="mean GradCAM per predicted class"' in html


def test_small_job_skips_the_deletion_check_and_the_report_says_why(tiny_bundle: ModelBundle, tmp_path: Path):
    folder = write_labelled_folder(tmp_path / "in", n_clips=4, sr=16000, seed=3)
    clips = [{"path": p.name, "label": None, "speaker": None, "prediction": "male", "p_female": 0.3, "duration_s": 1.0, "windows": 1,
              "error": None, "error_reason": None, "attention": None, "processing_ms": 1.0} for p in sorted(folder.glob("*.wav"))]
    evidence = collect_evidence(Classifier(tiny_bundle), folder, tmp_path / "cams", clips, min_faithfulness_clips=5)
    assert evidence.faithfulness is None and len(evidence.examples) == 4
    assert evidence.faithfulness_note == "Not run: the deletion check needs at least 5 classified files to be readable; this job has 4."
    data = JobReportData(
        job_id="e2", state="done", source="in", label_source="none", model_version="unit", model_metrics={},
        feature_axis=np.linspace(100, 3800, 32).tolist(), feature_axis_label="mel band centre (Hz)", created_at="2026-01-01 00:00:00",
        finished_at="2026-01-01 00:00:09", clips=clips, evidence=evidence,
    )
    html = render_job_report(data)
    assert 'id="faithfulness-note"' in html and "this job has 4." in html and 'alt="deletion check"' not in html


def test_on_prepared_hands_over_the_windows_that_were_scored(tiny_bundle: ModelBundle, tmp_path: Path):
    folder = write_labelled_folder(tmp_path / "in", n_clips=3, sr=16000, seed=8)
    (folder / "broken.wav").write_bytes(b"RIFF....WAVE")
    paths = sorted(folder.glob("*.wav"))
    seen: dict[str, np.ndarray] = {}
    results = Classifier(tiny_bundle).classify_files(paths, on_prepared=lambda c: seen.__setitem__(c.path, c.windows))
    assert sorted(seen) == sorted(r.path for r in results if r.error is None)  # the broken file is not handed over
    for r in results:
        if r.error is None:
            assert seen[r.path].shape == (r.windows, tiny_bundle.features.window_samples)
            # the same windows, scored again, give the clip's log-odds
            log_odds, _ = Classifier(tiny_bundle, explain=False).score_windows(seen[r.path])
            assert float(np.mean(log_odds)) == pytest.approx(r.log_odds, rel=1e-4)  # batched apart: float order differs


def test_deletion_sample_is_spread_over_the_job_and_chunk_files_add_up(tiny_bundle: ModelBundle, tmp_path: Path):
    assert faithfulness_positions(5, n=12, min_clips=1) == {0, 1, 2, 3, 4}
    assert faithfulness_positions(19) == set() and len(faithfulness_positions(20)) == 12  # below 20 the report does not show it
    spread = sorted(faithfulness_positions(1000, n=12))
    assert len(spread) == 12 and spread[0] == 0 and spread[-1] == 999 and max(np.diff(spread)) <= 92

    folder = write_labelled_folder(tmp_path / "in", n_clips=4, sr=16000, seed=4)
    paths = sorted(folder.glob("*.wav"))
    clf = Classifier(tiny_bundle)
    first = record_chunk_deletion(clf, _voting_windows(paths[:3], tiny_bundle), tmp_path / "cams", 0)
    before = first.read_bytes()
    assert record_chunk_deletion(clf, _voting_windows(paths[:3], tiny_bundle), tmp_path / "cams", 0).read_bytes() == before  # a chunk run again: the same file
    record_chunk_deletion(clf, _voting_windows(paths[3:], tiny_bundle), tmp_path / "cams", 1)
    drops, n_clips = read_job_deletion(tmp_path / "cams")
    assert n_clips == 4 and drops.top.shape == drops.random.shape == (3, 4) and drops.ks == [2, 4, 8]
    whole = drops.summary()
    assert whole.n_windows == 4 and whole.top_drop == pytest.approx(drops.top.mean(axis=1).tolist())
    assert read_job_deletion(tmp_path / "none") == (None, 0)


@pytest.mark.parametrize("fill", ["trim", "trim+loop"])
def test_trimmed_short_clips_beside_long_ones_give_window_sized_evidence(tiny_bundle: ModelBundle, tmp_path: Path, fill: str):
    """short_fill="trim": short clips' windows are narrower; maps, examples and the deletion check still line up.

    Under "trim+loop" (scored trimmed and looped) the maps average the two views; the evidence reads the trimmed one.
    """
    from dataclasses import replace

    trimmed = ModelBundle(model=tiny_bundle.model, features=replace(tiny_bundle.features, short_fill=fill), version=fill)
    folder = write_labelled_folder(tmp_path / "in", n_clips=4, sr=16000, seed=3)
    short = sorted(folder.glob("*.wav"))
    y, sr = sf.read(short[0], dtype="float32")
    sf.write(folder / "long_female.wav", np.tile(y, int(np.ceil(2.5 * sr / len(y))))[: int(2.5 * sr)], sr)
    paths = sorted(folder.glob("*.wav"))
    windows = _voting_windows(paths, trimmed)
    assert len({w.shape[1] for w in windows}) > 1  # widths really are mixed
    results = Classifier(trimmed).classify_files(paths)
    write_chunk_cams(tmp_path / "cams", 0, results, trimmed.class_names)
    record_chunk_deletion(Classifier(trimmed), windows, tmp_path / "cams", 0)
    clips = [{"path": p.name, "label": None, "p_female": r.p_female, "prediction": r.prediction} for p, r in zip(paths, results)]
    evidence = collect_evidence(Classifier(trimmed), folder, tmp_path / "cams", clips, min_faithfulness_clips=1)
    shape = (32, trimmed.features.n_frames)
    assert evidence.class_maps.sums.shape[1:] == shape and evidence.class_maps.counts.sum() == len(paths)
    assert evidence.examples and all(ex.cam.shape == ex.features.shape == shape for ex in evidence.examples)
    deletion, n_clips = read_job_deletion(tmp_path / "cams")
    assert n_clips == len(paths) and len(deletion.base) == sum(min(len(w), 2) for w in windows)  # FAITHFULNESS_WINDOWS_PER_CLIP
