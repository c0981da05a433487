"""The Stream-R1 DAG: fetch → ode_init → train → evaluate → gate → (If) register, inside an ExitHandler.

Compile: ``stream-r1 pipeline compile`` (writes ``pipelines/compiled/stream_r1.yaml``, golden-tested).
Nothing is computed at definition time (so compiling is pure and the compiled YAML is reproducible): the run id is a runtime parameter
falling back to the KFP job-id placeholder.
"""

from kfp import dsl, kubernetes

from components._shared.resources import on_gpu_node
from components.evaluate.component import evaluate
from components.fetch_checkpoints.component import fetch_checkpoints
from components.gate.component import gate
from components.ode_init.component import ode_init
from components.on_exit.component import on_exit
from components.register_model.component import register_model
from components.train.component import train

PIPELINE_NAME = "stream-r1"
S3_SECRET = "stream-r1-s3"
"""Kubernetes secret with the artifact store's keys (the same one the training job mounts, manifests/)."""
RUNS_PVC = "stream-r1-runs"
RUNS_MOUNT = "/mnt/runs"
"""The runs PVC (manifests/base), mounted at the same path in every step that reads big inputs and in the
training pods: checkpoint sets are materialised there once (``checkpoint-sets/<id>/``), the training job keeps
its checkpoints and TensorBoard logs there (``runs/<run-id>/train/``), so a restarted pod resumes, and the
export built there is what evaluate reads. The ``shared_dir`` parameter names it (``run-local``: a local dir)."""


def _with_runs_volume(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Mount the runs PVC at ``RUNS_MOUNT`` (kfp.local ignores it; ``run-local`` passes a local ``shared_dir``)."""
    kubernetes.mount_pvc(task, pvc_name=RUNS_PVC, mount_path=RUNS_MOUNT)
    return task


def _with_s3(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """In a cluster, the store's endpoint and keys come from ``S3_SECRET`` as env (ignored by kfp.local, where
    ``run-local`` exports them); caching off because every step publishes to S3 (kubeflow/pipelines#13862)."""
    kubernetes.use_secret_as_env(task, secret_name=S3_SECRET, secret_key_to_env={
        "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL": "STREAM_R1_S3_ENDPOINT"})
    return task.set_caching_options(False)


@dsl.pipeline(name=PIPELINE_NAME, description="Stream-R1: reward-weighted DMD distillation of a streaming video "
              "student, from checkpoints to a registered model.")
def stream_r1_pipeline(
    checkpoint_source: str,
    bucket: str = "stream-r1",
    run_id: str = "",
    config: str = "tiny_cpu",
    overrides: list = [],  # noqa: B006 - KFP reads the default; it is never mutated
    ode_init_path: str = "ode_init.pt",
    backend: str = "local",
    nproc_per_node: int = 1,
    eval_prompts: str = "tiny",
    gate_metric: str = "reward_overall_mean",
    gate_min_value: float = -1.0e9,
    registry: str = "mlflow",
    registry_uri: str = ".stream-r1/registry.db",
    model_name: str = "stream-r1-student",
    data_revision: str = "",
    shared_dir: str = RUNS_MOUNT,
):
    """Args mirror ``stream-r1 pipeline submit --set``; see docs/pipeline.md for each."""
    exit_task = on_exit(run_id=run_id, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, bucket=bucket, backend=backend)
    _with_s3(exit_task)
    with dsl.ExitHandler(exit_task, name="stream-r1-run"):
        fetch = fetch_checkpoints(source=checkpoint_source, bucket=bucket, run_id=run_id,
                                  job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        # No task-level retry: a KFP retry cannot tell wrong keys from a dropped connection and would repeat an
        # auth error for minutes. The store retries transient errors itself (bounded); a re-run re-sends only
        # missing objects and reuses a stored set.
        _with_s3(fetch)
        rid, ckpts = fetch.outputs["run_id"], fetch.outputs["checkpoints_uri"]

        init = ode_init(checkpoints_uri=ckpts, ode_init_path=ode_init_path, config=config, overrides=overrides,
                        bucket=bucket, run_id=rid, shared_dir=shared_dir)
        _with_runs_volume(_with_s3(init))
        on_gpu_node(init)  # runs the teacher (ODE pairs) and the regression itself

        trained = train(checkpoints_uri=ckpts, student_init=init.output, config=config, overrides=overrides,
                        backend=backend, nproc_per_node=nproc_per_node, bucket=bucket, run_id=rid,
                        shared_dir=shared_dir)
        _with_runs_volume(_with_s3(trained))  # launches a job: a side effect, never served from cache

        scored = evaluate(checkpoints_uri=ckpts, export_uri=trained.outputs["export_uri"], config=config,
                          prompts=eval_prompts, bucket=bucket, run_id=rid, shared_dir=shared_dir)
        _with_runs_volume(_with_s3(scored))
        on_gpu_node(scored)  # samples the student and scores it with the reward model

        decision = gate(metrics=scored.outputs["metrics"], metric=gate_metric, min_value=gate_min_value,
                        registry=registry, registry_uri=registry_uri, model_name=model_name)
        decision.set_caching_options(False)
        with dsl.If(decision.output == True, name="gate-passed"):  # noqa: E712 - KFP condition syntax
            # Strings and the metrics file only: registration never downloads the weights.
            reg = register_model(export_uri=trained.outputs["export_uri"], config_hash=trained.outputs["config_hash"],
                                 metrics=scored.outputs["metrics"], registry=registry, registry_uri=registry_uri,
                                 model_name=model_name, data_revision=data_revision, run_id=rid)
            reg.set_caching_options(False)
