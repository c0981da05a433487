"""``ode_init``: the student's initial weights (ODE regression, or a supplied ``ode_init.pt``)."""

from kfp import dsl
from kfp.dsl import Input, Model, Output

from components._shared.images import STREAM_R1_TRAIN_IMAGE


@dsl.component(base_image=STREAM_R1_TRAIN_IMAGE, install_kfp_package=False)
def ode_init(checkpoints: Input[Model], ode_init_path: str, config: str, overrides: list, bucket: str, run_id: str,
             student_init: Output[Model]):
    """Produce ``student_init`` (a Self-Forcing-layout ``ode_init.pt``) and publish it to
    ``s3://<bucket>/runs/<run-id>/ode_init/``.

    ``ode_init_path`` (an absolute path or a file inside ``checkpoints``, e.g. ``ode_init.pt``) skips the
    teacher-trajectory regression; ``""`` runs ``stream-r1 ode-pairs`` + ``stream-r1 ode-init`` with ``config``.
    """
    from stream_r1.ops import steps

    info = steps.ode_init(checkpoints.path, ode_init_path, student_init.path, bucket, run_id, config, list(overrides))
    student_init.metadata.update(info)
