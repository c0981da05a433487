"""The library functions the KFP component bodies call: one short function per pipeline step.

Big inputs travel as ``s3://`` URIs (string parameters), never as KFP artifacts: a step materialises
what it reads on the shared volume (``shared_dir``: the runs PVC in a cluster, the work directory
locally), where the bucket's layout is mirrored and files already present are not downloaded again.
Each step runs the same ``python -m stream_r1 ...`` CLI a person would run, publishes its outputs to
``runs/<run-id>/<step>/`` (bucket layout: docs/pipeline.md) and returns what the component records.
Store credentials come from the environment (``credentials_from_env``), never from parameters.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from stream_r1.ops.exports import build_export, publish_export
from stream_r1.ops.fetch import (
    FetchResult,
    fetch_checkpoints,
    key_of,
    materialize_dir,
    materialize_set,
    mirror_path,
    resolve_file,
)
from stream_r1.ops.jobs.base import JobBackend, JobResult, TrainJobRequest
from stream_r1.ops.registry.base import ModelVersionInfo, Registry
from stream_r1.ops.store import ArtifactStore, credentials_from_env, local_manifest, safe_relative_path
from stream_r1.utils.logging import get_logger
from stream_r1.utils.names import suggest_run_id, validate_run_id

log = get_logger(__name__)

BACKENDS = ("local", "container", "pytorchjob", "trainjob")
CLUSTER_BACKENDS = ("pytorchjob", "trainjob")
PROMPTS_DIR = "prompts"
"""Folder of the fetched checkpoint set holding the public prompt suites (VBench, MovieGenBench files): the
data root of named ``eval_prompts`` suites in a cluster, where no ``../shared`` exists."""
REGISTRIES = ("mlflow", "kubeflow")


def resolve_run_id(run_id: str, job_id: str = "") -> str:
    """The run id: ``run_id`` if given (validated, never rewritten), else one derived from the KFP job id
    (``dsl.PIPELINE_JOB_ID_PLACEHOLDER``, a UUID: lower-cased, ``r-`` prefixed when it starts with a digit).

    Raises:
        ValueError: ``run_id`` is not a valid Kubernetes name (:func:`stream_r1.utils.names.validate_run_id`),
            or both are empty.
    """
    if run_id:
        return validate_run_id(run_id, "run_id")
    safe = suggest_run_id(job_id)
    if not safe:
        raise ValueError("no run id: pass run_id or the KFP job id placeholder")
    return validate_run_id(safe, "the KFP job id")


def run_prefix(run_id: str, step: str) -> str:
    """``runs/<run-id>/<step>``: where a step's outputs live in the bucket."""
    return f"runs/{run_id}/{step}"


def open_store(bucket: str) -> ArtifactStore:
    """The artifact store for ``bucket`` with credentials from the environment (bucket created if missing)."""
    store = ArtifactStore(credentials_from_env(), bucket)
    store.ensure_bucket()
    return store


def run_cli(args: list[str], log_file: Path | None = None) -> None:
    """Run ``python -m stream_r1 ARGS`` with this interpreter, streaming output into the step log.

    Raises:
        RuntimeError: the command failed (its last lines included).
    """
    cmd = [sys.executable, "-m", "stream_r1", *args]
    log.info("running: %s", " ".join(cmd))
    tail: list[str] = []
    logf = open(log_file, "a", encoding="utf-8") if log_file else None  # noqa: SIM115 - closed below
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.info("[%s] %s", args[0], line.rstrip())
            if logf:
                logf.write(line)
            tail = [*tail, line.rstrip()][-15:]
        code = proc.wait()
    finally:
        if logf:
            logf.close()
    if code != 0:
        raise RuntimeError(f"`stream-r1 {args[0]}` exited with code {code}:\n" + "\n".join(tail))


def fetch(source: str, bucket: str, run_id: str) -> FetchResult:
    """Step 1: the checkpoint set of ``source`` stored once (reused when already there); the run records its URI
    in ``runs/<run-id>/checkpoints.json``."""
    store = open_store(bucket)
    res = fetch_checkpoints(source, store)
    store.put_json(f"{run_prefix(run_id, 'checkpoints')}.json",
                   {"uri": res.uri, "source": source, "set_id": res.set_id, "reused": res.reused})
    return res


