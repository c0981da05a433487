"""``JobBackend`` for PyTorchJob (v1) and TrainJob (v2): create or re-attach, wait, stream logs, clean up.

Runs inside the CPU-only KFP launcher pod. The job gets the GPUs; the launcher only talks to the API.
Every wait goes through an injected ``clock``/``sleep`` so it never busy-loops and tests run instantly.
Pod restarts need no action here: the container command carries ``--resume auto`` and the run
directory lives on the PVC, so a restarted pod continues from the newest verified checkpoint.

The job outlives the launcher pod. It is deleted only when the run is really cancelled (SIGTERM and
the run's Workflow says so, :mod:`stream_r1.ops.k8s.run_context`), when the launcher's own deadline
passes, when it holds GPUs for a failure that will not resolve (stuck image pull, unschedulable
replica), and by the exit handler of a failed run while it is still active (:meth:`cleanup`). A bare
SIGTERM (node drain, eviction) or an API outage leaves it running; the retried step re-attaches
(HTTP 409 on create). Re-attaching to a Failed job deletes it and creates it again: the new pods
resume from the newest PVC checkpoint (``--resume auto``). Deleting the run deletes the job through
its owner reference to the run's Workflow.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Literal

from stream_r1.ops.jobs.base import JobResult, TrainJobRequest
from stream_r1.ops.k8s import pytorchjob, trainjob, webhook_rules
from stream_r1.ops.k8s.api import ApiError, JobKind, KubeApi
from stream_r1.ops.k8s.logs import LogStreams
from stream_r1.ops.k8s.run_context import Owner, RunContext, find_owner, run_cancelled
from stream_r1.ops.k8s.spec import ClusterJobSpec, job_name_for
from stream_r1.ops.k8s.staging import copy_back, stage_request
from stream_r1.ops.k8s.waiter import Observation, Phase, WaitPolicy, WaitState, advance, job_status
from stream_r1.utils.logging import get_logger
from stream_r1.utils.names import validate_run_id

_log = get_logger(__name__)
BackendName = Literal["pytorchjob", "trainjob"]
_KINDS: dict[str, JobKind] = {"pytorchjob": "PyTorchJob", "trainjob": "TrainJob"}
_CREATE_ATTEMPTS = 4
_GONE_TIMEOUT_SECONDS = 600.0  # foreground deletion of a failed job waits for its pods to terminate
_GONE_POLL_SECONDS = 5.0
_CANCELLED_STATES = frozenset({"CANCELED", "CANCELLED", "CANCELING", "CANCELLING"})


class _Interrupted(Exception):
    """SIGTERM arrived: the run was cancelled, or the launcher pod is being drained/evicted."""


class KubernetesJobBackend:
    """Launch a training request as a PyTorchJob or TrainJob and wait for it to finish."""

    def __init__(
        self,
        name: BackendName,
        api: KubeApi,
        cluster: Mapping[str, Any],
        *,
        policy: WaitPolicy | None = None,
        poll_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        log_sink: Callable[[str], None] | None = None,
        handle_sigterm: bool = True,
        context: RunContext | None = None,
        log_threads: bool = True,
    ) -> None:
        """Args:
        name: ``"pytorchjob"`` (Training Operator v1) or ``"trainjob"`` (Trainer v2).
        api: The Kubernetes API (``KubernetesClientApi.from_environment()`` on a cluster).
        cluster: Keyword arguments of :meth:`ClusterJobSpec.from_request` (image, namespace, ...).
        policy: Wait limits (overall deadline, fail-fast without status, API error budget).
        poll_seconds: Interval between status/log polls (a watch wakes the launcher earlier).
        clock, sleep: Injected time source and sleeper (tests pass fakes).
        log_sink: Receives every replica's log lines (default: this module's logger).
        handle_sigterm: Stop waiting when SIGTERM arrives (main thread only); the job is deleted only
            when the run is being cancelled.
        context: The KFP run and launcher pod (owner reference, run label); default: none known.
        log_threads: Follow each pod's log on a background thread (False: inline, for test fakes
            whose streams end at once).

        Raises:
            ValueError: unknown backend name or missing ``image``.
        """
        if name not in _KINDS:
            raise ValueError(f"backend name={name!r} is not one of {sorted(_KINDS)}")
        if "image" not in cluster:
            raise ValueError("cluster settings need 'image' (components/_shared/images.py STREAM_R1_TRAIN_IMAGE)")
        self.name = name
        self.kind: JobKind = _KINDS[name]
        self._api = api
        self._cluster = dict(cluster)
        self._policy = policy or WaitPolicy()
        self._poll = poll_seconds
        self._clock = clock
        self._sleep = sleep
        self._sink = log_sink or _log.info
        self._handle_sigterm = handle_sigterm
        self._context = context or RunContext()
        self._owner = Owner()
        self._log_threads = log_threads

    def spec_for(self, request: TrainJobRequest) -> ClusterJobSpec:
        """The cluster spec of a request (validates settings; raises ValueError before any API call)."""
        extra: dict[str, Any] = {"owner_references": self._owner.references}
        if self._context.kfp_run_id:
            extra["kfp_run_id"] = self._context.kfp_run_id
        return ClusterJobSpec.from_request(request, **{**extra, **self._cluster})

    def build(self, spec: ClusterJobSpec) -> dict[str, Any]:
        """The job manifest of a spec, checked against the admission rules."""
        body = pytorchjob.build_pytorchjob(spec) if self.kind == "PyTorchJob" else trainjob.build_trainjob(spec)
        webhook_rules.check(body)
        return body

    def run(self, request: TrainJobRequest) -> JobResult:
        """Create (or re-attach to) the run's job and wait until it ends, is cancelled or times out.

        Paths not on the runs PVC (KFP artifact paths) are staged onto it first and the finished run
        directory is copied back to ``request.output_dir`` (:mod:`stream_r1.ops.k8s.staging`).
        """
        validate_run_id(request.run_id, "run_id")  # it names the job, a PVC directory and S3 keys
        mount = str(self._cluster.get("pvc_mount_path", "/mnt/runs"))
        name = job_name_for(self._cluster.get("name_prefix", "stream-r1"), request.run_id)
        self.build(self.spec_for(replace(request, output_dir=f"{mount}/{name}/train")))  # settings fail fast
        staged = stage_request(request, mount, name)
        self._owner = find_owner(self._api, self._context, str(self._cluster.get("namespace", "stream-r1")))
        spec = self.spec_for(staged.request)
        body = self.build(spec)
        failed = self._preflight(spec) or self._create_or_attach(spec, body)
        if failed:
            return JobResult(state="Failed", output_dir=request.output_dir, message=failed)
        streams = LogStreams(self._api, spec.namespace, self._container, self._sink, threaded=self._log_threads)
        try:
            with self._sigterm_interrupts():
                result = self._wait(spec, streams)
        except (_Interrupted, KeyboardInterrupt):
            return replace(self._interrupted(spec), output_dir=request.output_dir)
        streams.finish()
        if result.state == "Succeeded":
            copy_back(staged)
        return replace(result, output_dir=request.output_dir)

    def cancel(self, run_id: str) -> None:
        """Delete the job of ``run_id`` (idempotent: an absent job is fine)."""
        validate_run_id(run_id, "run_id")
        name = job_name_for(self._cluster.get("name_prefix", "stream-r1"), run_id)
        self._delete(self._cluster.get("namespace", "stream-r1"), name)

    def cleanup(self, run_id: str, pipeline_state: str) -> str:
        """The exit handler's policy for the job of a finished run; returns what it did.

        A cancelled run's job is deleted. A failed run's job is deleted only while it is still active
        (the launcher gave up on it, e.g. after a long API outage, and it would hold GPUs until its
        deadline); a job that already ended is kept, pods included, so its logs stay readable until
        ``ttlSecondsAfterFinished``. A succeeded run's job is left to that TTL.
        """
        state = pipeline_state.strip().upper()
        namespace = str(self._cluster.get("namespace", "stream-r1"))
        name = job_name_for(self._cluster.get("name_prefix", "stream-r1"), run_id)
        if state == "SUCCEEDED":
            return f"kept {self.kind} {name} (run succeeded; removed after its TTL)"
        if state in _CANCELLED_STATES:
            self._delete(namespace, name)
            return f"deleted {self.kind} {name} (run cancelled)"
        try:
            job = self._api.get_job(self.kind, namespace, name)
        except ApiError as e:
            if e.status == 404:
                return f"no {self.kind} {name}"
            raise
        phase = job_status(self.kind, job).phase
        if phase in (Phase.SUCCEEDED, Phase.FAILED):
            return f"kept {self.kind} {name} ({phase.value}; pods kept for their logs until the TTL)"
        self._delete(namespace, name)
        return f"deleted {self.kind} {name} (run {state or 'failed'} while the job was {phase.value})"

    @property
    def _container(self) -> str:
        return pytorchjob.CONTAINER if self.kind == "PyTorchJob" else trainjob.NODE

    # -- steps ------------------------------------------------------------------------------------

    def _preflight(self, spec: ClusterJobSpec) -> str:
        """Fail fast when the CRD is missing or RBAC forbids us (else the wait would never end)."""
        try:
            self._api.list_jobs(self.kind, spec.namespace, 1)
        except ApiError as e:
            if e.status == 404:
                return (f"the {self.kind} CRD is not installed in this cluster "
                        f"({'Training Operator v1.9' if self.kind == 'PyTorchJob' else 'Kubeflow Trainer v2.3'} needed)")
            if e.status in (401, 403):
                return (f"not allowed to list {self.kind}s in namespace {spec.namespace} ({e}); "
                        "apply manifests/base rbac.yaml and run the launcher as the stream-r1-launcher account")
            _log.warning("pre-flight list of %ss failed (%s); continuing", self.kind, e)
        return ""

    def _create_or_attach(self, spec: ClusterJobSpec, body: dict[str, Any], recreate: bool = True) -> str:
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            try:
                self._api.create_job(self.kind, spec.namespace, body)
                _log.info("created %s %s/%s", self.kind, spec.namespace, spec.job_name)
                return ""
            except ApiError as e:
                if e.status == 409:  # a retried launcher, or a create that succeeded before a 5xx
                    return self._attach(spec, body, recreate)
                if _transient(e):
                    _log.warning("create %s failed (attempt %d/%d): %s", self.kind, attempt, _CREATE_ATTEMPTS, e)
                    self._sleep(min(2.0**attempt, 30.0))
                    continue
                return f"the API rejected {self.kind} {spec.job_name}: {e}"
        return f"could not create {self.kind} {spec.job_name} after {_CREATE_ATTEMPTS} attempts"

    def _attach(self, spec: ClusterJobSpec, body: dict[str, Any], recreate: bool) -> str:
        existing: dict[str, Any] | None = None
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            try:
                existing = self._api.get_job(self.kind, spec.namespace, spec.job_name)
                break
            except ApiError as e:
                if not _transient(e) or attempt == _CREATE_ATTEMPTS:
                    return f"{self.kind} {spec.job_name} exists but cannot be read: {e}"
                self._sleep(min(2.0**attempt, 30.0))
        assert existing is not None
        owner = ((existing.get("metadata") or {}).get("labels") or {}).get("stream-r1/run-id")
        if owner != spec.job_name:
            return (f"a {self.kind} named {spec.job_name} exists but was not created for this run "
                    f"(label stream-r1/run-id={owner!r}); delete it or use another run id")
        phase = job_status(self.kind, existing).phase
        if phase is Phase.FAILED and recreate:
            # A retried step after a failed job: a new job resumes from the PVC checkpoint (--resume auto).
            _log.warning("%s %s/%s has Failed: deleting it and creating it again to resume from its newest "
                         "checkpoint", self.kind, spec.namespace, spec.job_name)
            self._delete(spec.namespace, spec.job_name)
            gone = self._wait_gone(spec)
            return gone or self._create_or_attach(spec, body, recreate=False)
        _log.info("re-attached to existing %s %s/%s (%s)", self.kind, spec.namespace, spec.job_name, phase.value)
        return ""

    def _wait_gone(self, spec: ClusterJobSpec) -> str:
        """Wait until a deleted job is gone (foreground deletion removes the pods first)."""
        t0 = self._clock()
        while self._clock() - t0 < _GONE_TIMEOUT_SECONDS:
            try:
                self._api.get_job(self.kind, spec.namespace, spec.job_name)
            except ApiError as e:
                if e.status == 404:
                    return ""
            self._sleep(_GONE_POLL_SECONDS)
        return f"{self.kind} {spec.job_name} was deleted but still exists after {_GONE_TIMEOUT_SECONDS:.0f} s"

    def _wait(self, spec: ClusterJobSpec, streams: LogStreams) -> JobResult:
        state = WaitState(started_at=self._clock())
        while True:
            obs = self._observe(spec)
            streams.follow([p["metadata"]["name"] for p in obs.pods if _has_started(p)])
            prev = state
            state, verdict = advance(state, obs, self._clock(), self.kind, self._policy)
            if state.phase is not prev.phase:
                _log.info("%s %s: %s", self.kind, spec.job_name, state.phase.value)
            if state.restarts > prev.restarts:
                _log.warning("%s %s restarted (%d so far): training resumes from the newest PVC checkpoint "
                             "(--resume auto)", self.kind, spec.job_name, state.restarts)
            if verdict.done:
                assert verdict.state is not None
                message = verdict.message
                if verdict.pod:
                    message = _with_events(message, self._pod_events(spec.namespace, verdict.pod))
                ours = verdict.state == "DeadlineExceeded" and state.phase not in (Phase.FAILED, Phase.SUCCEEDED)
                if ours or verdict.release:
                    _log.error("deleting %s %s/%s to free its resources", self.kind, spec.namespace, spec.job_name)
                    self._delete(spec.namespace, spec.job_name)
                log = _log.info if verdict.state == "Succeeded" else _log.error
                log("%s %s ended: %s %s", self.kind, spec.job_name, verdict.state, message)
                return JobResult(state=verdict.state, output_dir=spec.request.output_dir, message=message,
                                 restarts=state.restarts)
            self._pause(spec)

    def _observe(self, spec: ClusterJobSpec) -> Observation:
        try:
            job = self._api.get_job(self.kind, spec.namespace, spec.job_name)
        except ApiError as e:
            if e.status == 404:
                return Observation(not_found=True)
            return Observation(api_error=str(e))
        try:
            pods = tuple(self._api.list_pods(spec.namespace, f"stream-r1/run-id={spec.job_name}"))
        except ApiError as e:
            _log.debug("listing pods failed: %s", e)
            pods = ()
        return Observation(job=job, pods=pods)

    def _pod_events(self, namespace: str, pod: str) -> list[str]:
        """The pod's events, oldest first, as ``"Type Reason: message"`` (the cluster's own words)."""
        try:
            events = self._api.list_events(namespace, f"involvedObject.name={pod}")
        except ApiError as e:
            return [f"(events of {pod} not readable: {e})"]
        events.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        return [f"{e.get('type', '')} {e.get('reason', '')}: {str(e.get('message', '')).strip()}".strip()
                for e in events]

    def _interrupted(self, spec: ClusterJobSpec) -> JobResult:
        """SIGTERM: delete the job only if the run is being cancelled; otherwise leave it for the retry."""
        cancelled, why = run_cancelled(self._api, spec.namespace, self._owner.workflow)
        if cancelled:
            _log.warning("run cancelled (%s): deleting %s %s/%s", why, self.kind, spec.namespace, spec.job_name)
            self._delete(spec.namespace, spec.job_name)
            return JobResult(state="Cancelled", output_dir=spec.request.output_dir, message=f"run cancelled: {why}")
        _log.warning("SIGTERM without a cancelled run (%s): %s %s/%s keeps running; a retry of this step "
                     "re-attaches to it", why, self.kind, spec.namespace, spec.job_name)
        return JobResult(state="Detached", output_dir=spec.request.output_dir,
                         message=f"launcher stopped (SIGTERM; {why}); the {self.kind} keeps running and a retry "
                                 "of this step re-attaches to it")

    def _pause(self, spec: ClusterJobSpec) -> None:
        """Wait up to ``poll_seconds`` for the job to change (watch), reconnecting; never spins."""
        t0 = self._clock()
        try:
            for event in self._api.watch_job(self.kind, spec.namespace, spec.job_name, max(1, int(self._poll))):
                obj = event.get("object") or {}
                if event.get("type") == "DELETED" or job_status(self.kind, obj).phase in _WAKE_PHASES:
                    return
                if self._clock() - t0 >= self._poll:
                    return
        except ApiError as e:  # watch dropped (410 Gone, connection reset): poll again after the pause
            _log.debug("watch of %s interrupted (%s); reconnecting", spec.job_name, e)
        remaining = self._poll - (self._clock() - t0)
        if remaining > 0:
            self._sleep(remaining)

    def _delete(self, namespace: str, name: str) -> None:
        try:
            self._api.delete_job(self.kind, namespace, name)
        except ApiError as e:
            if e.status != 404:
                _log.error("could not delete %s %s/%s: %s", self.kind, namespace, name, e)

    @contextmanager
    def _sigterm_interrupts(self) -> Iterator[None]:
        if not self._handle_sigterm or threading.current_thread() is not threading.main_thread():
            yield
            return

        def _raise(signum: int, frame: object) -> None:
            raise _Interrupted(signum)

        previous = signal.signal(signal.SIGTERM, _raise)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)


def _transient(e: ApiError) -> bool:
    """Connection errors, throttling and server errors are retried; 4xx answers are final."""
    return e.status in (0, 429) or e.status >= 500


_WAKE_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.RESTARTING})
_MAX_EVENTS_QUOTED = 5


def _has_started(pod: dict[str, Any]) -> bool:
    """A pod whose container has a log to read (scheduled and past the image pull)."""
    return any("running" in (cs.get("state") or {}) or "terminated" in (cs.get("state") or {})
               or (cs.get("lastState") or {}).get("terminated")
               for cs in (pod.get("status") or {}).get("containerStatuses") or [])


def _with_events(message: str, events: list[str]) -> str:
    if not events:
        return message
    return message + " | events: " + "; ".join(events[-_MAX_EVENTS_QUOTED:])


DEFAULT_TRAIN_IMAGE = "ghcr.io/stream-r1/stream-r1-train:0.1.0"
"""Same tag as ``components/_shared/images.py`` STREAM_R1_TRAIN_IMAGE (a test keeps them equal; the
library may not import ``components``)."""
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def cluster_settings_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Cluster settings for a launcher pod: ``STREAM_R1_CLUSTER_JSON`` (ClusterJobSpec keyword arguments),
    then ``STREAM_R1_TRAIN_IMAGE`` / ``STREAM_R1_NAMESPACE``, then the pod's own namespace.

    Raises:
        ValueError: when ``STREAM_R1_CLUSTER_JSON`` is not a JSON object.
    """
    import json
    from pathlib import Path

    raw = environ.get("STREAM_R1_CLUSTER_JSON", "")
    try:
        settings = json.loads(raw) if raw else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"STREAM_R1_CLUSTER_JSON is not valid JSON ({e}); pass e.g. '{{\"num_nodes\": 2}}'") from e
    if not isinstance(settings, dict):
        raise ValueError(f"STREAM_R1_CLUSTER_JSON must be a JSON object of ClusterJobSpec fields, got {raw!r}")
    if "tolerations" in settings:
        settings["tolerations"] = tuple(settings["tolerations"])
    settings.setdefault("image", environ.get("STREAM_R1_TRAIN_IMAGE", DEFAULT_TRAIN_IMAGE))
    ns_file = Path(SA_NAMESPACE_FILE)
    default_ns = ns_file.read_text().strip() if ns_file.is_file() else "stream-r1"
    settings.setdefault("namespace", environ.get("STREAM_R1_NAMESPACE", default_ns))
    return settings


