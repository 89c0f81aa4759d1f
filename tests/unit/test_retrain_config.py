"""What a scheduled or requested retrain trains with: the shipped recipe unless told otherwise."""
import pytest
from pydantic import ValidationError

from voicegender.settings import Settings
from worker.retrain import _train_config


def test_a_retrain_uses_the_shipped_models_pitch_shift_by_default(tmp_path):
    cfg = _train_config(Settings(data_dir=tmp_path), {})
    # models/MODEL_CARD.md: starter-8 (like starter-6) was trained with --pitch-shift 0.4 --pitch-both-ways --spec-mask 0.5, no shelf, no codec.
    assert cfg.pitch_shift_prob == 0.4 and cfg.pitch_both_ways and cfg.augment
    assert cfg.spec_mask_prob == 0.5 and cfg.low_shelf_prob == 0.0 and cfg.codec_prob == 0.0
    assert Settings(data_dir=tmp_path).retrain_fmin == 300.0  # starter-8's mel bands start at 300 Hz
    assert Settings(data_dir=tmp_path).retrain_wideband_short_fill == "trim+loop"  # starter-8.2 and later score short studio clips trimmed and looped


def test_settings_and_a_requests_overrides_change_the_recipe(tmp_path):
    settings = Settings(data_dir=tmp_path, retrain_pitch_shift=0.0, retrain_pitch_both_ways=False, retrain_spec_mask=0.2, retrain_codec=0.25, retrain_steps=40)
    cfg = _train_config(settings, {"pitch_shift_prob": 0.2, "low_shelf_prob": 0.3})
    assert (cfg.pitch_shift_prob, cfg.pitch_both_ways, cfg.steps, cfg.warmup_steps) == (0.2, False, 40, 4)
    assert (cfg.spec_mask_prob, cfg.low_shelf_prob, cfg.codec_prob) == (0.2, 0.3, 0.25)
    assert _train_config(settings, {"codec_prob": 0.6}).codec_prob == 0.6


def test_a_retrain_trains_in_the_configured_precision(tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cpu._is_amx_tile_supported", lambda: False, raising=False)
    assert _train_config(Settings(data_dir=tmp_path, precision="bf16"), {}).bf16
    assert not _train_config(Settings(data_dir=tmp_path, precision="fp32"), {}).bf16
    assert not _train_config(Settings(data_dir=tmp_path, precision="auto"), {}).bf16  # no AMX: fp32


def test_an_unknown_option_and_a_share_outside_0_1_are_refused(tmp_path):
    with pytest.raises(ValueError, match="short_crop_prob"):
        _train_config(Settings(data_dir=tmp_path), {"short_crop_prob": 0.5})
    with pytest.raises(ValidationError, match="retrain_pitch_shift"):
        Settings(data_dir=tmp_path, retrain_pitch_shift=1.5)
    with pytest.raises(ValidationError, match="retrain_spec_mask"):
        Settings(data_dir=tmp_path, retrain_spec_mask=-0.1)


def test_a_candidate_is_trained_and_stored_with_the_configured_features(tmp_path, synthetic_audiomnist):
    """A candidate is trained with, and stores, the band_norm and short_fill the retrain passes it
    (worker/retrain.py passes VOICEGENDER_RETRAIN_BAND_NORM, _SHORT_FILL and _FMIN); the checkpoint alone decides preprocessing."""
    from classifier.model import load_checkpoint
    from training.lifecycle import retrain_split, train_candidate
    from training.sources import read_source

    sources = read_source(synthetic_audiomnist)
    held_out = [next(c.speaker for c in sources if c.gender == g) for g in ("female", "male")]
    clips, split = retrain_split(sources, [], held_out, val_fraction=0.2, seed=0)
    settings = Settings(data_dir=tmp_path, retrain_band_norm="all", retrain_short_fill="loop", retrain_wideband_short_fill="zeros", retrain_fmin=250, retrain_steps=2, retrain_batch_size=8, retrain_eval_every=2)
    candidate = train_candidate(
        clips, split, feature_kind="logmel", band_norm=settings.retrain_band_norm, short_fill=settings.retrain_short_fill, fmin=settings.retrain_fmin, cfg=_train_config(settings, {}),
        version="c1", out_dir=tmp_path / "c1", cache_dir=None, wideband_short_fill=settings.retrain_wideband_short_fill,
    )
    features = load_checkpoint(candidate.checkpoint).features
    assert (features.band_norm, features.short_fill, features.fmin, features.wideband_short_fill) == ("all", "loop", 250.0, "zeros")
    assert features.wideband_trim_edges  # a wideband fill comes with the silent edges of studio files cut, as in the shipped model
    assert candidate.held_out_metrics["n"] == sum(c.speaker in held_out for c in clips)
    with pytest.raises(ValidationError, match="retrain_band_norm"):
        Settings(data_dir=tmp_path, retrain_band_norm="treble")
    with pytest.raises(ValidationError, match="retrain_short_fill"):
        Settings(data_dir=tmp_path, retrain_short_fill="mirror")
    with pytest.raises(ValidationError, match="retrain_fmin"):
        Settings(data_dir=tmp_path, retrain_fmin=4000)
