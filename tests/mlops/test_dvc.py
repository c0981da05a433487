"""DVC on the tiny config: repro → push to SeaweedFS → wipe cache and outputs → pull → metrics show."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stream_r1.ops.dvc import configure_remote, loss_curves
from stream_r1.ops.store import ArtifactStore

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def test_loss_curves_from_trainer_jsonl(tmp_path):
    jsonl = tmp_path / "metrics.jsonl"
    jsonl.write_text('{"step": 1, "loss/critic": 2.5, "lr/critic": 1e-4}\n{"step": 2, "loss/critic": 2.1, '
                     '"loss/generator": 0.3}\n\n{"step": 3, "memory/host_rss_gb": 0.4}\n')
    rows = json.loads(loss_curves(jsonl, tmp_path / "plots" / "loss.json").read_text())
    assert rows == [{"step": 1, "loss_critic": 2.5}, {"step": 2, "loss_critic": 2.1, "loss_generator": 0.3}]
    with pytest.raises(FileNotFoundError, match="tensorboard"):
        loss_curves(tmp_path / "missing.jsonl", tmp_path / "x.json")


def _dvc(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([str(VENV_BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
@pytest.mark.s3
def test_dvc_repro_push_pull_metrics(s3_env, bucket_name, tmp_path):
    repo = tmp_path / "repo"
    for rel in ("dvc.yaml", ".dvc/config", ".dvc/.gitignore", "tests/assets/prompts/tiny.txt"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, repo / rel)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    # params.yaml from the preset, shortened to 2 optimizer steps to keep the test to about a minute.
    subprocess.run([sys.executable, "-m", "stream_r1.ops.dvc", "params", "tiny_cpu", "params.yaml",
                    "--set", "checkpoints.root=data/checkpoints", "--set", "train.num_optimizer_steps=2"],
                   cwd=repo, check=True)
    ArtifactStore(s3_env, bucket_name).ensure_bucket()
    configure_remote(repo, s3_env, url=f"s3://{bucket_name}/dvc")
    assert s3_env.secret_key not in (repo / ".dvc" / "config").read_text()  # keys only in config.local

    _dvc(repo, "repro")
    first = json.loads((repo / "metrics.json").read_text())
    assert 0.0 <= first["temporal_flickering"] <= 1.0
    assert json.loads((repo / "plots" / "loss.json").read_text())[0]["step"] >= 1
    _dvc(repo, "push")
    assert ArtifactStore(s3_env, bucket_name).list_keys("dvc/")  # objects landed in the bucket

    for rel in (".dvc/cache", "data", "runs"):
        shutil.rmtree(repo / rel)
    _dvc(repo, "pull")
    assert (repo / "data" / "checkpoints" / "MANIFEST.json").is_file()
    assert (repo / "runs" / "dvc" / "ode_init" / "ode_init.pt").is_file()
    assert (repo / "runs" / "dvc" / "train" / "final" / "generator" / "config.json").is_file()
    shown = json.loads(_dvc(repo, "metrics", "show", "--json"))
    flat = json.dumps(shown)
    assert "temporal_flickering" in flat and str(first["temporal_flickering"])[:6] in flat
    assert "up to date" in _dvc(repo, "status").lower() or "unchanged" in _dvc(repo, "status").lower()


def test_keys_that_start_with_a_dash_are_values_not_options(tmp_path):
    from stream_r1.ops.seaweed import S3Credentials

    repo = tmp_path / "repo"
    repo.mkdir()
    _dvc(repo, "init", "--no-scm", "-q")
    _dvc(repo, "remote", "add", "store", "s3://bucket/dvc")
    # token_urlsafe keys start with "-" once in 64; dvc's argparse read one as an unknown option (exit 254).
    configure_remote(repo, S3Credentials(endpoint="127.0.0.1:9", access_key="-AKIA", secret_key="-8Kxdp_s"))
    local = (repo / ".dvc" / "config.local").read_text()
    assert "access_key_id = -AKIA" in local and "secret_access_key = -8Kxdp_s" in local
    assert "endpointurl = http://127.0.0.1:9" in local