def shared_run_dir(shared_dir: str, run_id: str, step: str) -> Path:
    """``<shared_dir>/runs/<run-id>/<step>``: a step's working directory on the shared volume (the bucket's layout)."""
    return Path(shared_dir) / run_prefix(run_id, step)


def ode_init(checkpoints_uri: str, supplied: str, bucket: str, run_id: str, shared_dir: str, config: str = "tiny_cpu",
             overrides: list[str] | None = None) -> dict[str, Any]:
    """Step 2: the URI of the student's ODE-initialised weights (Self-Forcing ``ode_init.pt`` layout).

    With ``supplied`` (a file inside the checkpoint set such as ``ode_init.pt``, or an absolute path on the
    shared volume) the regression is skipped and nothing is copied: the result names that file. Otherwise
    ``stream-r1 ode-pairs`` (teacher trajectories) then ``stream-r1 ode-init`` (block-causal regression) run on
    the set, materialised once on the shared volume, and ``runs/<run-id>/ode_init/`` is published.

    Raises:
        FileNotFoundError: the supplied file does not exist.
        ValueError: a supplied name that is not a plain relative path.
    """
    store = open_store(bucket)
    if supplied and Path(supplied).is_absolute():
        if not Path(supplied).is_file():
            raise FileNotFoundError(f"ode_init_path {supplied!r} not found; pass a file inside the checkpoint set "
                                    "(e.g. ode_init.pt), a path on the shared volume, or '' to run the ODE regression")
        return {"skipped_regression": True, "uri": str(Path(supplied)), "source": supplied}
    if supplied:
        uri = f"{checkpoints_uri.rstrip('/')}/{safe_relative_path(supplied, what='ode_init_path')}"
        if not store.exists(key_of(uri, store)):
            raise FileNotFoundError(f"ode_init_path {supplied!r} not found in the checkpoint set ({uri}); pass a file "
                                    "inside it, a path on the shared volume, or '' to run the ODE regression")
        return {"skipped_regression": True, "uri": uri, "source": supplied}
    root = materialize_set(checkpoints_uri, store, shared_dir)
    work = shared_run_dir(shared_dir, run_id, "ode_init")
    common = ["--config", config, "--set", f"checkpoints.root={root}"]
    for o in overrides or []:
        common += ["--set", o]
    run_cli(["ode-pairs", *common, "--output", str(work / "work" / "pairs")])
    run_cli(["ode-init", *common, "--pairs", str(work / "work" / "pairs"), "--output", str(work / "work" / "init")])
    shutil.copyfile(work / "work" / "init" / "ode_init.pt", work / "ode_init.pt")
    # The teacher trajectories and the regression's logs are run outputs too.
    store.upload_dir(work / "work", run_prefix(run_id, "ode_init/work"))
    key = f"{run_prefix(run_id, 'ode_init')}/ode_init.pt"
    store.upload_file(work / "ode_init.pt", key)
    return {"skipped_regression": False, "uri": store.uri(key), "pairs_uri": store.uri(run_prefix(run_id, "ode_init/work/pairs"))}


def make_backend(name: str, **kwargs: Any) -> JobBackend:
    """The job backend ``name`` (``local | container | pytorchjob | trainjob``), each imported lazily.

    Raises:
        ValueError: unknown backend name.
    """
    if name == "local":
        from stream_r1.ops.jobs.local import LocalJobBackend

        return LocalJobBackend(**kwargs)
    if name == "container":
        from stream_r1.ops.jobs.container import ContainerJobBackend

        return ContainerJobBackend(**kwargs)
    if name in ("pytorchjob", "trainjob"):
        from stream_r1.ops.k8s import launcher  # the Kubernetes issue's backends

        return launcher.make_backend(name, **kwargs)
    raise ValueError(f"unknown job backend {name!r}; choose one of {', '.join(BACKENDS)}")


