"""A training run stopped part-way goes on from its saved state and ends exactly where an unstopped run ends."""
import pytest
import torch

from training.data import load_waveforms
from training.loop import TrainConfig, train_split
from training.resume import StateMismatch
from training.run import feature_config_for
from training.sources import read_source
from training.splits import split_by_speaker

# Every generator the loop draws from is in use: trim widths, pitch shifts, masks, channel augmentation, the sampler.
CFG = TrainConfig(steps=6, batch_size=8, eval_every=6, save_every=2, warmup_steps=2, pitch_shift_prob=0.5, pitch_both_ways=True, spec_mask_prob=0.5, bf16=False)


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def data(synthetic_audiomnist):
    clips = read_source(synthetic_audiomnist)
    features = feature_config_for("logmel", short_fill="trim")
    waves = load_waveforms(clips, sr=features.sample_rate)
    return clips, waves, split_by_speaker(clips, val_fraction=0.2, seed=0), features


def stop_at(step_index: int):
    def progress(step: int, loss: float) -> None:
        if step == step_index:
            raise Killed

    return progress


def test_a_resumed_run_takes_the_same_steps_as_an_unstopped_one(data, tmp_path):
    clips, waves, split, features = data
    straight, straight_metrics = train_split(clips, waves, split, features, CFG, version="v")
    state = tmp_path / "train_state.pt"
    with pytest.raises(Killed):  # killed during step 5, after the state of step 4 was saved
        train_split(clips, waves, split, features, CFG, version="v", state_path=state, progress=stop_at(4))
    assert torch.load(state, weights_only=False)["progress"]["step"] == 4
    resumed_steps = []
    resumed, resumed_metrics = train_split(clips, waves, split, features, CFG, version="v", state_path=state, progress=lambda step, loss: resumed_steps.append(step))
    assert resumed_steps == [4, 5]
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, msg=name)
    assert [c["train_loss"] for c in resumed_metrics["learning_curve"]] == pytest.approx([c["train_loss"] for c in straight_metrics["learning_curve"]], rel=1e-6)
    assert resumed_metrics["confusion_matrix"] == straight_metrics["confusion_matrix"]
    assert resumed.calibration.bias == pytest.approx(straight.calibration.bias, rel=1e-5, abs=1e-6)


def test_a_state_of_other_options_is_refused_naming_them(data, tmp_path):
    clips, waves, split, features = data
    state = tmp_path / "train_state.pt"
    with pytest.raises(Killed):
        train_split(clips, waves, split, features, CFG, version="v", state_path=state, progress=stop_at(2))
    other = TrainConfig(**{**CFG.__dict__, "lr": 1e-4, "steps": 8})
    with pytest.raises(StateMismatch, match=r"train_config.lr, train_config.steps"):
        train_split(clips, waves, split, features, other, version="v", state_path=state)
    with pytest.raises(StateMismatch, match="split_sha256"):
        train_split(clips, waves, split_by_speaker(clips, val_fraction=0.2, seed=1), features, CFG, version="v", state_path=state)
    # How often it saves and the version label may change.
    resumed_steps = []
    train_split(clips, waves, split, features, TrainConfig(**{**CFG.__dict__, "save_every": 5}), version="v2", state_path=state, progress=lambda step, loss: resumed_steps.append(step))
    assert resumed_steps == [2, 3, 4, 5]


def test_a_retrain_replaces_a_state_of_other_data_and_an_unreadable_one(data, tmp_path, caplog):
    """The worker's retrain (other_state="replace") starts afresh where the CLI would refuse."""
    clips, waves, split, features = data
    state = tmp_path / "retrain_state.pt"
    with pytest.raises(Killed):
        train_split(clips, waves, split, features, CFG, version="v", state_path=state, progress=stop_at(2))
    other = TrainConfig(**{**CFG.__dict__, "steps": 3, "save_every": 1})
    steps = []
    with pytest.raises(Killed):
        train_split(clips, waves, split, features, other, version="v", state_path=state, other_state="replace", progress=lambda step, loss: steps.append(step) or stop_at(2)(step, loss))
    assert steps == [0, 1, 2]  # from the start, and its own state now replaces the other
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "belongs to another run (train_config.steps differ)" in warned[0]
    assert warned[0].endswith("it will be replaced: starting afresh") and "remove it" not in warned[0]  # no advice the worker does not take
    assert torch.load(state, weights_only=False)["identity"]["train_config"]["steps"] == 3
    state.write_bytes(b"not a state")
    with pytest.raises(StateMismatch, match="cannot be read.*; remove it to start again$"):
        train_split(clips, waves, split, features, CFG, version="v", state_path=state)
    steps.clear()
    with pytest.raises(Killed):
        train_split(clips, waves, split, features, CFG, version="v", state_path=state, other_state="replace", progress=lambda step, loss: steps.append(step) or stop_at(0)(step, loss))
    assert steps == [0]


def test_a_resumed_run_with_weight_averaging_ships_the_same_average(data, tmp_path):
    clips, waves, split, features = data
    cfg = TrainConfig(**{**CFG.__dict__, "average_from": 0.5})
    straight, straight_metrics = train_split(clips, waves, split, features, cfg, version="v")
    assert straight_metrics["weight_average"] == {"from_step": 4, "models": 3, "batchnorm_batches": 50}
    state = tmp_path / "train_state.pt"
    with pytest.raises(Killed):  # the state of step 4 holds an average of one model
        train_split(clips, waves, split, features, cfg, version="v", state_path=state, progress=stop_at(4))
    resumed, resumed_metrics = train_split(clips, waves, split, features, cfg, version="v", state_path=state)
    assert resumed_metrics["weight_average"] == straight_metrics["weight_average"]
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, msg=name)


def test_the_wideband_fill_does_not_decide_whether_a_state_resumes():
    """It and the edge cut act at inference only; states saved before the fields existed stay resumable."""
    from dataclasses import replace

    from training.resume import run_identity

    before = feature_config_for("logmel").to_dict()
    before.pop("wideband_short_fill")
    before.pop("wideband_trim_edges")
    now = replace(feature_config_for("logmel"), wideband_short_fill="trim", wideband_trim_edges=True).to_dict()
    assert run_identity({}, before, {}, None) == run_identity({}, now, {}, None)
    assert run_identity({}, before, {}, None) != run_identity({}, {**now, "short_fill": "loop"}, {}, None)
