"""``stream-r1 pipeline`` glue: argument checks, compile via the CLI, submit/schedule with the real ``kfp.Client``
against ``FakeKfpApiServer`` (no KFP API server can run here; the fake answers the v2beta1 REST calls)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from stream_r1.cli import main
from stream_r1.ops import pipeline as pl


class FakeKfpApiServer(BaseHTTPRequestHandler):
    """A FAKE of the KFP v2beta1 REST API (no KFP server can run here): records requests; keeps experiments,
    pipelines, pipeline versions and recurring runs in memory so upload/list/create answer as a server would."""

    calls: list[tuple[str, str, dict | None, str | None]] = []
    state: dict[str, list[dict]] = {}

    def _reply(self, obj: dict, code: int = 200) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    ID_KEYS = {"pipelines": "pipeline_id", "versions": "pipeline_version_id", "experiments": "experiment_id",
               "recurringruns": "recurring_run_id", "runs": "run_id"}

    def _new(self, kind: str, obj: dict) -> dict:
        items = self.state.setdefault(kind, [])
        obj = {self.ID_KEYS[kind]: f"{kind}-{len(items) + 1}", **obj}
        items.append(obj)
        return obj

    def do_GET(self):
        self.calls.append(("GET", self.path, None, self.headers.get("Authorization")))
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = url.path.split("/")[3:]  # after /apis/v2beta1
        if parts in (["pipelines"], ["experiments"]):  # list by display_name filter
            wanted = json.loads(q["filter"])["predicates"][0]["stringValue"] if "filter" in q else None
            found = [p for p in self.state.get(parts[0], []) if wanted in (None, p["display_name"])]
            return self._reply({parts[0]: found, "total_size": len(found)} if found else {})
        if len(parts) == 3 and parts[0] == "pipelines" and parts[2] == "versions":
            found = [v for v in self.state.get("versions", []) if v["pipeline_id"] == parts[1]]
            return self._reply({"pipeline_versions": found})
        if parts == ["recurringruns"]:
            found = [r for r in self.state.get("recurringruns", []) if r["experiment_id"] == q.get("experiment_id")]
            return self._reply({"recurringRuns": found} if found else {})
        return self._reply({"error": "nope"}, 404)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        multipart = self.headers.get("Content-Type", "").startswith("multipart/")
        body = {"uploadfile_bytes": len(raw)} if multipart else json.loads(raw or b"{}")
        self.calls.append(("POST", url.path, body, self.headers.get("Authorization")))
        parts = url.path.split("/")[3:]
        if parts == ["pipelines", "upload"]:
            pipeline = self._new("pipelines", {"display_name": q["name"]})
            self._new("versions", {"pipeline_id": pipeline["pipeline_id"], "display_name": q["name"]})
            return self._reply(pipeline)
        if parts == ["pipelines", "upload_version"]:
            return self._reply(self._new("versions", {"pipeline_id": q["pipelineid"], "display_name": q["name"]}))
        if parts == ["experiments"]:
            return self._reply(self._new("experiments", {"display_name": body.get("display_name")}))
        if parts == ["recurringruns"]:
            return self._reply(self._new("recurringruns", body))
        if parts == ["runs"]:
            return self._reply(self._new("runs", body))
        return self._reply({}, 404)

    def log_message(self, *args):
        pass


@pytest.fixture
def kfp_api(monkeypatch):
    FakeKfpApiServer.calls = []
    FakeKfpApiServer.state = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKfpApiServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("KFP_TOKEN", "tok-123")
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_submit_and_schedule_through_the_real_kfp_client(kfp_api):
    args = pl.cluster_arguments("wan2.1_t2v_1.3b_stream_r1", {"checkpoint_source": "s3://m/wan", "backend": "trainjob"})
    assert args["ode_init_path"] == "Self-Forcing/checkpoints/ode_init.pt"  # from the preset
    assert args["backend"] == "trainjob" and "registry" not in args  # the pipeline's own defaults are the cluster's
    client = pl.kfp_client(kfp_api, "team")
    assert pl.submit(client, args, experiment="e", run_name="r", namespace="team") == "runs-1"
    rec = pl.schedule(client, args, experiment="e", job_name="weekly", cron="0 0 3 * * 1", namespace="team")
    assert (rec.recurring_run_id, rec.created) == ("recurringruns-1", True)
    posts = {path: (body, auth) for method, path, body, auth in FakeKfpApiServer.calls if method == "POST"}
    run, auth = posts["/apis/v2beta1/runs"]
    assert auth == "Bearer tok-123"
    assert run["experiment_id"] == "experiments-1" and run["display_name"] == "r"
    params = run["runtime_config"]["parameters"]
    assert params["config"] == "wan2.1_t2v_1.3b_stream_r1" and params["checkpoint_source"] == "s3://m/wan"
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "stream-r1"
    body, _ = posts["/apis/v2beta1/recurringruns"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert int(body["max_concurrency"]) == 1 and body["no_catchup"] is True
    # the schedule references the uploaded pipeline, not an embedded copy: each trigger runs its latest version
    assert body["pipeline_version_reference"] == {"pipeline_id": "pipelines-1"} and "pipeline_spec" not in body
    assert body["runtime_config"]["parameters"]["checkpoint_source"] == "s3://m/wan"
    # both run as the launcher ServiceAccount that manifests/base/rbac.yaml grants the job verbs to
    assert run["service_account"] == body["service_account"] == "stream-r1-launcher"


def _posts(path: str) -> list[dict]:
    return [body for method, p, body, _ in FakeKfpApiServer.calls if method == "POST" and p == path]


def test_recurring_run_example_upgrades_by_version_under_the_same_schedule(kfp_api, tmp_path, capsys):
    """manifests/examples/recurring_run.py against the real kfp client: the first call uploads the pipeline and
    creates the schedule; an unchanged package uploads nothing; a new package is a new version, same schedule."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("recurring_run", pl.repo_root() / "manifests/examples/recurring_run.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    v1 = pl.compile_pipeline(tmp_path / "v1.yaml")
    argv = ["--host", kfp_api, "--namespace", "team", "--param", "checkpoint_source=s3://m/wan", "--package", str(v1)]
    assert example.main(argv) == 0
    assert "runs the latest version of pipeline pipelines-1" in capsys.readouterr().out
    assert len(_posts("/apis/v2beta1/pipelines/upload")) == 1 and len(_posts("/apis/v2beta1/recurringruns")) == 1
    (version,) = [v for v in FakeKfpApiServer.state["versions"] if v["display_name"] == pl.package_version_name(v1)]

    assert example.main(argv) == 0  # the same package again: nothing new
    assert len(_posts("/apis/v2beta1/pipelines/upload_version")) == 1
    assert len(FakeKfpApiServer.state["recurringruns"]) == 1

    v2 = tmp_path / "v2.yaml"
    v2.write_text(v1.read_text().replace("Stream-R1: reward-weighted", "Stream-R1 (v2): reward-weighted"))
    assert example.main([*argv[:-1], str(v2)]) == 0
    out = capsys.readouterr().out
    (new,) = [v for v in FakeKfpApiServer.state["versions"] if v["display_name"] == pl.package_version_name(v2)]
    assert new["pipeline_version_id"] != version["pipeline_version_id"]
    assert f"already exists and is unchanged; its next run uses pipeline version {new['pipeline_version_id']}" in out
    assert len(FakeKfpApiServer.state["recurringruns"]) == 1 and len(_posts("/apis/v2beta1/pipelines/upload")) == 1
    assert example.main(["--host", kfp_api, "--cron", "0 3 * * 1", "--param", "checkpoint_source=x"]) == 2