RUN_OUTPUTS_KEPT_LOCAL = ("checkpoints/", "final/")
"""Run-directory parts not copied to the bucket: resume state stays on the shared volume where the trainer
resumes from it, and ``final/`` is published once as the export (``runs/<run-id>/export/<id>/``)."""


def train(request: TrainJobRequest, backend: str, bucket: str, *, cluster: dict[str, Any] | None = None,
          job_id: str = "") -> JobResult:
    """Step 3: run the trainer through a job backend, then publish its logs, config and metrics.

    Args:
        request: What to train.
        backend: ``local | container | pytorchjob | trainjob``.
        bucket: Where the run's logs, config and metrics are published.
        cluster: ``ClusterJobSpec`` settings of a cluster backend (default: from the pod's environment).
        job_id: The KFP run id (labels the job; its launcher pod's Workflow becomes the job's owner).

    Raises:
        RuntimeError: the job did not succeed (its message included).
    """
    kwargs: dict[str, Any] = {}
    if backend in CLUSTER_BACKENDS:
        from stream_r1.ops.k8s.run_context import RunContext

        kwargs = {"cluster": cluster, "context": RunContext.from_env(os.environ, kfp_run_id=job_id)}
    result = make_backend(backend, **kwargs).run(request)
    if result.state != "Succeeded":
        raise RuntimeError(f"training job {request.run_id} ended {result.state}: {result.message}")
    files = {rel: meta for rel, meta in local_manifest(request.output_dir).items()
             if not rel.startswith(RUN_OUTPUTS_KEPT_LOCAL) and "/.tmp-" not in f"/{rel}"}
    store, prefix = open_store(bucket), run_prefix(request.run_id, "train")
    store.upload_dir(request.output_dir, prefix, files)
    store.remove_stale(prefix, set(files))  # a rerun of the run id replaces, never accumulates, its files
    return result


def make_registry(kind: str, uri: str) -> Registry:
    """The registry backend ``kind`` (``mlflow`` embedded default, ``kubeflow`` in a cluster).

    Raises:
        ValueError: unknown kind.
    """
    if kind == "mlflow":
        from stream_r1.ops.registry.mlflow_registry import MlflowRegistry

        return MlflowRegistry(uri)
    if kind == "kubeflow":
        from stream_r1.ops.registry import kubeflow  # the Kubernetes issue's backend (H8)

        return kubeflow.KubeflowModelRegistry.from_uri(uri)
    raise ValueError(f"unknown registry {kind!r}; choose one of {', '.join(REGISTRIES)}")


def gate(metrics: dict[str, float], metric: str, min_value: float, registry: Registry | None,
         model_name: str) -> tuple[bool, str]:
    """Step 4b: does this run deserve registration?

    Passes when ``metrics[metric] >= min_value`` and it is not worse than the latest registered
    version's value of the same metric (when there is one that recorded it).

    Raises:
        ValueError: ``metric`` is not among ``metrics``.
    """
    if metric not in metrics:
        raise ValueError(f"gate metric {metric!r} is not in the evaluation metrics; available: "
                         f"{', '.join(sorted(metrics))}")
    value = float(metrics[metric])
    if value < min_value:
        return False, f"{metric}={value:.6g} < threshold {min_value:.6g}"
    current = registry.latest(model_name) if registry is not None else None
    if current is not None and metric in current.metrics and value < current.metrics[metric]:
        return False, (f"{metric}={value:.6g} is worse than registered {model_name} "
                       f"{current.version} ({current.metrics[metric]:.6g})")
    return True, f"{metric}={value:.6g} passes (threshold {min_value:.6g}" + (
        f", registered {current.version}: {current.metrics.get(metric, float('nan')):.6g})" if current else ")")


def register(registry: Registry, info: ModelVersionInfo) -> ModelVersionInfo:
    """Step 5: register the exported student with its lineage (idempotent)."""
    return registry.register(info)


