"""The DAG compiles, matches the checked-in YAML (golden), and carries the policies it promises."""

from __future__ import annotations

from pathlib import Path

import yaml

from stream_r1.ops.pipeline import COMPILED_FILE, compile_pipeline, parse_params, validate_cron

REPO = Path(__file__).resolve().parents[2]


def test_compiled_yaml_is_up_to_date(tmp_path):
    fresh = compile_pipeline(tmp_path / "stream_r1.yaml").read_text()
    golden = (REPO / COMPILED_FILE).read_text()
    assert fresh == golden, "pipelines/compiled/stream_r1.yaml is stale: run `stream-r1 pipeline compile`"


def test_dag_policies():
    spec, platform = yaml.safe_load_all((REPO / COMPILED_FILE).read_text())
    root = spec["root"]["dag"]["tasks"]
    handler = root["exit-handler-1"]
    assert root["on-exit"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert "exit-handler-1" in root["on-exit"]["dependentTasks"]
    inner = spec["components"][handler["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inner) == {"fetch-checkpoints", "ode-init", "train", "evaluate", "gate", "condition-2"}
    # Wrong keys must fail at once: transient errors are retried inside the store, not by re-running the task.
    assert "retryPolicy" not in inner["fetch-checkpoints"]
    for name, task in inner.items():
        if name != "condition-2":  # every step has side effects (S3 publish, job launch, registry)
            assert task["cachingOptions"] == {}, name
    cond = inner["condition-2"]["triggerPolicy"]["condition"]
    assert "gate-Output" in cond and "true" in cond
    # The model runs in ode_init and evaluate: the train image on a GPU node; the rest are CPU steps on ops
    # (tests/mlops/test_component_images.py derives which image each step needs from what it runs).
    from components._shared.images import STREAM_R1_OPS_IMAGE, STREAM_R1_TRAIN_IMAGE
    from components._shared.resources import GPU_NODE_SELECTOR, GPU_TOLERATIONS

    gpu_steps = {"exec-ode-init", "exec-evaluate"}
    containers = {name: e["container"] for name, e in spec["deploymentSpec"]["executors"].items()}
    assert gpu_steps < set(containers) and len(containers) == 7
    kube = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, container in containers.items():
        if name in gpu_steps:
            assert container["image"] == STREAM_R1_TRAIN_IMAGE, name
            res = container["resources"]
            assert (res["accelerator"]["resourceType"], res["accelerator"]["resourceCount"]) == ("nvidia.com/gpu", "1")
            assert float(res["resourceCpuRequest"]) >= 1 and res["resourceMemoryRequest"].endswith("Gi")
            assert kube[name]["nodeSelector"]["labels"] == GPU_NODE_SELECTOR
            assert kube[name]["tolerations"] == [dict(sorted(t.items())) for t in GPU_TOLERATIONS]
        else:
            assert container["image"] == STREAM_R1_OPS_IMAGE, name
            assert "accelerator" not in container.get("resources", {}), name
            assert "nodeSelector" not in kube.get(name, {}), name
    # In a cluster every store-using step gets the S3 keys from the secret the training job also mounts.
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-fetch-checkpoints", "exec-ode-init", "exec-train", "exec-evaluate", "exec-on-exit"):
        (secret,) = executors[name]["secretAsEnv"]
        assert secret["secretName"] == "stream-r1-s3"
        assert {e["envVar"] for e in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                             "STREAM_R1_S3_ENDPOINT"}
    # The launcher stages inputs on the runs PVC the training job resumes from (ops/k8s/staging.py).
    (mount,) = executors["exec-train"]["pvcMount"]
    assert (mount["constant"], mount["mountPath"]) == ("stream-r1-runs", "/mnt/runs")


def test_param_and_cron_parsing():
    assert parse_params(["nproc_per_node=2", "backend=pytorchjob", 'overrides=["train.seed=1"]']) == {
        "nproc_per_node": 2, "backend": "pytorchjob", "overrides": ["train.seed=1"]}
    import pytest

    with pytest.raises(ValueError, match="name=value"):
        parse_params(["oops"])
    with pytest.raises(ValueError, match="needs 6"):
        validate_cron("0 3 * * 1")
    assert validate_cron("0 0 3 * * 1") == "0 0 3 * * 1"


def test_components_are_thin_and_pin_one_image():
    """Components stay thin: bodies ≤ 30 lines, imports inside, the image only from components/_shared/images.py
    (which of its images: tests/mlops/test_component_images.py)."""
    import ast

    files = sorted((REPO / "components").glob("*/component.py"))
    assert len(files) == 7
    for path in files:
        tree = ast.parse(path.read_text())
        (func,) = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        body = func.body[1:] if isinstance(func.body[0], ast.Expr) else func.body  # skip the docstring
        assert body[-1].end_lineno - body[0].lineno + 1 <= 30, path
        assert any(isinstance(n, ast.ImportFrom) and n.module == "stream_r1.ops" for n in body), path
        assert "ghcr.io" not in path.read_text(), f"{path} hard-codes an image"
        deco = func.decorator_list[0]
        kw = {k.arg: k.value for k in deco.keywords}
        assert isinstance(kw["install_kfp_package"], ast.Constant) and kw["install_kfp_package"].value is False
        assert ast.unparse(kw["base_image"]) in ("STREAM_R1_OPS_IMAGE", "STREAM_R1_TRAIN_IMAGE"), path
