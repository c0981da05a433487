"""``JobBackend`` for PyTorchJob (v1) and TrainJob (v2): create or re-attach, wait, stream logs, clean up.

Runs inside the CPU-only KFP launcher pod. The job gets the GPUs; the launcher only talks to the API.
Every wait goes through an injected ``clock``/``sleep`` so it never busy-loops and tests run instantly.
Pod restarts need no action here: the container command carries ``--resume auto`` and the run
directory lives on the PVC, so a restarted pod continues from the newest verified checkpoint.
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
from stream_r1.ops.k8s.logs import LogFollower
from stream_r1.ops.k8s.spec import ClusterJobSpec, job_name_for
from stream_r1.ops.k8s.staging import copy_back, stage_request
from stream_r1.ops.k8s.waiter import Observation, Phase, WaitPolicy, WaitState, advance, job_status, master_pod
from stream_r1.utils.logging import get_logger
from stream_r1.utils.names import validate_run_id

_log = get_logger(__name__)
BackendName = Literal["pytorchjob", "trainjob"]
_KINDS: dict[str, JobKind] = {"pytorchjob": "PyTorchJob", "trainjob": "TrainJob"}
_CREATE_ATTEMPTS = 4


class _Cancelled(Exception):
    """SIGTERM arrived (KFP run cancelled / launcher pod deleted)."""


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
    ) -> None:
        """Args:
        name: ``"pytorchjob"`` (Training Operator v1) or ``"trainjob"`` (Trainer v2).
        api: The Kubernetes API (``KubernetesClientApi.from_environment()`` on a cluster).
        cluster: Keyword arguments of :meth:`ClusterJobSpec.from_request` (image, namespace, ...).
        policy: Wait limits (overall deadline, fail-fast without status, API error budget).
        poll_seconds: Interval between status/log polls (a watch wakes the launcher earlier).
        clock, sleep: Injected time source and sleeper (tests pass fakes).
        log_sink: Receives the master pod's log lines (default: this module's logger).
        handle_sigterm: Delete the job when SIGTERM arrives (main thread only).

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

    def spec_for(self, request: TrainJobRequest) -> ClusterJobSpec:
        """The cluster spec of a request (validates settings; raises ValueError before any API call)."""
        return ClusterJobSpec.from_request(request, **self._cluster)

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
        spec = self.spec_for(staged.request)
        body = self.build(spec)
        failed = self._preflight(spec) or self._create_or_attach(spec, body)
        if failed:
            return JobResult(state="Failed", output_dir=request.output_dir, message=failed)
        try:
            with self._sigterm_cancels():
                result = self._wait(spec)
        except (_Cancelled, KeyboardInterrupt):
            _log.warning("cancelled: deleting %s %s/%s", self.kind, spec.namespace, spec.job_name)
            self._delete(spec.namespace, spec.job_name)
            return JobResult(state="Cancelled", output_dir=request.output_dir, message="cancelled by the pipeline")
        if result.state == "Succeeded":
            copy_back(staged)
        return replace(result, output_dir=request.output_dir)

    def cancel(self, run_id: str) -> None:
        """Delete the job of ``run_id`` (idempotent: an absent job is fine)."""
        validate_run_id(run_id, "run_id")
        name = job_name_for(self._cluster.get("name_prefix", "stream-r1"), run_id)
        self._delete(self._cluster.get("namespace", "stream-r1"), name)

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

    def _create_or_attach(self, spec: ClusterJobSpec, body: dict[str, Any]) -> str:
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            try:
                self._api.create_job(self.kind, spec.namespace, body)
                _log.info("created %s %s/%s", self.kind, spec.namespace, spec.job_name)
                return ""
            except ApiError as e:
                if e.status == 409:  # a retried launcher, or a create that succeeded before a 5xx
                    return self._attach(spec)
                if _transient(e):
                    _log.warning("create %s failed (attempt %d/%d): %s", self.kind, attempt, _CREATE_ATTEMPTS, e)
                    self._sleep(min(2.0**attempt, 30.0))
                    continue
                return f"the API rejected {self.kind} {spec.job_name}: {e}"
        return f"could not create {self.kind} {spec.job_name} after {_CREATE_ATTEMPTS} attempts"

    def _attach(self, spec: ClusterJobSpec) -> str:
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
        _log.info("re-attached to existing %s %s/%s (launcher retry)", self.kind, spec.namespace, spec.job_name)
        return ""

    def _wait(self, spec: ClusterJobSpec) -> JobResult:
        state = WaitState(started_at=self._clock())
        follower = LogFollower(self._sink)
        while True:
            obs = self._observe(spec)
            self._stream_logs(spec, obs, follower)
            prev = state
            state, verdict = advance(state, obs, self._clock(), self.kind, self._policy)
            if state.phase is not prev.phase:
                _log.info("%s %s: %s", self.kind, spec.job_name, state.phase.value)
            if state.restarts > prev.restarts:
                _log.warning("%s %s restarted (%d so far): training resumes from the newest PVC checkpoint "
                             "(--resume auto)", self.kind, spec.job_name, state.restarts)
            if verdict.done:
                assert verdict.state is not None
                if verdict.state == "DeadlineExceeded" and state.phase not in (Phase.FAILED, Phase.SUCCEEDED):
                    self._delete(spec.namespace, spec.job_name)  # our deadline: free the GPUs
                log = _log.info if verdict.state == "Succeeded" else _log.error
                log("%s %s ended: %s %s", self.kind, spec.job_name, verdict.state, verdict.message)
                return JobResult(state=verdict.state, output_dir=spec.request.output_dir, message=verdict.message,
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

    def _stream_logs(self, spec: ClusterJobSpec, obs: Observation, follower: LogFollower) -> None:
        master = master_pod(self.kind, obs.pods)
        if master is not None:
            container = pytorchjob.CONTAINER if self.kind == "PyTorchJob" else trainjob.NODE
            follower.poll(self._api, spec.namespace, master["metadata"]["name"], container)

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
    def _sigterm_cancels(self) -> Iterator[None]:
        if not self._handle_sigterm or threading.current_thread() is not threading.main_thread():
            yield
            return

        def _raise(signum: int, frame: object) -> None:
            raise _Cancelled(signum)

        previous = signal.signal(signal.SIGTERM, _raise)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)


def _transient(e: ApiError) -> bool:
    """Connection errors, throttling and server errors are retried; 4xx answers are final."""
    return e.status in (0, 429) or e.status >= 500


_WAKE_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.RESTARTING})


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
    if api is None:
        from stream_r1.ops.k8s.api import KubernetesClientApi

        api = KubernetesClientApi.from_environment()
    return KubernetesJobBackend(name, api, settings, **kwargs)
