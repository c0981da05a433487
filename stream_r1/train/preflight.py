"""Checks that run before any model is built: a bad input fails in a second, clearly.

Missing weights, config or prompt files; a world size that cannot split the recipe's batch; an output
directory that holds a different run (trajectory-identity mismatch) or an existing run without
``--resume``; a ``--resume PATH`` that does not verify.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream_r1.config import config_hash, load_config
from stream_r1.config.derived import checkpoint_path
from stream_r1.config.schema import RunConfig
from stream_r1.distributed.batch import plan_batch
from stream_r1.train.checkpoint import find_resume_checkpoint, list_checkpoints, read_trainer_state, verify_checkpoint
from stream_r1.train.run_identity import describe_difference, identity_hash, read_identity, trajectory_identity
from stream_r1.utils.io import check_safetensors_under
from stream_r1.utils.paths import check_output_dir


def required_weights(cfg: RunConfig, *, ode_pairs: bool = False) -> dict[str, Path]:
    """The ``checkpoints.*`` entries a training (or ODE-pair) run reads."""
    names = ["teacher"] if ode_pairs else ["teacher", "base"]
    if not ode_pairs and cfg.checkpoints.student_init:
        names.append("student_init")
    names += ["text_encoder", "tokenizer"]
    if not ode_pairs and cfg.reward.enabled:
        names += ["vae", "reward"]
    return {n: checkpoint_path(cfg, n) for n in names}


def check_weights_exist(cfg: RunConfig, *, ode_pairs: bool = False) -> None:
    """Raise one ``FileNotFoundError`` listing every missing weight path; ``ValueError`` for a truncated
    ``.safetensors`` file among them."""
    weights = required_weights(cfg, ode_pairs=ode_pairs)
    missing = [f"checkpoints.{n}={str(p)!r}" for n, p in weights.items() if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"missing weights: {', '.join(missing)}; set checkpoints.root (now {cfg.checkpoints.root!r}) "
            "or the paths with --set, or create tiny ones with `stream-r1 make-tiny-checkpoints DIR`"
        )
    check_safetensors_under(weights)  # a truncated file fails here, not after the other models loaded


def check_world_size(cfg: RunConfig, world_size: int) -> None:
    """``world_size`` ranks must split the recipe's effective batch (:func:`plan_batch`)."""
    plan_batch(cfg.train, world_size)


@dataclass(frozen=True)
class ResumePlan:
    """Where a run starts. ``checkpoint`` is None for a fresh run."""

    checkpoint: Path | None
    optimizer_step: int
    identity: dict[str, Any] = field(default_factory=dict)
    """The run's trajectory identity (:func:`stream_r1.train.run_identity.trajectory_identity`)."""

    @property
    def trajectory_hash(self) -> str:
        """The identity's hash, recorded in ``run_identity.json`` and every checkpoint."""
        return identity_hash(self.identity)


def _refuse(what: str, old: dict[str, Any], new: dict[str, Any], output_dir: Path) -> ValueError:
    return ValueError(
        f"{what} holds a different run: {describe_difference(old, new)} changed; choose another --output, or resume "
        f"it with its own settings (--config {output_dir / 'config.yaml'}). Rule: see `stream-r1 train --help`"
    )


def plan_resume(cfg: RunConfig, output_dir: Path, resume: str | None) -> ResumePlan:
    """Decide fresh start vs. resume, checking the output directory belongs to this run.

    "This run" is the training trajectory (:mod:`stream_r1.train.run_identity`): settings that do not
    change the numbers (``train.num_optimizer_steps``, ``keep_last_checkpoints``, eval, ...) and the
    spelling of paths to the same weights may differ.

    Args:
        cfg: The run config.
        output_dir: ``--output``.
        resume: ``None``, ``"auto"`` or a checkpoint directory.

    Raises:
        ValueError: the directory holds another run, or a run without ``--resume``, or the
            given checkpoint does not verify or belongs to another run.
        FileNotFoundError: ``--resume PATH`` does not exist.
    """
    identity = trajectory_identity(cfg, required_weights(cfg))
    want = identity_hash(identity)
    recorded = read_identity(output_dir)
    resolved = output_dir / "config.yaml"
    if recorded is not None:
        if recorded.get("hash") != want:
            raise _refuse(f"--output {str(output_dir)!r}", recorded.get("identity", {}), identity, output_dir)
    elif resolved.is_file():  # a run directory written before run_identity.json existed
        old_cfg = load_config(resolved)
        old = trajectory_identity(old_cfg, required_weights(old_cfg))
        if identity_hash(old) != want:
            raise _refuse(f"--output {str(output_dir)!r}", old, identity, output_dir)
    if resume is None:
        if list_checkpoints(output_dir):
            raise ValueError(
                f"--output {str(output_dir)!r} already holds checkpoints of this run; pass --resume auto "
                "to continue it or choose another --output"
            )
        return ResumePlan(None, 0, identity)
    if resume == "auto":
        found = find_resume_checkpoint(output_dir)
        if found is None:
            return ResumePlan(None, 0, identity)
        path = found
    else:
        path = Path(resume)
        if not path.is_dir():
            raise FileNotFoundError(f"--resume {resume!r} is not a checkpoint directory; use --resume auto or a step_* dir")
        verify_checkpoint(path)
    state = read_trainer_state(path)
    have = state.get("trajectory_hash")
    if have is None:  # written before trajectory hashes: the whole config must match, as it did then
        have, want = state.get("config_hash"), config_hash(cfg)
    if have != want:
        raise ValueError(
            f"checkpoint {path} was written by a different run (hash {str(have)[:12]} != {want[:12]}); resume "
            f"with the run's own config ({output_dir / 'config.yaml'}) or start a new --output. Rule: see "
            "`stream-r1 train --help`"
        )
    return ResumePlan(path, int(state["optimizer_step"]), identity)


def preflight(cfg: RunConfig, output_dir: Path, resume: str | None, world_size: int) -> ResumePlan:
    """All checks of a training run, cheapest first; returns the resume plan."""
    from stream_r1.train.data import read_prompts

    check_output_dir(output_dir)
    check_world_size(cfg, world_size)
    read_prompts(cfg.data.prompts)
    check_weights_exist(cfg)
    p = cfg.parallel
    if p.strategy == "deepspeed":
        from stream_r1.distributed.deepspeed_strategy import check_deepspeed

        check_deepspeed(p.zero_stage, p.param_dtype)
    if cfg.model.attention_backend == "flash":
        import torch

        from stream_r1.models.causal_attention import check_flash_available

        check_flash_available(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    return plan_resume(cfg, output_dir, resume)
