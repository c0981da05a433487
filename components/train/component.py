"""``train``: reward-weighted DMD training, launched through a job backend."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Markdown, Model, Output

from components._shared.images import STREAM_R1_OPS_IMAGE


@dsl.component(base_image=STREAM_R1_OPS_IMAGE, install_kfp_package=False)
def train(checkpoints_uri: str, student_init: str, config: str, overrides: list, backend: str, num_nodes: int,
          gpus_per_node: int, nproc_per_node: int, node_selector: dict, tolerations: list, runs_pvc: str,
          train_image: str, queue_name: str, priority_class: str, bucket: str, run_id: str, job_id: str,
          shared_dir: str, model: Output[Model], tensorboard: Output[Markdown]
          ) -> NamedTuple("TrainOutputs", [("export_uri", str), ("config_hash", str)]):
    """Run ``torchrun -m stream_r1 train --config C --output <shared_dir>/runs/<run-id>/train --resume auto``
    through ``backend`` (``local`` here; ``pytorchjob``/``trainjob`` in a cluster, whose pods mount the same
    volume: ``num_nodes`` x ``gpus_per_node`` on the pool ``node_selector``/``tolerations`` select, image
    ``train_image``, Kueue ``queue_name``, ``priority_class``), publish its logs to
    ``s3://<bucket>/runs/<run-id>/train/`` and the student to ``runs/<run-id>/export/<id>/``
    (content-addressed: a registered export is never overwritten).

    ``model`` is that export: a stock diffusers directory (``config.json`` + safetensors + ``stream_r1_export.json``).
    The step is a launcher: a retried task re-attaches (``--resume auto`` continues from the newest verified
    checkpoint on the shared volume), and its caching is disabled in the DAG because it has side effects.
    """
    import os
    from collections import namedtuple

    from stream_r1.ops import steps
    from stream_r1.ops.k8s.launcher import cluster_settings

    cluster = cluster_settings(os.environ, image=train_image, pvc_name=runs_pvc, pvc_mount_path=shared_dir,
                               node_selector=node_selector, tolerations=tolerations, queue_name=queue_name,
                               priority_class=priority_class, gpus_per_node=gpus_per_node)
    info = steps.train_step(checkpoints_uri, student_init, config, list(overrides), backend, int(nproc_per_node),
                            bucket, run_id, shared_dir, model.path, num_nodes=int(num_nodes), cluster=cluster,
                            job_id=job_id)
    model.metadata.update(info)
    with open(tensorboard.path, "w") as f:
        f.write(steps.tensorboard_markdown(info["tensorboard_s3"], info["tensorboard_logdir"]))
    return namedtuple("TrainOutputs", ["export_uri", "config_hash"])(info["export_uri"], info["config_hash"])
