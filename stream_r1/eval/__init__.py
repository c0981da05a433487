"""Evaluation: in-house video metrics, VideoReward scores, speed, VBench aggregation, report, compare.

Importing the package is cheap (no torch): ``vbench_summary`` is pure Python so acceptance checks
and a VBench environment can call it; the heavy parts live in submodules imported on use.
"""

from stream_r1.eval.vbench import VBENCH_DIMENSIONS, vbench_metrics, vbench_summary

__all__ = ["VBENCH_DIMENSIONS", "vbench_metrics", "vbench_summary"]
