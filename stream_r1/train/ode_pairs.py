"""ODE pairs for the initialisation stage (docs/method.md §1.9): teacher trajectories on disk.

The bidirectional teacher (the 1.3B base in the reference) is sampled with a 48-step Euler flow
sampler on the shift-8 sigma grid with CFG 6 (``v_u + 6 (v_c - v_u)``; for a shared sigma this
equals ``x0_u + 6 (x0_c - x0_u)`` because x0 = x_t - sigma v is affine in v). The states at
``ode.stored_indices`` (noise ... clean, t = 1000, 960, 888.9, 727.3, 0) are kept per prompt.

On-disk format (resumable, atomic)::

    DIR/shard_00000.safetensors   "latents" [n, S, F, C, H, W] float16, "index" [n] int64
    DIR/shard_00000.json          {"start", "count", "sha256"}: written after the shard = "complete"
    DIR/index.json                prompts, shards, latent shape, stored indices and their timesteps

Shards are assigned round-robin to ranks; a rerun skips every shard whose sidecar verifies. The
noise of prompt ``i`` comes from ``(seed, "ode-noise", i)``, so a resumed run writes the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from stream_r1.config.schema import ODEConfig, RolloutConfig
from stream_r1.diffusion.flow_matching import shift_sigma
from stream_r1.models.denoiser import BidirectionalDenoiser
from stream_r1.utils.io import atomic_write, atomic_write_json, sha256_file
from stream_r1.utils.logging import get_logger
from stream_r1.utils.progress import progress
from stream_r1.utils.seeding import make_rng

log = get_logger(__name__)

INDEX = "index.json"


def euler_sigmas(num_steps: int, shift: float) -> torch.Tensor:
    """``[num_steps + 1]`` float64 sigmas from 1 to 0 on the shifted grid ``s sigma / (1 + (s-1) sigma)``."""
    lin = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    return torch.as_tensor(shift_sigma(lin, shift), dtype=torch.float64)


def stored_timesteps(cfg: ODEConfig) -> list[float]:
    """``t = 1000 sigma`` of every stored state ([1000, 960, 888.9, 727.3, 0] for the reference)."""
    sig = euler_sigmas(cfg.num_inference_steps, cfg.sampler_sigma_shift)
    return [float(1000.0 * sig[i]) for i in cfg.stored_indices]


@torch.no_grad()
def teacher_trajectory(
    teacher: BidirectionalDenoiser, noise: torch.Tensor, text_emb: torch.Tensor, negative_emb: torch.Tensor,
    cfg: ODEConfig,
) -> torch.Tensor:
    """Run the CFG Euler sampler and keep the states at ``cfg.stored_indices``.

    Args:
        teacher: Bidirectional teacher.
        noise: ``[B, F, C, H, W]`` initial Gaussian noise (sigma = 1).
        text_emb: ``[B, L, D]`` prompt embeddings.
        negative_emb: ``[1 or B, L, D]`` negative-prompt embedding.
        cfg: Steps, shift, guidance, stored indices.

    Returns:
        ``[B, S, F, C, H, W]`` float32 states, noise first and the clean latent last.
    """
    sig = euler_sigmas(cfg.num_inference_steps, cfg.sampler_sigma_shift)
    b = noise.shape[0]
    neg = negative_emb.expand(b, *negative_emb.shape[1:])
    x = noise.to(torch.float64)
    keep = {i: None for i in cfg.stored_indices}
    for i in range(cfg.num_inference_steps + 1):
        if i in keep:
            keep[i] = x.float().clone()
        if i == cfg.num_inference_steps:
            break
        t = torch.full((b,), 1000.0 * float(sig[i]), device=noise.device)
        xin = x.to(noise.dtype)
        v_c = teacher.predict_flow(xin, t, text_emb).to(torch.float64)
        v_u = teacher.predict_flow(xin, t, neg).to(torch.float64)
        v = v_u + cfg.guidance_scale * (v_c - v_u)
        x = x + (float(sig[i + 1]) - float(sig[i])) * v  # Euler step on the flow ODE dx/dsigma = v
    return torch.stack([keep[i] for i in cfg.stored_indices], dim=1)  # type: ignore[misc]


@dataclass(frozen=True)
class ShardPlan:
    """Prompts ``[start, start + count)`` go to ``shard_<number>``."""

    number: int
    start: int
    count: int

    @property
    def stem(self) -> str:
        """File stem ``shard_00000``."""
        return f"shard_{self.number:05d}"


def plan_shards(num_prompts: int, per_shard: int) -> list[ShardPlan]:
    """Split ``num_prompts`` into consecutive shards of ``per_shard`` prompts."""
    if per_shard < 1:
        raise ValueError(f"ode.prompts_per_shard={per_shard} must be >= 1")
    return [ShardPlan(n, s, min(per_shard, num_prompts - s)) for n, s in enumerate(range(0, num_prompts, per_shard))]


def shard_complete(directory: Path, shard: ShardPlan) -> bool:
    """True when the shard's sidecar exists and its sha256 matches the safetensors file."""
    side, data = directory / f"{shard.stem}.json", directory / f"{shard.stem}.safetensors"
    if not (side.is_file() and data.is_file()):
        return False
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    return meta.get("start") == shard.start and meta.get("count") == shard.count and meta.get("sha256") == sha256_file(data)


