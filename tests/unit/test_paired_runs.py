"""scripts/paired_runs.py: pair differences and their mean and standard error, on figures whose answers are known by hand."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from paired_runs import mean_and_standard_error, pair_difference, run_figures

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def holdout(auc: float, at_0: float, george: float) -> dict:
    """The part of a holdout_report.py --json the script reads."""
    return {
        "auc": auc,
        "balanced_accuracy_at_0": at_0,
        "balanced_accuracy_at_best": at_0 + 0.05,
        "balanced_accuracy_at": {"-1.17": at_0 + 0.04},
        "speakers_with_50_clips_at_0": {"fsdd_george": george},
    }


def noise(as_recorded: float, white: float) -> dict:
    return {"threshold": -1.17, "conditions": {"as recorded": {"balanced_accuracy": as_recorded}, "white 10 dB": {"balanced_accuracy": white}}}


def test_a_runs_figures_are_named_by_threshold_and_condition():
    figures = run_figures(holdout(0.95, 0.80, 0.9), noise(0.84, 0.81), ["fsdd_george"])
    assert figures == pytest.approx({
        "AUC": 0.95, "at 0": 0.80, "at best": 0.85, "at -1.17": 0.84,
        "as recorded at -1.17": 0.84, "white 10 dB at -1.17": 0.81, "fsdd_george at 0": 0.9,
    })
    assert "white 10 dB at -1.17" not in run_figures(holdout(0.95, 0.80, 0.9), None, [])


def test_differences_are_candidate_minus_baseline_in_points_on_shared_figures_only():
    base = {"AUC": 0.95, "at 0": 0.80, "white 10 dB at -1.17": 0.81}
    cand = {"AUC": 0.97, "at 0": 0.79}  # no noise.json: the noise figure is left out, not read as 0
    assert pair_difference(base, cand) == pytest.approx({"AUC": 2.0, "at 0": -1.0})


def test_mean_and_standard_error_over_pairs():
    # +2.7, -1.3, +2.8: mean 1.4, sample sd sqrt(((1.3)^2 + (2.7)^2 + (1.4)^2) / 2), s.e. that over sqrt(3).
    diffs = [{"at -1.17": 2.7, "white": 0.5}, {"at -1.17": -1.3}, {"at -1.17": 2.8, "white": 3.1}]
    summary = mean_and_standard_error(diffs)
    assert list(summary) == ["at -1.17"]  # a figure one pair lacks has no mean over the pairs
    mean, se = summary["at -1.17"]
    assert mean == pytest.approx(1.4)
    assert se == pytest.approx(math.sqrt((1.3**2 + 2.7**2 + 1.4**2) / 2 / 3))
    (one_mean, one_se), = mean_and_standard_error([{"AUC": 1.0}]).values()
    assert one_mean == 1.0 and math.isnan(one_se)


def _write_run(folder: Path, auc: float, at_0: float, george: float, noise_row: dict | None) -> Path:
    folder.mkdir()
    (folder / "holdout.json").write_text(json.dumps(holdout(auc, at_0, george)))
    if noise_row is not None:
        (folder / "noise.json").write_text(json.dumps(noise_row))
    return folder


def test_the_command_prints_each_pair_and_writes_the_means(tmp_path):
    runs = [
        _write_run(tmp_path / "b0", 0.947, 0.808, 0.946, noise(0.873, 0.833)),
        _write_run(tmp_path / "c0", 0.960, 0.853, 0.872, noise(0.900, 0.837)),
        _write_run(tmp_path / "b1", 0.956, 0.802, 0.946, None),
        _write_run(tmp_path / "c1", 0.945, 0.801, 0.896, noise(0.872, 0.833)),
    ]
    out = tmp_path / "pairs.json"
    proc = subprocess.run([sys.executable, str(SCRIPTS / "paired_runs.py"), *map(str, runs), "--speaker", "fsdd_george", "--json", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "pair 2: " in proc.stdout and "fsdd_george at 0" in proc.stdout
    written = json.loads(out.read_text())
    assert written["mean"]["AUC"] == pytest.approx((1.3 - 1.1) / 2)
    assert written["mean"]["fsdd_george at 0"] == pytest.approx((-7.4 - 5.0) / 2)
    assert "white 10 dB at -1.17" not in written["mean"]  # the second baseline has no noise.json
    assert written["pairs"][0]["points"]["white 10 dB at -1.17"] == pytest.approx(0.4)


def test_one_pair_has_no_standard_error_and_writes_valid_json(tmp_path):
    runs = [_write_run(tmp_path / "b0", 0.95, 0.80, 0.9, None), _write_run(tmp_path / "c0", 0.96, 0.82, 0.9, None)]
    out = tmp_path / "pairs.json"
    proc = subprocess.run([sys.executable, str(SCRIPTS / "paired_runs.py"), *map(str, runs), "--json", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    written = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert written["mean"]["AUC"] == pytest.approx(1.0) and written["standard_error"]["AUC"] is None


def test_an_odd_run_or_a_run_without_its_report_is_one_clear_line(tmp_path):
    lone = _write_run(tmp_path / "b0", 0.95, 0.8, 0.9, None)
    proc = subprocess.run([sys.executable, str(SCRIPTS / "paired_runs.py"), str(lone)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "runs come in pairs" in proc.stderr
    (tmp_path / "c0").mkdir()
    proc = subprocess.run([sys.executable, str(SCRIPTS / "paired_runs.py"), str(lone), str(tmp_path / "c0")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.strip() == f"{tmp_path / 'c0' / 'holdout.json'} not found: score the run with scripts/holdout_report.py RUN MANIFEST --json {tmp_path / 'c0' / 'holdout.json'}"
