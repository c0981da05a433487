"""``parallel.strategy=deepspeed`` is checked before any model is built (runs without DeepSpeed)."""

from __future__ import annotations

import pytest

from stream_r1.config import ConfigError, load_config
from stream_r1.distributed import deepspeed_strategy
from stream_r1.distributed.fsdp import make_strategy
from stream_r1.train.preflight import preflight


def _cfg(root, *extra):
    return load_config("tiny_cpu", [f"checkpoints.root={root}", "parallel.strategy=deepspeed", *extra])


def test_missing_deepspeed_names_the_extra(tiny_checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr(deepspeed_strategy, "deepspeed_available", lambda: False)
    with pytest.raises(ValueError, match=r"DS_BUILD_OPS=0 pip install 'stream-r1\[deepspeed\]'"):
        preflight(_cfg(tiny_checkpoints), tmp_path / "out", None, 1)
    with pytest.raises(ValueError, match=r"stream-r1\[deepspeed\]"):
        make_strategy("deepspeed")
    assert not (tmp_path / "out").exists()


def test_unsupported_stage_and_dtype(tiny_checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr(deepspeed_strategy, "deepspeed_available", lambda: True)
    # Config couplings: refused when the config loads.
    with pytest.raises(ConfigError, match=r"zero_stage=1 is not supported by parallel.strategy=deepspeed; use 2"):
        _cfg(tiny_checkpoints, "parallel.zero_stage=1")
    with pytest.raises(ConfigError, match=r"param_dtype='bfloat16' must equal model.dtype='float32'"):
        _cfg(tiny_checkpoints, "parallel.param_dtype=bfloat16")
    with pytest.raises(ConfigError, match=r"param_dtype='float16' under parallel.strategy=deepspeed must be float32"):
        _cfg(tiny_checkpoints, "parallel.param_dtype=float16", "model.dtype=float16")
    with pytest.raises(ValueError, match=r"must be one of \['float32', 'bfloat16'\]"):
        make_strategy("deepspeed", param_dtype="float16")


def test_config_follows_the_run(monkeypatch):
    monkeypatch.setattr(deepspeed_strategy, "deepspeed_available", lambda: True)
    s = make_strategy("deepspeed", param_dtype="bfloat16", grad_clip_norm=10.0, grad_accum_steps=8, micro_batch_size=1)
    c = s.ds_config()  # type: ignore[attr-defined]
    assert c["gradient_clipping"] == 10.0 and c["gradient_accumulation_steps"] == 8
    assert c["bf16"] == {"enabled": True} and c["zero_optimization"]["stage"] == 2
    assert c["train_micro_batch_size_per_gpu"] == 1


def test_checkpoint_strategy_and_world_size_mismatch_is_explained():
    from stream_r1.distributed.deepspeed_strategy import _check_partition
    from stream_r1.train.checkpoint import check_resume_strategy

    _check_partition({"zero_stage": 2, "partition_count": [2]}, 2, 2)
    _check_partition({"zero_stage": 3, "partition_count": 2}, 3, 2)
    with pytest.raises(ValueError, match=r"ZeRO-2 optimizer partitions for \[2\] rank\(s\); this run is ZeRO-2 on 1"):
        _check_partition({"zero_stage": 2, "partition_count": [2]}, 2, 1)
    with pytest.raises(ValueError, match=r"ZeRO-3 .* this run is ZeRO-2"):
        _check_partition({"zero_stage": 3, "partition_count": 2}, 2, 2)
    check_resume_strategy("ck", {"strategy": "fsdp2"}, "fsdp2")
    with pytest.raises(ValueError, match=r"written under parallel.strategy=deepspeed, this run uses fsdp2; "
                                         r"resume it with --set parallel.strategy=deepspeed"):
        check_resume_strategy("ck", {"strategy": "deepspeed"}, "fsdp2")
