"""Resume identity: the training trajectory decides "same run", not the spelling of the config."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from stream_r1.config import load_config, write_resolved_config
from stream_r1.train.checkpoint import CheckpointPayload, save_checkpoint
from stream_r1.train.preflight import plan_resume
from stream_r1.train.run_identity import RESUME_RULE, write_identity
from stream_r1.utils.io import package_path


def _cfg(root: str | Path, *extra: str):
    return load_config("tiny_cpu", [f"checkpoints.root={root}", *extra])


def _started_run(out: Path, cfg) -> str:
    """A run directory as `stream-r1 train` leaves it after its first checkpoint; returns its trajectory hash."""
    plan = plan_resume(cfg, out, None)
    write_resolved_config(cfg, out)
    write_identity(out, plan.identity)
    state = {"optimizer_step": 2, "trajectory_hash": plan.trajectory_hash}
    save_checkpoint(out, 2, CheckpointPayload(state=state), rank=0, keep_last=2)
    return plan.trajectory_hash


@pytest.mark.parametrize("change", [
    "train.num_optimizer_steps=40",  # extend the run
    "train.keep_last_checkpoints=5",
    "train.checkpoint_every_steps=1",
    "train.log_every_steps=3",
    "eval.num_frames=12",
    "name=renamed",
])
def test_settings_that_do_not_change_the_trajectory_resume(change, tiny_checkpoints, tmp_path):
    out = tmp_path / "run"
    _started_run(out, _cfg(tiny_checkpoints))
    plan = plan_resume(_cfg(tiny_checkpoints, change), out, "auto")
    assert plan.optimizer_step == 2


def test_the_same_files_by_another_path_resume(tiny_checkpoints, tmp_path):
    out = tmp_path / "run"
    relative = os.path.relpath(tiny_checkpoints, Path.cwd())
    assert not Path(relative).is_absolute()
    _started_run(out, _cfg(relative))
    assert plan_resume(_cfg(tiny_checkpoints.resolve()), out, "auto").optimizer_step == 2  # absolute root
    copy = Path(shutil.copytree(tiny_checkpoints, tmp_path / "copy"))
    assert plan_resume(_cfg(copy), out, "auto").optimizer_step == 2  # a copy of the same weights
    prompts = tmp_path / "prompts.txt"
    shutil.copyfile(package_path(_cfg(copy).data.prompts), prompts)  # the preset ships them in the package
    assert plan_resume(_cfg(copy, f"data.prompts={prompts}"), out, "auto").optimizer_step == 2


def test_a_different_trajectory_is_refused_naming_what_changed(tiny_checkpoints, tmp_path):
    out = tmp_path / "run"
    _started_run(out, _cfg(tiny_checkpoints))
    with pytest.raises(ValueError, match=r"holds a different run: optim\.lr_generator \(0\.0001 -> 0\.0002\) changed"):
        plan_resume(_cfg(tiny_checkpoints, "optim.lr_generator=2e-4"), out, "auto")
    with pytest.raises(ValueError, match=r"train\.seed \(0 -> 7\)"):
        plan_resume(_cfg(tiny_checkpoints, "train.seed=7"), out, "auto")


def test_other_weights_or_prompts_are_refused(tiny_checkpoints, tmp_path):
    out = tmp_path / "run"
    _started_run(out, _cfg(tiny_checkpoints))
    other = Path(shutil.copytree(tiny_checkpoints, tmp_path / "other"))
    blob = other / "ode_init.pt"
    data = bytearray(blob.read_bytes())
    data[-100] ^= 0xFF  # same size, different bytes in the last MiB
    blob.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"the files of checkpoints\.student_init changed"):
        plan_resume(_cfg(other), out, "auto")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a different prompt\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"the content of data\.prompts changed"):
        plan_resume(_cfg(tiny_checkpoints, f"data.prompts={prompts}"), out, "auto")


def test_a_checkpoint_of_another_run_is_refused(tiny_checkpoints, tmp_path):
    out = tmp_path / "run"
    _started_run(out, _cfg(tiny_checkpoints))
    other = tmp_path / "other"
    _started_run(other, _cfg(tiny_checkpoints, "train.seed=3"))
    with pytest.raises(ValueError, match="written by a different run"):
        plan_resume(_cfg(tiny_checkpoints), out, str(other / "checkpoints" / "step_000002"))


def test_checkpoints_from_before_trajectory_hashes_still_need_the_whole_config(tiny_checkpoints, tmp_path):
    from stream_r1.config import config_hash

    cfg = _cfg(tiny_checkpoints)
    out = tmp_path / "old"
    write_resolved_config(cfg, out)
    save_checkpoint(out, 2, CheckpointPayload(state={"optimizer_step": 2, "config_hash": config_hash(cfg)}),
                    rank=0, keep_last=2)
    assert plan_resume(cfg, out, "auto").optimizer_step == 2
    with pytest.raises(ValueError, match="written by a different run"):
        plan_resume(_cfg(tiny_checkpoints, "train.keep_last_checkpoints=5"), out, "auto")


def test_the_rule_is_in_train_help(capsys):
    from stream_r1.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert " ".join(RESUME_RULE.split()) in out
