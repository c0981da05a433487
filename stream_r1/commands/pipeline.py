"""``stream-r1 pipeline compile | run-local | submit | schedule``: the Kubeflow pipeline from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

NAME = "pipeline"
HELP = "compile, run locally (tiny, real S3), submit or schedule the Kubeflow pipeline"


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline")
    p.add_argument("--namespace", default="kubeflow", help="Kubernetes namespace (profile) of the run")
    p.add_argument("--token-file", help="file holding a bearer token (default: env KFP_TOKEN, else none)")
    p.add_argument("--experiment", default="stream-r1", help="KFP experiment name")
    p.add_argument("--package", help="compiled pipeline YAML (default: compile the checkout's DAG)")


def _run_args(p: argparse.ArgumentParser, default_config: str | None, config_help: str = "") -> None:
    p.add_argument("--config", default=default_config,
                   help=config_help or "training preset or YAML (checked before submitting)")
    p.add_argument("--param", dest="params", action="append", default=[], metavar="NAME=VALUE",
                   help="pipeline parameter (JSON-parsed when possible), e.g. --param backend=pytorchjob; repeatable")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = sub.add_parser("compile", help="compile pipelines/stream_r1.py to IR YAML")
    c.add_argument("--output", help="output YAML (default pipelines/compiled/stream_r1.yaml)")

    r = sub.add_parser("run-local", help="run the whole DAG here on a local checkpoint set with a loopback S3 server")
    _run_args(r, None, "training preset or YAML (default: the world's, tiny_cpu or shapes_cpu)")
    r.add_argument("--world", choices=["tiny", "shapes"], default="tiny",
                   help="tiny: random checkpoints (every step runs, nothing is learnt); shapes: the synthetic world "
                        "whose models are trained here, with ground-truth scores (docs/shapes.md; built on the first "
                        "run, then cached)")
    r.add_argument("--world-size", choices=["ci", "default"], default="ci",
                   help="build size of the shapes world (ci: minutes; default: the experiment's, longer)")
    r.add_argument("--workdir", default=".stream-r1/local",
                   help="persistent state: bucket data, registry.db, pipeline_root, tiny checkpoints / shapes world")
    r.add_argument("--endpoint", help="use this S3 URL (keys from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) "
                                      "instead of starting SeaweedFS")
    r.add_argument("--bucket", default="stream-r1", help="bucket for runs/<run-id>/...")
    r.add_argument("--runner", choices=["subprocess", "docker"], default="subprocess",
                   help="subprocess: every step in this venv (fast, default); docker: every step in its cluster "
                        "image through podman's Docker API (images built when missing; training as a container)")

    s = sub.add_parser("submit", help="submit one run to a Kubeflow Pipelines cluster")
    _cluster_args(s)
    _run_args(s, "wan2.1_t2v_1.3b_stream_r1")
    s.add_argument("--run-name", required=True, help="display name of the run")

    k = sub.add_parser("schedule", help="create a recurring run (scheduled retraining)")
    _cluster_args(k)
    _run_args(k, "wan2.1_t2v_1.3b_stream_r1")
    k.add_argument("--job-name", required=True, help="name of the recurring run")
    k.add_argument("--cron", required=True, help="6-field cron (sec min hour dom month dow), e.g. '0 0 3 * * 1'")


def run(args: argparse.Namespace) -> int:
    from stream_r1.ops import pipeline as pl
    from stream_r1.utils.paths import check_output_dir, check_output_file

    if args.action == "compile":
        if args.output:
            check_output_file(args.output, "--output")
        print(pl.compile_pipeline(args.output))
        return 0
    params = pl.parse_params(args.params)
    if args.action == "run-local":
        check_output_dir(args.workdir, "--workdir")
        from stream_r1.ops.podman import EngineMissing
        from stream_r1.ops.run_summary import format_summary

        try:
            summary = pl.run_local(workdir=args.workdir, endpoint=args.endpoint, bucket=args.bucket,
                                   config=args.config, params=params, runner=args.runner, world=args.world,
                                   world_size=args.world_size)
        except EngineMissing as e:
            print(f"stream-r1 pipeline run-local: {e}")
            return 2
        print("\n" + format_summary(summary, None if args.endpoint else Path(args.workdir).resolve() / "seaweed"))
        if summary.state == "INTERRUPTED":
            # Stopped by a signal: exit now. kfp.local's task threads may sit in a retry back-off, and a
            # normal interpreter exit would wait for them; every process they started is already gone.
            from stream_r1.ops.process_tree import kill_until_quiet

            kill_until_quiet()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(summary.exit_code)
        return summary.exit_code
    arguments = pl.cluster_arguments(args.config, params)
    if args.action == "schedule":
        pl.validate_cron(args.cron)  # before any cluster call
    client = pl.kfp_client(args.host, args.namespace, args.token_file)
    if args.action == "submit":
        run_id = pl.submit(client, arguments, experiment=args.experiment, run_name=args.run_name,
                           namespace=args.namespace, package=args.package)
        print(f"submitted run {run_id} ({args.run_name}) to {args.host}")
    else:
        rec = pl.schedule(client, arguments, experiment=args.experiment, job_name=args.job_name, cron=args.cron,
                          namespace=args.namespace, package=args.package)
        print(pl.describe_schedule(rec, args.job_name, args.cron))
    return 0
