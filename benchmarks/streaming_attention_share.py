"""How much of a streamed chunk is attention: thread CPU time inside ``F.scaled_dot_product_attention``.

Usage (the "Where the time goes" table of docs/benchmarks.md, "Streaming speed-up"):

    .venv/bin/python benchmarks/streaming_attention_share.py                    # chunk and attention time
    .venv/bin/python benchmarks/streaming_attention_share.py --stub-attention   # everything else

Streams the tiny student (random weights, seed 0, RoPE table 1024) with the windowed cache of the
``tiny_cpu`` config at ``--latent-hw`` (30x52 default), skips ``--warmup`` chunks, then times
``--chunks`` chunks: per chunk the thread CPU time (one torch thread) and the part of it spent inside
``torch.nn.functional.scaled_dot_product_attention`` (diffusers' native backend calls it; self- and
cross-attention). ``--stub-attention`` replaces that function by ``zeros_like(query)`` for the run, a
timing tool only (the video is then meaningless), so the chunk time is everything but attention.

It uses only ``CausalDenoiser`` / ``stream_chunks`` / ``CausalWanTransformer`` with their long-standing
arguments, so the same file can be copied into an older checkout (e.g. the ``--baseline`` commit of
``streaming_latency.py``) and run there with ``PYTHONPATH`` pointing at it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from unittest import mock

import torch
import torch.nn.functional as F

from stream_r1.config import load_config
from stream_r1.diffusion import warped_timesteps
from stream_r1.models.causal_wan import CausalWanTransformer
from stream_r1.models.denoiser import CausalDenoiser
from stream_r1.models.tiny import TINY_STUDENT
from stream_r1.rollout.streaming import stream_chunks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latent-hw", type=int, nargs=2, default=(30, 52), metavar=("H", "W"))
    p.add_argument("--warmup", type=int, default=5, help="chunks streamed before timing (window full after 3)")
    p.add_argument("--chunks", type=int, default=25, help="timed chunks")
    p.add_argument("--stub-attention", action="store_true", help="time everything but attention")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config("tiny_cpu")
    m = cfg.model
    torch.manual_seed(0)
    model = CausalWanTransformer(**{**TINY_STUDENT, "rope_max_seq_len": 1024}).eval()
    den = CausalDenoiser(model, shift=cfg.rollout.student_sigma_shift, frames_per_block=m.frames_per_block,
                         local_attn_frames=m.local_attn_frames, sink_frames=m.sink_frames,
                         sink_ema_alpha=m.sink_ema_alpha)
    steps = warped_timesteps(list(cfg.rollout.denoising_steps), cfg.rollout.student_sigma_shift)
    text = torch.randn(1, m.text_len_tokens, model.config.text_dim, generator=torch.Generator().manual_seed(0))
    h, w = args.latent_hw
    frames = (args.warmup + args.chunks) * m.frames_per_block
    spent = {"s": 0.0, "calls": 0}
    real = F.scaled_dot_product_attention

    def timed(*a: object, **k: object) -> torch.Tensor:
        t0 = time.thread_time()
        out = torch.zeros_like(k.get("query", a[0] if a else None)) if args.stub_attention else real(*a, **k)
        spent["s"] += time.thread_time() - t0
        spent["calls"] += 1
        return out

    chunk_ms = []
    with mock.patch.object(F, "scaled_dot_product_attention", timed), torch.no_grad():
        stream = stream_chunks(den, text, num_frames=frames, latent_shape=(16, h, w), timesteps=steps,
                               rng=torch.Generator().manual_seed(0), rolling=True)
        for _ in range(args.warmup):
            next(stream)
        spent.update(s=0.0, calls=0)
        for _ in range(args.chunks):
            t0 = time.thread_time()
            next(stream)
            chunk_ms.append(1000.0 * (time.thread_time() - t0))
    print(f"latent {h}x{w}, {args.chunks} chunks{' (attention stubbed out)' if args.stub_attention else ''}: "
          f"median chunk {statistics.median(chunk_ms):.2f} ms, attention {1000.0 * spent['s'] / args.chunks:.2f} "
          f"ms/chunk in {spent['calls'] / args.chunks:.0f} calls/chunk")
    return 0


if __name__ == "__main__":
    sys.exit(main())