def cluster_settings(environ: Mapping[str, str], *, image: str = "", pvc_name: str = "", pvc_mount_path: str = "",
                     node_selector: Mapping[str, str] | None = None,
                     tolerations: list[dict[str, Any]] | tuple[dict[str, Any], ...] | None = None,
                     queue_name: str = "", priority_class: str = "", gpus_per_node: int | None = None,
                     ) -> dict[str, Any]:
    """ClusterJobSpec keyword arguments from the pipeline's typed parameters over the pod's environment
    (:func:`cluster_settings_from_env`). Empty strings and ``None`` leave the environment's (or the
    spec's default) value; an empty selector or toleration list is kept (a CPU-only pool has none).
    """
    settings = cluster_settings_from_env(environ)
    given: dict[str, Any] = {"image": image, "pvc_name": pvc_name, "pvc_mount_path": pvc_mount_path,
                             "queue_name": queue_name, "priority_class": priority_class}
    settings.update({k: v for k, v in given.items() if v})
    if node_selector is not None:
        settings["node_selector"] = {str(k): str(v) for k, v in dict(node_selector).items()}
    if tolerations is not None:
        settings["tolerations"] = tuple(dict(t) for t in tolerations)
    if gpus_per_node is not None:
        settings["gpus_per_node"] = int(gpus_per_node)
    return settings


def make_backend(name: BackendName, *, api: KubeApi | None = None, cluster: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> KubernetesJobBackend:
    """The cluster backend for the KFP ``train`` step (``stream_r1.ops.steps.make_backend``).

    Args:
        name: ``"pytorchjob"`` or ``"trainjob"``.
        api: Kubernetes API; default: in-cluster service account (or kubeconfig).
        cluster: ClusterJobSpec keyword arguments; default: :func:`cluster_settings_from_env`.
        **kwargs: Passed to :class:`KubernetesJobBackend` (policy, poll_seconds, ...).
    """
    import os

    settings = dict(cluster) if cluster is not None else cluster_settings_from_env(os.environ)
    kwargs.setdefault("context", RunContext.from_env(os.environ))
    if api is None:
        from stream_r1.ops.k8s.api import KubernetesClientApi

        api = KubernetesClientApi.from_environment()
    return KubernetesJobBackend(name, api, settings, **kwargs)
