"""Typed, frozen run configuration (stdlib + PyYAML only: importable at KFP compile time).

Every field carries a one-line docstring (the string literal under it) with its unit. Cross-field
rules live in ``__post_init__`` and raise ``ValueError`` naming the dotted field, the bad value and
the fix. Values of the real recipe come from docs/method.md §1-3 and the Stream-R1 reference
``configs/exp_stream_r1.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from stream_r1.config.derived import latent_frames_problem

# Wan's fixed negative prompt (Wan2.1 `sample_neg_prompt`), used by the teacher's CFG (§1.4).
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"
    "低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，"
    "毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

NUM_TRAIN_TIMESTEPS = 1000
"""Entries of Wan's flow-matching sigma table (t = 1000 sigma); timesteps live in [0, 1000]."""
BETA_MAX = 50.0
"""Largest reward.beta: r_final is a z-scored reward, |r_final| <= ~10 in practice, and exp(50 * 10) is
still finite in float64 (overflow starts at exp(709))."""

RewardAxis = Literal["VQ", "MQ", "TA"]
DType = Literal["float32", "bfloat16", "float16"]


GROUND_TRUTHS: tuple[str, ...] = ("", "shapes")
"""Worlds whose videos ``eval.ground_truth`` can score from the pixels."""


def _fail(path: str, value: object, rule: str) -> None:
    raise ValueError(f"{path}={value!r} {rule}")


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckpointsConfig:
    """Where the pretrained weights live; relative paths are resolved against ``root``."""

    root: str = "checkpoints"
    """Directory the other paths are relative to (absolute paths are used as they are)."""
    teacher: str = "Wan2.1-T2V-14B-Diffusers/transformer"
    """Real-score teacher: a diffusers or original-format Wan transformer directory."""
    base: str = "Wan2.1-T2V-1.3B-Diffusers/transformer"
    """Base 1.3B Wan transformer: the student's architecture and the critic's initialisation."""
    student_init: str = "Self-Forcing/checkpoints/ode_init.pt"
    """Generator initialisation (`.pt` in a Self-Forcing/Reward Forcing/Stream-R1 layout); '' = base."""
    vae: str = "Wan2.1-T2V-1.3B-Diffusers/vae"
    """Wan2.1 VAE (diffusers `AutoencoderKLWan` directory or original `Wan2.1_VAE.pth`)."""
    text_encoder: str = "Wan2.1-T2V-1.3B-Diffusers/text_encoder"
    """umT5-XXL encoder directory (transformers `UMT5EncoderModel`)."""
    tokenizer: str = "Wan2.1-T2V-1.3B-Diffusers/tokenizer"
    """umT5 tokenizer directory."""
    reward: str = "VideoReward"
    """VideoReward checkpoint directory (official layout: base Qwen2-VL + LoRA + non-LoRA state)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelConfig:
    """The causal student's attention geometry and numerics."""

    frames_per_block: int = 3
    """Latent frames per chunk: bidirectional inside, causal across chunks (§4.2)."""
    local_attn_frames: int = 9
    """Rolling KV-cache size in latent frames at inference (Reward Forcing); -1 = full cache."""
    sink_frames: int = 3
    """Attention-sink frames kept at the front of the rolling cache (§2.4)."""
    sink_ema_alpha: float = 0.999
    """EMA-sink update on eviction: sink <- a*sink + (1-a)*evicted (inference only)."""
    attention_backend: Literal["sdpa", "flex", "flash"] = "sdpa"
    """Attention kernel; SDPA with a dense block mask runs everywhere (flex/flash: GPU)."""
    dtype: DType = "bfloat16"
    """Compute dtype of the diffusion transformers."""
    gradient_checkpointing: bool = True
    """Non-reentrant activation checkpointing per transformer block (generator and critic)."""
    text_len_tokens: int = 512
    """Text tokens fed to cross-attention; shorter prompts are zero-padded (Wan)."""

    def __post_init__(self) -> None:
        if self.frames_per_block < 1:
            _fail("model.frames_per_block", self.frames_per_block, "must be >= 1")
        if self.local_attn_frames != -1:
            if self.local_attn_frames < 2 * self.frames_per_block:
                _fail(
                    "model.local_attn_frames",
                    self.local_attn_frames,
                    f"must be -1 (full cache) or >= 2*frames_per_block={2 * self.frames_per_block}",
                )
            if self.local_attn_frames % self.frames_per_block:
                _fail(
                    "model.local_attn_frames",
                    self.local_attn_frames,
                    f"must be a multiple of model.frames_per_block={self.frames_per_block}",
                )
            if not 0 <= self.sink_frames < self.local_attn_frames:
                _fail("model.sink_frames", self.sink_frames, "must be in [0, local_attn_frames)")
        elif self.sink_frames != 0:
            # A sink is the front of a rolling window; a full cache keeps every frame and has none.
            _fail(
                "model.sink_frames",
                self.sink_frames,
                "needs a local window: with model.local_attn_frames=-1 (full cache) set model.sink_frames=0",
            )
        if not 0.0 <= self.sink_ema_alpha <= 1.0:
            _fail("model.sink_ema_alpha", self.sink_ema_alpha, "must be in [0, 1]")


