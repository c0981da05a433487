"""The ``torchrun`` command of a training job: elastic c10d rendezvous with whole-job restarts.

A static rendezvous (``--nnodes N`` with ``MASTER_ADDR``) and per-pod restarts can hang a multi-node
job until the NCCL timeout: a restarted pod waits for peers that are still inside a dead collective.
With the c10d rendezvous every node's torchrun agent watches its workers; when one fails, all agents
stop their workers and re-rendezvous (up to ``--max-restarts`` times), and the new workers resume
from the newest checkpoint (``--resume auto``). With ``--nnodes MIN:MAX`` the job may also come back
with fewer nodes; training checkpoints reshard on load and the batch plan follows the world size,
so every node count in the range must split the recipe's batch (:func:`elastic_node_range`).

Torch-free: the cluster job builders call it.
"""

from __future__ import annotations

from collections.abc import Sequence

from stream_r1.config.schema import TrainConfig
from stream_r1.distributed.batch import plan_batch

DEFAULT_MAX_RESTARTS = 3
"""Whole-job restarts torchrun attempts before the job fails (each resumes from the newest checkpoint)."""


def elastic_node_range(train: TrainConfig, num_nodes: int, gpus_per_node: int,
                       min_nodes: int | None = None) -> tuple[int, int]:
    """``(min, max)`` nodes of an elastic job whose every size splits the recipe's batch.

    Args:
        train: The recipe's ``train`` section.
        num_nodes: Nodes requested (the maximum).
        gpus_per_node: Ranks per node.
        min_nodes: Smallest node count to accept; None = ``num_nodes`` (fixed size, still elastic
            restarts).

    Raises:
        ValueError: a node count in the range cannot split the batch (the message names it).
    """
    low = num_nodes if min_nodes is None else min_nodes
    if not 1 <= low <= num_nodes:
        raise ValueError(f"min nodes {low} must be between 1 and num_nodes={num_nodes}")
    for n in range(low, num_nodes + 1):
        try:
            plan_batch(train, n * gpus_per_node)
        except ValueError as e:
            raise ValueError(f"an elastic job of {low}:{num_nodes} nodes could restart with {n}: {e}") from e
    return low, num_nodes


def torchrun_command(*, num_nodes: int, nproc_per_node: int, job_id: str, min_nodes: int | None = None,
                     max_restarts: int = DEFAULT_MAX_RESTARTS, rdzv_endpoint: str | None = None,
                     args: Sequence[str] = ()) -> list[str]:
    """``torchrun --nnodes MIN:MAX --rdzv-backend c10d ... -m stream_r1 ARGS``.

    Args:
        num_nodes: Maximum nodes.
        nproc_per_node: Ranks per node.
        job_id: Rendezvous id shared by the job's nodes (the job name).
        min_nodes: Minimum nodes (None = ``num_nodes``).
        max_restarts: Whole-job restarts before torchrun gives up.
        rdzv_endpoint: ``host:port`` of the c10d store; None leaves it to ``PET_RDZV_ENDPOINT``
            (set by the PyTorchJob operator's ``elasticPolicy`` and the Trainer's torch runtime).
        args: The ``stream_r1`` arguments (``train --config ... --resume auto``).
    """
    if num_nodes < 1 or nproc_per_node < 1 or max_restarts < 0:
        raise ValueError(f"num_nodes={num_nodes}, nproc_per_node={nproc_per_node} must be >= 1 and "
                         f"max_restarts={max_restarts} >= 0")
    low = num_nodes if min_nodes is None else min_nodes
    cmd = ["torchrun", "--nnodes", f"{low}:{num_nodes}", "--nproc-per-node", str(nproc_per_node),
           "--rdzv-backend", "c10d", "--rdzv-id", job_id, "--max-restarts", str(max_restarts)]
    if rdzv_endpoint is not None:
        cmd += ["--rdzv-endpoint", rdzv_endpoint]
    return [*cmd, "-m", "stream_r1", *args]
