"""The kernels a streamed chunk is made of, each timed alone against the alternatives that give the same result.

Usage (docs/benchmarks.md, "Streaming speed-up", "What is left: the kernel floor"):

    .venv/bin/python benchmarks/streaming_kernels.py

One torch thread, thread CPU time, median of ``--repeats`` calls after a warm-up, random inputs in the shapes
of the tiny student streaming a 30x52 latent with the ``tiny_cpu`` window (1170 queries = one chunk of 3
latent frames x 390 tokens; 3510 keys = sink + window + chunk; 2 heads of 16; 16 text tokens; FFN 64 wide).
Each row prints the time of the kernel the student runs and of each alternative, with the largest absolute
difference of its result from the student's kernel, so a faster row that is not the same computation shows.
The chunk's work is a fixed count of these calls (9 self-attention and 9 cross-attention calls, 9 FFN
activations, 5 patch embeddings, 4 noise draws a chunk), so this table bounds what any rewrite of the
surrounding Python can gain.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

Q_TOKENS, K_TOKENS, HEADS, HEAD_DIM, TEXT_TOKENS, FFN_DIM = 1170, 3510, 2, 16, 16, 64


def _time_us(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    """Median thread CPU time of ``fn()`` in microseconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return 1e6 * statistics.median(times)


def _heads(n: int, rng: torch.Generator, dim: int = HEAD_DIM, heads: int = HEADS) -> torch.Tensor:
    """``[1, heads, n, dim]`` as the student hands it to SDPA (a transposed ``[1, n, heads, dim]``)."""
    return torch.randn(1, n, heads, dim, generator=rng).transpose(1, 2)


def _softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int) -> torch.Tensor:
    """Attention as matmul -> softmax -> matmul over query blocks of ``block`` rows (scores stay in cache)."""
    out = torch.empty_like(q)
    for s in range(0, q.shape[2], block):
        scores = torch.matmul(q[:, :, s : s + block] * q.shape[-1] ** -0.5, k.transpose(-1, -2))
        out[:, :, s : s + block] = torch.matmul(scores.softmax(-1), v)
    return out


def _linear_patch_embed(x: torch.Tensor, conv: torch.nn.Conv3d) -> torch.Tensor:
    """The (1, 2, 2) patch convolution as one matrix product over gathered 2x2 patches ``[1, tokens, dim]``."""
    b, c, f, h, w = x.shape
    patches = x.reshape(b, c, f, h // 2, 2, w // 2, 2).permute(0, 2, 3, 5, 1, 4, 6).reshape(b, -1, c * 4)
    return F.linear(patches, conv.weight.reshape(conv.out_channels, -1), conv.bias)


def rows(repeats: int) -> list[tuple[str, str, float, float]]:
    """(kernel, variant, microseconds, max |difference| from the student's variant) for every measurement."""
    rng = torch.Generator().manual_seed(0)
    q, k, v = _heads(Q_TOKENS, rng), _heads(K_TOKENS, rng), _heads(K_TOKENS, rng)
    tk, tv = _heads(TEXT_TOKENS, rng), _heads(TEXT_TOKENS, rng)
    one_q, one_k, one_v = (_heads(n, rng, dim=HEADS * HEAD_DIM, heads=1) for n in (Q_TOKENS, K_TOKENS, K_TOKENS))
    conv = torch.nn.Conv3d(16, HEADS * HEAD_DIM, (1, 2, 2), stride=(1, 2, 2))
    latent = torch.randn(1, 16, 3, 30, 52, generator=rng)
    hidden = torch.randn(1, Q_TOKENS, FFN_DIM, generator=rng)
    noise = torch.empty(1, 3, 16, 30, 52)

    def math_sdpa(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(a, b, c)

    cases: list[tuple[str, list[tuple[str, Callable[[], torch.Tensor]]]]] = [
        ("self-attention 1170 x 3510, 2 heads of 16", [
            ("SDPA flash (the student's)", lambda: F.scaled_dot_product_attention(q, k, v)),
            ("SDPA flash, contiguous [B, H, N, D]",
             lambda: F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())),
            ("matmul-softmax-matmul, 128-query blocks", lambda: _softmax_attention(q, k, v, 128)),
            ("matmul-softmax-matmul, all queries", lambda: _softmax_attention(q, k, v, Q_TOKENS)),
            ("SDPA math backend", lambda: math_sdpa(q, k, v)),
        ]),
        ("1 head of 32 (not the model: half the scores, the same multiply-adds)", [
            ("SDPA flash", lambda: F.scaled_dot_product_attention(one_q, one_k, one_v)),
        ]),
        ("cross-attention 1170 x 16 text tokens", [
            ("SDPA flash (the student's)", lambda: F.scaled_dot_product_attention(q, tk, tv)),
            ("matmul-softmax-matmul", lambda: _softmax_attention(q, tk, tv, Q_TOKENS)),
            ("SDPA math backend", lambda: math_sdpa(q, tk, tv)),
        ]),
        ("patch embedding (1, 2, 2) over [1, 16, 3, 30, 52]", [
            ("Conv3d (the student's)", lambda: conv(latent).flatten(2).transpose(1, 2)),
            ("gathered patches @ weight", lambda: _linear_patch_embed(latent, conv)),
        ]),
        ("FFN activation [1, 1170, 64]", [
            ("GELU tanh (Wan's)", lambda: F.gelu(hidden, approximate="tanh")),
            ("GELU erf (another function: the cost of tanh)", lambda: F.gelu(hidden)),
        ]),
        ("noise draw [1, 3, 16, 30, 52] (seed contract: fixed)", [
            ("normal_ (the student's)", lambda: noise.normal_(generator=rng)),
        ]),
    ]  # fmt: skip
    out = []
    with torch.no_grad():
        for kernel, variants in cases:
            reference = variants[0][1]()
            for name, fn in variants:
                result = fn()
                diff = (result - reference).abs().max().item() if result.shape == reference.shape else float("nan")
                out.append((kernel, name, _time_us(fn, repeats), diff))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=31, help="timed calls per variant (median)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, 1 thread")
    print("| kernel | variant | us / call | max abs diff vs the student's |")
    print("|---|---|---:|---:|")
    for kernel, name, us, diff in rows(args.repeats):
        print(f"| {kernel} | {name} | {us:.1f} | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