@dataclass(frozen=True, kw_only=True, slots=True)
class RolloutConfig:
    """Few-step streaming rollout of the student (§1.2-1.3, §1.11)."""

    num_frames: int = 21
    """Latent frames per training rollout (21 latents = 81 pixel frames)."""
    latent_channels: int = 16
    """Latent channels of the Wan VAE."""
    latent_height: int = 60
    """Latent height (pixel height / 8)."""
    latent_width: int = 104
    """Latent width (pixel width / 8)."""
    denoising_steps: tuple[int, ...] = (1000, 750, 500, 250)
    """Configured student timesteps before warping."""
    warp_denoising_steps: bool = True
    """Map the steps through the shifted sigma table ([1000,937.5,833.33,625] at shift 5)."""
    student_sigma_shift: float = 5.0
    """Shift s of the student's sigma table sigma(t) = s u / (1 + (s-1) u), u = t/1000: its x0 <-> flow
    conversion, the step warping, and every re-noising of rollout and DMD/critic inputs."""
    context_noise: int = 0
    """Timestep of the context pass that writes clean K/V after each chunk."""

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            _fail("rollout.num_frames", self.num_frames, "must be >= 1")
        if not self.denoising_steps:
            _fail("rollout.denoising_steps", self.denoising_steps, "must list at least one timestep")
        if any(not 0 < t <= 1000 for t in self.denoising_steps):
            _fail("rollout.denoising_steps", self.denoising_steps, "must lie in (0, 1000]")
        if list(self.denoising_steps) != sorted(self.denoising_steps, reverse=True):
            _fail("rollout.denoising_steps", self.denoising_steps, "must be strictly decreasing")
        if self.student_sigma_shift <= 0:
            _fail("rollout.student_sigma_shift", self.student_sigma_shift, "must be > 0")
        if not 0 <= self.context_noise < NUM_TRAIN_TIMESTEPS:
            _fail("rollout.context_noise", self.context_noise, f"must be a timestep in [0, {NUM_TRAIN_TIMESTEPS})")


