"""The Stream-R1 DAG: validate → fetch → ode_init → train → evaluate → gate → (If) register, in an ExitHandler.

The defaults are the cluster's (what UI and SDK users run): the real recipe on an 8-GPU PyTorchJob, the
Kubeflow Model Registry, the public prompt suites; every cluster knob is a typed parameter.

Compile: ``stream-r1 pipeline compile`` (writes ``pipelines/compiled/stream_r1.yaml``, golden-tested).
Nothing is computed at definition time (so compiling is pure and the compiled YAML is reproducible): the run id is a runtime parameter
falling back to the KFP job-id placeholder.
"""

from typing import Any

from kfp import dsl, kubernetes

from components._shared.images import STREAM_R1_TRAIN_IMAGE
from components._shared.resources import GPU_NODE_SELECTOR, GPU_TOLERATIONS, on_gpu_node
from components.evaluate.component import evaluate
from components.fetch_checkpoints.component import fetch_checkpoints
from components.gate.component import gate
from components.ode_init.component import ode_init
from components.on_exit.component import on_exit
from components.register_model.component import register_model
from components.train.component import train
from components.validate_run.component import validate_run

PIPELINE_NAME = "stream-r1"
S3_SECRET = "stream-r1-s3"
"""Kubernetes secret with the artifact store's keys (the same one the training job mounts, manifests/)."""
RUNS_PVC = "stream-r1-runs"
RUNS_MOUNT = "/mnt/runs"
"""The runs PVC (manifests/base), mounted at the same path in every step that reads big inputs and in the
training pods: checkpoint sets are materialised there once (``checkpoint-sets/<id>/``), the training job keeps
its checkpoints and TensorBoard logs there (``runs/<run-id>/train/``), so a restarted pod resumes, and the
export built there is what evaluate reads. The ``shared_dir`` parameter names it (``run-local``: a local dir);
``runs_pvc`` names the claim (default ``RUNS_PVC``)."""
GPU_POOL_SELECTOR: dict = dict(GPU_NODE_SELECTOR)
GPU_POOL_TOLERATIONS: list = [dict(t) for t in GPU_TOLERATIONS]
RETRY = {"num_retries": 2, "backoff_duration": "60s", "backoff_factor": 2, "backoff_max_duration": "900s"}
"""train, evaluate and register: a retried train re-attaches to its job (a Failed job is re-created and resumes
from its newest checkpoint); evaluate and register are idempotent."""


def _with_runs_volume(task: dsl.PipelineTask, pvc: Any = RUNS_PVC) -> dsl.PipelineTask:
    """Mount the runs PVC ``pvc`` (a name or the ``runs_pvc`` parameter) at ``RUNS_MOUNT`` (kfp.local ignores it;
    ``run-local`` passes a local ``shared_dir``)."""
    kubernetes.mount_pvc(task, pvc_name=pvc, mount_path=RUNS_MOUNT)
    return task


