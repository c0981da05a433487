"""Bad input fails before any model is built."""

from __future__ import annotations

import re

import pytest

from stream_r1.config import ConfigError, load_config, write_resolved_config
from stream_r1.train.checkpoint import CheckpointPayload, save_checkpoint
from stream_r1.train.preflight import check_weights_exist, check_world_size, plan_resume, preflight


def _cfg(root, *extra):
    return load_config("tiny_cpu", [f"checkpoints.root={root}", *extra])


def test_missing_weights_listed(tmp_path):
    cfg = _cfg(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"checkpoints\.teacher=.*make-tiny-checkpoints"):
        check_weights_exist(cfg)


def test_world_size_must_split_the_effective_batch(tmp_path):
    cfg = _cfg(tmp_path, "train.global_batch_size=2")  # 2 x accumulation 2 = 4 prompts per optimizer step
    for world in (1, 2, 4):
        check_world_size(cfg, world)
    with pytest.raises(ValueError, match=re.escape("world size 3 cannot split the recipe's batch: 4 prompts")):
        check_world_size(cfg, 3)
    with pytest.raises(ValueError, match=re.escape("use a world size in [1, 2, 4]")):
        check_world_size(cfg, 8)


def test_missing_prompt_file_first(tmp_path):
    cfg = _cfg(tmp_path, f"data.prompts={tmp_path / 'none.txt'}")
    with pytest.raises(FileNotFoundError, match=r"prompt file"):
        preflight(cfg, tmp_path / "out", None, 1)


def test_output_dir_of_another_run(tmp_path):
    out = tmp_path / "out"
    write_resolved_config(_cfg(tmp_path, "train.seed=1"), out)
    with pytest.raises(ValueError, match="holds a different run"):
        plan_resume(_cfg(tmp_path), out, "auto")


def test_existing_run_needs_resume_flag_and_matching_hash(tmp_path):
    from stream_r1.config import config_hash

    cfg = _cfg(tmp_path)
    out = tmp_path / "out"
    write_resolved_config(cfg, out)
    assert plan_resume(cfg, out, "auto").checkpoint is None  # nothing yet: a fresh start
    state = {"optimizer_step": 2, "config_hash": config_hash(cfg)}
    save_checkpoint(out, 2, CheckpointPayload(state=state), rank=0, keep_last=2)
    with pytest.raises(ValueError, match="--resume auto"):
        plan_resume(cfg, out, None)
    plan = plan_resume(cfg, out, "auto")
    assert plan.optimizer_step == 2 and plan.checkpoint.name == "step_000002"
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        plan_resume(cfg, out, str(tmp_path / "nope"))
    other = tmp_path / "other"
    save_checkpoint(other, 1, CheckpointPayload(state={"optimizer_step": 1, "config_hash": "x"}), rank=0, keep_last=1)
    with pytest.raises(ValueError, match="different run"):
        plan_resume(cfg, out, str(other / "checkpoints" / "step_000001"))


def test_fsdp2_compute_dtype_must_match_model_dtype(tmp_path):
    # A coupling of two config fields: refused when the config loads, before any file is looked at.
    with pytest.raises(ConfigError, match=r"parallel\.param_dtype='bfloat16' must equal model\.dtype='float32'.*"
                                          r"set model\.dtype=bfloat16"):
        _cfg(tmp_path, "parallel.strategy=fsdp2", "parallel.param_dtype=bfloat16")
    assert _cfg(tmp_path, "parallel.strategy=fsdp2", "parallel.param_dtype=float32").parallel.strategy == "fsdp2"
