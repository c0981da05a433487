"""Process-group setup from the torchrun environment; a no-op at world size 1.

Ranks are read from ``torch.distributed`` only after ``init_process_group`` (before it, the
rank is not known reliably); before that only ``WORLD_SIZE`` is consulted, so that batch-size checks can fail
before any model is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from stream_r1.distributed.collectives import forget_checkpoint_group
from stream_r1.utils.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class WorldInfo:
    """Where this process sits in the job.

    Attributes:
        rank: Global rank (0 without a process group).
        local_rank: Rank on this node (selects the CUDA device).
        world_size: Number of processes (1 without a process group).
        backend: ``"gloo"``/``"nccl"``, or ``None`` when no process group exists.
        device: The device this rank computes on.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the only rank that writes logs, metrics and checkpoints)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group is initialised."""
        return self.backend is not None


def world_size_from_env() -> int:
    """``WORLD_SIZE`` set by torchrun / the PyTorchJob operator (1 when absent).

    Raises:
        ValueError: ``WORLD_SIZE`` is not a positive integer.
    """
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"WORLD_SIZE={raw!r} must be a positive integer (set by torchrun); unset it for one process")
    return value


def init_distributed(prefer_cuda: bool = True) -> WorldInfo:
    """Initialise the default process group when launched with ``WORLD_SIZE > 1``.

    Uses NCCL on CUDA and gloo on CPU. At world size 1 nothing is initialised and the
    collectives in :mod:`stream_r1.distributed.collectives` degrade to identities.

    Args:
        prefer_cuda: Compute on CUDA (``cuda:LOCAL_RANK``) when available.

    Returns:
        The :class:`WorldInfo` of this process.
    """
    use_cuda = prefer_cuda and torch.cuda.is_available()
    world = world_size_from_env()
    if dist.is_initialized():
        return current_world(prefer_cuda=prefer_cuda)
    if world == 1:
        device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
        return WorldInfo(device=device)
    backend = "nccl" if use_cuda else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    store = _round_store(world)
    if store is None:
        dist.init_process_group(backend=backend)
    else:
        dist.init_process_group(backend=backend, store=store, rank=int(os.environ["RANK"]), world_size=world)
    info = current_world(prefer_cuda=prefer_cuda)
    log.info("process group %s: rank %d of %d on %s", backend, info.rank, info.world_size, info.device)
    return info


def _round_store(world: int) -> dist.Store | None:
    """The agent's shared TCPStore, under a prefix private to this restart round; ``None`` outside torchrun.

    Why: since torch shares the rendezvous TCPStore with the workers (``TORCHELASTIC_USE_AGENT_STORE=True``), one
    store server lives for the whole job, but ``env://`` connects to it without a per-round prefix. After an elastic
    restart, the new round's gloo ranks read the *previous* round's peer addresses from it whenever a peer has not
    yet overwritten its key, and fail with "connectFullMesh ... Connection refused" — every restart round, until the
    job runs out of restarts (measured: 4 of 4 rounds on an idle 2-core machine). A prefix keyed by
    ``TORCHELASTIC_RESTART_COUNT`` gives each round clean keys and keeps the shared store.
    """
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or restart is None:
        return None
    tcp = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size=world,
                        is_master=False)
    return dist.PrefixStore(f"stream_r1/round_{restart}", tcp)


def current_world(prefer_cuda: bool = True) -> WorldInfo:
    """The :class:`WorldInfo` of the running process (no side effects)."""
    use_cuda = prefer_cuda and torch.cuda.is_available()
    if not dist.is_initialized():
        return WorldInfo(device=torch.device("cuda", 0) if use_cuda else torch.device("cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return WorldInfo(
        rank=dist.get_rank(),
        local_rank=local_rank,
        world_size=dist.get_world_size(),
        backend=str(dist.get_backend()),
        device=device,
    )


def shutdown_distributed() -> None:
    """Destroy the process group if one exists (idempotent)."""
    if dist.is_initialized():
        forget_checkpoint_group()
        dist.destroy_process_group()
