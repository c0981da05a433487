"""``fetch_checkpoints``: teacher, student init, VAE, text encoder, reward model into the artifact store."""

from kfp import dsl
from kfp.dsl import Model, Output

from components._shared.images import STREAM_R1_OPS_IMAGE


@dsl.component(base_image=STREAM_R1_OPS_IMAGE, install_kfp_package=False)
def fetch_checkpoints(source: str, bucket: str, run_id: str, job_id: str, checkpoints: Output[Model]) -> str:
    """Copy checkpoints from ``source`` (dir | s3://bucket/prefix | hf://org/repo@rev, or name=URI,...)
    to ``s3://<bucket>/runs/<run-id>/checkpoints/`` with a sha256 manifest, and verified into ``checkpoints``.

    Objects already present and verified are skipped, so the task's retries re-send only what is missing.
    Returns the resolved run id (``run_id``, else the KFP job id) that every later step uses.
    """
    from stream_r1.ops import steps

    rid = steps.resolve_run_id(run_id, job_id)
    res = steps.fetch(source, bucket, rid, checkpoints.path)
    checkpoints.metadata.update({"s3_uri": res.uri, "num_files": res.num_files, "objects_sent": res.sent,
                                 "objects_skipped": res.skipped, "source": source})
    return rid
