"""``stream-r1 pipeline`` glue: argument checks, compile via the CLI, submit/schedule against a fake KFP client.

No KFP API server can run here, so submit/schedule are checked against ``FakeKfpClient`` (records calls; the
method names and keywords are kfp 2.17's ``kfp.Client``); ``kfp_client`` itself builds a real ``kfp.Client``.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml

from stream_r1.cli import main
from stream_r1.ops import pipeline as pl


class FakeKfpClient:
    """Stands in for ``kfp.Client``: records the calls and returns ids like the API would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def create_run_from_pipeline_package(self, pipeline_file, **kw):
        self.calls.append(("run", {"pipeline_file": pipeline_file, **kw}))
        return SimpleNamespace(run_id="run-123")

    def create_experiment(self, name, namespace=None):
        self.calls.append(("experiment", {"name": name, "namespace": namespace}))
        return SimpleNamespace(experiment_id="exp-9")

    def create_recurring_run(self, experiment_id, job_name, **kw):
        self.calls.append(("recurring", {"experiment_id": experiment_id, "job_name": job_name, **kw}))
        return SimpleNamespace(recurring_run_id="rec-7")


def test_submit_and_schedule_send_compiled_package(tmp_path):
    args = pl.cluster_arguments("wan2.1_t2v_1.3b_stream_r1", {"checkpoint_source": "s3://m/wan", "backend": "trainjob"})
    assert args["ode_init_path"] == "Self-Forcing/checkpoints/ode_init.pt"  # from the preset
    assert (args["backend"], args["nproc_per_node"], args["registry"]) == ("trainjob", 8, "kubeflow")
    fake = FakeKfpClient()
    assert pl.submit(fake, args, experiment="e", run_name="r", namespace="ns") == "run-123"
    kind, call = fake.calls[0]
    assert kind == "run"
    assert call["arguments"]["config"] == "wan2.1_t2v_1.3b_stream_r1" and call["enable_caching"] is False
    assert next(yaml.safe_load_all(open(call["pipeline_file"])))["pipelineInfo"]["name"] == "stream-r1"
    assert pl.schedule(fake, args, experiment="e", job_name="weekly", cron="0 0 3 * * 1", namespace="ns") == "rec-7"
    rec = fake.calls[-1][1]
    assert (rec["experiment_id"], rec["cron_expression"], rec["max_concurrency"], rec["no_catchup"]) == (
        "exp-9", "0 0 3 * * 1", 1, True)


def test_pipeline_arguments_reject_bad_input():
    with pytest.raises(ValueError, match="unknown pipeline parameter"):
        pl.pipeline_arguments("tiny_cpu", {"checkpoint_source": "x", "nprocs": 2})
    with pytest.raises(ValueError, match="missing required pipeline parameter"):
        pl.pipeline_arguments("tiny_cpu", {})
    with pytest.raises(FileNotFoundError, match="no_such_preset"):
        pl.pipeline_arguments("no_such_preset", {"checkpoint_source": "x"})


def test_kfp_client_uses_token_file(tmp_path, monkeypatch):
    token = tmp_path / "token"
    token.write_text("s3cr3t\n")
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    client = pl.kfp_client("http://127.0.0.1:9", "team", str(token))
    assert "s3cr3t" in str(client._existing_config.api_key)
    monkeypatch.setenv("KFP_TOKEN", "from-env")
    assert "from-env" in str(pl.kfp_client("http://127.0.0.1:9", "team")._existing_config.api_key)


def test_cli_compile_and_user_errors(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    assert main(["pipeline", "compile", "--output", str(out)]) == 0
    assert out.read_text() == (pl.repo_root() / pl.COMPILED_FILE).read_text()
    assert main(["pipeline", "schedule", "--host", "http://127.0.0.1:9", "--job-name", "j", "--cron", "0 3 * * 1",
                 "--param", "checkpoint_source=s3://b/c"]) == 2
    assert "needs 6" in capsys.readouterr().err
    assert main(["pipeline", "submit", "--host", "http://127.0.0.1:9", "--run-name", "r", "--param", "oops"]) == 2
    assert "name=value" in capsys.readouterr().err
