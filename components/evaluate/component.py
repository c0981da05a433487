"""``evaluate``: scores the trained student → ``Metrics`` + an HTML report."""

from kfp import dsl
from kfp.dsl import HTML, Markdown, Metrics, Output

from components._shared.images import STREAM_R1_TRAIN_IMAGE


@dsl.component(base_image=STREAM_R1_TRAIN_IMAGE, install_kfp_package=False)
def evaluate(checkpoints_uri: str, export_uri: str, config: str, overrides: list, prompts: str, bucket: str,
             run_id: str, shared_dir: str, metrics: Output[Metrics], report: Output[HTML], table: Output[Markdown]):
    """Run ``stream-r1 evaluate`` on the published export ``export_uri`` over the ``prompts`` suite with the run's
    config ``overrides`` (those training saw; inputs read from ``shared_dir``, downloaded only when missing there)
    and publish ``metrics.json`` + ``report.html`` to ``s3://<bucket>/runs/<run-id>/evaluate/``.

    Every numeric entry of ``metrics.json`` is logged as a KFP metric (the run-comparison view) and listed in
    the Markdown ``table`` (rendered in the run's visualization panel).
    """
    from stream_r1.ops import steps

    values = steps.evaluate_step(checkpoints_uri, export_uri, config, prompts, bucket, run_id, shared_dir,
                                 metrics.path, report.path, overrides=list(overrides))
    for key, value in sorted(values.items()):
        metrics.log_metric(key, value)
    with open(table.path, "w") as f:
        f.write(steps.metrics_markdown(values, f"s3://{bucket}/runs/{run_id}/evaluate/"))