def record_exit(status: dict[str, Any], run_id: str, bucket: str, backend: str) -> dict[str, Any]:
    """Exit handler: write ``runs/<run-id>/status.json``; after a cancelled or failed run, clean up the cluster job.

    Never raises for a store/cluster problem (it runs after failures); problems go into the record.
    """
    record: dict[str, Any] = {"run_id": run_id, "backend": backend, **status}
    state = str(status.get("state", "")).upper()
    if state not in ("SUCCEEDED", "") and backend != "local":
        try:  # deletes a cancelled run's job, or a failed run's job that is still active (launcher.cleanup)
            record["job_cleanup"] = make_backend(backend).cleanup(run_id, state)
        except Exception as e:  # cleanup must not mask the pipeline's own failure
            record["cancel_error"] = repr(e)
    try:
        store = open_store(bucket)
        store.put_json(f"runs/{run_id}/status.json", record)
        record["status_uri"] = store.uri(f"runs/{run_id}/status.json")
    except Exception as e:  # same reason
        record["store_error"] = repr(e)
    log.info("pipeline exit: %s", json.dumps(record, sort_keys=True))
    return record


def read_metrics(path: str, metadata: dict[str, Any] | None = None) -> dict[str, float]:
    """Numeric metrics from a ``metrics.json`` file at ``path`` (else from KFP artifact ``metadata``)."""
    source: dict[str, Any] = dict(metadata or {})
    if Path(path).is_file():
        source = json.loads(Path(path).read_text(encoding="utf-8"))
    return {k: float(v) for k, v in source.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def train_step(checkpoints_uri: str, student_init: str, config: str, overrides: list[str], backend: str,
               nproc_per_node: int, bucket: str, run_id: str, shared_dir: str, model_dir: str, *,
               num_nodes: int = 1, cluster: dict[str, Any] | None = None, job_id: str = "") -> dict[str, Any]:
    """The ``train`` component's body: config checked first, inputs from the shared volume, then ``train``.

    ``nproc_per_node`` 0 means one process per GPU (``cluster["gpus_per_node"]``; 1 without GPUs);
    ``num_nodes``, ``cluster`` and ``job_id`` reach a cluster backend's job (:func:`train`).

    The run directory is ``<shared_dir>/runs/<run-id>/train`` (the training pods mount the same volume, so
    nothing is staged). The published student is one diffusers directory (``exports.build_export``) at a
    content-addressed prefix; a copy goes to ``model_dir`` (the step's Model artifact).

    Returns:
        Artifact metadata: ``export_uri``, ``config_hash``, ``config``, ``run_uri``, ``tensorboard_*``.
    """
    from stream_r1.config import config_hash, load_config

    store = open_store(bucket)
    root = materialize_set(checkpoints_uri, store, shared_dir)
    init = Path(student_init) if Path(student_init).is_absolute() else resolve_file(student_init, store, shared_dir)
    full = [f"checkpoints.root={root}", f"checkpoints.student_init={init}", *overrides]
    load_config(config, full)  # a bad preset/override fails here, before any job starts
    out_dir = shared_run_dir(shared_dir, run_id, "train")
    gpus = int((cluster or {}).get("gpus_per_node", 0)) if backend in CLUSTER_BACKENDS else 0
    request = TrainJobRequest(run_id=run_id, config=config, output_dir=str(out_dir), overrides=tuple(full),
                              num_nodes=num_nodes, nproc_per_node=nproc_per_node or max(gpus, 1))
    train(request, backend, bucket, cluster=cluster, job_id=job_id)
    # The recorded hash is of the config as the user wrote it: checkpoints.root/student_init above are this
    # run's paths (the student init is the ode_init step's output), which gave identical runs different hashes.
    chash = config_hash(load_config(config, list(overrides)))
    staging = shared_run_dir(shared_dir, run_id, "export-build")
    build_export(out_dir, staging, {"run_id": run_id, "config": config, "config_hash": chash})
    uri = publish_export(store, staging, run_id)
    local = mirror_path(uri, store, shared_dir)  # where evaluate finds it without a download
    if local.exists():
        shutil.rmtree(staging)
    else:
        local.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, local)
    shutil.copytree(local, model_dir, dirs_exist_ok=True)
    prefix = run_prefix(run_id, "train")
    return {"export_uri": uri, "config_hash": chash, "config": config, "run_uri": store.uri(prefix),
            "tensorboard_logdir": str(out_dir / "tensorboard"), "tensorboard_s3": f"{store.uri(prefix)}/tensorboard/"}


