"""The device mesh of FSDP2: HSDP (replicate across nodes x shard within a node).

Sharding over every rank of a multi-node job makes each forward all-gather parameters over the
slow inter-node network, which for the 14B teacher is the whole model per block. Hybrid sharding
keeps the parameter all-gathers and gradient reduce-scatters inside a node (NVLink) and sends only
one gradient all-reduce of the shards across nodes. The mesh is ``(replicate, shard)`` with
``shard`` = ranks per node by default; trainable networks use both dimensions (HSDP), the frozen
teacher only the ``shard`` sub-mesh (it has no gradients, so it never talks across nodes).
"""

from __future__ import annotations

import os

from stream_r1.distributed.collectives import _active

REPLICATE, SHARD = "replicate", "shard"


def mesh_shape(world_size: int, ranks_per_node: int, shard_size: int = 0) -> tuple[int, int]:
    """``(replicate, shard)`` sizes of the HSDP mesh.

    Args:
        world_size: Ranks of the job.
        ranks_per_node: Ranks on one node (torchrun's ``LOCAL_WORLD_SIZE``).
        shard_size: Ranks one network is sharded over; 0 = ``ranks_per_node`` (shard within a
            node). ``world_size`` gives plain FSDP over all ranks.

    Returns:
        ``(world_size // shard, shard)``; ``(1, world_size)`` is plain FSDP.

    Raises:
        ValueError: the shard size does not divide the world size (or a node's ranks).
    """
    if world_size < 1 or ranks_per_node < 1:
        raise ValueError(f"world size {world_size} and ranks per node {ranks_per_node} must be >= 1")
    if world_size % ranks_per_node:
        raise ValueError(f"world size {world_size} is not a whole number of nodes of {ranks_per_node} ranks")
    shard = shard_size or ranks_per_node
    if shard < 1 or world_size % shard:
        raise ValueError(
            f"parallel.shard_size={shard_size} must divide the world size {world_size}; use 0 (ranks per node, "
            f"{ranks_per_node}) or a divisor of {world_size}"
        )
    if shard > ranks_per_node and shard % ranks_per_node:
        raise ValueError(f"parallel.shard_size={shard} must be a whole number of nodes of {ranks_per_node} ranks")
    if shard < ranks_per_node and ranks_per_node % shard:
        raise ValueError(f"parallel.shard_size={shard} must divide the {ranks_per_node} ranks of a node")
    return world_size // shard, shard


def ranks_per_node_from_env(world_size: int) -> int:
    """torchrun's ``LOCAL_WORLD_SIZE`` (``world_size`` when unset: one node)."""
    raw = os.environ.get("LOCAL_WORLD_SIZE")
    try:
        value = int(raw) if raw is not None else world_size
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"LOCAL_WORLD_SIZE={raw!r} must be a positive integer (set by torchrun)")
    return value


def build_mesh(device_type: str, shard_size: int = 0):  # -> DeviceMesh | None
    """The 2-D ``(replicate, shard)`` :class:`~torch.distributed.device_mesh.DeviceMesh` of this job.

    Returns:
        None without a process group (one process shards nothing).
    """
    if not _active():
        return None
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    world = dist.get_world_size()
    shape = mesh_shape(world, ranks_per_node_from_env(world), shard_size)
    return init_device_mesh(device_type, shape, mesh_dim_names=(REPLICATE, SHARD))
