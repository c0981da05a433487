"""``train``: reward-weighted DMD training, launched through a job backend."""

from kfp import dsl
from kfp.dsl import Input, Markdown, Model, Output

from components._shared.images import STREAM_R1_OPS_IMAGE


@dsl.component(base_image=STREAM_R1_OPS_IMAGE, install_kfp_package=False)
def train(checkpoints: Input[Model], student_init: Input[Model], config: str, overrides: list, backend: str,
          nproc_per_node: int, bucket: str, run_id: str, run: Output[Model], tensorboard: Output[Markdown]):
    """Run ``torchrun -m stream_r1 train --config C --output <run> --resume auto`` through ``backend``
    (``local`` here; ``pytorchjob``/``trainjob`` in a cluster) and publish the run directory (checkpoints,
    exported student, TensorBoard + JSONL metrics) to ``s3://<bucket>/runs/<run-id>/train/``.

    The step is a launcher: a retried task re-attaches (``--resume auto`` continues from the newest
    verified checkpoint), and its caching is disabled in the DAG because it has side effects. KFP v2 has no
    TensorBoard viewer, so ``tensorboard`` is a Markdown note with the log location and the command.
    """
    from stream_r1.ops import steps

    info = steps.train_from_artifacts(checkpoints.path, student_init.path, config, list(overrides), backend,
                                      int(nproc_per_node), bucket, run_id, run.path)
    run.metadata.update(info)
    with open(tensorboard.path, "w") as f:
        f.write(steps.tensorboard_markdown(info["tensorboard_s3"], info["tensorboard_logdir"]))
