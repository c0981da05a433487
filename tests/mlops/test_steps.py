"""Step helpers: run ids, backend/registry selection, an existing --endpoint, the exit record."""

from __future__ import annotations

import json

import pytest

from stream_r1.ops import steps
from stream_r1.ops.pipeline import s3_endpoint
from stream_r1.ops.store import ArtifactStore


def test_resolve_run_id_is_dns_safe():
    assert steps.resolve_run_id("", "9b1e_JOB.id") == "r-9b1e-job-id"
    assert steps.resolve_run_id("local-run-7", "ignored") == "local-run-7"
    assert len(steps.resolve_run_id("", "x" * 100)) <= 48
    with pytest.raises(ValueError, match="no run id"):
        steps.resolve_run_id("", "")


@pytest.mark.parametrize("bad", ["Local-Run 7", "../../etc", "a/b", "x" * 49, "run: {x}", "7up", "a-", "a\nb"])
def test_a_given_run_id_is_validated_not_rewritten(bad):
    # The user's id names the job, the PVC directory and the S3 prefix: a silently rewritten id would
    # make the summary, the registry and the bucket disagree about which run is which.
    with pytest.raises(ValueError, match=r"not a valid run id.*lower-case letters"):
        steps.resolve_run_id(bad, "job-id")


def test_credentials_from_env_accepts_aws_endpoint_url():
    from stream_r1.ops.store import credentials_from_env

    creds = credentials_from_env({"AWS_ENDPOINT_URL": "https://s3.example:9000", "AWS_ACCESS_KEY_ID": "a",
                                  "AWS_SECRET_ACCESS_KEY": "b"})
    assert (creds.endpoint, creds.secure) == ("s3.example:9000", True)
    with pytest.raises(ValueError, match="STREAM_R1_S3_ENDPOINT"):
        credentials_from_env({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})


def test_backend_and_registry_selection(tmp_path):
    assert steps.make_backend("local").name == "local"
    with pytest.raises(ValueError, match="local, container, pytorchjob, trainjob"):
        steps.make_backend("slurm")
    with pytest.raises(ValueError, match="mlflow, kubeflow"):
        steps.make_registry("wandb", "x")
    # The Kubeflow Model Registry backend (Kubernetes part) is reached through the same selector.
    with pytest.raises(ValueError, match="not an http"):
        steps.make_registry("kubeflow", "sqlite:///x.db")


@pytest.mark.s3
def test_existing_endpoint_uses_env_keys_and_record_exit(seaweed, monkeypatch, tmp_path, bucket_name):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    with s3_endpoint(seaweed.url, tmp_path / "unused") as creds:
        assert creds == seaweed
        ArtifactStore(creds, bucket_name).ensure_bucket()
    assert not (tmp_path / "unused").exists()  # no server was started
    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    rec = steps.record_exit({"state": "SUCCEEDED"}, "r9", bucket_name, "local")
    assert rec["status_uri"] == f"s3://{bucket_name}/runs/r9/status.json" and "cancelled_job" not in rec
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    bad = steps.record_exit({"state": "FAILED"}, "r9", bucket_name, "local")
    assert "StoreAuthError" in bad["store_error"]  # the exit handler reports, never raises