def write_shard(directory: Path, shard: ShardPlan, latents: torch.Tensor) -> None:
    """Write ``latents [n, S, F, C, H, W]`` (stored as float16, as the reference LMDB) then its sidecar."""
    data = directory / f"{shard.stem}.safetensors"
    tensors = {
        "latents": latents.to(torch.float16).contiguous(),
        "index": torch.arange(shard.start, shard.start + shard.count, dtype=torch.int64),
    }
    atomic_write(data, lambda p: save_file(tensors, str(p)))
    atomic_write_json(directory / f"{shard.stem}.json",
                      {"start": shard.start, "count": shard.count, "sha256": sha256_file(data)})


def write_index(directory: Path, prompts: list[str], shards: list[ShardPlan], latent_shape: list[int],
                ode: ODEConfig, config_hash: str) -> Path:
    """The index JSON of a complete pairs directory."""
    return atomic_write_json(directory / INDEX, {
        "version": 1,
        "prompts": prompts,
        "shards": [{"file": f"{s.stem}.safetensors", "start": s.start, "count": s.count} for s in shards],
        "latent_shape": latent_shape,
        "stored_indices": list(ode.stored_indices),
        "timesteps": stored_timesteps(ode),
        "dtype": "float16",
        "config_hash": config_hash,
    })


def generate_pairs(
    teacher: BidirectionalDenoiser,
    prompts: list[str],
    embed: Callable[[list[str]], torch.Tensor],
    negative_emb: torch.Tensor,
    out_dir: Path,
    ode: ODEConfig,
    rollout: RolloutConfig,
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[ShardPlan]:
    """Generate this rank's missing shards; returns the shards written now (complete ones are skipped)."""
    device = device or torch.device("cpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    shape = (rollout.num_frames, rollout.latent_channels, rollout.latent_height, rollout.latent_width)
    written = []
    shards = plan_shards(len(prompts), ode.prompts_per_shard)
    for shard in progress(shards, desc="ode-pairs (shards)", enabled=None if rank == 0 else False):
        if shard.number % world_size != rank or shard_complete(out_dir, shard):
            continue
        states = []
        for i in range(shard.start, shard.start + shard.count):
            rng = make_rng(seed, "ode-noise", i)
            noise = torch.randn((1, *shape), generator=rng, dtype=torch.float32).to(device=device, dtype=dtype)
            emb = embed([prompts[i]]).to(device=device, dtype=dtype)
            states.append(teacher_trajectory(teacher, noise, emb, negative_emb.to(device=device, dtype=dtype), ode).cpu())
        write_shard(out_dir, shard, torch.cat(states))
        log.info("ODE pairs %s: prompts %d..%d", shard.stem, shard.start, shard.start + shard.count - 1)
        written.append(shard)
    return written


class OdePairs:
    """Read a pairs directory: ``pairs[i] -> (prompt, latents [S, F, C, H, W] float32)``.

    Raises:
        FileNotFoundError: no ``index.json`` (run ``stream-r1 ode-pairs`` first).
        ValueError: a shard listed in the index is missing or incomplete.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        idx = self.directory / INDEX
        if not idx.is_file():
            raise FileNotFoundError(f"{idx} does not exist; generate pairs with `stream-r1 ode-pairs --output {directory}`")
        self.index = json.loads(idx.read_text(encoding="utf-8"))
        self.prompts: list[str] = self.index["prompts"]
        self.timesteps: list[float] = self.index["timesteps"]
        self._shards = [ShardPlan(n, s["start"], s["count"]) for n, s in enumerate(self.index["shards"])]
        for s in self._shards:
            if not shard_complete(self.directory, s):
                raise ValueError(f"{self.directory / s.stem}.safetensors is missing or incomplete; rerun `stream-r1 ode-pairs`")
        self._cache: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor]:
        shard = next(s for s in self._shards if s.start <= i < s.start + s.count)
        if self._cache is None or self._cache[0] != shard.number:
            self._cache = (shard.number, load_file(self.directory / f"{shard.stem}.safetensors")["latents"])
        return self.prompts[i], self._cache[1][i - shard.start].float()
