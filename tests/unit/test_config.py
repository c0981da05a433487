"""Config schema, strict loader, overrides, presets."""

from __future__ import annotations

import pytest
import yaml

from stream_r1.config import ConfigError, config_hash, dump_config, list_presets, load_config, write_resolved_config
from stream_r1.config.schema import WAN_NEGATIVE_PROMPT


def test_presets_listed_and_load():
    assert {"tiny_cpu", "wan2.1_t2v_1.3b_stream_r1"} <= set(list_presets())
    for name in list_presets():
        load_config(name)


def test_real_recipe_values():
    c = load_config("wan2.1_t2v_1.3b_stream_r1")
    assert c.rollout.denoising_steps == (1000, 750, 500, 250) and c.rollout.student_sigma_shift == 5.0
    assert c.rollout.num_frames == 21 and (c.rollout.latent_height, c.rollout.latent_width) == (60, 104)
    assert c.dmd.guidance_scale == 3.0 and (c.dmd.min_step, c.dmd.max_step) == (20, 980)
    assert c.dmd.score_sigma_shift == 8.0  # teacher/critic wrappers keep the SF default table (docs/method.md §1.2)
    assert c.dmd.negative_prompt == WAN_NEGATIVE_PROMPT
    assert (c.optim.lr_generator, c.optim.lr_critic, c.optim.beta1, c.optim.beta2) == (2e-6, 4e-7, 0.0, 0.999)
    assert c.optim.grad_clip_norm == 10.0
    assert (c.train.num_optimizer_steps, c.train.grad_accum_steps, c.train.gen_update_every) == (1000, 8, 5)
    assert (c.train.ema_decay, c.train.ema_start_raw_step) == (0.99, 200)
    assert (c.model.local_attn_frames, c.model.sink_frames, c.model.sink_ema_alpha) == (9, 3, 0.999)
    r = c.reward
    assert (r.mode, r.beta, r.balance_window, r.balance_warmup, r.balance_lambda) == ("BalancedOverall", 2.0, 50, 50, 0.5)
    assert (r.spatial_min, r.temporal_min, r.combination, r.temperature) == (0.15, 0.2, "adaptive", 1.0)
    assert r.saliency_metrics == ("MQ", "VQ", "TA") and r.dims == ("VQ", "MQ", "TA")
    assert (c.ode.num_inference_steps, c.ode.sampler_sigma_shift, c.ode.guidance_scale) == (48, 8.0, 6.0)


