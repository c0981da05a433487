"""The training loop of ``stream-r1 train`` (docs/method.md §1.6, §3.2 item 8).

Per raw micro-step: on generator windows one generator micro-step (rollout with gradient at the
exit step, reward-weighted DMD loss / accum, backward), then one critic micro-step on a fresh
batch; at each window end reduce, clip (10) and step the critic, and the generator on its windows,
then update the EMA. Backward, reduce/clip/step and optimizer state go through the
:class:`Strategy` (a DeepSpeed engine owns them under ``parallel.strategy=deepspeed``).
Exit steps are drawn on rank 0 from ``(seed, "exit", role, raw_step)`` and broadcast; noise
generators come from ``(seed, "noise", role, rank, raw_step)``, so a resumed run replays exactly
the draws of an uninterrupted one. Checkpoints are taken at window ends only.

ODE initialisation is a mode of the same loop (``TrainingSetup.ode`` set, no critic): one
micro-step per optimizer step regresses the student on ODE pairs (``ode.num_steps`` steps at
``ode.lr``, per-block states from ``(seed, "ode-index", rank, step)``), through the same strategy,
checkpoints and metrics; the run ends by writing ``ode_init.pt`` instead of the export.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stream_r1.config import config_hash, config_to_dict
from stream_r1.config.derived import checkpoint_path
from stream_r1.config.schema import RunConfig
from stream_r1.distributed.batch import BatchPlan, plan_batch
from stream_r1.distributed.collectives import all_gather_object, broadcast_from_rank0
from stream_r1.distributed.env import WorldInfo
from stream_r1.distributed.fsdp import Strategy
from stream_r1.distributed.state_dicts import full_model_state_dict, parameter_digest
from stream_r1.method import metric_keys as mk
from stream_r1.method.distiller import GeneratorMedia
from stream_r1.train.build import TrainingSetup
from stream_r1.train.checkpoint import (
    CheckpointPayload,
    CheckpointWriter,
    capture_rng_state,
    check_resume_strategy,
    is_sharded,
    load_checkpoint,
    load_sharded,
    restore_rng_state,
)
from stream_r1.train.ema import EMA
from stream_r1.train.media import heatmap_grid, temporal_profile_image, video_to_uint8
from stream_r1.train.metrics import JsonlSink, MetricsSink, MultiSink, NullSink, TensorBoardSink
from stream_r1.train.optim import build_adamw
from stream_r1.train.schedule import MicroStep, TrainSchedule
from stream_r1.train.window import WindowLog, system_scalars, window_ess
from stream_r1.utils.io import atomic_write_json
from stream_r1.utils.logging import get_logger
from stream_r1.utils.progress import progress
from stream_r1.utils.seeding import make_rng

log = get_logger(__name__)


@dataclass(frozen=True)
class TrainerOptions:
    """Run-level options that are not part of the config.

    Attributes:
        output_dir: The run directory.
        resume_from: Checkpoint to resume from (None = fresh).
        sigkill_after_checkpoint: Testing: SIGKILL this process right after the checkpoint of this
            optimizer step is published (crash/resume tests).
        sigkill_during_checkpoint: Testing: SIGKILL while writing this step's checkpoint.
        trajectory_hash: The run's identity hash (:mod:`stream_r1.train.run_identity`), recorded in every
            checkpoint so a resume can tell this run from another.
    """

    output_dir: Path
    resume_from: Path | None = None
    sigkill_after_checkpoint: int | None = None
    sigkill_during_checkpoint: int | None = None
    trajectory_hash: str = ""


def _sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Trainer:
    """Runs the schedule over a :class:`TrainingSetup` with checkpoints and metrics."""

    def __init__(self, cfg: RunConfig, setup: TrainingSetup, world: WorldInfo, strategy: Strategy,
                 options: TrainerOptions) -> None:
        self.cfg, self.setup, self.world, self.strategy, self.options = cfg, setup, world, strategy, options
        t = cfg.train
        if setup.ode is not None:
            # ODE mode: one micro-step per optimizer step, the student every step, no EMA.
            bs = cfg.ode.batch_size_per_rank
            self.batch = BatchPlan(world.world_size, bs, 1, bs * world.world_size, bs * world.world_size,
                                   cfg.ode.num_steps + 1)
            self.schedule = TrainSchedule(cfg.ode.num_steps, 1, 1, self.batch.ema_start_raw_step)
        else:
            # Accumulation follows the world size so every world size takes the recipe's effective batch.
            self.batch = plan_batch(t, world.world_size)
            self.schedule = TrainSchedule(t.num_optimizer_steps, self.batch.grad_accum_steps, t.gen_update_every,
                                          self.batch.ema_start_raw_step)
        lr_generator = cfg.ode.lr if setup.ode is not None else cfg.optim.lr_generator
        self.gen_opt = strategy.attach_optimizer(
            setup.generator, build_adamw(setup.generator, lr_generator, cfg.optim))
        self.critic_opt = None if setup.critic is None else strategy.attach_optimizer(
            setup.critic, build_adamw(setup.critic, cfg.optim.lr_critic, cfg.optim))
        self.ema: EMA | None = None
        self.steps_done = 0
        self.generator_steps = 0
        self.num_exit_choices = len(cfg.rollout.denoising_steps)
        self.history: list[dict[str, float]] = []
        self._last_media_step: int | None = None
        self._media: GeneratorMedia | None = None  # kept by the generator micro-step of a media window
        self.checkpoints = CheckpointWriter(options.output_dir, rank=world.rank, keep_last=t.keep_last_checkpoints)
        if options.resume_from is not None:
            self._restore(options.resume_from)
        self.sink = self._make_sink()

    # ------------------------------------------------------------------ setup
    def _make_sink(self) -> MetricsSink:
        if not self.world.is_main:
            return NullSink()
        tb = self.options.output_dir / "tensorboard"
        resume = self.steps_done if self.options.resume_from is not None else None
        return MultiSink(TensorBoardSink(tb, resume_step=resume), JsonlSink(tb / "metrics.jsonl", resume_step=resume))

    def _roles(self) -> list[tuple[str, torch.nn.Module, object]]:
        """``(checkpoint role, network, optimizer)`` of every optimised network (no critic in ODE mode)."""
        roles: list[tuple[str, torch.nn.Module, object]] = [("generator", self.setup.generator, self.gen_opt)]
        if self.setup.critic is not None:
            roles.append(("critic", self.setup.critic, self.critic_opt))
        return roles

    def _restore(self, path: Path) -> None:
        """Resume from a sharded checkpoint, resharding it to this run's world size if it differs."""
        ck = load_checkpoint(path, self.world.rank)
        s = ck.state
        if not is_sharded(path):
            raise ValueError(f"checkpoint {path} is in the full (pre-sharded) form of an older version, which "
                             "`stream-r1 train` no longer reads; start a new --output")
        check_resume_strategy(path, s, self.strategy.name)
        template: dict[str, dict[str, Any]] = {"model": {}, "optim": {}}
        for role, net, opt in self._roles():
            template["model"][role] = self.strategy.model_state_dict(net)
            template["optim"][role] = self.strategy.optimizer_state_dict(net, opt)[0]
        if s.get("ema") is not None:  # a shadow of the right shapes on rank 0, filled by the load
            with self.strategy.full_parameters(self.setup.generator):
                self.ema = EMA.create(self.setup.generator, float(s["ema"]["decay"]), full_model_state_dict)
            self.ema.num_updates = int(s["ema"]["num_updates"])
            template["model"]["generator_ema"] = self.ema.shadow
        load_sharded(path, template)
        local = ck.rank_state.get("optimizers", {})
        for role, net, opt in self._roles():
            self.strategy.load_model_state_dict(net, template["model"][role])
            self.strategy.load_optimizer_state_dict(net, opt, template["optim"][role], local.get(role))
        self.steps_done = int(s["optimizer_step"])
        self.generator_steps = int(s["generator_steps"])
        sampler = dict(s["sampler"])
        saved_world = int(s.get("world_size", self.world.world_size))
        if saved_world != self.world.world_size:
            # Same prompts consumed: a rank's draw now covers saved_world / world_size times as many.
            sampler["position"] = int(sampler["position"]) * saved_world // self.world.world_size
            log.info("resharded resume: %d ranks -> %d (sampler position %s -> %s)", saved_world,
                     self.world.world_size, s["sampler"]["position"], sampler["position"])
        self.setup.sampler.load_state_dict(sampler)
        self._last_media_step = s.get("last_media_step")
        rank_state = ck.rank_state
        if "rng" in rank_state:
            restore_rng_state(rank_state["rng"])
        balancer = self._balancer()
        if balancer is not None and "balancer" in rank_state:
            balancer.load_state_dict(rank_state["balancer"])
        log.info("resumed from %s at optimizer step %d", path, self.steps_done)

    def _balancer(self):  # -> RewardBalancer | None
        return None if self.setup.distiller is None else self.setup.distiller.balancer

    # ------------------------------------------------------------------ randomness
    def _exit_step(self, role: str, raw_step: int) -> int:
        """One exit index k shared by every block and rank (drawn on rank 0, broadcast; §5 item 6, 22)."""
        rng = make_rng(self.cfg.train.seed, "exit", role, raw_step)
        k = int(torch.randint(0, self.num_exit_choices, (1,), generator=rng))
        return int(broadcast_from_rank0(torch.tensor([k], dtype=torch.int64))[0])

    def _noise(self, role: str, raw_step: int) -> torch.Generator:
        return make_rng(self.cfg.train.seed, "noise", role, self.world.rank, raw_step, device=self.world.device)

    def _batch(self):  # -> DistillBatch
        idx = self.setup.sampler.next_indices()
        return self.setup.make_batch([self.setup.prompts[i] for i in idx])

    # ------------------------------------------------------------------ loop
    def run(self) -> list[dict[str, float]]:
        """Train to ``train.num_optimizer_steps``; returns the logged scalars per optimizer step."""
        accum = self.batch.grad_accum_steps
        window = WindowLog()
        first = self.steps_done * accum
        steps = progress(self.schedule.iter_from(first), desc="train (micro-steps)",
                         total=self.schedule.total_raw_steps - first, enabled=None if self.world.is_main else False)
        for m in steps:
            if m.window_start:
                window = self._start_window(m)
            self._micro_step(m, window)
            if m.window_end:
                self._end_window(m, window)
            if m.create_ema and self.ema is None:
                with self.strategy.full_parameters(self.setup.generator):
                    self.ema = EMA.create(self.setup.generator, self.cfg.train.ema_decay, full_model_state_dict)
            if m.window_end:
                self._after_window(m, window)
        self._finish()
        return self.history

    def _start_window(self, m: MicroStep) -> WindowLog:
        if self.setup.critic is not None:
            self.strategy.zero_grad(self.setup.critic, self.critic_opt)
        if m.train_generator:
            self.strategy.zero_grad(self.setup.generator, self.gen_opt)
        return WindowLog()

    def _micro_step(self, m: MicroStep, window: WindowLog) -> None:
        accum = self.batch.grad_accum_steps
        if self.setup.ode is not None:
            self._ode_micro_step(m, window)
            return
        distiller = self.setup.distiller
        if m.train_generator:
            batch = self._batch()
            k = self._exit_step("generator", m.raw_step)
            # FSDP2 no_sync: reduce-scatter only in the window's last backward (§5 item 17);
            # DeepSpeed: the accumulation boundary of the engine.
            self.strategy.set_gradient_sync(self.setup.generator, m.window_end)
            # The window's last generator micro-step keeps its media when this window logs them: the
            # clip is the decode the reward already made, never a second one.
            keep = m.window_end and self.world.is_main and self._media_due(m.optimizer_step + 1)
            step = distiller.generator_loss(batch, k, self._noise("generator", m.raw_step), keep_media=keep)
            self.strategy.backward(self.setup.generator, step.loss / accum)
            window.add_generator(step.loss, step.metrics, k)
            if step.media is not None:
                self._media = step.media
        batch = self._batch()
        k = self._exit_step("critic", m.raw_step)
        self.strategy.set_gradient_sync(self.setup.critic, m.window_end)
        step = distiller.critic_loss(batch, k, self._noise("critic", m.raw_step))
        self.strategy.backward(self.setup.critic, step.loss / accum)
        window.add_critic(step.loss, step.metrics, k)

    def _ode_micro_step(self, m: MicroStep, window: WindowLog) -> None:
        """ODE mode: the regression loss of this rank's trajectories (one micro-step per optimizer step)."""
        assert self.setup.ode is not None
        rng = make_rng(self.cfg.train.seed, "ode-index", self.world.rank, m.optimizer_step)
        self.strategy.set_gradient_sync(self.setup.generator, m.window_end)
        loss = self.setup.ode.step(self.setup.sampler.next_indices(), rng)
        self.strategy.backward(self.setup.generator, loss / self.batch.grad_accum_steps)
        window.generator[mk.LOSS_ODE_REGRESSION].append(float(loss.detach()))

    def _end_window(self, m: MicroStep, window: WindowLog) -> None:
        clip = self.cfg.optim.grad_clip_norm
        if self.setup.critic is not None:
            norm = self.strategy.optimizer_step(self.setup.critic, self.critic_opt, clip)
            window.critic[mk.GRAD_NORM_CRITIC].append(norm)
        if m.train_generator:
            norm = self.strategy.optimizer_step(self.setup.generator, self.gen_opt, clip)
            window.generator[mk.GRAD_NORM_GENERATOR].append(norm)
            self.generator_steps += 1
            if self.ema is not None:
                with self.strategy.full_parameters(self.setup.generator):
                    self.ema.update(self.setup.generator)

    def _after_window(self, m: MicroStep, window: WindowLog) -> None:
        self.steps_done = m.optimizer_step + 1
        ess = window_ess(all_gather_object(window.w_inter))
        seconds = time.perf_counter() - window.started
        per_step = self.batch.effective_batch
        scalars = {
            **window.scalars(),
            **ess,
            "lr/generator": self.gen_opt.param_groups[0]["lr"],
            **({} if self.critic_opt is None else {"lr/critic": self.critic_opt.param_groups[0]["lr"]}),
            "train/generator_steps": float(self.generator_steps),
            "train/ema_active": float(self.ema is not None),
            **system_scalars(seconds, per_step * (2 if m.train_generator and self.setup.critic is not None else 1)),
        }
        self.history.append({"step": float(self.steps_done), **scalars})
        if self.steps_done % self.cfg.train.log_every_steps == 0 or self.steps_done == self.schedule.num_optimizer_steps:
            self.sink.scalars(self.steps_done, scalars)
            self.sink.histogram(self.steps_done, "rollout/exit_step", np.asarray(window.exit_steps))
        if m.train_generator and self.setup.ode is None and self._media_due(self.steps_done):
            self._log_media()
        every = self.cfg.train.checkpoint_every_steps
        if self.steps_done % every == 0 or self.steps_done == self.schedule.num_optimizer_steps:
            self._checkpoint()

    # ------------------------------------------------------------------ media
    def _media_due(self, steps_done: int) -> bool:
        """Whether the window that completes optimizer step ``steps_done`` logs images and a clip."""
        last = self._last_media_step
        return last is None or steps_done - last >= self.cfg.train.media_every_steps

    def _log_media(self) -> None:
        self._last_media_step = self.steps_done
        media, self._media = self._media, None
        if not self.world.is_main or media is None:
            return
        step = self.steps_done
        if media.w_intra is not None:
            self.sink.image(step, "w_intra/temporal_profile", temporal_profile_image(media.w_intra[0].mean(dim=(1, 2))))
        if media.pixels is None:  # plain DMD decodes nothing (no VAE is loaded)
            return
        pixels = media.pixels[0]
        self.sink.video(step, "rollout/clip", video_to_uint8(pixels), fps=self.cfg.eval.fps)
        if media.w_intra is not None:
            self.sink.image(step, "w_intra/spatial", heatmap_grid(pixels, media.w_intra[0]))

    # ------------------------------------------------------------------ checkpoints
    def _payload(self) -> CheckpointPayload:
        models: dict[str, Any] = {}
        optimizers: dict[str, Any] = {}
        local_optimizers = {}
        for role, net, opt in self._roles():
            models[role] = self.strategy.model_state_dict(net)
            optimizers[role], local = self.strategy.optimizer_state_dict(net, opt)
            if local is not None:
                local_optimizers[role] = local
        ema_meta = None
        if self.ema is not None:
            ema_state = self.ema.state_dict()
            models["generator_ema"] = ema_state.pop("shadow")  # rank 0's full fp32 shadow ({} elsewhere)
            ema_meta = ema_state
        state = {
            "optimizer_step": self.steps_done,
            "raw_step": self.steps_done * self.batch.grad_accum_steps,
            "generator_steps": self.generator_steps,
            "config_hash": config_hash(self.cfg),
            "world_size": self.world.world_size,
            "strategy": self.strategy.name,
            "sampler": self.setup.sampler.state_dict(),
            "ema": ema_meta,
            "last_media_step": self._last_media_step,
            "trajectory_hash": self.options.trajectory_hash,
        }
        rank_state: dict[str, object] = {"rng": capture_rng_state(), "sampler": self.setup.sampler.state_dict()}
        if local_optimizers:  # rank-local optimizer partitions (DeepSpeed ZeRO)
            rank_state["optimizers"] = local_optimizers
        balancer = self._balancer()
        if balancer is not None:
            rank_state["balancer"] = balancer.state_dict()
        return CheckpointPayload(sharded={"model": models, "optim": optimizers}, state=state, rank_state=rank_state)

    def _checkpoint(self) -> None:
        """Start the asynchronous sharded save of this step (the previous one is awaited first)."""
        o = self.options
        hook = _sigkill if o.sigkill_during_checkpoint == self.steps_done else None
        self.checkpoints.save(self.steps_done, self._payload(), on_partial_write=hook)
        if o.sigkill_after_checkpoint == self.steps_done:
            self.checkpoints.wait()
            _sigkill()

    def _finish(self) -> None:
        """Finish the last checkpoint, export the generator (+EMA) and write hparams (rank 0), or ``ode_init.pt`` in ODE mode."""
        from stream_r1.train.export import export_generator, write_reference_pt

        self.checkpoints.wait()

        with self.strategy.full_parameters(self.setup.generator):
            gen = full_model_state_dict(self.setup.generator)
            digest = parameter_digest(self.setup.generator)
        # Every rank records the digest of its fully gathered generator: replicas/shards must agree.
        atomic_write_json(self.options.output_dir / "digests" / f"rank_{self.world.rank:05d}.json",
                          {"generator": digest, "optimizer_step": self.steps_done})
        if self.world.is_main and self.setup.ode is not None:
            write_reference_pt(self.options.output_dir / "ode_init.pt", gen, None)
            log.info("wrote %s", self.options.output_dir / "ode_init.pt")
        elif self.world.is_main:
            ema = self.ema.shadow if self.ema is not None else None
            export_generator(self.options.output_dir / "final", checkpoint_path(self.cfg, "base"), gen, ema)
            last: dict[str, float] = {}
            for row in self.history:
                last.update(row)
            flat = {f"{sec}.{k}": v for sec, d in config_to_dict(self.cfg).items() if isinstance(d, dict)
                    for k, v in d.items() if isinstance(v, int | float | str | bool)}
            hp_metrics = {f"hparam/{k}": float(last[k]) for k in mk.HPARAM_METRICS if k in last}
            self.sink.hparams(flat, hp_metrics)
        self.sink.close()
