"""The job's lifecycle against the FAKE API (tests/k8s/fakes.py) with scripted failures: node drain, run
cancellation, API outage, image pull back-off, unschedulable pods, re-attach to a Failed job, log streams
that break; each test asserts the job's fate (created, re-attached, deleted or kept)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from stream_r1.ops.jobs.base import TrainJobRequest
from stream_r1.ops.k8s.launcher import KubernetesJobBackend
from stream_r1.ops.k8s.logs import LogStreams
from stream_r1.ops.k8s.run_context import RunContext
from stream_r1.ops.k8s.waiter import WaitPolicy
from tests.k8s.conftest import TRAIN_IMAGE
from tests.k8s.fakes import FakeClock, RecordedApiFake

NS = "stream-r1"
JOB = "stream-r1-run-a"
POLL = 30.0
REQUEST = TrainJobRequest(run_id="run-a", config="wan2.1_t2v_1.3b_stream_r1", output_dir="/mnt/runs/run-a")
CONTEXT = RunContext(kfp_run_id="0b9a6c2e-5f3d-4c1a-9e7b-2d8f6a4c1e90", pod_name="stream-r1-abc12-system-container-impl-1",
                     pod_namespace=NS)
WORKFLOW = "stream-r1-abc12"
DELETED = ("PyTorchJob", NS, JOB)


def job(phase: str | None) -> dict:
    conds = [{"type": "Created", "status": "True", "reason": "PyTorchJobCreated"}]
    if phase and phase != "Created":
        conds.append({"type": phase, "status": "True", "reason": f"PyTorchJob{phase}", "message": f"job is {phase}"})
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": JOB, "namespace": NS, "labels": {"stream-r1/run-id": JOB}},
            "status": {"conditions": conds} if phase else {}}


def pod(name: str, *, role: str = "master", waiting: tuple[str, str] | None = None, unschedulable: str = "",
        running: bool = False, terminated: int | None = None) -> dict:
    labels = {"stream-r1/run-id": JOB, "training.kubeflow.org/replica-type": role}
    status: dict = {"phase": "Pending"}
    if unschedulable:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                 "message": unschedulable}]
    state = {}
    if waiting:
        state = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
    if running:
        status["phase"], state = "Running", {"running": {"startedAt": "2026-11-22T02:40:00Z"}}
    if terminated is not None:
        status["phase"] = "Succeeded" if terminated == 0 else "Failed"
        state = {"terminated": {"exitCode": terminated, "reason": "Completed" if terminated == 0 else "Error"}}
    if state:
        status["containerStatuses"] = [{"name": "pytorch", "restartCount": 0, "state": state}]
    return {"metadata": {"name": name, "uid": f"uid-{name}", "labels": labels,
                        "creationTimestamp": "2026-11-22T02:40:00Z"},
            "spec": {"containers": [{"name": "pytorch"}]}, "status": status}


def event(pod_name: str, reason: str, message: str, ts: str = "2026-11-22T02:41:00Z", kind: str = "Warning") -> dict:
    return {"involvedObject": {"kind": "Pod", "name": pod_name}, "type": kind, "reason": reason, "message": message,
            "lastTimestamp": ts}


def workflow(**spec) -> dict:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": WORKFLOW, "namespace": NS},
            "spec": spec}


LAUNCHER_POD = {"metadata": {"name": CONTEXT.pod_name, "namespace": NS, "ownerReferences": [
    {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": WORKFLOW, "uid": "wf-uid-1",
     "controller": True, "blockOwnerDeletion": True}]}}
MASTER = "stream-r1-run-a-master-0"
RUNNING = {"job": job("Running"), "pods": [pod(MASTER, running=True)]}
SUCCEEDED = {"job": job("Succeeded"), "pods": [pod(MASTER, terminated=0)]}


def scenario(polls: list[dict], **extra) -> dict:
    return {"kind": "PyTorchJob", "polls": polls, "launcher_pod": LAUNCHER_POD, **extra}


def _backend(rec: dict, policy: WaitPolicy | None = None, sigterm_after_sleeps: int | None = None):
    clock = FakeClock()
    api = RecordedApiFake(rec, clock)
    lines: list[str] = []
    if sigterm_after_sleeps is not None:
        def maybe_kill():
            if len(clock.sleeps) == sigterm_after_sleeps:
                os.kill(os.getpid(), signal.SIGTERM)
        clock.on_sleep.append(maybe_kill)
    backend = KubernetesJobBackend("pytorchjob", api, {"image": TRAIN_IMAGE}, policy=policy, poll_seconds=POLL,
                                   clock=clock, sleep=clock.sleep, log_sink=lines.append, context=CONTEXT,
                                   log_threads=False)
    return backend, api, clock, lines


def test_job_is_owned_by_the_runs_workflow_and_labelled_with_the_kfp_run():
    backend, api, _, _ = _backend(scenario([RUNNING, SUCCEEDED]))
    assert backend.run(REQUEST).state == "Succeeded"
    meta = api.created[0]["metadata"]
    assert meta["ownerReferences"] == [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": WORKFLOW,
                                        "uid": "wf-uid-1"}]  # deleting the run garbage-collects the job
    assert meta["labels"]["stream-r1/kfp-run-id"] == CONTEXT.kfp_run_id


def test_drain_sigterm_keeps_the_job_and_a_restarted_launcher_reattaches():
    rec = scenario([RUNNING] * 5, workflow=workflow())
    backend, api, _, _ = _backend(rec, sigterm_after_sleeps=2)
    result = backend.run(REQUEST)
    assert result.state == "Detached" and "still running" in result.message and "re-attaches" in result.message
    assert api.deleted == [] and len(api.created) == 1

    # The retried step (a new launcher pod): create answers 409, the launcher attaches and follows it to the end.
    rec2 = scenario([RUNNING, RUNNING, SUCCEEDED], create=[{"status": 409, "reason": "AlreadyExists"}])
    backend2, api2, _, _ = _backend(rec2)
    assert backend2.run(REQUEST).state == "Succeeded"
    assert api2.create_calls == 1 and api2.created == [] and api2.deleted == []


@pytest.mark.parametrize(("wf", "why"), [
    (workflow(activeDeadlineSeconds=0), "terminated"),  # what KFP's "Terminate run" patches
    (workflow(shutdown="Terminate"), "shutdown=Terminate"),
    (None, "deleted"),  # the run (and so its Workflow) was deleted
])
def test_sigterm_of_a_cancelled_run_deletes_the_job(wf, why):
    backend, api, _, _ = _backend(scenario([RUNNING] * 5, workflow=wf), sigterm_after_sleeps=1)
    result = backend.run(REQUEST)
    assert result.state == "Cancelled" and why in result.message
    assert api.deleted == [DELETED]


def test_sigterm_while_the_api_is_down_keeps_the_job():
    rec = scenario([RUNNING] * 5, workflow={"error": {"status": 503, "reason": "Service Unavailable"}})
    backend, api, _, _ = _backend(rec, sigterm_after_sleeps=1)
    result = backend.run(REQUEST)
    assert result.state == "Detached" and "503" in result.message and api.deleted == []


def test_a_twenty_minute_api_outage_is_ridden_out():
    outage = [{"error": {"status": 0, "reason": "ProtocolError", "body": "Connection reset by peer"}}] * 40
    backend, api, clock, _ = _backend(scenario([RUNNING, *outage, RUNNING, SUCCEEDED]))
    result = backend.run(REQUEST)
    assert result.state == "Succeeded" and api.deleted == []
    assert clock.now - 1000.0 >= 40 * POLL  # 20 min of errors: twice the old error budget


def test_image_pull_backoff_fails_after_the_grace_period_quoting_the_events():
    msg = 'Back-off pulling image "ghcr.io/stream-r1/stream-r1-train:0.1.0"'
    pulling = {"job": job("Created"), "pods": [pod(MASTER, waiting=("ImagePullBackOff", msg))], "events": [
        event(MASTER, "Scheduled", "Successfully assigned stream-r1/stream-r1-run-a-master-0 to gpu-node-07",
              "2026-11-22T02:40:01Z", kind="Normal"),
        event(MASTER, "Failed", 'Failed to pull image "ghcr.io/stream-r1/stream-r1-train:0.1.0": '
              "ghcr.io/stream-r1/stream-r1-train:0.1.0: not found", "2026-11-22T02:40:09Z")]}
    policy = WaitPolicy(image_pull_grace_seconds=300)
    backend, api, clock, _ = _backend(scenario([pulling]), policy=policy)
    result = backend.run(REQUEST)
    assert result.state == "Failed"
    assert "ImagePullBackOff" in result.message and "grace 300 s" in result.message
    assert "Warning Failed: Failed to pull image" in result.message and ": not found" in result.message
    assert result.message.index("Normal Scheduled") < result.message.index("Warning Failed")  # oldest first
    assert 300 < clock.now - 1000.0 <= 300 + 2 * POLL
    assert api.deleted == [DELETED]  # the bound pod held 8 GPUs
    assert api.event_queries == [f"involvedObject.name={MASTER}"]


def test_a_pull_error_that_clears_within_the_grace_is_not_fatal():
    hiccup = {"job": job("Created"), "pods": [pod(MASTER, waiting=("ErrImagePull", "registry timeout"))]}
    backend, api, _, _ = _backend(scenario([hiccup] * 3 + [RUNNING, SUCCEEDED]),
                                  policy=WaitPolicy(image_pull_grace_seconds=300))
    assert backend.run(REQUEST).state == "Succeeded" and api.deleted == []


def test_unschedulable_past_the_pending_deadline_fails_quoting_the_scheduler():
    why = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu. preemption: 0/4 nodes are available."
    pending = {"job": job("Created"), "pods": [pod(MASTER, unschedulable=why)],
               "events": [event(MASTER, "FailedScheduling", why)]}
    backend, api, clock, _ = _backend(scenario([pending]), policy=WaitPolicy(pending_timeout_seconds=900))
    result = backend.run(REQUEST)
    assert result.state == "Failed" and "is Unschedulable" in result.message
    assert f"Warning FailedScheduling: {why}" in result.message
    assert 900 < clock.now - 1000.0 <= 900 + 2 * POLL and api.deleted == [DELETED]


def test_a_job_queued_by_kueue_waits_past_the_pending_deadline():
    queued = {"job": {**job(None), "status": {"conditions": [
        {"type": "Created", "status": "True"}, {"type": "Suspended", "status": "True", "reason": "JobSuspended"}]}}}
    backend, api, _, _ = _backend(scenario([queued] * 80 + [RUNNING, SUCCEEDED]),
                                  policy=WaitPolicy(pending_timeout_seconds=900))
    assert backend.run(REQUEST).state == "Succeeded" and api.deleted == []  # 40 min in the queue, no pods


def test_reattaching_to_a_failed_job_recreates_it_with_resume_auto():
    failed = {"job": job("Failed"), "pods": [pod(MASTER, terminated=1)]}
    rec = scenario([failed, failed, {"job": None}, RUNNING, SUCCEEDED],
                   create=[{"status": 409, "reason": "AlreadyExists"}, {"status": 201}])
    backend, api, clock, _ = _backend(rec)
    result = backend.run(REQUEST)
    assert result.state == "Succeeded"
    assert api.deleted == [DELETED] and api.create_calls == 2 and len(api.created) == 1
    cmd = api.created[0]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[cmd.index("--resume") + 1] == "auto"
    assert clock.sleeps[0] == 5.0  # one wait while the foreground deletion removed the pods


def test_reattaching_to_a_succeeded_job_only_collects_it():
    rec = scenario([SUCCEEDED], create=[{"status": 409, "reason": "AlreadyExists"}])
    backend, api, _, _ = _backend(rec)
    assert backend.run(REQUEST).state == "Succeeded" and api.deleted == [] and api.created == []


def test_logs_of_every_replica_stream_across_broken_connections_without_loss_or_repeats():
    worker = "stream-r1-run-a-worker-0"
    master_log = ["2026-11-22T02:41:00.100Z [rank0] step 1", "2026-11-22T02:41:00.100Z [rank0] step 1 (same ns)",
                  "2026-11-22T02:41:00.700Z [rank0] step 2", "2026-11-22T02:41:01.000Z [rank0] step 3",
                  "2026-11-22T02:41:30.000Z [rank0] saved checkpoint"]
    worker_log = ["2026-11-22T02:41:00.200Z [rank8] joined", "2026-11-22T02:41:05.000Z [rank8] step 1"]
    pods = [pod(MASTER, running=True), pod(worker, role="worker", running=True)]
    frame = {"job": job("Running"), "pods": pods, "logs": {MASTER: "\n".join(master_log[:4]) + "\n",
                                                            worker: worker_log[0] + "\n"}}
    done = {"job": job("Succeeded"), "pods": pods, "logs": {MASTER: "\n".join(master_log) + "\n",
                                                             worker: "\n".join(worker_log) + "\n"}}
    # master: the first stream breaks after 1 line, the second after 2 (mid-second), then clean sessions.
    rec = scenario([frame, frame, done], stream_cuts={MASTER: [1, 2]})
    backend, api, _, lines = _backend(rec)
    assert backend.run(REQUEST).state == "Succeeded"
    got_master = [ln.split("] ", 1)[1] for ln in lines if ln.startswith(f"[{MASTER}]")]
    got_worker = [ln.split("] ", 1)[1] for ln in lines if ln.startswith(f"[{worker}]")]
    assert got_master == [raw.split(" ", 1)[1] for raw in master_log]
    assert got_worker == [raw.split(" ", 1)[1] for raw in worker_log]
    since = [s for p, s in api.log_streams if p == MASTER]
    assert since[:3] == [None, "2026-11-22T02:41:00Z", "2026-11-22T02:41:00Z"]  # whole seconds, as the API takes


def test_log_streams_on_threads_deliver_each_line_once():
    lines_in = [f"2026-11-22T02:41:{i // 3:02d}.{i % 3}00Z line {i}" for i in range(30)]
    frame = {"job": job("Running"), "pods": [pod(MASTER, running=True)], "logs": {MASTER: "\n".join(lines_in) + "\n"}}
    api = RecordedApiFake(scenario([frame], stream_cuts={MASTER: [4, 9, 9, 17]}))
    api.get_job("PyTorchJob", NS, JOB)  # load the frame
    out: list[str] = []
    streams = LogStreams(api, NS, "pytorch", out.append, threaded=True)
    for _ in range(6):
        streams.follow([MASTER])
        for t in threading.enumerate():
            if t.name == f"log-{MASTER}":
                t.join(5)
    streams.finish()
    assert out == [f"[{MASTER}] line {i}" for i in range(30)]


@pytest.mark.parametrize(("pipeline_state", "frame", "deleted", "says"), [
    ("CANCELED", RUNNING, True, "run cancelled"),
    ("FAILED", {"job": job("Failed")}, False, "pods kept for their logs"),
    ("FAILED", RUNNING, True, "while the job was Running"),
    ("SUCCEEDED", RUNNING, False, "run succeeded"),
    ("FAILED", {"job": None}, False, "no PyTorchJob"),
])
def test_exit_handler_cleanup_policy(pipeline_state, frame, deleted, says):
    backend, api, _, _ = _backend(scenario([frame]))
    assert says in backend.cleanup("run-a", pipeline_state)
    assert api.deleted == ([DELETED] if deleted else [])
