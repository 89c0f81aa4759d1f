"""The job report rendered from plain data: metrics of known answer, escaping, sections, attention axis."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest

from classifier.features import feature_axis, logmel_config, seed_mfcc_config
from classifier.pipeline import ClipResult
from reports.attention import ClassMaps, read_job_cams, write_chunk_cams
from reports.job_evidence import JobEvidence
from reports.job_report import MFCC_NOT_FREQUENCY, JobReportData, label_metrics, render_job_report, summarise

EVIL = "<script>alert(1)</script>.wav"


def clip(path: str, label: str | None, prediction: str | None, p_female: float | None, *, speaker=None, error=None, n_bins=32):
    rng = np.random.default_rng(len(path))
    return {
        "path": path, "label": label, "speaker": speaker, "prediction": prediction, "p_female": p_female,
        "duration_s": None if error else 1.25, "windows": None if error else 2, "error": error,
        "error_reason": "unreadable_audio" if error else None, "processing_ms": None if error else 12.0,
        "attention": None if error else rng.random(n_bins).tolist(),
    }


def labelled_clips() -> list[dict]:
    # true female: 3 right, 1 wrong; true male: 2 right, 2 wrong  -> cm [[3, 1], [2, 2]]
    return [
        clip("f1.wav", "female", "female", 0.9, speaker="s1"), clip("f2.wav", "female", "female", 0.8, speaker="s1"),
        clip("f3.wav", "female", "female", 0.7, speaker="s2"), clip("f4.wav", "female", "male", 0.2, speaker="s2"),
        clip("m1.wav", "male", "male", 0.1, speaker="s3"), clip("m2.wav", "male", "male", 0.3, speaker="s3"),
        clip("m3.wav", "male", "female", 0.6, speaker="s4"), clip(EVIL, "male", "female", 0.95, speaker="s4"),
        clip("bad/noise.wav", None, None, None, error="bad/noise.wav: not a readable audio file"),
    ]


def report_data(clips: list[dict], *, mfcc: bool = False, evidence: JobEvidence | None = None) -> JobReportData:
    cfg = seed_mfcc_config() if mfcc else logmel_config(sample_rate=8000, n_mels=32)
    axis, label = feature_axis(cfg)
    return JobReportData(
        job_id="j1", state="done_with_errors", source="/in/<b>folder</b>", label_source="filename", model_version="m-1",
        model_metrics={"accuracy": 0.97, "balanced_accuracy": 0.96, "per_class": {"female": {"f1": 0.95}}, "n": 400},
        feature_axis=[float(v) for v in axis], feature_axis_label=label, created_at="2026-01-01 10:00:00",
        finished_at="2026-01-01 10:00:30", started_at="2026-01-01 10:00:05", clips=clips,
        feature_kind=cfg.kind, evidence=evidence or JobEvidence(),
    )


class Elements(HTMLParser):
    """Tags and text of a page, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> Elements:
    p = Elements()
    p.feed(html)
    return p


def test_label_metrics_match_counts_worked_by_hand():
    m = label_metrics(["female"] * 4 + ["male"] * 4, ["female"] * 3 + ["male"] * 3 + ["female"] * 2)
    assert m["confusion_matrix"] == [[3, 1], [2, 2]]
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    assert m["f1"]["female"] == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))
    assert m["f1"]["male"] == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))


def test_summary_counts_errors_by_reason_and_speakers():
    s = summarise(report_data(labelled_clips()))
    assert (s["total"], s["done"], s["failed"], s["labelled"]) == (9, 8, 1, 8)
    assert s["by_prediction"] == {"female": 5, "male": 3, "uncertain": 0}
    assert s["errors_by_reason"] == [{"reason": "unreadable_audio", "count": 1, "examples": [("bad/noise.wav", "bad/noise.wav: not a readable audio file")]}]
    assert s["metrics"]["confusion_matrix"] == [[3, 1], [2, 2]]
    assert [(r["speaker"], r["n"], r["accuracy"]) for r in s["per_speaker"]] == [("s4", 2, 0.0), ("s2", 2, 0.5), ("s1", 2, 1.0), ("s3", 2, 1.0)]
    # Each speaker's files vote by mean log-odds: s4 (0.6, 0.95) reads female, s2 (0.7, 0.2) male.
    assert [r["verdict"] for r in s["per_speaker"]] == ["female", "male", "female", "male"]
    assert s["per_speaker"][1]["p_female"] == pytest.approx(1 / (1 + np.sqrt(0.3 / 0.7 * 0.8 / 0.2)))
    assert s["speaker_metrics"]["confusion_matrix"] == [[1, 1], [1, 1]]
    assert s["timings"]["wall_s"] == 25.0 and s["timings"]["audio_s"] == pytest.approx(10.0)