@dataclass(frozen=True, kw_only=True, slots=True)
class DMDConfig:
    """Distribution matching distillation: teacher/critic scores and timestep sampling (§1.4-1.5)."""

    guidance_scale: float = 3.0
    """Teacher guidance g in c + g(c - u) (= standard CFG 4.0)."""
    fake_guidance_scale: float = 0.0
    """Critic guidance (0: conditional only)."""
    timestep_sampling_shift: float = 5.0
    """Shift of the DMD/critic timestep distribution: t = 1000 s u / (1 + (s-1) u), u ~ U{0..999}/1000,
    then clamped to [min_step, max_step] (a distribution over t, not a sigma table)."""
    min_step: int = 20
    """Lower clamp of the DMD/critic timestep (0.02 * 1000)."""
    max_step: int = 980
    """Upper clamp of the DMD/critic timestep (0.98 * 1000)."""
    score_sigma_shift: float = 8.0
    """Sigma-table shift of the teacher/critic x0 conversion (Self-Forcing's WanDiffusionWrapper default;
    noising and the critic's flow target use the student's table, rollout.student_sigma_shift)."""
    negative_prompt: str = WAN_NEGATIVE_PROMPT
    """Teacher's unconditional prompt (embedded once and cached)."""

    def __post_init__(self) -> None:
        if not 0 <= self.min_step < self.max_step <= NUM_TRAIN_TIMESTEPS:
            _fail(
                "dmd.min_step/max_step",
                (self.min_step, self.max_step),
                f"must satisfy 0 <= min_step < max_step <= {NUM_TRAIN_TIMESTEPS}",
            )
        for name in ("timestep_sampling_shift", "score_sigma_shift"):
            if getattr(self, name) <= 0:
                _fail(f"dmd.{name}", getattr(self, name), "must be > 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class RewardConfig:
    """Stream-R1 reward weighting (§3.3 A-I). ``mode: none`` is plain DMD."""

    mode: Literal["none", "MQ", "VQ", "TA", "Overall", "BalancedOverall"] = "BalancedOverall"
    """Scalar reward r: one axis (MQ = Reward Forcing), their mean, or the balanced mean."""
    beta: float = 2.0
    """Inter-Reliability inverse temperature: W_inter = exp(beta * r_final). 0 ignores the reward (plain
    DMD scale); larger values sharpen the weighting. In [0, BETA_MAX]."""
    dims: tuple[RewardAxis, ...] = ("VQ", "MQ", "TA")
    """Axes averaged into r for Overall/BalancedOverall."""
    balance_window: int = 50
    """Per-axis history length (generator micro-steps) of Adaptive Reward Balancing."""
    balance_warmup: int = 50
    """Generator micro-steps before the balance penalty applies."""
    balance_lambda: float = 0.5
    """r_final = r - lambda * std(split-half deltas)."""
    balance_sync: Literal["rank_local", "all_reduce"] = "rank_local"
    """rank_local = reference; all_reduce averages per-axis rewards over ranks first."""
    intra: bool = True
    """Intra-Perplexity weighting W_intra (saliency from reward gradients)."""
    saliency_metrics: tuple[RewardAxis, ...] = ("MQ", "VQ", "TA")
    """Axes whose gradients build the saliency (order of the fusion softmax)."""
    saliency_space: Literal["pixel", "patch_reference", "embeds"] = "pixel"
    """pixel: per-pixel L2 of dℓ/dX; patch_reference: SR1 per-patch norms; embeds: merged tokens."""
    patch_order: Literal["fixed", "sr1_naive"] = "fixed"
    """patch_reference row order: fixed un-permutes; sr1_naive reproduces SR1's scrambled map."""
    spatial_mapping: Literal["area", "trilinear_reference"] = "area"
    """Saliency -> latent grid in space: area pooling, or SR1 trilinear on the patch grid."""
    temporal_mapping: Literal["vae_groups", "trilinear_reference"] = "vae_groups"
    """Saliency -> latent frames: VAE frame groups, or SR1 trilinear over temporal patches."""
    combination: Literal["adaptive", "mean", "max"] = "adaptive"
    """Fusion of the per-axis saliency maps: softmax(-r/T) weights, mean or max."""
    temperature: float = 1.0
    """Temperature T of the adaptive fusion softmax."""
    spatial_strength: float = 1.0
    """s_s in sigma = (1 - s_s) + s_s * normalised spatial saliency."""
    spatial_min: float = 0.15
    """Floor sigma_min of the spatial weights (before mean normalisation)."""
    temporal: bool = True
    """Temporal factor tau of W_intra."""
    temporal_strength: float = 1.0
    """s_t in tau = (1 - s_t) + s_t * normalised temporal profile."""
    temporal_min: float = 0.2
    """Floor tau_min of the temporal weights (before mean normalisation)."""
    frames: Literal["all_even", "fps2"] = "all_even"
    """Frames scored: all (dropping the last if odd, SR1) or VideoAlign-native 2 fps."""
    reward_passes: Literal[1, 2] = 1
    """1: logits and saliency from one forward; 2: SR1's separate scalar and saliency passes."""
    saliency_backward: Literal["batched", "per_axis"] = "batched"
    """batched: every axis' saliency gradient from one vmapped backward; per_axis: one backward per axis,
    as SR1 (same values, about twice the backward work for three axes)."""
    max_pixels: int = 200704
    """Per-frame pixel budget of smart_resize (448*448; 336x588 at 480x832)."""
    min_pixels: int = 3136
    """Per-frame pixel floor of smart_resize (56*56)."""
    video_fps: float = 16.0
    """Frame rate of decoded rollouts (for fps2 selection)."""

    def __post_init__(self) -> None:
        for name, axes in (("reward.dims", self.dims), ("reward.saliency_metrics", self.saliency_metrics)):
            if not axes or len(set(axes)) != len(axes):
                _fail(name, axes, "must list distinct axes from VQ, MQ, TA")
        if self.balance_window < 4:
            _fail("reward.balance_window", self.balance_window, "must be >= 4 (split-half deltas)")
        if self.temperature <= 0:
            _fail("reward.temperature", self.temperature, "must be > 0")
        if not 0.0 <= self.beta <= BETA_MAX:
            _fail(
                "reward.beta",
                self.beta,
                f"must be in [0, {BETA_MAX}] (an inverse temperature; negative values reward low scores, and "
                f"exp(beta * r_final) overflows past it; the recipe uses 2.0)",
            )
        for name, v in (("reward.spatial_min", self.spatial_min), ("reward.temporal_min", self.temporal_min)):
            if not 0.0 <= v <= 1.0:
                _fail(name, v, "must be in [0, 1]")

    @property
    def enabled(self) -> bool:
        """True when any reward term is active (the reward model must be loaded)."""
        return self.mode != "none"


@dataclass(frozen=True, kw_only=True, slots=True)
class OptimConfig:
    """AdamW for generator and critic (§1.6)."""

    lr_generator: float = 2.0e-6
    """Generator learning rate (constant)."""
    lr_critic: float = 4.0e-7
    """Critic (fake score) learning rate (constant)."""
    beta1: float = 0.0
    """Adam beta1 (0: no first moment)."""
    beta2: float = 0.999
    """Adam beta2."""
    eps: float = 1.0e-8
    """Adam epsilon."""
    weight_decay: float = 0.01
    """Decoupled weight decay."""
    grad_clip_norm: float = 10.0
    """Max global gradient norm for both networks."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    """The update schedule, EMA, checkpoints and logging (§1.6, §3.2 item 8)."""

    num_optimizer_steps: int = 1000
    """Critic optimizer steps (raw steps = this * grad_accum_steps)."""
    grad_accum_steps: int = 8
    """Micro-batches per optimizer step."""
    gen_update_every: int = 5
    """The generator trains on optimizer steps divisible by this (dfake_gen_update_ratio)."""
    batch_size_per_rank: int = 1
    """Prompts per rank per micro-step."""
    global_batch_size: int = 8
    """Prompts per micro-step over all ranks; must equal batch_size_per_rank * world size."""
    ema_decay: float = 0.99
    """Generator EMA decay (fp32 shadow)."""
    ema_start_raw_step: int = 200
    """Raw micro-step at which the EMA shadow is created (= optimizer step 25 with accumulation 8)."""
    seed: int = 0
    """Base seed; per-rank noise uses (seed, rank, step)."""
    checkpoint_every_steps: int = 50
    """Optimizer steps between checkpoints."""
    keep_last_checkpoints: int = 3
    """Checkpoints kept on disk (older ones are deleted after a new one verifies)."""
    log_every_steps: int = 1
    """Optimizer steps between scalar logs."""
    media_every_steps: int = 25
    """Optimizer steps between W_intra images and rollout GIFs in TensorBoard."""
    allow_tf32: bool = True
    """Enable TF32 matmuls on GPU."""

    def __post_init__(self) -> None:
        for name in ("num_optimizer_steps", "grad_accum_steps", "gen_update_every", "batch_size_per_rank",
                     "checkpoint_every_steps", "log_every_steps"):
            if getattr(self, name) < 1:
                _fail(f"train.{name}", getattr(self, name), "must be >= 1")
        if self.global_batch_size % self.batch_size_per_rank:
            _fail(
                "train.global_batch_size",
                self.global_batch_size,
                f"must be a multiple of train.batch_size_per_rank={self.batch_size_per_rank}",
            )
        if not 0.0 <= self.ema_decay < 1.0:
            _fail("train.ema_decay", self.ema_decay, "must be in [0, 1)")


@dataclass(frozen=True, kw_only=True, slots=True)
class DataConfig:
    """Prompt data (data-free DMD: prompts only, §1.8)."""

    prompts: str = "prompts/vidprom_filtered_extended.txt"
    """Prompt file, one prompt per line."""
    embedding_cache: str = ""
    """Directory of cached text embeddings keyed by sha256(prompt, encoder); '' = <output>/text_cache."""
    shuffle: bool = True
    """Shuffle prompts each epoch (distributed sampler)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ParallelConfig:
    """Distribution strategy (FSDP2 default; DeepSpeed optional)."""

    strategy: Literal["none", "fsdp2", "deepspeed"] = "fsdp2"
    """none: single process or replicated; fsdp2: fully_shard per block; deepspeed: ZeRO."""
    param_dtype: DType = "bfloat16"
    """FSDP2 mixed-precision parameter dtype."""
    reduce_dtype: DType = "float32"
    """FSDP2 gradient reduction dtype."""
    reshard_after_forward: bool = True
    """ZeRO-3-like resharding after forward."""
    shard_teacher: bool = True
    """Shard the frozen teacher too."""
    shard_size: int = 0
    """FSDP2 HSDP: ranks one network is sharded over (0 = the ranks of a node); replicated across groups."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage (deepspeed strategy only)."""

    def __post_init__(self) -> None:
        if self.strategy == "deepspeed":
            if self.zero_stage not in (2, 3):
                _fail(
                    "parallel.zero_stage",
                    self.zero_stage,
                    "is not supported by parallel.strategy=deepspeed; use 2 (gradients + optimizer states) or 3 "
                    "(+ parameters), or parallel.strategy=fsdp2",
                )
            if self.param_dtype not in ("float32", "bfloat16"):
                _fail("parallel.param_dtype", self.param_dtype, "under parallel.strategy=deepspeed must be float32 or bfloat16")


@dataclass(frozen=True, kw_only=True, slots=True)
class ODEConfig:
    """ODE initialisation: teacher trajectories and block-causal regression (§1.9)."""

    num_inference_steps: int = 48
    """Euler steps of the teacher's flow sampler."""
    sampler_sigma_shift: float = 8.0
    """Sigma shift of the teacher's Euler trajectory sampler (its grid and its x0 conversion)."""
    guidance_scale: float = 6.0
    """Standard CFG weight x0_u + g (x0_c - x0_u)."""
    stored_indices: tuple[int, ...] = (0, 12, 24, 36, 48)
    """Trajectory states kept per prompt (index 48 = final clean latent)."""
    prompts_per_shard: int = 64
    """Prompts per on-disk shard of ODE pairs."""
    num_steps: int = 3000
    """Regression optimizer steps."""
    lr: float = 2.0e-6
    """Regression learning rate."""
    batch_size_per_rank: int = 1
    """Trajectories per rank per step."""

    def __post_init__(self) -> None:
        idx = self.stored_indices
        if list(idx) != sorted(set(idx)) or idx[-1] != self.num_inference_steps:
            _fail(
                "ode.stored_indices",
                idx,
                f"must be increasing and end at ode.num_inference_steps={self.num_inference_steps}",
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class EvalConfig:
    """Evaluation and streaming generation."""

    num_frames: int = 21
    """Latent frames per generated video (21 = 5 s, 120 = 30 s, 240 = 60 s)."""
    fps: int = 16
    """Output video frame rate."""
    seed: int = 0
    """Base seed of generation (video i uses seed + i)."""
    use_ema: bool = True
    """Generate with the EMA generator when the checkpoint has one."""
    prompts: str = ""
    """Prompt suite path (one prompt per line); '' = the project's tiny suite."""
    max_prompts: int = 0
    """Evaluate only the first N prompts (0 = all)."""
    reward_scores: bool = True
    """Score videos with VideoReward (VQ/MQ/TA)."""
    ground_truth: str = ""
    """Ground-truth scores from the pixels: '' (none) or 'shapes' (the shapes world's detectors: colour, shape and
    direction against the prompt, sharpness, smoothness, stability, degraded fraction, Quality / Semantic / Total as
    ``gt_*`` metrics; docs/shapes.md). Needs prompts of that world's grammar."""

    def __post_init__(self) -> None:
        if self.ground_truth not in GROUND_TRUTHS:
            _fail("eval.ground_truth", self.ground_truth, f"must be one of {GROUND_TRUTHS} ('' = none)")


@dataclass(frozen=True, kw_only=True, slots=True)
class RunConfig:
    """The whole run: what the CLI, the trainer and the pipeline pass between processes."""

    name: str = "stream-r1"
    """Human-readable run/preset name."""
    checkpoints: CheckpointsConfig = field(default_factory=CheckpointsConfig)
    """Pretrained weights."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Student attention geometry."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Few-step rollout."""
    dmd: DMDConfig = field(default_factory=DMDConfig)
    """DMD scores and timesteps."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Stream-R1 reward weighting."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizers."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Schedule and checkpoints."""
    data: DataConfig = field(default_factory=DataConfig)
    """Prompts."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """Distribution strategy."""
    ode: ODEConfig = field(default_factory=ODEConfig)
    """ODE initialisation stage."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation and generation."""

    def __post_init__(self) -> None:
        fpb = self.model.frames_per_block
        for path, frames in (("rollout.num_frames", self.rollout.num_frames), ("eval.num_frames", self.eval.num_frames)):
            problem = latent_frames_problem(frames, fpb, path)
            if problem is not None:
                raise ValueError(problem)
        p = self.parallel
        if p.strategy in ("fsdp2", "deepspeed") and p.param_dtype != self.model.dtype:
            # FSDP2/DeepSpeed compute in param_dtype; rollout latents and KV caches are allocated in model.dtype.
            _fail(
                "parallel.param_dtype",
                p.param_dtype,
                f"must equal model.dtype={self.model.dtype!r} under parallel.strategy={p.strategy} (the compute "
                f"dtype); set model.dtype={p.param_dtype} or parallel.param_dtype={self.model.dtype}",
            )
