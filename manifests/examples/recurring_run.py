"""Example: schedule weekly retraining as a KFP recurring run (one at a time, no catch-up).

KFP recurring runs are created through the KFP API, not applied as manifests:

    python manifests/examples/recurring_run.py --host https://kubeflow.example.com/pipeline \
        --namespace stream-r1 --cron "0 0 3 * * 1" --param backend=pytorchjob --param registry=kubeflow

Cron has 6 fields, seconds first (robfig/cron): "0 0 3 * * 1" = Mondays 03:00. The token comes from
--token-file or KFP_TOKEN. Uses stream_r1.ops.pipeline.schedule (compiles the pipeline, then
create_recurring_run with max_concurrency=1, no_catchup=True, caching off).
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
    parser.add_argument("--token-file", default=None, help="file holding a bearer token")
    args = parser.parse_args(argv)

    from stream_r1.ops import pipeline

    client = pipeline.kfp_client(args.host, args.namespace, args.token_file)
    arguments = pipeline.pipeline_arguments(args.config, pipeline.parse_params(args.param))
    rid = pipeline.schedule(client, arguments, experiment=args.experiment, job_name=args.job_name, cron=args.cron,
                            namespace=args.namespace)
    print(f"recurring run {rid} created: {args.cron}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