def test_pipeline_arguments_reject_bad_input():
    with pytest.raises(ValueError, match="unknown pipeline parameter"):
        pl.pipeline_arguments("tiny_cpu", {"checkpoint_source": "x", "nprocs": 2})
    with pytest.raises(ValueError, match="missing required pipeline parameter"):
        pl.pipeline_arguments("tiny_cpu", {})
    with pytest.raises(FileNotFoundError, match="no_such_preset"):
        pl.pipeline_arguments("no_such_preset", {"checkpoint_source": "x"})


def test_kfp_client_uses_token_file(tmp_path, monkeypatch, kfp_api):
    token = tmp_path / "token"
    token.write_text("s3cr3t\n")
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    client = pl.kfp_client(kfp_api, "team", str(token))
    assert "s3cr3t" in str(client._existing_config.api_key)
    monkeypatch.setenv("KFP_TOKEN", "from-env")
    assert "from-env" in str(pl.kfp_client(kfp_api, "team")._existing_config.api_key)


def test_cli_compile_and_user_errors(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    assert main(["pipeline", "compile", "--output", str(out)]) == 0
    assert out.read_text() == (pl.repo_root() / pl.COMPILED_FILE).read_text()
    assert main(["pipeline", "schedule", "--host", "http://127.0.0.1:9", "--job-name", "j", "--cron", "0 3 * * 1",
                 "--param", "checkpoint_source=s3://b/c"]) == 2
    assert "needs 6" in capsys.readouterr().err
    assert main(["pipeline", "submit", "--host", "http://127.0.0.1:9", "--run-name", "r", "--param", "oops"]) == 2
    assert "name=value" in capsys.readouterr().err
