"""The launcher's wait logic as a pure state machine over observed job and pod objects.

No I/O and no clock reads: ``advance(state, observation, now)`` returns the next state and a verdict,
so every path (success, pod error, restarts, no status, API errors, deadlines) is tested against
recorded API objects without a cluster. Designed against the known launcher failures:
waiting forever on a job that never gets a status, treating Failed as done, per-call vs overall
timeouts, holding GPUs for a pull or scheduling failure that will not resolve, and mistaking an API
outage for a failed job.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from stream_r1.ops.jobs.base import JobState


class Phase(enum.Enum):
    """Normalised job phase of a PyTorchJob (v1) or TrainJob (v2)."""

    MISSING = "Missing"  # no status yet (operator not reconciling, or just created)
    CREATED = "Created"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class JobStatus:
    """What a job object says about itself."""

    phase: Phase
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class PodReport:
    """What the job's pods say: restarts and the most telling error."""

    restarts: int = 0
    error: str = ""
    fatal: str = ""  # a waiting reason that never resolves by itself (bad image name, missing secret)
    fatal_pod: str = ""
    pull_error: str = ""  # ErrImagePull / ImagePullBackOff: may resolve (registry hiccup), fails after a grace
    pull_pod: str = ""
    unschedulable: str = ""  # PodScheduled=False, reason Unschedulable: fails past the pending deadline
    unschedulable_pod: str = ""


@dataclass(frozen=True)
class Observation:
    """One poll of the API: the job (None when not read), its pods, or the API error that happened."""

    job: dict[str, Any] | None = None
    pods: tuple[dict[str, Any], ...] = ()
    api_error: str = ""
    not_found: bool = False


@dataclass(frozen=True)
class WaitPolicy:
    """Limits of the wait (all in seconds of the injected clock)."""

    wait_timeout_seconds: float = 180000.0
    """Overall deadline of the launcher (≥ the job's activeDeadlineSeconds plus scheduling time)."""
    status_timeout_seconds: float = 300.0
    """Fail fast when the job has no status this long after creation (operator missing / crashlooping)."""
    api_outage_seconds: float = 3600.0
    """How long the API may be unreachable before the launcher gives up *watching* (the job is left
    running: a retried step re-attaches). An outage never fails or deletes the job."""
    image_pull_grace_seconds: float = 600.0
    """A container in ``ErrImagePull``/``ImagePullBackOff`` this long fails the step (registry hiccups
    resolve sooner; a missing tag or pull secret never does, and the pod holds its GPUs meanwhile)."""
    pending_timeout_seconds: float = 1800.0
    """A pod the scheduler reports ``Unschedulable`` this long fails the step. A job Kueue holds
    suspended has no pods and is not affected: queueing for quota may take any time."""
    fatal_waiting_reasons: frozenset[str] = field(
        default_factory=lambda: frozenset({"InvalidImageName", "CreateContainerConfigError", "ErrImageNeverPull"})
    )
    pull_waiting_reasons: frozenset[str] = frozenset({"ErrImagePull", "ImagePullBackOff"})


@dataclass(frozen=True)
class WaitState:
    """Everything the state machine remembers between polls."""

    started_at: float
    phase: Phase = Phase.MISSING
    status_seen: bool = False
    job_restarts: int = 0
    pod_restarts: int = 0
    api_errors: int = 0
    last_ok: float | None = None
    last_pod_error: str = ""
    masters_seen: frozenset[str] = frozenset()
    pull_error_since: float | None = None
    unschedulable_since: float | None = None

    @property
    def restarts(self) -> int:
        """Restarts seen so far: operator Restarting transitions, container restart counts, or
        replacement rank-0 pods (a JobSet restart of a TrainJob creates new pods)."""
        return max(self.job_restarts, self.pod_restarts, len(self.masters_seen) - 1)


@dataclass(frozen=True)
class Verdict:
    """``done`` with a terminal ``state`` and message, or keep waiting.

    ``release``: the job holds resources for a condition that will not resolve (stuck image pull,
    unschedulable replica): the launcher deletes it after quoting ``pod``'s events.
    """

    done: bool
    state: JobState | None = None
    message: str = ""
    release: bool = False
    pod: str = ""


CONTINUE = Verdict(done=False)


def _true_conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    conds = ((obj.get("status") or {}).get("conditions")) or []
    return [c for c in conds if str(c.get("status")) == "True"]