def test_a_speakers_uncertain_files_vote_and_the_verdicts_are_shown():
    clips = [
        clip("a.wav", "male", "male", 0.4, speaker="s6"), clip("b.wav", "male", "female", 0.6, speaker="s6"),
        clip("c.wav", "male", "uncertain", 0.45, speaker="s6"),  # not a labelled file, but it votes
        clip("d.wav", "female", "female", 0.9, speaker="s7"), clip("e.wav", "female", "female", 0.8),  # no speaker: no row
    ]
    s = summarise(report_data(clips))
    assert [(r["speaker"], r["n"], r["accuracy"], r["verdict"]) for r in s["per_speaker"]] == [("s6", 2, 0.5, "male"), ("s7", 1, 1.0, "female")]
    assert s["speaker_metrics"]["balanced_accuracy"] == 1.0
    html = render_job_report(report_data(clips))
    table = html[html.index('<table id="speakers">'):html.index("</table>", html.index('<table id="speakers">'))]
    assert '<span id="speaker-verdicts">2 of 2</span>' in table and 'id="speaker-balanced-accuracy">1.0000<' in table
    assert "<td>s6</td><td>male</td><td class=\"num\">2</td><td class=\"num\">0.500</td><td>male</td><td class=\"num\">0.483</td>" in table


def test_user_text_is_escaped_everywhere():
    html = render_job_report(report_data(labelled_clips()))
    assert EVIL not in html and "<b>folder</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.wav" in html
    page = parse(html)
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert len(scripts) == 1  # only the report's own sort/filter script
    assert EVIL in "".join(page.text)  # ... while the name is shown as text


def test_labelled_report_has_confusion_numbers_misclassified_first_and_nothing_external():
    html = render_job_report(report_data(labelled_clips()))
    cells = {(t, p): int(n) for t, p, n in re.findall(r'data-true="(\w+)" data-pred="(\w+)">(\d+)<', html)}
    assert cells == {("female", "female"): 3, ("female", "male"): 1, ("male", "female"): 2, ("male", "male"): 2}
    assert 'id="no-labels"' not in html and 'id="speakers"' in html
    body = html[html.index('<table id="files">'):]
    rows = re.findall(r'<tr class="(wrong|failed|)"', body)
    assert rows == ["wrong"] * 3 + ["failed"] + [""] * 5
    for tag, attrs in parse(html).tags:
        for key in ("src", "href"):
            assert not attrs.get(key) or attrs[key].startswith(("data:", "#")), (tag, attrs)
    assert "validation accuracy" in html and "validation F1 female" in html


def test_unlabelled_report_says_why_and_has_no_labelled_sections():
    clips = [clip(f"c{i}.wav", None, "female" if i % 2 else "male", 0.3 + 0.1 * i) for i in range(4)]
    html = render_job_report(report_data(clips))
    assert 'id="no-labels"' in html and "none of these files came with a true label" in html
    assert 'id="confusion"' not in html and 'id="labelled"' not in html and 'id="speakers"' not in html
    assert 'alt="prediction counts"' in html and 'alt="confidence histogram"' in html


def test_logmel_axis_is_in_hz_and_every_bin_is_listed():
    html = render_job_report(report_data(labelled_clips()))
    assert "centre frequency in Hz" in html and MFCC_NOT_FREQUENCY not in html
    profile = html[html.index('<table id="profile">'):html.index("</table>", html.index('<table id="profile">'))]
    assert profile.count("<tr>") == 1 + 32  # header + every mel band
    first_hz = float(feature_axis(logmel_config(sample_rate=8000, n_mels=32))[0][0])
    assert f'<td class="num">0</td><td class="num">{first_hz:.0f}</td>' in profile


def test_mfcc_axis_is_coefficients_and_says_why_not_frequency():
    clips = [clip(f"c{i}.wav", None, "female" if i % 2 else "male", 0.3 + 0.1 * i, n_bins=12) for i in range(4)]
    html = render_job_report(report_data(clips, mfcc=True))
    assert MFCC_NOT_FREQUENCY in html and "cepstral coefficient" in html and "frequency in Hz" not in html


def test_mean_maps_come_from_chunk_files_and_a_rerun_chunk_counts_once(tmp_path):
    def result(p_female: float, value: float) -> ClipResult:
        return ClipResult(path="x", prediction="female" if p_female >= 0.5 else "male", p_female=p_female, cam=np.full((4, 3), value))

    classes = ("female", "male")
    write_chunk_cams(tmp_path, 0, [result(0.9, 1.0), result(0.2, 3.0)], classes)
    write_chunk_cams(tmp_path, 1, [result(0.7, 2.0), ClipResult(path="bad", error="unreadable")], classes)
    write_chunk_cams(tmp_path, 1, [result(0.7, 2.0)], classes)  # a redelivered chunk rewrites its own file
    maps = read_job_cams(tmp_path, classes)
    assert isinstance(maps, ClassMaps) and maps.counts.tolist() == [2, 1]
    assert np.allclose(maps.mean("female"), 1.5) and np.allclose(maps.mean("male"), 3.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunk-0000.npz", "chunk-0001.npz"]  # no tmp left
    assert write_chunk_cams(tmp_path, 2, [ClipResult(path="bad", error="x")], classes) is None


def test_mean_maps_are_drawn_when_present():
    maps = ClassMaps(classes=("female", "male"), sums=np.ones((2, 32, 98)), counts=np.array([1, 1]))
    html = render_job_report(report_data(labelled_clips(), evidence=JobEvidence(class_maps=maps)))
    assert 'alt="mean GradCAM per predicted class"' in html and "1 / 1 files" in html


def test_a_job_where_every_file_failed_still_renders():
    html = render_job_report(report_data([clip("bad.wav", None, None, None, error="bad.wav: empty file")]))
    assert "No attention maps: no file was classified." in html and 'id="no-labels"' in html
    assert 'id="errors"' in html and 'alt="confidence histogram"' in html
