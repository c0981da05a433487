"""What ``pipeline run-local --world`` trains on: the arguments each world implies, checked without building."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_r1.cli import main
from stream_r1.config import load_config
from stream_r1.eval.suites import resolve_suite
from stream_r1.ops.local_world import WORLDS, local_world, run_arguments
from stream_r1.shapes.sizes import get_size
from stream_r1.shapes.world import is_held_out, parse_prompt


def test_tiny_is_the_random_checkpoint_set_with_no_extra_arguments(tmp_path: Path) -> None:
    world = local_world("tiny", tmp_path)
    assert world.source == tmp_path / "tiny-checkpoints" and world.config == "tiny_cpu" and world.params == {}
    assert run_arguments(world, {"run_id": "r"}) == {"run_id": "r"}


@pytest.mark.parametrize("size", ["ci", "default"])
def test_shapes_points_every_step_at_the_world(tmp_path: Path, size: str) -> None:
    world = local_world("shapes", tmp_path, size)
    assert world.source == tmp_path / f"shapes-world-{size}" and world.config == "shapes_cpu"
    assert world.params["gate_metric"] == "gt_total"  # a key the world's evaluation writes
    assert world.params["ode_init_path"] == "ode_init.pt"  # the build's ODE initialisation, inside the set
    held_out = resolve_suite(world.params["eval_prompts"]).prompts
    assert held_out and all(is_held_out(p) for p in held_out) and all(parse_prompt(p) for p in held_out)
    overrides = world.params["overrides"]
    assert not any(o.startswith("checkpoints.root=") for o in overrides)  # each step sets the fetched set
    cfg = load_config(world.config, overrides)
    ws = get_size(size)
    assert (cfg.rollout.num_frames, cfg.eval.num_frames, cfg.rollout.latent_height) == (
        ws.latent_frames, ws.latent_frames, ws.latent_side)
    assert cfg.eval.ground_truth == "shapes"


def test_the_users_arguments_win_and_their_overrides_come_last(tmp_path: Path) -> None:
    world = local_world("shapes", tmp_path)
    merged = run_arguments(world, {"gate_metric": "gt_semantic", "overrides": ["train.num_optimizer_steps=3"]})
    assert merged["gate_metric"] == "gt_semantic"
    assert merged["overrides"] == [*world.params["overrides"], "train.num_optimizer_steps=3"]
    assert merged["eval_prompts"] == world.params["eval_prompts"]


def test_unknown_worlds_and_sizes_fail_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=r"--world 'cubes' is not one of tiny, shapes"):
        local_world("cubes", tmp_path)
    with pytest.raises(ValueError, match="huge"):
        local_world("shapes", tmp_path, "huge")
    assert WORLDS == ("tiny", "shapes")
    with pytest.raises(SystemExit) as e:
        main(["pipeline", "run-local", "--world", "cubes", "--workdir", str(tmp_path / "w")])
    assert e.value.code == 2 and "cubes" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
