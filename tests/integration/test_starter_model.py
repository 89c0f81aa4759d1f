"""The committed starter model, as a user meets it: `voicegender classify examples/` with no --model."""
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
STARTER = REPO / "models" / "starter.pt"
EXAMPLES = REPO / "examples"


def classify(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # No VOICEGENDER_MODEL_PATH: the default must be the committed model.
    env.pop("VOICEGENDER_MODEL_PATH", None)
    proc = subprocess.run([sys.executable, "-m", "voicegender", "classify", *args], capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_starter_model_is_committed_with_its_card():
    assert STARTER.is_file(), "models/starter.pt is the default model of classify, demo and the workers"
    card = (REPO / "models" / "MODEL_CARD.md").read_text()
    assert "CC BY-NC-SA" in card  # the weights inherit RAVDESS / Speech Accent Archive terms


def test_starter_model_classifies_the_bundled_examples():
    truth = {r["path"]: r["gender"] for r in csv.DictReader((EXAMPLES / "labels.csv").open())}
    rows = list(csv.DictReader(io.StringIO(classify(str(EXAMPLES)).stdout)))
    got = {Path(r["path"]).name: r for r in rows}
    assert set(got) == set(truth)
    assert all(r["error"] == "" for r in rows)
    correct = sum(got[name]["prediction"] == gender for name, gender in truth.items())
    # These speakers come from the shared corpus (some were trained on): a smoke check
    # of the shipped weights and preprocessing, not a measure of accuracy (see the card).
    # A broken pipeline scores about half. starter-8 gets all 12 (starter-6 missed one Asterisk
    # clip of july_jimenez, p_female 0.42); one miss is allowed, as a retrained model may differ there.
    assert correct >= 11, {n: (got[n]["prediction"], truth[n], got[n]["p_female"]) for n in truth}


def test_starter_model_json_names_its_version():
    out = json.loads(classify(str(EXAMPLES / "0_george_7.wav"), "--format", "json").stdout)
    assert out["model_version"].startswith("starter")
