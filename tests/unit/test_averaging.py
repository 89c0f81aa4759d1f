"""Tail weight averaging: the mean of the late steps' weights, with BatchNorm re-measured for them."""
import pytest
import torch

from training.averaging import TailAverage
from training.loop import TrainConfig, train_split
from training.run import feature_config_for
from training.data import load_waveforms
from training.sources import read_source
from training.splits import split_by_speaker


def small_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))


def test_the_average_is_the_mean_of_the_weights_after_the_start_step_only():
    model = small_model()
    average = TailAverage(model, start_step=2)
    for steps_done in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(steps_done))
        average.update(model, steps_done)
    assert average.count == 3  # after steps 3, 4 and 5
    target = small_model()
    batches = [torch.randn(16, 3) for _ in range(4)]
    average.apply(target, batches, bf16=False)
    for p in target.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 4.0))  # mean of 3, 4, 5


def test_batchnorm_is_re_measured_over_every_batch_and_the_callers_mode_kept():
    model = small_model()
    average = TailAverage(model, start_step=0)
    average.update(model, 1)
    model.eval()
    batches = [torch.randn(32, 3) + k for k in range(3)]
    average.apply(model, batches, bf16=False)
    assert not model.training
    with torch.no_grad():
        pre_bn = torch.cat([model[0](b) for b in batches])
    torch.testing.assert_close(model[1].running_mean, pre_bn.mean(0), rtol=1e-5, atol=1e-5)  # a cumulative mean, not a momentum's


def test_nothing_averaged_and_a_state_of_another_start_are_refused():
    average = TailAverage(small_model(), start_step=5)
    average.update(small_model(), 5)
    with pytest.raises(RuntimeError, match="ended before step 6"):
        average.apply(small_model(), [torch.randn(4, 3)], bf16=False)
    with pytest.raises(ValueError, match="starts at step 5, this run's at 2"):
        TailAverage(small_model(), start_step=2).load_state_dict(average.state_dict())


def test_a_run_with_averaging_trains_the_same_steps_and_ships_other_weights(synthetic_audiomnist):
    clips = read_source(synthetic_audiomnist)
    features = feature_config_for("logmel")
    waves = load_waveforms(clips, sr=features.sample_rate)
    split = split_by_speaker(clips, val_fraction=0.2, seed=0)
    base = TrainConfig(steps=6, batch_size=8, eval_every=3, warmup_steps=2, bf16=False)
    last, last_metrics = train_split(clips, waves, split, features, base, version="v")
    averaged, avg_metrics = train_split(clips, waves, split, features, TrainConfig(**{**base.__dict__, "average_from": 0.5}), version="v")
    # Averaging only reads the weights: the training steps (and their losses) are the same.
    assert [c["train_loss"] for c in avg_metrics["learning_curve"]] == pytest.approx([c["train_loss"] for c in last_metrics["learning_curve"]], rel=1e-6)
    assert "weight_average" not in last_metrics
    weight = "net.fc.weight"
    assert not torch.allclose(averaged.model.state_dict()[weight], last.model.state_dict()[weight])
    with pytest.raises(ValueError, match=r"average_from must be in \[0, 1\)"):
        train_split(clips, waves, split, features, TrainConfig(**{**base.__dict__, "average_from": 1.0}), version="v")
