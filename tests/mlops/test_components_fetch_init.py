"""fetch_checkpoints and ode_init on real tiny checkpoints and a real SeaweedFS: the checkpoint set is stored
once, content-addressed, reused by a second run, read by URI; source names cannot write outside the set."""

import dataclasses
import json
import re
import shutil

import pytest
from kfp import dsl

from stream_r1.ops.fetch import SETS_PREFIX, fetch_checkpoints, materialize_set, parse_source
from stream_r1.ops.store import ArtifactStore
from stream_r1.utils.io import sha256_file

pytestmark = pytest.mark.s3


def _objects(store: ArtifactStore) -> dict[str, tuple[str, object]]:
    """Every object in the bucket with its ETag and Last-Modified (a rewrite changes at least the latter)."""
    return {o.object_name: (o.etag, o.last_modified)
            for o in store.client.list_objects(store.bucket, recursive=True)}


def test_fetch_stores_the_set_once_and_a_second_run_uploads_nothing(s3_env, bucket_name, tiny_checkpoints):
    from components.fetch_checkpoints.component import fetch_checkpoints as component

    rid, uri = component.python_func(source=str(tiny_checkpoints), bucket=bucket_name, run_id="", job_id="0f3a-JOB")
    assert rid == "r-0f3a-job"
    assert re.fullmatch(rf"s3://{bucket_name}/{SETS_PREFIX}/[0-9a-f]{{32}}", uri)
    store = ArtifactStore(s3_env, bucket_name)
    prefix = uri.split("/", 3)[3]
    tiny = json.loads((tiny_checkpoints / "MANIFEST.json").read_text())["files"]
    stored = store.manifest(prefix)
    assert {rel: m["sha256"] for rel, m in stored.items() if rel != "MANIFEST.json"} == tiny
    # The weights are plain objects at their own keys (a HeadObject of the file itself succeeds).
    assert store.stat(f"{prefix}/base/diffusion_pytorch_model.safetensors")[1] == \
        tiny["base/diffusion_pytorch_model.safetensors"]
    assert store.get_json(f"runs/{rid}/checkpoints.json")["uri"] == uri

    before = _objects(store)
    _, uri2 = component.python_func(source=str(tiny_checkpoints), bucket=bucket_name, run_id="second",
                                    job_id="")
    assert uri2 == uri
    after = _objects(store)
    # The only new object is the second run's reference to the set; nothing of the set was rewritten.
    assert set(after) - set(before) == {"runs/second/checkpoints.json"}
    assert {k: after[k] for k in before} == before


def test_set_id_follows_the_content(s3_env, bucket_name, tiny_checkpoints, tmp_path):
    store = ArtifactStore(s3_env, bucket_name)
    copy = shutil.copytree(tiny_checkpoints / "vae", tmp_path / "vae")
    first = fetch_checkpoints(f"vae={copy}", store)
    moved = shutil.copytree(copy, tmp_path / "elsewhere" / "vae")  # same bytes at another path: same set
    assert fetch_checkpoints(f"vae={moved}", store).uri == first.uri
    (moved / "config.json").write_text((moved / "config.json").read_text() + " ")
    changed = fetch_checkpoints(f"vae={moved}", store)
    assert changed.uri != first.uri and not changed.reused
    assert changed.sent == changed.num_files == len(list(moved.iterdir()))  # a new set is complete on its own


@pytest.mark.parametrize("spec, bad", [("/etc=/tmp/x", "'/etc'"), ("../up=/tmp/x", "'../up'"),
                                       ("a/../../b=/tmp/x", "'a/../../b'"), ("vae=/tmp/x,sub/dir=/tmp/y", "'sub/dir'")])
def test_source_names_cannot_write_outside_the_set(s3_env, bucket_name, spec, bad):
    store = ArtifactStore(s3_env, bucket_name)
    with pytest.raises(ValueError, match="refusing to write outside the destination") as info:
        fetch_checkpoints(spec, store)
    assert bad in str(info.value) and "\n" not in str(info.value)
    assert not store.client.bucket_exists(bucket_name)  # refused before the first request


@pytest.mark.parametrize("entry", ["/etc/cron.d/evil", "../../evil.sh"])
def test_s3_source_whose_manifest_points_outside_is_refused(s3_env, bucket_name, tmp_path, entry):
    """A user fetches from a bucket someone else can write: a manifest entry with an absolute path or ``..``
    is refused with one line, and neither the set nor any local file is written."""
    from components.fetch_checkpoints.component import fetch_checkpoints as component

    src = ArtifactStore(s3_env, bucket_name + "-src")
    src.ensure_bucket()
    src.put_json("models/vae/MANIFEST.sha256.json", {"files": {entry: {"sha256": src.put_bytes(
        "models/vae/payload", b"#!/bin/sh\n"), "size": 10}}})
    with pytest.raises(ValueError, match="refusing to write outside the destination") as info:
        component.python_func(source=f"vae=s3://{src.bucket}/models/vae", bucket=bucket_name, run_id="u1",
                              job_id="")
    assert repr(entry) in str(info.value) and "\n" not in str(info.value)
    assert ArtifactStore(s3_env, bucket_name).list_keys("") == []