def job_status(kind: str, obj: dict[str, Any]) -> JobStatus:
    """Normalise a job object's status.

    Args:
        kind: ``"PyTorchJob"`` or ``"TrainJob"``.
        obj: The job as returned by the API (``status`` may be absent).

    Returns:
        The phase with the deciding condition's reason and message.
    """
    status = obj.get("status") or {}
    true = _true_conditions(obj)
    if kind == "PyTorchJob":
        # The operator appends conditions; the newest True one is the current phase.
        if true:
            c = true[-1]
            phase = {p.value: p for p in Phase}.get(c.get("type", ""), Phase.CREATED)
            return JobStatus(phase, c.get("reason", ""), c.get("message", ""))
        return JobStatus(Phase.CREATED if status else Phase.MISSING)
    if kind == "TrainJob":
        by_type = {c.get("type"): c for c in true}
        for ctype, phase in (("Failed", Phase.FAILED), ("Complete", Phase.SUCCEEDED), ("Suspended", Phase.SUSPENDED)):
            if ctype in by_type:
                c = by_type[ctype]
                return JobStatus(phase, c.get("reason", ""), c.get("message", ""))
        jobs = status.get("jobsStatus") or []
        if any((j.get("active") or 0) > 0 for j in jobs):
            return JobStatus(Phase.RUNNING)
        return JobStatus(Phase.CREATED if status else Phase.MISSING)
    raise ValueError(f"kind={kind!r} is not PyTorchJob or TrainJob")


def _terminated_text(pod: str, cname: str, term: dict[str, Any]) -> str:
    text = f"pod {pod} container {cname} exited {term.get('exitCode')} ({term.get('reason', 'Error')})"
    return f"{text}: {term['message'].strip()}" if term.get("message") else text


def _unschedulable(pod: dict[str, Any]) -> str:
    status = pod.get("status") or {}
    if status.get("phase", "Pending") != "Pending":
        return ""
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and str(c.get("status")) == "False" and c.get("reason") == "Unschedulable":
            return c.get("message") or "Unschedulable"
    return ""


def pod_report(pods: tuple[dict[str, Any], ...] | list[dict[str, Any]], fatal_reasons: frozenset[str],
               pull_reasons: frozenset[str] = frozenset({"ErrImagePull", "ImagePullBackOff"})) -> PodReport:
    """Restart count and the most telling error across the job's pods.

    Args:
        pods: ``v1/Pod`` dicts (camelCase, as the API returns them).
        fatal_reasons: Container waiting reasons that fail the step at once.
        pull_reasons: Waiting reasons of an image pull that is failing (fail after a grace period).

    Returns:
        Total container restarts, the latest non-zero termination (current or last state), any
        fatal waiting reason, any failing image pull and any unschedulable pod (each with its pod).
    """
    restarts, error = 0, ""
    found: dict[str, tuple[str, str]] = {}
    for p in pods:
        name = (p.get("metadata") or {}).get("name", "?")
        if (msg := _unschedulable(p)) and "unschedulable" not in found:
            found["unschedulable"] = (name, f"pod {name} is Unschedulable: {msg}")
        for cs in (p.get("status") or {}).get("containerStatuses") or []:
            restarts += int(cs.get("restartCount") or 0)
            for key in ("state", "lastState"):
                term = (cs.get(key) or {}).get("terminated")
                if term and int(term.get("exitCode") or 0) != 0 and not error:
                    error = _terminated_text(name, cs.get("name", "?"), term)
            waiting = (cs.get("state") or {}).get("waiting") or {}
            text = f"pod {name} container {cs.get('name')} is {waiting.get('reason')}: {waiting.get('message', '')}"
            for kind, reasons in (("fatal", fatal_reasons), ("pull", pull_reasons)):
                if waiting.get("reason") in reasons and kind not in found:
                    found[kind] = (name, text.rstrip(": "))
    fatal_pod, fatal = found.get("fatal", ("", ""))
    pull_pod, pull = found.get("pull", ("", ""))
    unsched_pod, unsched = found.get("unschedulable", ("", ""))
    return PodReport(restarts, error, fatal, fatal_pod, pull, pull_pod, unsched, unsched_pod)


