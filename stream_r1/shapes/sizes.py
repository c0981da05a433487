"""Sizes of the shapes world build: geometry, data and training budgets of each model.

``default`` is the experiment's world (targeted at 10 minutes on 2 cores: 516 s measured idle with a 1000 + 2000-step
teacher; the same commit's 1000 + 2500 took 634 s; docs/benchmarks.md "Shapes world", "Where a build's time goes");
``ci`` is the same world with fewer frames and smaller budgets (targeted at 2 minutes, not met: 232 s idle on the
same machine, 379 s on a slower one; it spends ~395 CPU-seconds, so no split over 2 cores reaches 120 s), for tests
that must show learning.
``pixels`` stays 32: at 64 the VAE learns shapes but keeps all four colours at only one seed in two,
and the ci build takes 500-800 s (docs/benchmarks.md "Shapes world", "64 px frames").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from stream_r1.utils.seeding import derive_seed


@dataclass(frozen=True, slots=True)
class WorldSize:
    """One build size.

    Attributes:
        name: ``ci`` or ``default``.
        pixels: Frame side in pixels (8x the latent side of the Wan VAE).
        latent_frames: Latent frames F of every clip (pixel frames 1 + 4 (F - 1)).
        degraded_fraction: Fraction of the teacher's training clips rendered in a degraded mode
            (split evenly over blur, jitter and colour drift).
        vae_image_steps: VAE steps on single whole frames first (8 per step; cheap, most of the quality).
        vae_steps, vae_batch: VAE steps on 9-frame clips after that (the first frame, then two causal
            4-frame chunks, the second decoded from the first chunk's caches: the cases every longer
            clip is made of), training only the temporal kernels.
        teacher_clips: Training clips per training prompt for the teacher.
        teacher_steps, teacher_batch: Flow-matching budget of the teacher (its second phase, on every clip).
        teacher_dim, teacher_layers: Width (heads x 32, above the 64 numbers of one latent token:
            :func:`stream_r1.shapes.teacher.teacher_config`) and depth of the teacher transformer.
        reward_steps: VideoReward training steps of 16 videos (:func:`stream_r1.shapes.reward.train_videoreward`).
        ode_repeats: Teacher trajectories per training prompt for the ODE initialisation.
        ode_steps: Regression steps of the ODE initialisation.
        eval_seeds: Videos per held-out prompt in the recorded metrics.
        reward_rubric_steps: The last of the ``reward_steps``, on the full VideoAlign rubric (the others on short
            inputs); last, with a default, so the sizes of older ``world.json`` files still load.
        teacher_order_steps: The teacher's first phase, on the clips of two orthogonal directions only, so it
            learns which frame comes first before tying the layout to the direction word
            (:func:`stream_r1.shapes.teacher.train_world_teacher`); with a default, as above.
    """

    name: str
    pixels: int
    latent_frames: int
    degraded_fraction: float
    vae_image_steps: int
    vae_steps: int
    vae_batch: int
    teacher_clips: int
    teacher_steps: int
    teacher_batch: int
    teacher_dim: int
    teacher_layers: int
    reward_steps: int
    ode_repeats: int
    ode_steps: int
    eval_seeds: int
    reward_rubric_steps: int = 0
    teacher_order_steps: int = 0

    @property
    def pixel_frames(self) -> int:
        """``1 + 4 (F - 1)``."""
        return 1 + 4 * (self.latent_frames - 1)

    @property
    def latent_side(self) -> int:
        """Latent height = width (pixels / 8)."""
        return self.pixels // 8

    def to_dict(self) -> dict[str, object]:
        """Plain dict (JSON-ready)."""
        return asdict(self)


SIZES: dict[str, WorldSize] = {
    "ci": WorldSize(
        name="ci", pixels=32, latent_frames=3, degraded_fraction=0.4,
        vae_image_steps=1500, vae_steps=100, vae_batch=4, teacher_clips=8, teacher_steps=1500, teacher_batch=32,
        teacher_dim=128, teacher_layers=2, reward_steps=2000, reward_rubric_steps=100, ode_repeats=2, ode_steps=60,
        eval_seeds=4, teacher_order_steps=1000,
    ),
    "default": WorldSize(
        name="default", pixels=32, latent_frames=6, degraded_fraction=0.4,
        vae_image_steps=4000, vae_steps=300, vae_batch=4, teacher_clips=16, teacher_steps=2000, teacher_batch=32,
        teacher_dim=128, teacher_layers=3, reward_steps=3000, reward_rubric_steps=200, ode_repeats=4, ode_steps=300,
        eval_seeds=4, teacher_order_steps=1000,
    ),
}  # fmt: skip


def get_size(name: str) -> WorldSize:
    """The named size.

    Raises:
        ValueError: Unknown name.
    """
    if name not in SIZES:
        raise ValueError(f"--size {name!r} is not one of {sorted(SIZES)}")
    return SIZES[name]


def stage_seed(seed: int, stage: str) -> int:
    """Seed of one build stage (independent streams per stage)."""
    return derive_seed(seed, "shapes-build", stage)