def _with_pod_identity(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """The pod's own name and namespace (downward API): the launcher finds the run's Workflow through its pod,
    and provenance records the namespace."""
    kubernetes.use_field_path_as_env(task, "STREAM_R1_POD_NAME", "metadata.name")
    kubernetes.use_field_path_as_env(task, "STREAM_R1_POD_NAMESPACE", "metadata.namespace")
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
    config: str = "wan2.1_t2v_1.3b_stream_r1",
    overrides: list = [],  # noqa: B006 - KFP reads the default; it is never mutated
    ode_init_path: str = "Self-Forcing/checkpoints/ode_init.pt",
    backend: str = "pytorchjob",
    num_nodes: int = 1,
    gpus_per_node: int = 8,
    nproc_per_node: int = 0,
    node_selector: dict = GPU_POOL_SELECTOR,
    tolerations: list = GPU_POOL_TOLERATIONS,
    runs_pvc: str = RUNS_PVC,
    train_image: str = STREAM_R1_TRAIN_IMAGE,
    queue_name: str = "",
    priority_class: str = "",
    eval_prompts: str = "vbench_extended",
    gate_metric: str = "reward_overall_mean",
    gate_min_value: float = -1.0e9,
    registry: str = "kubeflow",
    registry_uri: str = "http://model-registry-service.kubeflow.svc.cluster.local:8080",
    model_name: str = "stream-r1-student",
    data_revision: str = "",
    shared_dir: str = RUNS_MOUNT,
):
    """Train, evaluate and register a Stream-R1 student on the cluster (``stream-r1 pipeline run-local`` passes
    laptop values: tiny_cpu, backend local, an SQLite registry, the tiny prompt suite).

    Args:
        checkpoint_source: Where the weights come from: a directory, s3://bucket/prefix, hf://org/repo@rev, or
            name=URI,... . Its prompts/ folder, when present, holds the public prompt suites.
        bucket: Artifact-store bucket; every step writes under runs/<run id>/.
        run_id: Run id (lower-case letters, digits, '-'; names the job and the model version); empty: derived
            from the KFP run id.
        config: Training preset (stream_r1/config/presets) or a config YAML path visible to the job.
        overrides: Config overrides, a list of "section.key=value".
        ode_init_path: The student's initial weights inside the fetched checkpoints (or an absolute path);
            empty: run the ODE-pair regression first.
        backend: Where training runs: pytorchjob (Training Operator v1), trainjob (Kubeflow Trainer v2),
            container (run-local --runner docker: a sibling container in the train image), or local (only for
            the in-process run-local, never in a cluster).
        num_nodes: GPU nodes of the training job (the recipe's batch must split over num_nodes x processes).
        gpus_per_node: GPUs per training node (nvidia.com/gpu limit); 0 for a CPU-only pool.
        nproc_per_node: Training processes per node; 0: one per GPU.
        node_selector: Node labels of the GPU pool, for the training job and the GPU steps.
        tolerations: Tolerations of the GPU pool's taints (list of core/v1 Toleration objects).
        runs_pvc: PersistentVolumeClaim holding checkpoint sets, checkpoints and TensorBoard logs (restarts
            resume from it), mounted at shared_dir.
        train_image: Image of the training job, pinned by tag or digest.
        queue_name: Kueue LocalQueue of the training job (all nodes admitted together); empty: no Kueue.
        priority_class: PriorityClass of the training pods (pytorchjob only); empty: the cluster default.
        eval_prompts: Evaluation prompt suite: tiny, vbench, vbench_extended, moviegen, moviegen_extended (read
            from the fetched checkpoints' prompts/ folder) or a prompt file path.
        gate_metric: Metric the quality gate compares (a key of the evaluation's metrics.json).
        gate_min_value: Registration needs gate_metric >= this and no worse than the latest registered version.
        registry: Model registry: kubeflow (Kubeflow Model Registry) or mlflow.
        registry_uri: Registry address: the Model Registry service URL (an MLflow file only works in run-local).
        model_name: Registered model name.
        data_revision: Git/DVC revision of the data, recorded with the model version.
        shared_dir: Where the runs PVC is mounted in every step and training pod (run-local: a local folder).
    """
    exit_task = on_exit(run_id=run_id, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, bucket=bucket, backend=backend)
    _with_s3(exit_task)
    with dsl.ExitHandler(exit_task, name="stream-r1-run"):
        checked = validate_run(config=config, overrides=overrides, backend=backend, registry=registry,
                               registry_uri=registry_uri, eval_prompts=eval_prompts, run_id=run_id,
                               job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, bucket=bucket, num_nodes=num_nodes,
                               gpus_per_node=gpus_per_node, nproc_per_node=nproc_per_node,
                               node_selector=node_selector, tolerations=tolerations, runs_pvc=runs_pvc,
                               train_image=train_image, queue_name=queue_name, priority_class=priority_class,
                               shared_dir=shared_dir)
        _with_s3(checked)  # tries the store's keys: a missing secret fails here, not after a GPU step

        fetch = fetch_checkpoints(source=checkpoint_source, bucket=bucket, run_id=run_id,
                                  job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER).after(checked)
        # No task-level retry: a KFP retry cannot tell wrong keys from a dropped connection and would repeat an
        # auth error for minutes. The store retries transient errors itself (bounded); a re-run re-sends only
        # missing objects and reuses a stored set.
        _with_s3(fetch)
        rid, ckpts = fetch.outputs["run_id"], fetch.outputs["checkpoints_uri"]

        init = ode_init(checkpoints_uri=ckpts, ode_init_path=ode_init_path, config=config, overrides=overrides,
                        bucket=bucket, run_id=rid, shared_dir=shared_dir)
        _with_runs_volume(_with_s3(init), runs_pvc)
        on_gpu_node(init, node_selector=node_selector, tolerations=tolerations)  # the teacher and the regression

        trained = train(checkpoints_uri=ckpts, student_init=init.output, config=config, overrides=overrides,
                        backend=backend, num_nodes=num_nodes, gpus_per_node=gpus_per_node,
                        nproc_per_node=nproc_per_node, node_selector=node_selector, tolerations=tolerations,
                        runs_pvc=runs_pvc, train_image=train_image, queue_name=queue_name,
                        priority_class=priority_class, bucket=bucket, run_id=rid,
                        job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, shared_dir=shared_dir)
        _with_runs_volume(_with_s3(trained), runs_pvc)  # launches a job: a side effect, never served from cache
        _with_pod_identity(trained)
        trained.set_retry(**RETRY)

        scored = evaluate(checkpoints_uri=ckpts, export_uri=trained.outputs["export_uri"], config=config,
                          overrides=overrides, prompts=eval_prompts, bucket=bucket, run_id=rid, shared_dir=shared_dir)
        _with_runs_volume(_with_s3(scored), runs_pvc)
        scored.set_retry(**RETRY)
        on_gpu_node(scored, node_selector=node_selector, tolerations=tolerations)  # samples and scores

        decision = gate(metrics=scored.outputs["metrics"], metric=gate_metric, min_value=gate_min_value,
                        registry=registry, registry_uri=registry_uri, model_name=model_name)
        decision.set_caching_options(False)
        with dsl.If(decision.output == True, name="gate-passed"):  # noqa: E712 - KFP condition syntax
            # Strings and the metrics file only: registration never downloads the weights.
            reg = register_model(export_uri=trained.outputs["export_uri"], config_hash=trained.outputs["config_hash"],
                                 metrics=scored.outputs["metrics"], registry=registry, registry_uri=registry_uri,
                                 model_name=model_name, data_revision=data_revision, run_id=rid,
                                 kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                 kfp_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
            reg.set_caching_options(False)
            reg.set_retry(**RETRY)
            _with_pod_identity(reg)