def master_pod(kind: str, pods: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest rank-0 pod: v1 replica-type master; v2 JobSet ``node`` job, completion index 0."""

    def is_master(p: dict[str, Any]) -> bool:
        labels = (p.get("metadata") or {}).get("labels") or {}
        if kind == "PyTorchJob":
            return labels.get("training.kubeflow.org/replica-type", "").lower() == "master"
        return (labels.get("batch.kubernetes.io/job-completion-index") == "0"
                and labels.get("jobset.sigs.k8s.io/replicatedjob-name") == "node")

    masters = [p for p in pods if is_master(p)]
    return max(masters, key=lambda p: p["metadata"].get("creationTimestamp", "")) if masters else None


def _pod_key(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return str(meta.get("uid") or meta.get("name"))


def _failure(message: str, pod_error: str) -> str:
    return f"{message} | {pod_error}" if pod_error and pod_error not in message else message or pod_error


def advance(
    state: WaitState, obs: Observation, now: float, kind: str, policy: WaitPolicy
) -> tuple[WaitState, Verdict]:
    """One step of the wait.

    Args:
        state: State after the previous poll.
        obs: What this poll saw.
        now: Injected clock reading (seconds).
        kind: ``"PyTorchJob"`` or ``"TrainJob"``.
        policy: Limits.

    Returns:
        The new state and whether the wait is over (with the job's terminal state and message).
    """
    elapsed = now - state.started_at
    if obs.api_error:
        last_ok = state.last_ok if state.last_ok is not None else state.started_at
        state = replace(state, api_errors=state.api_errors + 1)
        if now - last_ok > policy.api_outage_seconds:
            return state, Verdict(True, "Detached", (
                f"the Kubernetes API failed for {now - last_ok:.0f} s ({state.api_errors} calls in a row, last: "
                f"{obs.api_error}); the {kind} was left running and a retry of this step re-attaches to it"))
        return state, _deadline(state, elapsed, policy)
    if obs.not_found:
        return state, Verdict(True, "Failed", "the job was deleted while the launcher waited for it")
    assert obs.job is not None, "an observation without an API error carries the job"
    st = job_status(kind, obs.job)
    pods = pod_report(obs.pods, policy.fatal_waiting_reasons, policy.pull_waiting_reasons)
    entered_restart = st.phase is Phase.RESTARTING and state.phase is not Phase.RESTARTING
    master = master_pod(kind, obs.pods)
    state = replace(
        state,
        phase=st.phase,
        api_errors=0,
        last_ok=now,
        status_seen=state.status_seen or st.phase is not Phase.MISSING,
        job_restarts=state.job_restarts + int(entered_restart),
        pod_restarts=max(state.pod_restarts, pods.restarts),
        last_pod_error=pods.error or state.last_pod_error,
        masters_seen=state.masters_seen | ({_pod_key(master)} if master is not None else set()),
        pull_error_since=(state.pull_error_since if state.pull_error_since is not None else now)
        if pods.pull_error else None,
        unschedulable_since=(state.unschedulable_since if state.unschedulable_since is not None else now)
        if pods.unschedulable else None,
    )
    if st.phase is Phase.SUCCEEDED:
        return state, Verdict(True, "Succeeded", "")
    if st.phase is Phase.FAILED:
        terminal: JobState = "DeadlineExceeded" if "deadline" in (st.reason + st.message).lower() else "Failed"
        text = f"{kind} failed ({st.reason or 'no reason'}): {st.message}".rstrip(": ")
        return state, Verdict(True, terminal, _failure(text, state.last_pod_error))
    if pods.fatal:
        return state, Verdict(True, "Failed", pods.fatal, release=True, pod=pods.fatal_pod)
    if state.pull_error_since is not None and now - state.pull_error_since > policy.image_pull_grace_seconds:
        return state, Verdict(True, "Failed", (
            f"{pods.pull_error} (for {now - state.pull_error_since:.0f} s, grace "
            f"{policy.image_pull_grace_seconds:.0f} s)"), release=True, pod=pods.pull_pod)
    if state.unschedulable_since is not None and now - state.unschedulable_since > policy.pending_timeout_seconds:
        return state, Verdict(True, "Failed", (
            f"{pods.unschedulable} (for {now - state.unschedulable_since:.0f} s, limit "
            f"{policy.pending_timeout_seconds:.0f} s)"), release=True, pod=pods.unschedulable_pod)
    if not state.status_seen and elapsed > policy.status_timeout_seconds:
        return state, Verdict(True, "Failed", (
            f"{kind} has no status {elapsed:.0f} s after creation (limit {policy.status_timeout_seconds:.0f} s): "
            "is the training operator installed and running in this cluster?"))
    return state, _deadline(state, elapsed, policy)


def _deadline(state: WaitState, elapsed: float, policy: WaitPolicy) -> Verdict:
    if elapsed > policy.wait_timeout_seconds:
        return Verdict(True, "DeadlineExceeded",
                       f"launcher wait deadline of {policy.wait_timeout_seconds:.0f} s passed (phase {state.phase.value})")
    return CONTINUE
