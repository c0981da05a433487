"""``ode_init``: the student's initial weights (ODE regression, or a supplied ``ode_init.pt``)."""

from kfp import dsl

from components._shared.images import STREAM_R1_TRAIN_IMAGE


@dsl.component(base_image=STREAM_R1_TRAIN_IMAGE, install_kfp_package=False)
def ode_init(checkpoints_uri: str, ode_init_path: str, config: str, overrides: list, bucket: str, run_id: str,
             shared_dir: str) -> str:
    """Return the URI of the student's initial weights (a Self-Forcing-layout ``ode_init.pt``).

    ``ode_init_path`` (a file inside the checkpoint set, e.g. ``ode_init.pt``, or an absolute path on the shared
    volume) skips the teacher-trajectory regression and copies nothing; ``""`` runs ``stream-r1 ode-pairs`` +
    ``stream-r1 ode-init`` with ``config`` on the set (materialised once under ``shared_dir``) and publishes
    ``s3://<bucket>/runs/<run-id>/ode_init/``.
    """
    from stream_r1.ops import steps

    info = steps.ode_init(checkpoints_uri, ode_init_path, bucket, run_id, shared_dir, config, list(overrides))
    print(f"student init: {info['uri']} ({'supplied' if info['skipped_regression'] else 'ODE regression'})")
    return str(info["uri"])
