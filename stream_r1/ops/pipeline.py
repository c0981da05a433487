"""Compile, run locally (the embedded default), submit and schedule the Stream-R1 KFP pipeline.

The DAG lives in ``pipelines/stream_r1.py`` next to ``components/`` (thin KFP definitions, not part of
the installed package); it is loaded from its file so the library has no import edge to it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_r1.ops.endpoints import check_reachable
from stream_r1.ops.local_world import local_world, materialize, run_arguments
from stream_r1.ops.run_summary import LocalRunSummary
from stream_r1.ops.seaweed import S3Credentials, SeaweedServer
from stream_r1.ops.store import ArtifactStore, credentials_from_env
from stream_r1.utils.logging import get_logger
from stream_r1.utils.names import validate_run_id

log = get_logger(__name__)

PIPELINE_FILE = Path("pipelines") / "stream_r1.py"
COMPILED_FILE = Path("pipelines") / "compiled" / "stream_r1.yaml"


def repo_root() -> Path:
    """The checkout holding ``pipelines/`` and ``components/`` (the package's parent, else the cwd).

    Raises:
        FileNotFoundError: neither has ``pipelines/stream_r1.py``.
    """
    for cand in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (cand / PIPELINE_FILE).is_file():
            return cand
    raise FileNotFoundError(f"{PIPELINE_FILE} not found next to the stream_r1 package or in {Path.cwd()}; "
                            "run from the repository root")


def load_pipeline(root: Path | None = None) -> Callable[..., Any]:
    """Import ``pipelines/stream_r1.py`` from the checkout and return its pipeline function."""
    root = root or repo_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # components/ is imported as a top-level package by the DAG file
    spec = importlib.util.spec_from_file_location("stream_r1_pipeline_def", root / PIPELINE_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.stream_r1_pipeline


LOCAL_RETRY_BACKOFF_SECONDS = (1, 4)
"""run-local's wait before a task's first retry, and its longest wait (the DAG's: 60 s, doubling to 900 s)."""


def shorten_retry_backoff(pipeline: Any, first_seconds: int = LOCAL_RETRY_BACKOFF_SECONDS[0],
                          max_seconds: int = LOCAL_RETRY_BACKOFF_SECONDS[1]) -> int:
    """Shorten the retry waits of every task in ``pipeline``'s spec (as :func:`load_pipeline` returns it); the
    number of retries stays. Returns how many tasks retry.

    Why: ``kfp.local`` sleeps each retry's backoff as a cluster would, and the DAG's 60 s + 120 s, meant for a
    pod rescheduled or a job re-attached, kept a run-local whose local S3 server had died going for 3.5 min
    before it could report the failure. On one machine a retry that can succeed succeeds at once. Only the
    in-memory spec of this run changes; the compiled pipeline keeps the DAG's policy.
    """
    spec = pipeline.pipeline_spec
    dags = [spec.root.dag] + [c.dag for c in spec.components.values() if c.HasField("dag")]
    retrying = 0
    for dag in dags:
        for task in dag.tasks.values():
            if task.HasField("retry_policy") and task.retry_policy.max_retry_count > 0:
                task.retry_policy.backoff_duration.seconds = first_seconds
                task.retry_policy.backoff_max_duration.seconds = max_seconds
                retrying += 1
    return retrying


def compile_pipeline(output: str | Path | None = None) -> Path:
    """Compile the DAG to IR YAML (default ``pipelines/compiled/stream_r1.yaml``) and return its path."""
    from kfp import compiler

    root = repo_root()
    out = Path(output) if output else root / COMPILED_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(load_pipeline(root), package_path=str(out))
    out.write_text(stable_header(out.read_text()))
    return out


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


def stable_header(text: str) -> str:
    """The compiled YAML with its header comment made byte-reproducible.

    KFP's header lists each input as ``#    name: type [Default: ...]``, printing dict and list defaults in
    protobuf map order, which changes from process to process; those lines are rewritten from the IR with
    sorted keys. Nothing but comments changes.
    """
    import yaml

    spec = next(yaml.safe_load_all(text))
    params = ((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.startswith("#    ") or " [Default: " not in line:
            continue
        name = line[5:].split(":", 1)[0]
        default = (params.get(name) or {}).get("defaultValue")
        if isinstance(default, (dict, list)):
            lines[i] = line[: line.index(" [Default: ")] + f" [Default: {_sorted_keys(default)}]"
    return "\n".join(lines)


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` -> pipeline arguments; values parsed as JSON when they parse (numbers, lists), else strings.

    Raises:
        ValueError: an item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"pipeline parameter {item!r} must look like name=value (e.g. backend=pytorchjob)")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def pipeline_arguments(config: str, params: dict[str, Any]) -> dict[str, Any]:
    """Arguments for a run: ``config`` checked by loading it (torch-free), then ``params`` on top.

    Raises:
        ValueError: unknown parameter names, an invalid ``run_id`` or a config that does not load.
    """
    from stream_r1.config import load_config

    inputs = load_pipeline().component_spec.inputs or {}
    unknown = sorted(set(params) - set(inputs))
    if unknown:
        raise ValueError(f"unknown pipeline parameter(s) {unknown}; known: {', '.join(sorted(inputs))}")
    missing = sorted(k for k, spec in inputs.items() if not spec.optional and k not in params and k != "config")
    if missing:
        raise ValueError(f"missing required pipeline parameter(s) {missing}; pass them as --param NAME=VALUE "
                         "(e.g. --param checkpoint_source=s3://bucket/checkpoints/wan2.1)")
    if params.get("run_id"):
        validate_run_id(params["run_id"], "--param run_id")
    load_config(config, list(params.get("overrides", [])))
    return {"config": config, **params}


LOCAL_ARGUMENTS: dict[str, Any] = {
    "backend": "local",
    "num_nodes": 1,
    "gpus_per_node": 0,
    "nproc_per_node": 1,
    "node_selector": {},
    "tolerations": [],
    "registry": "mlflow",
    "eval_prompts": "tiny",
    "ode_init_path": "",
}
"""What ``run-local`` passes over the pipeline's cluster defaults: training in a subprocess here, the embedded
MLflow registry (``registry_uri`` = the workdir's SQLite file), the packaged tiny prompts, the real ODE
regression (about 50 s on the tiny config)."""


def cluster_arguments(config: str, params: dict[str, Any]) -> dict[str, Any]:
    """Arguments for a cluster run: the pipeline's defaults (the cluster's), the preset's student init as
    ``ode_init_path`` (so a supplied Self-Forcing ``ode_init.pt`` skips the regression), then ``params``;
    checked like ``pipeline_arguments``."""
    from stream_r1.config import load_config

    cfg = load_config(config, list(params.get("overrides", [])))
    args = pipeline_arguments(config, {"ode_init_path": cfg.checkpoints.student_init, **params})
    check_backend_for_images(str(args.get("backend", "pytorchjob")))  # absent: the pipeline's default
    return args


def check_backend_for_images(backend: str) -> None:
    """Refuse ``backend=local`` where the steps run in images: it trains inside the train step's own process,
    and that step is a launcher on the ops image, which has no torch (it would fail after fetch and ODE init).

    Raises:
        ValueError: ``backend`` is ``local``.
    """
    if backend == "local":
        raise ValueError("backend=local trains inside the launcher step, whose image (ops) has no torch; use "
                         "backend=pytorchjob or trainjob in a cluster (run-local --runner docker uses container)")


def kfp_client(host: str, namespace: str, token_file: str | None = None) -> Any:
    """``kfp.Client`` for ``host``; token from ``--token-file`` or env ``KFP_TOKEN`` (else none: in-cluster/dev).

    Raises:
        UnreachableError: nothing accepts a connection at ``host`` (checked in seconds, before the client's retries).
    """
    import kfp

    check_reachable(host, "--host")

    token = Path(token_file).read_text().strip() if token_file else os.environ.get("KFP_TOKEN") or None
    return kfp.Client(host=host, namespace=namespace, existing_token=token)


LAUNCHER_SERVICE_ACCOUNT = "stream-r1-launcher"
"""The ServiceAccount (manifests/base/rbac.yaml) allowed to create/watch/delete the training job."""


def submit(client: Any, arguments: dict[str, Any], *, experiment: str, run_name: str, namespace: str,
           package: str | Path | None = None, service_account: str = LAUNCHER_SERVICE_ACCOUNT) -> str:
    """Submit one run of the compiled package as ``service_account``; returns the KFP run id."""
    package = str(package or compile_pipeline(Path(tempfile.mkdtemp()) / "stream_r1.yaml"))
    result = client.create_run_from_pipeline_package(package, arguments=arguments, run_name=run_name,
                                                     experiment_name=experiment, namespace=namespace,
                                                     enable_caching=False, service_account=service_account)
    return str(result.run_id)


def validate_cron(cron: str) -> str:
    """KFP wants 6-field cron (seconds first), e.g. ``0 0 3 * * 1`` = Mondays 03:00.

    Raises:
        ValueError: not 6 fields.
    """
    if len(cron.split()) != 6:
        raise ValueError(f"cron {cron!r} has {len(cron.split())} fields; KFP needs 6 (sec min hour dom month dow), "
                         "e.g. '0 0 3 * * 1'")
    return cron


def package_version_name(package: str | Path) -> str:
    """``<stream_r1 version>-<sha256 of the package, 12 hex>``: the same package is the same version."""
    import hashlib

    from stream_r1 import __version__

    digest = hashlib.sha256(Path(package).read_bytes()).hexdigest()[:12]
    return f"{__version__}-{digest}"


def upload_version(client: Any, package: str | Path, *, pipeline_name: str = "stream-r1",
                   namespace: str | None = None) -> tuple[str, str]:
    """Upload ``package`` as a version of pipeline ``pipeline_name`` (created on first use); idempotent.

    Returns:
        ``(pipeline_id, pipeline_version_id)``; a version of the same name (same content) is reused.
    """
    package = str(package)
    pipeline_id = client.get_pipeline_id(pipeline_name)
    if pipeline_id is None:  # its first version is named after the pipeline; the content-named one follows
        pipeline_id = client.upload_pipeline(package, pipeline_name=pipeline_name, namespace=namespace).pipeline_id
    name = package_version_name(package)
    versions = client.list_pipeline_versions(pipeline_id, page_size=100).pipeline_versions or []
    same = [v for v in versions if v.display_name == name]
    if same:
        return str(pipeline_id), str(same[0].pipeline_version_id)
    version = client.upload_pipeline_version(package, pipeline_version_name=name, pipeline_id=pipeline_id)
    return str(pipeline_id), str(version.pipeline_version_id)


@dataclass
class ScheduleResult:
    """What ``schedule`` did."""

    recurring_run_id: str
    pipeline_id: str
    pipeline_version_id: str
    created: bool
    """False: a recurring run of that name already existed; it runs the new version from its next trigger."""


def describe_schedule(rec: ScheduleResult, job_name: str, cron: str) -> str:
    """One line for the user: which recurring run, and which pipeline version it runs."""
    if rec.created:
        return (f"recurring run {rec.recurring_run_id} ({job_name}, cron '{cron}', max_concurrency=1, no catch-up) "
                f"runs the latest version of pipeline {rec.pipeline_id}, now {rec.pipeline_version_id}")
    return (f"recurring run {rec.recurring_run_id} ({job_name}) already exists and is unchanged; its next run uses "
            f"pipeline version {rec.pipeline_version_id}")


def schedule(client: Any, arguments: dict[str, Any], *, experiment: str, job_name: str, cron: str, namespace: str,
             package: str | Path | None = None, service_account: str = LAUNCHER_SERVICE_ACCOUNT,
             pipeline_name: str = "stream-r1") -> ScheduleResult:
    """Upload the package as a pipeline version and schedule the pipeline (one run at a time, no catch-up).

    The recurring run references the *pipeline*, not a frozen copy of the package: KFP (2.5 and later)
    starts each scheduled run from the pipeline's latest version. So an upgrade is a new version under the
    same schedule: calling this again with a new package uploads it and keeps the existing recurring run
    ``job_name`` (and its parameters) unchanged. To change parameters or the cron, delete the recurring run
    and schedule again.
    """
    import kfp_server_api

    package = str(package or compile_pipeline(Path(tempfile.mkdtemp()) / "stream_r1.yaml"))
    pipeline_id, version_id = upload_version(client, package, pipeline_name=pipeline_name, namespace=namespace)
    exp = client.create_experiment(experiment, namespace=namespace)
    runs = client.list_recurring_runs(experiment_id=exp.experiment_id, page_size=100).recurring_runs or []
    existing = [r for r in runs if r.display_name == job_name]
    if existing:
        return ScheduleResult(str(existing[0].recurring_run_id), pipeline_id, version_id, created=False)
    body = kfp_server_api.V2beta1RecurringRun(
        display_name=job_name, experiment_id=exp.experiment_id, mode=kfp_server_api.RecurringRunMode.ENABLE,
        pipeline_version_reference=kfp_server_api.V2beta1PipelineVersionReference(pipeline_id=pipeline_id),
        runtime_config=kfp_server_api.V2beta1RuntimeConfig(parameters=arguments),
        trigger=kfp_server_api.V2beta1Trigger(cron_schedule=kfp_server_api.V2beta1CronSchedule(
            cron=validate_cron(cron))),
        max_concurrency=1, no_catchup=True, service_account=service_account)
    # kfp.Client.create_recurring_run insists on a version id (a pinned, never-upgraded schedule); the
    # version-less reference goes through the same generated API client the SDK uses.
    rec = client._recurring_run_api.recurring_run_service_create_recurring_run(recurring_run=body)
    return ScheduleResult(str(rec.recurring_run_id), pipeline_id, version_id, created=True)


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    """Temporarily export ``values`` (the local runner's task subprocesses inherit the environment)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_endpoint(endpoint: str, bucket: str | None = None) -> S3Credentials:
    """An existing S3 endpoint, checked in seconds: it accepts a connection and (with ``bucket``) the keys.

    The bucket is created if missing. Wrong keys or a closed port are one line before any step runs,
    not minutes of retries inside them.

    Raises:
        UnreachableError: nothing answers at ``endpoint``.
        StoreAuthError: the endpoint rejects the keys.
        ValueError: keys missing from the environment, or what answers is not an S3 server.
    """
    from minio.error import InvalidResponseError

    check_reachable(endpoint, "--endpoint")
    creds = credentials_from_env({**os.environ, "STREAM_R1_S3_ENDPOINT": endpoint})
    if bucket:
        try:
            ArtifactStore(creds, bucket, max_attempts=1, connect_timeout_seconds=5.0).ensure_bucket()
        except InvalidResponseError as e:  # e.g. a web server or proxy on that port
            status = getattr(e, "_code", None) or "an unexpected response"
            raise ValueError(f"--endpoint {endpoint} answered, but not as an S3 server (HTTP {status}, no S3 XML); "
                             "check the scheme, host and port of the S3 API") from None
    return creds


@contextlib.contextmanager
def s3_endpoint(endpoint: str | None, data_dir: Path) -> Iterator[S3Credentials]:
    """An existing endpoint (credentials from env) or a loopback SeaweedFS started (and stopped) here."""
    if endpoint:
        yield credentials_from_env({**os.environ, "STREAM_R1_S3_ENDPOINT": endpoint})
        return
    with SeaweedServer(data_dir) as creds:
        yield creds


def run_local(*, workdir: str | Path = ".stream-r1/local", endpoint: str | None = None, bucket: str = "stream-r1",
              config: str | None = None, params: dict[str, Any] | None = None,
              runner: str = "subprocess", world: str = "tiny", world_size: str = "ci") -> LocalRunSummary:
    """Run the whole DAG with ``kfp.local`` on a local checkpoint set and a real S3 store.

    Every input is checked before any work; the console shows one line per step (the full output goes
    to ``<workdir>/logs/<run-id>-<time>.log``); a stop signal (SIGTERM/SIGINT/SIGHUP) stops every process
    the run started, SeaweedFS included; and on every exit path the summary says what exists where.

    Args:
        workdir: Persistent state: ``seaweed/`` (the bucket), ``registry.db``, ``pipeline_root/``,
            ``tiny-checkpoints/`` or ``shapes-world-<size>/``, ``shared/`` (the shared volume: checkpoint sets, run
            directories), ``logs/``.
            A fresh temp dir is used as the KFP workspace (kfp.local deletes it).
        endpoint: Existing S3 URL (keys from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``); None starts SeaweedFS.
        bucket: Bucket for ``runs/<run-id>/...``.
        config: Preset or YAML path (None: the world's, ``tiny_cpu`` or ``shapes_cpu``).
        params: Extra pipeline arguments; ``run_id`` (validated) names the run, else one is generated.
        runner: ``subprocess`` (every step in this process's venv, the fast default) or ``docker`` (every step
            in its cluster image through podman, training as a sibling container: ``stream_r1.ops.containers``).
        world: ``tiny`` (random checkpoints: every step runs, nothing is learnt) or ``shapes`` (the trained synthetic
            world with ground-truth scores, built on first use and cached: ``stream_r1.ops.local_world``).
        world_size: The shapes world's build size (``ci`` or ``default``).

    Raises:
        ValueError: unknown ``runner``, a bad parameter, config or run id (before any work).
        UnreachableError, StoreAuthError: ``endpoint`` does not answer or refuses the keys (in seconds).
        stream_r1.ops.podman.EngineMissing: ``runner="docker"`` and podman or the docker SDK is missing.
    """
    from kfp import local

    from stream_r1.ops import containers, steps
    from stream_r1.ops.process_tree import RunInterrupted, kill_until_quiet, stop_tree_on_signals
    from stream_r1.ops.run_console import RunConsole
    from stream_r1.ops.run_summary import collect_local, collect_store, new_run_dirs

    if runner not in containers.RUNNERS:
        raise ValueError(f"unknown runner {runner!r}; choose one of {', '.join(containers.RUNNERS)}")
    if runner == "docker":
        containers.check_prerequisites()  # before any work: one line naming what is missing
        check_backend_for_images(str((params or {}).get("backend", "container")))
    start, start_wall = time.monotonic(), time.time()
    params = dict(params or {})
    workdir = Path(workdir).resolve()
    run_id = (validate_run_id(params["run_id"], "--param run_id") if params.get("run_id") else
              steps.resolve_run_id(f"local-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"))
    chosen = local_world(world, workdir, world_size)
    config = config or chosen.config
    params = run_arguments(chosen, params)
    args = pipeline_arguments(config, {**LOCAL_ARGUMENTS, "checkpoint_source": str(chosen.source), "bucket": bucket,
                                       "registry_uri": str(workdir / "registry.db"),
                                       "shared_dir": str(workdir / "shared"),
                                       # in containers the launcher (ops image, no torch) runs a sibling job
                                       **({"backend": "container"} if runner == "docker" else {}),
                                       **params, "run_id": run_id})
    model_name = str(args.get("model_name", "stream-r1-student"))
    summary = LocalRunSummary(run_id=run_id, state="", bucket=bucket, endpoint=endpoint or "")
    pipeline_root = workdir / "pipeline_root"
    before = {d.name for d in pipeline_root.iterdir()} if pipeline_root.is_dir() else set()
    if endpoint:
        check_endpoint(endpoint, bucket)  # before any work
    console = RunConsole(workdir / "logs" / f"{run_id}-{time.strftime('%Y%m%d-%H%M%S')}.log")
    store: ArtifactStore | None = None
    with stop_tree_on_signals(), console:
        try:
            console.note(f"run {run_id}: full log in {console.log_path}")
            with s3_endpoint(endpoint, workdir / "seaweed") as creds, _env(creds.env()), \
                    tempfile.TemporaryDirectory(prefix="stream-r1-kfp-ws-") as ws_parent, \
                    contextlib.ExitStack() as stack:
                summary.endpoint = creds.url
                store = ArtifactStore(creds, bucket, max_attempts=2, connect_timeout_seconds=5.0)
                if chosen.name == "shapes":
                    console.note(f"shapes world ({chosen.size}) in {chosen.source}: built on the first run (minutes), "
                                 "verified and reused after")
                materialize(chosen, steps.run_cli)
                if runner == "docker":
                    containers.make_readable(chosen.source)
                workspace = Path(ws_parent) / "workspace"  # rmtree'd by kfp.local after the run
                workspace.mkdir()
                kfp_runner: Any = local.SubprocessRunner(use_venv=False)
                if runner == "docker":
                    rt = stack.enter_context(containers.container_runtime(repo_root(), workdir, pipeline_root,
                                                                          creds.env()))
                    kfp_runner = rt.runner()
                local.init(runner=kfp_runner, pipeline_root=str(pipeline_root), workspace_root=str(workspace),
                           raise_on_error=True)
                try:
                    with warnings.catch_warnings():
                        # kfp.local warns when an image name lacks "python"; ours is pinned on purpose.
                        warnings.filterwarnings("ignore", message="You may be attemping", category=RuntimeWarning)
                        pipeline = load_pipeline()
                        shorten_retry_backoff(pipeline)
                        pipeline(**args)
                except (RuntimeError, ValueError) as e:  # ValueError: kfp.local found a task's outputs missing
                    summary.error = str(e).splitlines()[0]
                finally:
                    stack.close()
                summary.state = {"SUCCESS": "SUCCEEDED", "FAILURE": "FAILED"}.get(console.pipeline_state, "")
                collect_store(summary, store, workdir / "registry.db", model_name)
                if runner == "docker":
                    runs = [d for d in pipeline_root.iterdir() if d.is_dir() and d.stat().st_mtime >= start_wall]
                    failed = [t for d in runs for t in containers.unfinished_tasks(d)]
                    if failed:  # the exit handler may have recorded the status kfp reported: success
                        summary.state = "FAILED"
                        console.mark_failed(failed)  # the summary then names the step and its own error
                        summary.error = (f"task(s) {', '.join(failed)} exited without writing their outputs "
                                         f"(kfp's DockerRunner reported success; see {console.log_path})")
        except RunInterrupted as e:
            kill_until_quiet()
            summary.state, summary.error = "INTERRUPTED", f"{e}; every process the run started was stopped"
            summary.exit_code = e.exit_code
        except Exception as e:  # e.g. make-tiny-checkpoints or the S3 server failing: still a summary
            summary.state = summary.state or "FAILED"
            summary.error = summary.error or f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log.debug("run-local failed", exc_info=True)
    collect_local(summary, console, new_run_dirs(pipeline_root, before),
                  workdir / "shared" / steps.run_prefix(run_id, "train"))
    if summary.state == "INTERRUPTED" and store is not None:
        summary.store_error = "S3 not listed: the run was stopped (its server too, when run-local started it)"
    summary.state = summary.state or ("FAILED" if summary.error else "SUCCEEDED")
    if summary.state == "SUCCEEDED":
        summary.exit_code = 0
    summary.wall_seconds = time.monotonic() - start
    return summary
