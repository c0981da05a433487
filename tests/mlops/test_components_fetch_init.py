"""fetch_checkpoints and ode_init: ``.python_func`` on real tiny checkpoints + a kfp.local run each."""

import json

import pytest
from kfp import dsl

from stream_r1.ops.store import ArtifactStore
from stream_r1.utils.io import sha256_file

pytestmark = pytest.mark.s3


def test_fetch_python_func_uploads_verifies_and_skips_on_retry(s3_env, bucket_name, tiny_checkpoints, tmp_path):
    from components.fetch_checkpoints.component import fetch_checkpoints

    out = dsl.Model(uri=str(tmp_path / "ckpts"))
    rid = fetch_checkpoints.python_func(source=str(tiny_checkpoints), bucket=bucket_name, run_id="",
                                        job_id="0f3a-JOB", checkpoints=out)
    assert rid == "r-0f3a-job"
    manifest = json.loads((tiny_checkpoints / "MANIFEST.json").read_text())["files"]
    for rel, sha in manifest.items():
        assert sha256_file(tmp_path / "ckpts" / rel) == sha
    assert out.metadata["s3_uri"] == f"s3://{bucket_name}/runs/r-0f3a-job/checkpoints"
    assert out.metadata["objects_sent"] == out.metadata["num_files"] == len(manifest) + 1
    # A retry (same run) finds every object in place and verified: nothing is re-sent.
    again = dsl.Model(uri=str(tmp_path / "ckpts2"))
    fetch_checkpoints.python_func(source=str(tiny_checkpoints), bucket=bucket_name, run_id="r-0f3a-job", job_id="",
                                  checkpoints=again)
    assert again.metadata["objects_sent"] == 0 and again.metadata["objects_skipped"] == len(manifest) + 1


def test_fetch_rejects_hub_source_outside_cluster(s3_env, bucket_name, tmp_path, monkeypatch):
    from stream_r1.ops.fetch import fetch_checkpoints, parse_source

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert parse_source("teacher=hf://Wan-AI/Wan2.1-T2V-14B-Diffusers@main,vae=/x") == {
        "teacher": "hf://Wan-AI/Wan2.1-T2V-14B-Diffusers@main", "vae": "/x"}
    store = ArtifactStore(s3_env, bucket_name)
    with pytest.raises(ValueError, match="only inside the cluster"):
        fetch_checkpoints("hf://Wan-AI/Wan2.1-T2V-1.3B-Diffusers", store, "p", tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="make-tiny-checkpoints"):
        fetch_checkpoints(str(tmp_path / "missing"), store, "p", tmp_path / "o")


def test_fetch_from_s3_prefix_named_parts(s3_env, bucket_name, tiny_checkpoints, tmp_path):
    from stream_r1.ops.fetch import fetch_checkpoints

    store = ArtifactStore(s3_env, bucket_name)
    store.ensure_bucket()
    store.upload_dir(tiny_checkpoints / "vae", "mirror/vae")
    res = fetch_checkpoints(f"vae=s3://{bucket_name}/mirror/vae,base={tiny_checkpoints / 'base'}", store,
                            "runs/x/checkpoints", tmp_path / "o")
    assert (tmp_path / "o" / "vae" / "config.json").is_file() and (tmp_path / "o" / "base" / "config.json").is_file()
    assert store.manifest("runs/x/checkpoints/vae") is not None and res.num_files > 2


def test_ode_init_python_func_uses_supplied_file(s3_env, bucket_name, tiny_checkpoints, tmp_path):
    from components.ode_init.component import ode_init

    out = dsl.Model(uri=str(tmp_path / "ode_init.pt"))
    ode_init.python_func(checkpoints=dsl.Model(uri=str(tiny_checkpoints)), ode_init_path="ode_init.pt",
                         config="tiny_cpu", overrides=[], bucket=bucket_name, run_id="r1", student_init=out)
    assert sha256_file(tmp_path / "ode_init.pt") == sha256_file(tiny_checkpoints / "ode_init.pt")
    assert out.metadata["skipped_regression"] is True
    assert ArtifactStore(s3_env, bucket_name).exists("runs/r1/ode_init/ode_init.pt")
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        ode_init.python_func(checkpoints=dsl.Model(uri=str(tiny_checkpoints)), ode_init_path="nope.pt",
                             config="tiny_cpu", overrides=[], bucket=bucket_name, run_id="r1", student_init=out)


def test_fetch_then_ode_init_kfp_local(s3_env, bucket_name, tiny_checkpoints, kfp_local):
    """kfp.local runs a component standalone only without input artifacts, so chain the two in a pipeline."""
    from components.fetch_checkpoints.component import fetch_checkpoints
    from components.ode_init.component import ode_init

    @dsl.pipeline(name="fetch-init")
    def chain(source: str, bucket: str) -> dsl.Model:
        fetched = fetch_checkpoints(source=source, bucket=bucket, run_id="local-1", job_id="")
        return ode_init(checkpoints=fetched.outputs["checkpoints"], ode_init_path="ode_init.pt", config="tiny_cpu",
                        overrides=[], bucket=bucket, run_id=fetched.outputs["Output"]).outputs["student_init"]

    result = chain(source=str(tiny_checkpoints), bucket=bucket_name)
    assert sha256_file(result.output.path) == sha256_file(tiny_checkpoints / "ode_init.pt")
    store = ArtifactStore(s3_env, bucket_name)
    assert store.exists("runs/local-1/checkpoints/MANIFEST.sha256.json")
    assert store.exists("runs/local-1/ode_init/ode_init.pt")


@pytest.mark.slow
def test_ode_init_python_func_runs_the_regression(s3_env, bucket_name, tiny_checkpoints, tmp_path, repo_root_path,
                                                  monkeypatch):
    """No supplied file: ode-pairs + ode-init run for real on the tiny teacher and produce a loadable ode_init.pt."""
    import torch

    from components.ode_init.component import ode_init

    monkeypatch.chdir(repo_root_path)  # the preset's prompt file is repo-relative
    out = dsl.Model(uri=str(tmp_path / "ode_init.pt"))
    ode_init.python_func(checkpoints=dsl.Model(uri=str(tiny_checkpoints)), ode_init_path="", config="tiny_cpu",
                         overrides=["ode.num_steps=1"], bucket=bucket_name, run_id="r2", student_init=out)
    assert out.metadata["skipped_regression"] is False
    state = torch.load(tmp_path / "ode_init.pt", map_location="cpu", weights_only=True)
    assert "generator" in state and any(k.startswith("model.") for k in state["generator"])
    store = ArtifactStore(s3_env, bucket_name)
    assert store.exists("runs/r2/ode_init/ode_init.pt")
    assert store.exists("runs/r2/ode_init/work/pairs/index.json")