def test_record_exit_on_cluster_backend_reports_cleanup_problems(monkeypatch):
    """Outside a cluster the PyTorchJob backend cannot reach an API: the exit record says so and does not raise."""
    for k in ("STREAM_R1_S3_ENDPOINT", "AWS_ENDPOINT_URL", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(k, raising=False)
    rec = steps.record_exit({"state": "FAILED"}, "r10", "b", "pytorchjob")
    assert "cancel_error" in rec and "store_error" in rec and rec["state"] == "FAILED"


def _trained_run_dir(tiny_checkpoints, run_dir, seed: int):
    """A run directory as the trainer leaves it: ``final/`` written by the trainer's own export function."""
    import torch
    from safetensors.torch import load_file

    from stream_r1.train.export import export_generator

    base = load_file(str(tiny_checkpoints / "base" / "diffusion_pytorch_model.safetensors"))
    gen = torch.Generator().manual_seed(seed)
    generator = {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
    ema = {k: v + 0.02 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
    export_generator(run_dir / "final", tiny_checkpoints / "base", generator, ema)
    return ema


@pytest.mark.s3
def test_registered_export_loads_with_stock_tools(seaweed, bucket_name, tiny_checkpoints, tmp_path, registry_db,
                                                  plain_s3_download):
    """Train-step publishing → registration → a plain S3 download + ``WanTransformer3DModel.from_pretrained``."""
    import torch
    from diffusers import WanTransformer3DModel

    from stream_r1.ops.exports import EXPORT_META, build_export, publish_export
    from stream_r1.ops.registry.base import ModelVersionInfo
    from stream_r1.ops.registry.mlflow_registry import MlflowRegistry

    ema = _trained_run_dir(tiny_checkpoints, tmp_path / "run", seed=1)
    export = build_export(tmp_path / "run", tmp_path / "export", {"run_id": "r1", "config_hash": "abc"})
    store = ArtifactStore(seaweed, bucket_name)
    store.ensure_bucket()
    uri = publish_export(store, export, "r1")
    info = MlflowRegistry(registry_db).register(ModelVersionInfo(name="m", version="r1", uri=uri))

    s3, bucket, prefix, keys = plain_s3_download(seaweed, info.uri, tmp_path / "downloaded")
    assert s3.head_object(Bucket=bucket, Key=f"{prefix}/diffusion_pytorch_model.safetensors")["ContentLength"] > 0
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == sorted(
        ["MANIFEST.sha256.json", "config.json", "diffusion_pytorch_model.safetensors", EXPORT_META])
    model = WanTransformer3DModel.from_pretrained(str(tmp_path / "downloaded"))
    assert type(model) is WanTransformer3DModel
    state = model.state_dict()
    assert all(torch.equal(state[k], v.to(state[k].dtype)) for k, v in ema.items())  # the EMA network, bit for bit
    meta = json.loads((tmp_path / "downloaded" / EXPORT_META).read_text())
    assert (meta["network"], meta["run_id"]) == ("generator_ema", "r1")


@pytest.mark.s3
def test_rerun_with_a_registered_run_id_never_overwrites_its_export(seaweed, bucket_name, tiny_checkpoints,
                                                                    tmp_path, registry_db):
    from stream_r1.ops.exports import build_export, publish_export
    from stream_r1.ops.registry.base import ModelVersionInfo
    from stream_r1.ops.registry.mlflow_registry import MlflowRegistry

    store = ArtifactStore(seaweed, bucket_name)
    store.ensure_bucket()
    _trained_run_dir(tiny_checkpoints, tmp_path / "a", seed=1)
    first = publish_export(store, build_export(tmp_path / "a", tmp_path / "ea", {"run_id": "r1"}), "r1")
    registry = MlflowRegistry(registry_db)
    registry.register(ModelVersionInfo(name="m", version="r1", uri=first))
    key = first.split("/", 3)[3]
    before = {o.object_name: (o.etag, o.last_modified)
              for o in store.client.list_objects(bucket_name, key + "/", recursive=True)}

    # Same run id, other weights (a rerun the gate would reject, or that registration refuses).
    _trained_run_dir(tiny_checkpoints, tmp_path / "b", seed=2)
    second = publish_export(store, build_export(tmp_path / "b", tmp_path / "eb", {"run_id": "r1"}), "r1")
    assert second != first and second.startswith(f"s3://{bucket_name}/runs/r1/export/")
    after = {o.object_name: (o.etag, o.last_modified)
             for o in store.client.list_objects(bucket_name, key + "/", recursive=True)}
    assert after == before  # the registered objects are untouched
    with pytest.raises(ValueError, match="versions are immutable"):
        registry.register(ModelVersionInfo(name="m", version="r1", uri=second))
    assert registry.get("m", "r1").uri == first
    # Publishing the same bytes again is a no-op at the same address (a retried train step).
    assert publish_export(store, tmp_path / "ea", "r1") == first


def test_compiled_dag_moves_big_inputs_as_uris():
    """No step takes a checkpoint tree or weights as a KFP input artifact; the readers mount the runs PVC."""
    import yaml

    from stream_r1.ops.pipeline import COMPILED_FILE, repo_root

    spec, platform = yaml.safe_load_all((repo_root() / COMPILED_FILE).read_text())
    comps = spec["components"]
    for name in ("comp-ode-init", "comp-train", "comp-evaluate", "comp-register-model"):
        artifacts = comps[name].get("inputDefinitions", {}).get("artifacts", {})
        assert {a["artifactType"]["schemaTitle"] for a in artifacts.values()} <= {"system.Metrics"}, name
    assert set(comps["comp-train"]["outputDefinitions"]["artifacts"]) == {"model", "tensorboard"}
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-ode-init", "exec-train", "exec-evaluate"):  # the claim is the runs_pvc parameter
        (mount,) = executors[name]["pvcMount"]
        assert (mount["pvcNameParameter"], mount["mountPath"]) == (
            {"componentInputParameter": "pipelinechannel--runs_pvc"}, "/mnt/runs")
    assert spec["root"]["inputDefinitions"]["parameters"]["runs_pvc"]["defaultValue"] == "stream-r1-runs"
    assert "pvcMount" not in executors.get("exec-register-model", {})
