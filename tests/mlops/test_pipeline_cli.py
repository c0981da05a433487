"""``stream-r1 pipeline`` glue: argument checks, compile via the CLI, submit/schedule with the real ``kfp.Client``
against ``FakeKfpApiServer`` (no KFP API server can run here; the fake answers the v2beta1 REST calls)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stream_r1.cli import main
from stream_r1.ops import pipeline as pl


class FakeKfpApiServer(BaseHTTPRequestHandler):
    """A fake of the KFP v2beta1 REST API (no KFP server can run here): records requests, answers with ids."""

    calls: list[tuple[str, str, dict | None, str | None]] = []

    def _reply(self, obj: dict, code: int = 200) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.calls.append(("GET", self.path, None, self.headers.get("Authorization")))
        self._reply({} if self.path.startswith("/apis/v2beta1/experiments") else {"error": "nope"},
                    200 if self.path.startswith("/apis/v2beta1/experiments") else 404)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        self.calls.append(("POST", self.path, body, self.headers.get("Authorization")))
        ids = {"experiments": "experiment_id", "runs": "run_id", "recurringruns": "recurring_run_id"}
        kind = self.path.split("?")[0].rsplit("/", 1)[-1]
        self._reply({ids[kind]: f"{kind}-1", "display_name": body.get("display_name")} if kind in ids else {},
                    200 if kind in ids else 404)

    def log_message(self, *args):
        pass


@pytest.fixture
def kfp_api(monkeypatch):
    FakeKfpApiServer.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKfpApiServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("KFP_TOKEN", "tok-123")
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_submit_and_schedule_through_the_real_kfp_client(kfp_api):
    args = pl.cluster_arguments("wan2.1_t2v_1.3b_stream_r1", {"checkpoint_source": "s3://m/wan", "backend": "trainjob"})
    assert args["ode_init_path"] == "Self-Forcing/checkpoints/ode_init.pt"  # from the preset
    assert (args["backend"], args["nproc_per_node"], args["registry"]) == ("trainjob", 8, "kubeflow")
    client = pl.kfp_client(kfp_api, "team")
    assert pl.submit(client, args, experiment="e", run_name="r", namespace="team") == "runs-1"
    assert pl.schedule(client, args, experiment="e", job_name="weekly", cron="0 0 3 * * 1",
                       namespace="team") == "recurringruns-1"
    posts = {path: (body, auth) for method, path, body, auth in FakeKfpApiServer.calls if method == "POST"}
    run, auth = posts["/apis/v2beta1/runs"]
    assert auth == "Bearer tok-123"
    assert run["experiment_id"] == "experiments-1" and run["display_name"] == "r"
    params = run["runtime_config"]["parameters"]
    assert params["config"] == "wan2.1_t2v_1.3b_stream_r1" and params["checkpoint_source"] == "s3://m/wan"
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "stream-r1"
    rec, _ = posts["/apis/v2beta1/recurringruns"]
    assert rec["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert int(rec["max_concurrency"]) == 1 and rec["no_catchup"] is True
    # both run as the launcher ServiceAccount that manifests/base/rbac.yaml grants the job verbs to
    assert run["service_account"] == rec["service_account"] == "stream-r1-launcher"


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
