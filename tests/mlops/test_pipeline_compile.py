"""The DAG compiles, matches the checked-in YAML (golden), and carries the policies it promises."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stream_r1.ops.pipeline import (
    COMPILED_FILE,
    compile_pipeline,
    load_pipeline,
    parse_params,
    shorten_retry_backoff,
    validate_cron,
)

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
    assert set(inner) == {"validate-run", "fetch-checkpoints", "ode-init", "train", "evaluate", "gate", "condition-2"}
    # validation runs first: every other task waits for it (directly or through fetch's outputs)
    assert inner["fetch-checkpoints"]["dependentTasks"] == ["validate-run"]
    assert "dependentTasks" not in inner["validate-run"]
    # Wrong keys must fail at once: transient errors are retried inside the store, not by re-running the task.
    assert "retryPolicy" not in inner["fetch-checkpoints"]
    reg = spec["components"][inner["condition-2"]["componentRef"]["name"]]["dag"]["tasks"]["register-model"]
    for task in (inner["train"], inner["evaluate"], reg):  # a retried train re-attaches to (or re-creates) its job
        assert task["retryPolicy"]["maxRetryCount"] == 2
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
    assert gpu_steps < set(containers) and len(containers) == 8
    params = spec["root"]["inputDefinitions"]["parameters"]
    kube = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, container in containers.items():
        if name in gpu_steps:
            assert container["image"] == STREAM_R1_TRAIN_IMAGE, name
            res = container["resources"]
            assert (res["accelerator"]["resourceType"], res["accelerator"]["resourceCount"]) == ("nvidia.com/gpu", "1")
            assert float(res["resourceCpuRequest"]) >= 1 and res["resourceMemoryRequest"].endswith("Gi")
            # the pool is a run parameter (the training job's too); its default is the project's pool
            assert kube[name]["nodeSelector"] == {"nodeSelectorJson": {
                "componentInputParameter": "pipelinechannel--node_selector"}}
            assert kube[name]["tolerations"] == [{"tolerationJson": {
                "componentInputParameter": "pipelinechannel--tolerations"}}]
            assert params["node_selector"]["defaultValue"] == GPU_NODE_SELECTOR
            assert params["tolerations"]["defaultValue"] == [dict(t) for t in GPU_TOLERATIONS]
        else:
            assert container["image"] == STREAM_R1_OPS_IMAGE, name
            assert "accelerator" not in container.get("resources", {}), name
            assert "nodeSelector" not in kube.get(name, {}), name
    # In a cluster every store-using step gets the S3 keys from the secret the training job also mounts.
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-validate-run", "exec-fetch-checkpoints", "exec-ode-init", "exec-train", "exec-evaluate",
                 "exec-on-exit"):
        (secret,) = executors[name]["secretAsEnv"]
        assert secret["secretName"] == "stream-r1-s3"
        assert {e["envVar"] for e in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                             "STREAM_R1_S3_ENDPOINT"}
    # The train step (and its job) share the runs PVC the training job resumes from; the claim is a parameter.
    (mount,) = executors["exec-train"]["pvcMount"]
    assert (mount["pvcNameParameter"], mount["mountPath"]) == (
        {"componentInputParameter": "pipelinechannel--runs_pvc"}, "/mnt/runs")
    assert params["runs_pvc"]["defaultValue"] == "stream-r1-runs"
    # The launcher finds the run's Workflow through its own pod; register records the namespace.
    for name in ("exec-train", "exec-register-model"):
        assert {e["name"]: e["fieldPath"] for e in executors[name]["fieldPathAsEnv"]} == {
            "STREAM_R1_POD_NAME": "metadata.name", "STREAM_R1_POD_NAMESPACE": "metadata.namespace"}


def test_run_local_keeps_the_retries_and_shortens_their_waits():
    pipeline = load_pipeline()

    def policies(spec) -> dict[str, tuple[int, int, int]]:
        dags = [spec.root.dag] + [c.dag for c in spec.components.values() if c.HasField("dag")]
        return {name: (t.retry_policy.max_retry_count, t.retry_policy.backoff_duration.seconds,
                       t.retry_policy.backoff_max_duration.seconds)
                for dag in dags for name, t in dag.tasks.items() if t.retry_policy.max_retry_count}

    assert policies(pipeline.pipeline_spec) == dict.fromkeys(("train", "evaluate", "register-model"), (2, 60, 900))
    assert shorten_retry_backoff(pipeline) == 3
    assert policies(pipeline.pipeline_spec) == dict.fromkeys(("train", "evaluate", "register-model"), (2, 1, 4))
    # Only that loaded copy changed: a fresh load (and so the compiled YAML) keeps the DAG's waits.
    assert policies(load_pipeline().pipeline_spec)["evaluate"] == (2, 60, 900)


def test_ui_defaults_are_the_clusters_and_every_parameter_is_described():
    """What a UI or SDK user runs without arguments: the real recipe on a cluster backend, the Kubeflow Model
    Registry, a public prompt suite; every parameter documented in the IR (KFP reads the ``Args:`` docstring)."""
    from stream_r1.config import load_config
    from stream_r1.ops.k8s.launcher import DEFAULT_TRAIN_IMAGE

    spec, _ = yaml.safe_load_all((REPO / COMPILED_FILE).read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    undescribed = sorted(k for k, v in params.items() if len(v.get("description", "")) < 10)
    assert undescribed == []
    default = {k: v.get("defaultValue") for k, v in params.items()}
    assert (default["backend"], default["registry"]) == ("pytorchjob", "kubeflow")
    assert default["registry_uri"].startswith("http://model-registry-service.")
    assert default["config"] in {p.stem for p in (REPO / "stream_r1" / "config" / "presets").glob("*.yaml")}
    cfg = load_config(default["config"])
    # the real recipe: the 14B teacher at full geometry, the preset's student init
    assert "14B" in cfg.checkpoints.teacher and (cfg.rollout.latent_height, cfg.rollout.latent_width) == (60, 104)
    assert default["ode_init_path"] == cfg.checkpoints.student_init
    assert default["eval_prompts"] in ("vbench_extended", "moviegen_extended") and "tests/" not in str(default)
    assert (default["num_nodes"], default["gpus_per_node"], default["train_image"]) == (1, 8, DEFAULT_TRAIN_IMAGE)
    assert (default["queue_name"], default["priority_class"]) == ("", "")
    for typed in ("num_nodes", "gpus_per_node", "node_selector", "tolerations", "runs_pvc", "train_image",
                  "queue_name", "priority_class"):
        assert typed in params
    assert params["node_selector"]["parameterType"] == "STRUCT" and params["num_nodes"]["parameterType"] == \
        "NUMBER_INTEGER"


def test_num_nodes_flows_from_the_pipeline_parameter_to_the_job(tmp_path, monkeypatch):
    """The train component's body turns its parameters into the job the launcher submits (store and volume
    calls answered locally; the launcher's ``run`` is where the test stops)."""
    from kfp import dsl

    from components.train.component import train
    from stream_r1.ops import steps
    from stream_r1.ops.k8s import api, launcher

    seen = {}

    def stop(self, request):
        seen["job"] = self.build(self.spec_for(request))
        raise RuntimeError("stop before any API call")

    monkeypatch.setattr(steps, "open_store", lambda bucket: None)
    monkeypatch.setattr(steps, "materialize_set", lambda uri, store, shared: tmp_path / "set")
    monkeypatch.setattr(steps, "resolve_file", lambda uri, store, shared: tmp_path / "ode_init.pt")
    monkeypatch.setattr(api.KubernetesClientApi, "from_environment", classmethod(lambda cls: None))
    monkeypatch.setattr(launcher.KubernetesJobBackend, "run", stop)
    with pytest.raises(RuntimeError, match="stop before"):
        train.python_func(
            checkpoints_uri="s3://b/checkpoint-sets/abc", student_init="s3://b/ode_init.pt",
            config="wan2.1_t2v_1.3b_stream_r1", overrides=[], backend="pytorchjob", num_nodes=4, gpus_per_node=8,
            nproc_per_node=0, node_selector={"pool": "h200"},
            tolerations=[{"key": "pool", "operator": "Equal", "value": "h200", "effect": "NoSchedule"}],
            runs_pvc="team-runs", train_image="ghcr.io/stream-r1/stream-r1-train:0.2.0", queue_name="gpus",
            priority_class="batch-high", bucket="b", run_id="r-1", job_id="uuid-1", shared_dir="/mnt/runs",
            model=dsl.Model(uri=str(tmp_path / "model")), tensorboard=dsl.Markdown(uri=str(tmp_path / "tb")))
    job = seen["job"]
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    c = master["spec"]["containers"][0]
    # 4 nodes of 8 through torchrun's elastic c10d rendezvous (a fixed 4:4 range unless min nodes is lowered)
    assert c["command"][:7] == ["torchrun", "--nnodes", "4:4", "--nproc-per-node", "8", "--rdzv-backend", "c10d"]
    assert c["command"][c["command"].index("--output") + 1] == "/mnt/runs/runs/r-1/train"  # on the shared PVC
    assert c["image"] == "ghcr.io/stream-r1/stream-r1-train:0.2.0"
    assert master["spec"]["nodeSelector"] == {"pool": "h200"} and master["spec"]["priorityClassName"] == "batch-high"
    assert master["spec"]["tolerations"][0]["value"] == "h200"
    assert master["spec"]["volumes"][1]["persistentVolumeClaim"]["claimName"] == "team-runs"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpus"
    assert job["metadata"]["labels"]["stream-r1/kfp-run-id"] == "uuid-1"

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
    assert len(files) == 8
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
