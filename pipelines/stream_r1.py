"""The Stream-R1 DAG: fetch → ode_init → train → evaluate → gate → (If) register, inside an ExitHandler.

Compile: ``stream-r1 pipeline compile`` (writes ``pipelines/compiled/stream_r1.yaml``, golden-tested).
Nothing is computed at definition time (architecture.md rule 10): the run id is a runtime parameter
falling back to the KFP job-id placeholder.
"""

from kfp import dsl

from components.evaluate.component import evaluate
from components.fetch_checkpoints.component import fetch_checkpoints
from components.gate.component import gate
from components.ode_init.component import ode_init
from components.on_exit.component import on_exit
from components.register_model.component import register_model
from components.train.component import train

PIPELINE_NAME = "stream-r1"


@dsl.pipeline(name=PIPELINE_NAME, description="Stream-R1: reward-weighted DMD distillation of a streaming video "
              "student, from checkpoints to a registered model.")
def stream_r1_pipeline(
    checkpoint_source: str,
    bucket: str = "stream-r1",
    run_id: str = "",
    config: str = "tiny_cpu",
    overrides: list = [],  # noqa: B006 - KFP reads the default; it is never mutated
    ode_init_path: str = "ode_init.pt",
    backend: str = "local",
    nproc_per_node: int = 1,
    eval_prompts: str = "tests/assets/prompts/tiny.txt",
    gate_metric: str = "reward_overall_mean",
    gate_min_value: float = -1.0e9,
    registry: str = "mlflow",
    registry_uri: str = ".stream-r1/registry.db",
    model_name: str = "stream-r1-student",
    data_revision: str = "",
):
    """Args mirror ``stream-r1 pipeline submit --set``; see docs/pipeline.md for each."""
    exit_task = on_exit(run_id=run_id, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, bucket=bucket, backend=backend)
    exit_task.set_caching_options(False)
    with dsl.ExitHandler(exit_task, name="stream-r1-run"):
        fetch = fetch_checkpoints(source=checkpoint_source, bucket=bucket, run_id=run_id,
                                  job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        # Downloads fail transiently; already-verified objects are skipped on retry.
        fetch.set_retry(num_retries=3, backoff_duration="30s", backoff_factor=2, backoff_max_duration="600s")
        fetch.set_caching_options(False)
        rid = fetch.outputs["Output"]

        init = ode_init(checkpoints=fetch.outputs["checkpoints"], ode_init_path=ode_init_path, config=config,
                        overrides=overrides, bucket=bucket, run_id=rid)
        init.set_caching_options(False)

        trained = train(checkpoints=fetch.outputs["checkpoints"], student_init=init.outputs["student_init"],
                        config=config, overrides=overrides, backend=backend, nproc_per_node=nproc_per_node,
                        bucket=bucket, run_id=rid)
        trained.set_caching_options(False)  # launches a job: a side effect, never served from cache

        scored = evaluate(checkpoints=fetch.outputs["checkpoints"], run=trained.outputs["run"], config=config,
                          prompts=eval_prompts, bucket=bucket, run_id=rid)
        scored.set_caching_options(False)

        decision = gate(metrics=scored.outputs["metrics"], metric=gate_metric, min_value=gate_min_value,
                        registry=registry, registry_uri=registry_uri, model_name=model_name)
        decision.set_caching_options(False)
        with dsl.If(decision.output == True, name="gate-passed"):  # noqa: E712 - KFP condition syntax
            reg = register_model(run=trained.outputs["run"], metrics=scored.outputs["metrics"], registry=registry,
                                 registry_uri=registry_uri, model_name=model_name, data_revision=data_revision,
                                 run_id=rid)
            reg.set_caching_options(False)
