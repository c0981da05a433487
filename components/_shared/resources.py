"""The ONE place a pipeline step is placed on the GPU pool: accelerator, node selector, tolerations, requests.

``evaluate`` and ``ode_init`` run the model themselves (``stream-r1 evaluate``, ``ode-pairs``/``ode-init``),
so they sit on the train image and need a GPU node; the other steps are CPU launchers/bookkeeping on the
ops image. The selector and toleration are the training job's (``stream_r1.ops.k8s.spec.ClusterJobSpec``), so
every GPU pod of a run lands on the same pool.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kfp import dsl, kubernetes

from stream_r1.ops.k8s.spec import GPU_RESOURCE, ClusterJobSpec

GPU_STEP_CPU = "8"
"""CPU request of a single-GPU step (VAE decode, reward scoring and data loading run beside the GPU)."""
GPU_STEP_MEMORY = "96Gi"
"""Memory request: the 14B teacher / 1.3B student, umT5 and the reward model are loaded to host RAM first."""
_POOL = {f.name: f for f in dataclasses.fields(ClusterJobSpec)}
GPU_NODE_SELECTOR: dict[str, str] = _POOL["node_selector"].default_factory()  # type: ignore[misc]
GPU_TOLERATIONS: tuple[dict[str, str], ...] = _POOL["tolerations"].default  # type: ignore[assignment]


def on_gpu_node(task: dsl.PipelineTask, *, gpus: int = 1, cpu: str = GPU_STEP_CPU,
                memory: str = GPU_STEP_MEMORY, node_selector: Any = None, tolerations: Any = None) -> dsl.PipelineTask:
    """Request ``gpus`` accelerators plus ``cpu``/``memory`` for ``task`` and place it on the GPU pool.

    ``node_selector`` / ``tolerations``: pipeline parameters (a dict / a list of tolerations) choosing the
    pool at run time, the same ones the training job gets; default the project's pool (constants).
    """
    task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(gpus)
    task.set_cpu_request(cpu).set_memory_request(memory)
    if node_selector is not None:
        kubernetes.add_node_selector_json(task, node_selector)
    else:
        for key, value in GPU_NODE_SELECTOR.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
    if tolerations is not None:
        kubernetes.add_toleration_json(task, tolerations)
    else:
        for tol in GPU_TOLERATIONS:
            kubernetes.add_toleration(task, key=tol.get("key"), operator=tol.get("operator"), value=tol.get("value"),
                                      effect=tol.get("effect"))
    return task
