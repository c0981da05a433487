"""Example: schedule weekly retraining as a KFP recurring run of an uploaded pipeline version.

KFP recurring runs are created through the KFP API, not applied as manifests:

    python manifests/examples/recurring_run.py --host https://kubeflow.example.com/pipeline \
        --namespace stream-r1 --cron "0 0 3 * * 1" --param checkpoint_source=s3://stream-r1/checkpoints/wan2.1

The compiled pipeline is uploaded as a version of pipeline "stream-r1" (named after its content, so the same
package is never uploaded twice) and the recurring run references the pipeline: every scheduled run starts
from its latest version (KFP 2.5 or later). Upgrading is running this again after a change: a new version,
the same schedule. Its defaults are the cluster's (PyTorchJob, Kubeflow Model Registry, the real preset), so
only checkpoint_source is required. Cron has 6 fields, seconds first (robfig/cron): "0 0 3 * * 1" = Mondays
03:00. One run at a time, no catch-up, as the stream-r1-launcher ServiceAccount. The token comes from
--token-file or KFP_TOKEN.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="KFP API endpoint")
    parser.add_argument("--namespace", default="stream-r1", help="Kubeflow profile namespace")
    parser.add_argument("--experiment", default="stream-r1", help="KFP experiment")
    parser.add_argument("--job-name", default="stream-r1-weekly", help="recurring run name")
    parser.add_argument("--cron", default="0 0 3 * * 1", help="6-field cron (seconds first)")
    parser.add_argument("--config", default="wan2.1_t2v_1.3b_stream_r1", help="training preset")
    parser.add_argument("--param", action="append", default=[], help="pipeline parameter name=value (repeatable)")
    parser.add_argument("--package", default=None, help="compiled pipeline YAML (default: compile the checkout's)")
    parser.add_argument("--token-file", default=None, help="file holding a bearer token")
    args = parser.parse_args(argv)

    from stream_r1.ops import pipeline

    try:
        arguments = pipeline.cluster_arguments(args.config, pipeline.parse_params(args.param))
        pipeline.validate_cron(args.cron)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    client = pipeline.kfp_client(args.host, args.namespace, args.token_file)
    rec = pipeline.schedule(client, arguments, experiment=args.experiment, job_name=args.job_name, cron=args.cron,
                            namespace=args.namespace, package=args.package)
    print(pipeline.describe_schedule(rec, args.job_name, args.cron))
    return 0


if __name__ == "__main__":
    sys.exit(main())
