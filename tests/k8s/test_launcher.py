"""The launcher and its waiter against RECORDED API responses (tests/k8s/recorded/*.json, via fakes)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from stream_r1.ops.jobs.base import TrainJobRequest
from stream_r1.ops.k8s.launcher import KubernetesJobBackend
from stream_r1.ops.k8s.logs import timestamp_key
from stream_r1.ops.k8s.waiter import Observation, Phase, WaitPolicy, WaitState, advance, job_status, pod_report
from tests.k8s.conftest import TRAIN_IMAGE
from tests.k8s.fakes import RECORDED, FakeClock, RecordedApiFake

REQUEST = TrainJobRequest(run_id="run-a", config="wan2.1_t2v_1.3b_stream_r1", output_dir="/mnt/runs/run-a")
POLL = 30.0


def _backend(scenario, kind="pytorchjob", policy=None, list_error=None, **kw):
    clock = FakeClock()
    api = RecordedApiFake(scenario, clock, list_error=list_error)
    lines: list[str] = []
    backend = KubernetesJobBackend(kind, api, {"image": TRAIN_IMAGE}, policy=policy, poll_seconds=POLL, clock=clock,
                                   sleep=clock.sleep, log_sink=lines.append, log_threads=False, **kw)
    return backend, api, clock, lines


def test_success_streams_each_log_line_once():
    backend, api, clock, lines = _backend("pytorchjob_success")
    result = backend.run(REQUEST)
    assert result.state == "Succeeded" and result.restarts == 0 and result.message == ""
    assert result.output_dir == "/mnt/runs/run-a"
    assert len(api.created) == 1 and api.created[0]["metadata"]["name"] == "stream-r1-run-a"
    assert [ln.split("] ", 1)[1] for ln in lines] == [
        "[rank0] step 1/1000 loss/dmd_generator=0.412", "[rank0] step 2/1000 loss/dmd_generator=0.398",
        "[rank0] step 3/1000 loss/dmd_generator=0.377", "[rank0] saved checkpoint step-3"]
    assert all(ln.startswith("[stream-r1-run-a-master-0] ") for ln in lines)
    assert clock.sleeps == [POLL] * 3 and api.deleted == []  # one pause per poll, never a busy loop


def test_failure_carries_the_pod_error():
    backend, _api, _, lines = _backend("pytorchjob_pod_error")
    result = backend.run(REQUEST)
    assert result.state == "Failed"
    assert "1 Master replica(s) failed" in result.message
    assert "exited 1 (Error): torch.OutOfMemoryError: CUDA out of memory" in result.message
    assert lines[-1].endswith("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_restarts_are_counted_and_training_resumes():
    backend, api, _, lines = _backend("pytorchjob_restarts")
    result = backend.run(REQUEST)
    assert result.state == "Succeeded" and result.restarts == 1
    cmd = api.created[0]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[cmd.index("--resume") + 1] == "auto" and cmd[cmd.index("--output") + 1] == "/mnt/runs/run-a"
    assert any("resumed from /mnt/runs/run-a/checkpoints" in ln for ln in lines)


def test_missing_status_fails_fast():
    policy = WaitPolicy(status_timeout_seconds=120)
    backend, _api, clock, _ = _backend("pytorchjob_no_status", policy=policy)
    result = backend.run(REQUEST)
    assert result.state == "Failed" and "no status" in result.message and "training operator" in result.message
    assert 120 < clock.now - 1000.0 <= 120 + POLL


def test_api_errors_and_409_attach_without_duplicate():
    backend, api, _clock, _ = _backend("pytorchjob_api_errors")
    result = backend.run(REQUEST)
    assert result.state == "Succeeded"
    assert api.create_calls == 2 and len(api.created) == 1  # 500 (stored) then 409 -> re-attached
    assert api.gets == 4  # the attach GET (frame 1) + 3 polls: 500, connection reset, Succeeded


def test_a_long_api_outage_detaches_and_never_deletes_the_job():
    rec = json.loads((RECORDED / "pytorchjob_api_errors.json").read_text())
    rec["create"] = [{"status": 201}]
    rec["polls"] = [{"error": {"status": 503, "reason": "Service Unavailable"}}]
    backend, api, clock, _ = _backend(rec, policy=WaitPolicy(api_outage_seconds=600))
    result = backend.run(REQUEST)
    assert result.state == "Detached" and "left running" in result.message and "503" in result.message
    assert 600 < clock.now - 1000.0 <= 600 + POLL and api.deleted == []


def test_watch_reconnects_and_wakes_on_terminal_event():
    backend, api, clock, _ = _backend("pytorchjob_watch_reconnect")
    result = backend.run(REQUEST)
    assert result.state == "Succeeded"
    assert api.watch_calls == 2
    # session 1: one event (1 s) then 410 -> sleep the rest of the poll; session 2: Succeeded event -> no sleep
    assert clock.sleeps == [POLL - 1.0]
    assert api.gets == 3


def test_trainjob_success_and_master_logs():
    backend, api, _, lines = _backend("trainjob_success", kind="trainjob")
    result = backend.run(REQUEST)
    assert result.state == "Succeeded"
    assert api.created[0]["kind"] == "TrainJob"
    assert lines and all(ln.startswith("[stream-r1-run-a-node-0-0-7hx2k] ") for ln in lines) and len(lines) == 4


def test_trainjob_jobset_restart_counts_the_replacement_pod():
    rec = json.loads((RECORDED / "trainjob_success.json").read_text())
    replaced = json.loads(json.dumps(rec["polls"][2]["pods"][0]))
    replaced["metadata"]["name"] = "stream-r1-run-a-node-0-0-q9z4m"  # new pod after a JobSet restart
    replaced["metadata"]["creationTimestamp"] = "2026-11-22T03:30:00Z"
    rec["polls"][2]["pods"] = [replaced]
    backend, _, _, lines = _backend(rec, kind="trainjob")
    result = backend.run(REQUEST)
    assert result.state == "Succeeded" and result.restarts == 1
    assert any(ln.startswith("[stream-r1-run-a-node-0-0-q9z4m] ") for ln in lines)


def test_trainjob_deadline_exceeded():
    backend, api, _, _ = _backend("trainjob_deadline", kind="trainjob")
    result = backend.run(REQUEST)
    assert result.state == "DeadlineExceeded" and "active deadline" in result.message
    assert api.deleted == []  # the operator already stopped it; pods are kept for their logs


def test_launcher_deadline_deletes_the_job():
    backend, api, _clock, _ = _backend("pytorchjob_success", policy=WaitPolicy(wait_timeout_seconds=45))
    backend._api.rec["polls"] = backend._api.rec["polls"][1:2]  # Running forever
    result = backend.run(REQUEST)
    assert result.state == "DeadlineExceeded" and "launcher wait deadline" in result.message
    assert api.deleted == [("PyTorchJob", "stream-r1", "stream-r1-run-a")]


def test_invalid_image_fails_at_once_and_frees_the_gpus():
    backend, api, clock, _ = _backend("pytorchjob_bad_image")
    result = backend.run(REQUEST)
    assert result.state == "Failed" and "InvalidImageName" in result.message and clock.sleeps == []
    assert api.deleted == [("PyTorchJob", "stream-r1", "stream-r1-run-a")]


def test_missing_crd_and_forbidden_fail_before_create():
    backend, api, _, _ = _backend("pytorchjob_success", list_error={"status": 404, "reason": "Not Found"})
    result = backend.run(REQUEST)
    assert result.state == "Failed" and "CRD is not installed" in result.message and api.create_calls == 0
    backend, api, _, _ = _backend("pytorchjob_success", list_error={"status": 403, "reason": "Forbidden"})
    assert "rbac" in backend.run(REQUEST).message.lower() and api.create_calls == 0


def test_attach_retries_transient_read_errors():
    rec = json.loads((RECORDED / "pytorchjob_api_errors.json").read_text())
    rec["polls"] = [{"error": {"status": 503, "reason": "Service Unavailable"}}, *rec["polls"]]
    backend, _api, _, _ = _backend(rec)
    assert backend.run(REQUEST).state == "Succeeded"


def test_409_on_a_foreign_job_is_not_attached():
    rec = json.loads((RECORDED / "pytorchjob_api_errors.json").read_text())
    rec["create"] = rec["create"][1:]
    rec["polls"][0]["job"]["metadata"]["labels"]["stream-r1/run-id"] = "someone-else"
    backend, _api, _, _ = _backend(rec)
    result = backend.run(REQUEST)
    assert result.state == "Failed" and "not created for this run" in result.message


def test_job_deleted_externally_fails():
    rec = json.loads((RECORDED / "pytorchjob_success.json").read_text())
    rec["polls"] = [*rec["polls"][1:2], {"job": None}]
    backend, _, _, _ = _backend(rec)
    result = backend.run(REQUEST)
    assert result.state == "Failed" and "deleted" in result.message


def test_bare_sigterm_outside_a_workflow_leaves_the_job_running():
    backend, api, clock, _ = _backend("pytorchjob_success")
    backend._api.rec["polls"] = backend._api.rec["polls"][1:2]
    clock.on_sleep.append(lambda: os.kill(os.getpid(), signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    result = backend.run(REQUEST)
    assert result.state == "Detached" and "no Argo Workflow" in result.message
    assert api.deleted == []
    assert signal.getsignal(signal.SIGTERM) is before  # handler restored


def test_cancel_is_idempotent_and_validation_precedes_api_calls():
    backend, api, _, _ = _backend("pytorchjob_success")
    backend.cancel("run-a")
    assert api.deleted == [("PyTorchJob", "stream-r1", "stream-r1-run-a")]
    bad = TrainJobRequest(run_id="run-a", config="c", output_dir="/tmp/x")
    with pytest.raises(FileNotFoundError, match="not mounted in the launcher pod"):
        backend.run(bad)  # a KFP artifact path needs the PVC mounted here to be staged
    with pytest.raises(ValueError, match="resume"):
        backend.run(TrainJobRequest(run_id="run-a", config="c", output_dir="/mnt/runs/a", resume="/x/ckpt"))
    assert api.create_calls == 0
    with pytest.raises(ValueError, match="backend name"):
        KubernetesJobBackend("mpijob", api, {"image": TRAIN_IMAGE})


def test_waiter_state_machine_directly():
    rec = json.loads((RECORDED / "pytorchjob_restarts.json").read_text())
    policy = WaitPolicy()
    state = WaitState(started_at=0.0)
    phases = []
    for i, frame in enumerate(rec["polls"]):
        state, verdict = advance(state, Observation(job=frame["job"], pods=tuple(frame.get("pods", []))), 10.0 * i,
                                 "PyTorchJob", policy)
        phases.append(state.phase)
    assert phases == [Phase.RUNNING, Phase.RESTARTING, Phase.RUNNING, Phase.SUCCEEDED]
    assert verdict.done and verdict.state == "Succeeded" and state.restarts == 1
    assert "OOMKilled" in state.last_pod_error and "exited 137" in state.last_pod_error
    assert job_status("TrainJob", {"status": {}}).phase is Phase.MISSING  # nothing written by the controller yet
    idle = {"status": {"jobsStatus": [{"name": "node", "active": 0, "ready": 0, "succeeded": 0, "failed": 0}]}}
    assert job_status("TrainJob", idle).phase is Phase.CREATED
    assert job_status("TrainJob", {}).phase is Phase.MISSING
    suspended = {"status": {"conditions": [{"type": "Suspended", "status": "True", "reason": "Suspended"}]}}
    assert job_status("TrainJob", suspended).phase is Phase.SUSPENDED
    assert pod_report([], policy.fatal_waiting_reasons).restarts == 0


def test_timestamp_keys_sort_trimmed_fractions():
    assert timestamp_key("2026-11-22T02:41:00.1Z") > timestamp_key("2026-11-22T02:41:00.09Z")
    assert timestamp_key("2026-11-22T02:41:00Z") < timestamp_key("2026-11-22T02:41:00.000000001Z")


def test_make_backend_and_env_settings(monkeypatch):
    from stream_r1.ops import steps
    from stream_r1.ops.k8s.launcher import cluster_settings_from_env, make_backend

    s = cluster_settings_from_env({"STREAM_R1_CLUSTER_JSON": '{"num_nodes": 2, "tolerations": []}',
                                   "STREAM_R1_NAMESPACE": "team-video"})
    assert s["num_nodes"] == 2 and s["tolerations"] == () and s["namespace"] == "team-video"
    assert s["image"] == TRAIN_IMAGE
    with pytest.raises(ValueError, match="STREAM_R1_CLUSTER_JSON"):
        cluster_settings_from_env({"STREAM_R1_CLUSTER_JSON": "[1]"})
    api = RecordedApiFake("trainjob_success")
    backend = make_backend("trainjob", api=api, cluster={"image": TRAIN_IMAGE}, handle_sigterm=False)
    assert backend.kind == "TrainJob" and backend.name == "trainjob"
    # the pipeline's steps module resolves the same factory (no cluster config needed to construct)
    monkeypatch.setenv("STREAM_R1_NAMESPACE", "team-video")
    from stream_r1.ops.k8s import api as api_mod

    monkeypatch.setattr(api_mod.KubernetesClientApi, "from_environment", classmethod(lambda cls: api))
    assert steps.make_backend("pytorchjob").kind == "PyTorchJob"


def test_kfp_artifact_paths_are_staged_on_the_pvc_and_copied_back(tmp_path):
    mount = tmp_path / "pvc"
    mount.mkdir()
    ckpt = tmp_path / "artifacts" / "checkpoints"
    (ckpt / "base").mkdir(parents=True)
    (ckpt / "base" / "config.json").write_text("{}")
    init = tmp_path / "artifacts" / "student_init"
    init.write_bytes(b"pt")
    out = tmp_path / "artifacts" / "run"
    request = TrainJobRequest(run_id="run-a", config="tiny_cpu", output_dir=str(out),
                              overrides=(f"checkpoints.root={ckpt}", f"checkpoints.student_init={init}", "train.x=1"))
    clock = FakeClock()
    api = RecordedApiFake("pytorchjob_success", clock)
    job_dir = mount / "stream-r1-run-a" / "train"

    def trainer_writes_export():  # what the training pod would leave on the PVC
        (job_dir / "export").mkdir(parents=True, exist_ok=True)
        (job_dir / "export" / "model.safetensors").write_bytes(b"w")

    clock.on_sleep.append(trainer_writes_export)
    backend = KubernetesJobBackend("pytorchjob", api, {"image": TRAIN_IMAGE, "pvc_mount_path": str(mount)},
                                   poll_seconds=POLL, clock=clock, sleep=clock.sleep, log_sink=lambda _: None)
    result = backend.run(request)
    assert result.state == "Succeeded" and result.output_dir == str(out)
    cmd = api.created[0]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    staged = mount / "stream-r1-run-a" / "inputs"
    assert f"checkpoints.root={staged / 'root' / 'checkpoints'}" in cmd
    assert f"checkpoints.student_init={staged / 'student_init' / 'student_init'}" in cmd and "train.x=1" in cmd
    assert cmd[cmd.index("--output") + 1] == str(job_dir)
    assert (staged / "root" / "checkpoints" / "base" / "config.json").read_text() == "{}"
    assert (out / "export" / "model.safetensors").read_bytes() == b"w"  # copied back for the KFP artifact