def test_fetch_rejects_hub_source_outside_cluster(s3_env, bucket_name, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert parse_source("teacher=hf://Wan-AI/Wan2.1-T2V-14B-Diffusers@main,vae=/x") == {
        "teacher": "hf://Wan-AI/Wan2.1-T2V-14B-Diffusers@main", "vae": "/x"}
    store = ArtifactStore(s3_env, bucket_name)
    with pytest.raises(ValueError, match="only inside the cluster"):
        fetch_checkpoints("hf://Wan-AI/Wan2.1-T2V-1.3B-Diffusers", store)
    with pytest.raises(FileNotFoundError, match="make-tiny-checkpoints"):
        fetch_checkpoints(str(tmp_path / "missing"), store)


def test_fetch_from_s3_prefix_streams_into_the_set(s3_env, bucket_name, tiny_checkpoints, tmp_path):
    mirror = ArtifactStore(s3_env, bucket_name + "-mirror")
    mirror.ensure_bucket()
    mirror.upload_dir(tiny_checkpoints / "vae", "models/vae")
    store = ArtifactStore(s3_env, bucket_name)
    res = fetch_checkpoints(f"vae=s3://{mirror.bucket}/models/vae,base={tiny_checkpoints / 'base'}", store)
    assert store.manifest(f"{SETS_PREFIX}/{res.set_id}/vae") == mirror.manifest("models/vae")
    local = materialize_set(res.uri, store, tmp_path / "shared")
    assert local == tmp_path / "shared" / SETS_PREFIX / res.set_id
    for rel in ("vae/config.json", "base/config.json", "base/diffusion_pytorch_model.safetensors"):
        assert sha256_file(local / rel) == sha256_file(tiny_checkpoints / rel)


def test_materialize_once_per_volume(s3_env, bucket_name, tiny_checkpoints, tmp_path):
    store = ArtifactStore(s3_env, bucket_name)
    res = fetch_checkpoints(f"vae={tiny_checkpoints / 'vae'}", store)
    shared = tmp_path / "shared"
    materialize_set(res.uri, store, shared)
    # A second step on the same volume does not touch the store: with wrong keys it still succeeds.
    locked_out = ArtifactStore(dataclasses.replace(s3_env, secret_key="wrong"), bucket_name)
    assert (materialize_set(res.uri, locked_out, shared) / "vae" / "config.json").is_file()
    with pytest.raises(ValueError, match="is not s3://"):
        materialize_set(f"s3://{bucket_name}/runs/x", store, shared)


def test_ode_init_python_func_names_the_supplied_file_without_copying(s3_env, bucket_name, tiny_checkpoints,
                                                                        tmp_path):
    from components.ode_init.component import ode_init

    store = ArtifactStore(s3_env, bucket_name)
    res = fetch_checkpoints(str(tiny_checkpoints), store)
    kw = {"checkpoints_uri": res.uri, "config": "tiny_cpu", "overrides": [], "bucket": bucket_name, "run_id": "r1",
          "shared_dir": str(tmp_path / "shared")}
    assert ode_init.python_func(ode_init_path="ode_init.pt", **kw) == f"{res.uri}/ode_init.pt"
    assert store.list_keys("runs/r1/") == []  # nothing copied or uploaded for a supplied init
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        ode_init.python_func(ode_init_path="nope.pt", **kw)
    with pytest.raises(ValueError, match="refusing to write outside"):
        ode_init.python_func(ode_init_path="../ode_init.pt", **kw)


def test_fetch_then_ode_init_kfp_local(s3_env, bucket_name, tiny_checkpoints, kfp_local, tmp_path):
    """The two steps chained by kfp.local: only strings (run id, set URI) pass between them."""
    from components.fetch_checkpoints.component import fetch_checkpoints as fetch_component
    from components.ode_init.component import ode_init

    @dsl.pipeline(name="fetch-init")
    def chain(source: str, bucket: str, shared_dir: str) -> str:
        fetched = fetch_component(source=source, bucket=bucket, run_id="local-1", job_id="")
        return ode_init(checkpoints_uri=fetched.outputs["checkpoints_uri"], ode_init_path="ode_init.pt",
                        config="tiny_cpu", overrides=[], bucket=bucket, run_id=fetched.outputs["run_id"],
                        shared_dir=shared_dir).output

    result = chain(source=str(tiny_checkpoints), bucket=bucket_name, shared_dir=str(tmp_path / "shared"))
    store = ArtifactStore(s3_env, bucket_name)
    uri = store.get_json("runs/local-1/checkpoints.json")["uri"]
    assert result.output == f"{uri}/ode_init.pt"
    assert store.stat(f"{uri.split('/', 3)[3]}/ode_init.pt")[1] == sha256_file(tiny_checkpoints / "ode_init.pt")


@pytest.mark.slow
def test_ode_init_python_func_runs_the_regression(s3_env, bucket_name, tiny_checkpoints, tmp_path, repo_root_path,
                                                  monkeypatch):
    """No supplied file: ode-pairs + ode-init run for real on the tiny teacher and produce a loadable ode_init.pt."""
    import torch

    from components.ode_init.component import ode_init

    monkeypatch.chdir(repo_root_path)  # the preset's prompt file is repo-relative
    store = ArtifactStore(s3_env, bucket_name)
    res = fetch_checkpoints(str(tiny_checkpoints), store)
    uri = ode_init.python_func(checkpoints_uri=res.uri, ode_init_path="", config="tiny_cpu",
                               overrides=["ode.num_steps=1"], bucket=bucket_name, run_id="r2",
                               shared_dir=str(tmp_path / "shared"))
    assert uri == f"s3://{bucket_name}/runs/r2/ode_init/ode_init.pt"
    local = tmp_path / "shared" / "runs" / "r2" / "ode_init" / "ode_init.pt"
    state = torch.load(local, map_location="cpu", weights_only=True)
    assert "generator" in state and any(k.startswith("model.") for k in state["generator"])
    assert store.stat("runs/r2/ode_init/ode_init.pt")[1] == sha256_file(local)
    assert store.exists("runs/r2/ode_init/work/pairs/index.json")
