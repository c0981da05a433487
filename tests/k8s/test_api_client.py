"""KubernetesClientApi over the real `kubernetes` client against a FAKE API server on loopback."""

from __future__ import annotations

import json

import pytest

from stream_r1.ops.k8s.api import ApiError, KubernetesClientApi
from stream_r1.ops.k8s.pytorchjob import build_pytorchjob
from tests.k8s.conftest import make_spec
from tests.k8s.fakes import RECORDED, FakeKubeApiServer

REC = json.loads((RECORDED / "pytorchjob_success.json").read_text())


def _api(server: FakeKubeApiServer) -> KubernetesClientApi:
    from kubernetes import client

    cfg = client.Configuration(host=server.url)
    api_client = client.ApiClient(cfg)
    return KubernetesClientApi(client.CustomObjectsApi(api_client), client.CoreV1Api(api_client), 10.0)


def test_create_get_conflict_delete_roundtrip():
    job = build_pytorchjob(make_spec(run_id="run-a"))
    with FakeKubeApiServer() as server:
        api = _api(server)
        assert api.list_jobs("PyTorchJob", "stream-r1", 1) == []
        created = api.create_job("PyTorchJob", "stream-r1", job)
        assert created["metadata"]["uid"] == "u-1"
        with pytest.raises(ApiError) as conflict:
            api.create_job("PyTorchJob", "stream-r1", job)
        assert conflict.value.status == 409 and "already exists" in conflict.value.body
        assert api.get_job("PyTorchJob", "stream-r1", job["metadata"]["name"])["spec"] == job["spec"]
        api.delete_job("PyTorchJob", "stream-r1", job["metadata"]["name"])
        with pytest.raises(ApiError) as gone:
            api.get_job("PyTorchJob", "stream-r1", job["metadata"]["name"])
        assert gone.value.status == 404
        assert ("POST", "/apis/kubeflow.org/v1/namespaces/stream-r1/pytorchjobs") in server.requests


def test_missing_crd_is_404_and_pods_logs_watch():
    frame = REC["polls"][2]
    with FakeKubeApiServer(pods=frame["pods"], log=frame["log"], installed=("pytorchjobs",)) as server:
        api = _api(server)
        with pytest.raises(ApiError) as missing:
            api.list_jobs("TrainJob", "stream-r1", 1)
        assert missing.value.status == 404
        pods = api.list_pods("stream-r1", "stream-r1/run-id=stream-r1-run-a")
        assert pods[0]["metadata"]["name"] == "stream-r1-run-a-master-0"
        cs = pods[0]["status"]["containerStatuses"][0]  # camelCase JSON, as the waiter reads it
        assert cs["restartCount"] == 0 and "running" in cs["state"]
        assert list(api.stream_pod_log("stream-r1", "stream-r1-run-a-master-0", "pytorch", None)) == \
            frame["log"].splitlines()
        server.watch_events = [{"type": "MODIFIED", "object": REC["polls"][3]["job"]}]
        events = list(api.watch_job("PyTorchJob", "stream-r1", "stream-r1-run-a", 5))
        assert events[0]["type"] == "MODIFIED" and events[0]["object"]["status"]["conditions"][-1]["type"] == "Succeeded"
        assert any("fieldSelector=metadata.name%3Dstream-r1-run-a" in p for _, p in server.requests)


def test_connection_refused_is_a_transient_api_error():
    with FakeKubeApiServer() as server:
        api = _api(server)
    with pytest.raises(ApiError) as err:  # server stopped
        api.get_job("PyTorchJob", "stream-r1", "x")
    assert err.value.status == 0


def test_log_stream_since_time_own_pod_events_and_workflow():
    frame = REC["polls"][2]
    events = [{"metadata": {"name": "stream-r1-run-a-master-0.17f", "namespace": "stream-r1"},
               "involvedObject": {"kind": "Pod", "name": "stream-r1-run-a-master-0"}, "type": "Warning",
               "reason": "FailedScheduling", "message": "0/4 nodes are available"}]
    with FakeKubeApiServer(pods=frame["pods"], log=frame["log"], events=events) as server:
        api = _api(server)
        lines = list(api.stream_pod_log("stream-r1", "stream-r1-run-a-master-0", "pytorch", "2026-11-22T02:42:00Z"))
        assert lines == frame["log"].splitlines()[2:]  # the API's sinceTime filter, whole seconds
        (path,) = [p for m, p in server.requests if "/log" in p]
        assert "follow=true" in path and "timestamps=true" in path and "sinceTime=2026-11-22T02%3A42%3A00Z" in path
        assert api.get_pod("stream-r1", "stream-r1-run-a-master-0")["metadata"]["uid"]
        got = api.list_events("stream-r1", "involvedObject.name=stream-r1-run-a-master-0")
        assert [e["reason"] for e in got] == ["FailedScheduling"]
        server.objects[("stream-r1", "workflows", "wf-1")] = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                                                            "metadata": {"name": "wf-1"}, "spec": {"shutdown": "Stop"}}
        assert api.get_workflow("stream-r1", "wf-1")["spec"]["shutdown"] == "Stop"
        assert ("GET", "/apis/argoproj.io/v1alpha1/namespaces/stream-r1/workflows/wf-1") in server.requests
        with pytest.raises(ApiError) as gone:
            api.get_workflow("stream-r1", "wf-2")
        assert gone.value.status == 404


def test_a_broken_log_stream_yields_only_complete_lines():
    log = "2026-11-22T02:41:00Z first line\n2026-11-22T02:41:01Z second line\n"
    cut = len("2026-11-22T02:41:00Z first line\n2026-11-22T02:41:01Z sec")
    with FakeKubeApiServer(pods=REC["polls"][2]["pods"], log=log, cut_log_at=cut) as server:
        api = _api(server)
        got: list[str] = []
        with pytest.raises(ApiError) as broken:
            for line in api.stream_pod_log("stream-r1", "stream-r1-run-a-master-0", "pytorch", None):
                got.append(line)
        assert broken.value.status == 0  # transient: the follower reconnects with sinceTime
        assert got == ["2026-11-22T02:41:00Z first line"]  # the half line is not emitted
