"""``fetch_checkpoints``: teacher, student init, VAE, text encoder, reward model stored once as a checkpoint set."""

from typing import NamedTuple

from kfp import dsl

from components._shared.images import STREAM_R1_OPS_IMAGE


@dsl.component(base_image=STREAM_R1_OPS_IMAGE, install_kfp_package=False)
def fetch_checkpoints(source: str, bucket: str, run_id: str, job_id: str) -> NamedTuple(
        "FetchOutputs", [("run_id", str), ("checkpoints_uri", str)]):
    """Store the checkpoints of ``source`` (dir | s3://bucket/prefix | hf://org/repo@rev, or name=URI,...) once,
    content-addressed, at ``s3://<bucket>/checkpoint-sets/<id>/`` with a sha256 manifest per entry.

    A set already stored is reused (nothing uploaded); an interrupted upload re-sends only missing files.
    Returns the resolved run id (``run_id``, else the KFP job id) that every later step uses, and the set's
    URI, which later steps read by URI (never as an artifact copied into each pod).
    """
    from collections import namedtuple

    from stream_r1.ops import steps

    rid = steps.resolve_run_id(run_id, job_id)
    res = steps.fetch(source, bucket, rid)
    print(f"checkpoints: {res.uri} ({res.num_files} files; {'reused' if res.reused else f'{res.sent} objects sent'})")
    return namedtuple("FetchOutputs", ["run_id", "checkpoints_uri"])(rid, res.uri)