def test_unknown_key_has_dotted_path_and_suggestion(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  grad_acum_steps: 4\n")
    with pytest.raises(ConfigError, match=r"'train\.grad_acum_steps'.*did you mean 'train\.grad_accum_steps'"):
        load_config(f)


def test_unknown_section(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("rewrd:\n  beta: 1.0\n")
    with pytest.raises(ConfigError, match="did you mean 'reward'"):
        load_config(f)


def test_overrides_are_typed():
    c = load_config("tiny_cpu", ["train.seed=7", "reward.dims=[MQ]", "reward.beta=1"])
    assert c.train.seed == 7 and c.reward.dims == ("MQ",) and c.reward.beta == 1.0
    with pytest.raises(ConfigError, match=r"train\.seed must be an integer"):
        load_config("tiny_cpu", ["train.seed=abc"])
    with pytest.raises(ConfigError, match="did you mean 'MQ'"):
        load_config("tiny_cpu", ["reward.mode=MQQ"])
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config("tiny_cpu", ["train.seed"])


def test_frames_rule_names_fix():
    with pytest.raises(ConfigError, match=r"rollout.num_frames=20 latent frames is not a positive multiple of model.frames_per_block=3; use 18 or 21"):
        load_config("tiny_cpu", ["rollout.num_frames=20"])


def test_missing_file_and_preset():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config("nope.yaml")
    with pytest.raises(FileNotFoundError, match="did you mean 'tiny_cpu'"):
        load_config("tiny_cpus")


def test_roundtrip_dump_and_hash(tmp_path):
    c = load_config("tiny_cpu", ["train.seed=3"])
    path = write_resolved_config(c, tmp_path)
    c2 = load_config(path)
    assert c2 == c and config_hash(c2) == config_hash(c)
    assert config_hash(load_config("tiny_cpu")) != config_hash(c)
    assert yaml.safe_load(dump_config(c))["train"]["seed"] == 3


def test_compatibility_presets():
    ref = load_config("stream_r1_reference").reward
    assert (ref.saliency_space, ref.patch_order, ref.reward_passes) == ("patch_reference", "sr1_naive", 2)
    assert (ref.spatial_mapping, ref.temporal_mapping) == ("trilinear_reference", "trilinear_reference")
    rf = load_config("reward_forcing").reward
    assert (rf.mode, rf.intra, rf.beta) == ("MQ", False, 2.0)
    assert not load_config("plain_dmd").reward.enabled
    # everything outside the reward section is the real recipe
    assert load_config("reward_forcing").train == load_config("wan2.1_t2v_1.3b_stream_r1").train


@pytest.mark.parametrize("spelling, value", [
    ("2e-6", 2e-6), ("2E-6", 2e-6), ("2.0e-6", 2e-6), ("1.5e+3", 1500.0), (".5", 0.5), ("5.", 5.0),
    ("-3", -3.0), ("+0.25", 0.25), ("1_000.5", 1000.5),
])
def test_every_float_spelling_is_accepted(spelling, value):
    # PyYAML follows YAML 1.1, where 2e-6 (the paper's learning rate) and 5. are strings.
    cfg = load_config("tiny_cpu", [f"optim.lr_generator={spelling}"])
    assert cfg.optim.lr_generator == value and isinstance(cfg.optim.lr_generator, float)


@pytest.mark.parametrize("spelling", ["inf", ".inf", "-Infinity", "nan", ".NaN"])
def test_non_finite_floats_are_refused(spelling):
    with pytest.raises(ConfigError, match=r"optim.lr_generator=.* must be a finite number"):
        load_config("tiny_cpu", [f"optim.lr_generator={spelling}"])


@pytest.mark.parametrize("text", ["abc", "2e", "1e-6x", "1.2.3"])
def test_non_numbers_are_still_refused(text):
    with pytest.raises(ConfigError, match=r"optim.lr_generator must be a number .*2e-6"):
        load_config("tiny_cpu", [f"optim.lr_generator={text}"])


def test_float_spelling_does_not_turn_strings_or_ints_into_floats():
    cfg = load_config("tiny_cpu", ["name=1e3"])
    assert cfg.name == "1e3"
    with pytest.raises(ConfigError, match=r"train\.seed must be an integer"):
        load_config("tiny_cpu", ["train.seed=1e3"])


@pytest.mark.parametrize("beta", [-0.5, 50.5, 1e3])
def test_beta_is_a_bounded_inverse_temperature(beta):
    with pytest.raises(ConfigError, match=r"reward\.beta=.* must be in \[0, 50\.0\] \(an inverse temperature"):
        load_config("tiny_cpu", [f"reward.beta={beta}"])
    assert load_config("tiny_cpu", ["reward.beta=0"]).reward.beta == 0.0


@pytest.mark.parametrize(
    "old", ["rollout.same_step_across_blocks=true", "dmd.num_train_timesteps=1000", "rollout.timestep_shift=5.0",
            "dmd.timestep_shift=5.0", "dmd.score_shift=8.0", "ode.shift=8.0"],
)
def test_deleted_and_renamed_keys_are_unknown(old):
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config("tiny_cpu", [old])


def test_shifts_are_positive():
    for key in ("rollout.student_sigma_shift", "dmd.timestep_sampling_shift", "dmd.score_sigma_shift"):
        with pytest.raises(ConfigError, match=rf"{key.replace('.', chr(92) + '.')}=0\.0 must be > 0"):
            load_config("tiny_cpu", [f"{key}=0.0"])
