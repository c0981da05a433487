"""``evaluate``: scores the trained student → ``Metrics`` + an HTML report."""

from kfp import dsl
from kfp.dsl import HTML, Input, Markdown, Metrics, Model, Output

from components._shared.images import STREAM_R1_TRAIN_IMAGE


@dsl.component(base_image=STREAM_R1_TRAIN_IMAGE, install_kfp_package=False)
def evaluate(checkpoints: Input[Model], run: Input[Model], config: str, prompts: str, bucket: str, run_id: str,
             metrics: Output[Metrics], report: Output[HTML], table: Output[Markdown]):
    """Run ``stream-r1 evaluate`` on the exported student of ``run`` over the ``prompts`` suite and publish
    ``metrics.json`` + ``report.html`` to ``s3://<bucket>/runs/<run-id>/evaluate/``.

    Every numeric entry of ``metrics.json`` is logged as a KFP metric (the run-comparison view) and listed in
    the Markdown ``table`` (rendered in the run's visualization panel).
    """
    from stream_r1.ops import steps

    values = steps.evaluate_from_artifacts(checkpoints.path, run.path, config, prompts, bucket, run_id,
                                           metrics.path, report.path)
    for key, value in sorted(values.items()):
        metrics.log_metric(key, value)
    with open(table.path, "w") as f:
        f.write(steps.metrics_markdown(values, f"s3://{bucket}/runs/{run_id}/evaluate/"))
