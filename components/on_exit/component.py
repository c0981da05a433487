"""``on_exit``: the exit handler's task — records the run's final status and cleans up."""

from kfp import dsl

from components._shared.images import STREAM_R1_OPS_IMAGE


@dsl.component(base_image=STREAM_R1_OPS_IMAGE, install_kfp_package=False)
def on_exit(status: dsl.PipelineTaskFinalStatus, run_id: str, job_id: str, bucket: str, backend: str) -> str:
    """Write ``s3://<bucket>/runs/<run-id>/status.json`` (state, failed task, error); when the pipeline
    failed on a cluster backend, delete the orphaned training job. Returns the pipeline state."""
    from stream_r1.ops import steps

    rid = steps.resolve_run_id(run_id, job_id)
    record = steps.record_exit({"state": status.state, "error_code": status.error_code,
                                "error_message": status.error_message, "failed_task": status.pipeline_task_name,
                                "pipeline_job": status.pipeline_job_resource_name}, rid, bucket, backend)
    print(f"pipeline {rid} finished {status.state}: {record.get('status_uri', record.get('store_error'))}")
    return str(status.state)
