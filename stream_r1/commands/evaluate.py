"""``stream-r1 evaluate``: generate a prompt suite's videos (or take --videos DIR) and score them."""

from __future__ import annotations

import argparse

from stream_r1.commands.config import add_config_arguments

NAME = "evaluate"
HELP = "score a checkpoint on a prompt suite: metrics.json, per_video.json, report.html"

DEFAULT_CONFIG = "wan2.1_t2v_1.3b_stream_r1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, required=False)
    parser.set_defaults(config=DEFAULT_CONFIG)
    parser.add_argument("--checkpoint", help="student checkpoint to generate with (export dir or .pt)")
    parser.add_argument(
        "--prompts", default=None,
        help="suite: tiny | vbench | vbench_extended | moviegen | moviegen_extended, a .txt/.json path or "
             "file:// URI (default: eval.prompts; '' = tiny)",
    )
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--num-frames", type=int, default=None,
                        help="latent frames per video (default eval.num_frames; 21 = 5 s, 120 = 30 s, 240 = 60 s)")
    parser.add_argument("--videos", default=None, help="score the videos in this directory instead of generating")
    parser.add_argument("--index", default=None, help="JSON {file name: prompt} for --videos")
    parser.add_argument("--data-root", default=None,
                        help="directory of the public prompt suites (default $STREAM_R1_DATA_ROOT or ../shared/data/prompts)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None,
        help="torch.compile the student when generating (default: on for CUDA, off on CPU)",
    )


def run(args: argparse.Namespace) -> int:
    import json

    from stream_r1.config import load_config
    from stream_r1.eval.evaluate import METRICS_FILE, REPORT_FILE, evaluate
    from stream_r1.shapes.ground_truth import ground_truth_for

    cfg = load_config(args.config, args.overrides)
    result = evaluate(
        cfg, output_dir=args.output, checkpoint=args.checkpoint, prompts=args.prompts, num_frames=args.num_frames,
        videos_dir=args.videos, index_file=args.index, data_root=args.data_root, device=args.device,
        compile=args.compile, ground_truth=ground_truth_for(cfg),
    )
    for note in result.notes:
        print(f"note: {note}")
    print(json.dumps(result.metrics, indent=2, sort_keys=True))
    print(f"wrote {result.output_dir / METRICS_FILE} and {result.output_dir / REPORT_FILE}")
    return 0