def tensorboard_markdown(s3_logdir: str, local_logdir: str) -> str:
    """The train step's Markdown artifact: where the event files are and how to open them."""
    return (f"# TensorBoard\n\nEvent files and `metrics.jsonl`: `{s3_logdir}` (copy of `{local_logdir}`).\n\n"
            f"Locally: `tensorboard --logdir {local_logdir} --host 127.0.0.1`\n\n"
            f"From S3: `aws s3 sync {s3_logdir} ./tb && tensorboard --logdir ./tb` (set `--endpoint-url` for "
            "MinIO/SeaweedFS), or point a Kubeflow `Tensorboard` resource's `logspath` at it.\n")


def evaluate_step(checkpoints_uri: str, export_uri: str, config: str, prompts: str, bucket: str, run_id: str,
                  shared_dir: str, metrics_path: str, report_path: str,
                  overrides: list[str] | None = None) -> dict[str, float]:
    """The ``evaluate`` component's body: ``stream-r1 evaluate`` on the published export; publish the outputs.

    Both inputs come from the shared volume (downloaded, verified, only when missing there). ``overrides`` are
    the run's config overrides, the ones training saw: the student is scored in the geometry it was trained in
    (a world's latent frames and side), not the preset's.

    Returns:
        The numeric entries of ``metrics.json`` (also copied to ``metrics_path``; the report to ``report_path``).
    """
    store = open_store(bucket)
    root = materialize_set(checkpoints_uri, store, shared_dir)
    student = materialize_dir(export_uri, store, shared_dir)
    out = shared_run_dir(shared_dir, run_id, "evaluate")
    args = ["evaluate", "--config", config, "--set", f"checkpoints.root={root}"]
    for o in overrides or []:
        args += ["--set", o]
    args += ["--checkpoint", str(student), "--prompts", prompts, "--output", str(out)]
    if (root / PROMPTS_DIR).is_dir():  # named public suites fetched with the checkpoint set
        args += ["--data-root", str(root / PROMPTS_DIR)]
    run_cli(args)
    for name in ("metrics.json", "report.html"):
        if not (out / name).is_file():
            raise FileNotFoundError(f"`stream-r1 evaluate` wrote no {name} in {out}")
    shutil.copyfile(out / "metrics.json", metrics_path)
    shutil.copyfile(out / "report.html", report_path)
    store.upload_dir(out, run_prefix(run_id, "evaluate"))
    return read_metrics(metrics_path)


def metrics_markdown(metrics: dict[str, float], uri: str) -> str:
    """The evaluate step's Markdown table of ``metrics`` (KFP renders it in the run's visualization panel)."""
    rows = "\n".join(f"| `{k}` | {v:.6g} |" for k, v in sorted(metrics.items()))
    return f"# Evaluation\n\nOutputs: `{uri}`\n\n| metric | value |\n|---|---|\n{rows}\n"


def register_export(export_uri: str, config_hash: str, metrics_path: str, registry: str, registry_uri: str,
                    model_name: str, data_revision: str, run_id: str, *, kfp_run_id: str = "",
                    kfp_run_name: str = "", namespace: str = "") -> ModelVersionInfo:
    """The ``register_model`` component's body: lineage from the train step's outputs + metrics (no weights read),
    and provenance: the KFP run id and name (placeholders) and the namespace (downward API env).

    Raises:
        ValueError: an empty export URI, or the version is already registered with another URI (immutable).
    """
    if not export_uri.startswith("s3://"):
        raise ValueError(f"export_uri={export_uri!r} is not an s3:// URI; it must come from the train component")
    info = ModelVersionInfo(name=model_name, version=run_id, uri=export_uri, run_id=run_id, namespace=namespace,
                            kfp_run_id=kfp_run_id, kfp_run_name=kfp_run_name, config_hash=config_hash,
                            data_revision=data_revision, metrics=read_metrics(metrics_path),
                            description=f"stream-r1 run {run_id}")
    return register(make_registry(registry, registry_uri), info)
