"""Compiled streaming: a fixed set of graphs while the window fills, then no recompiles for any stream length."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounter

from stream_r1.models.causal_wan import CausalWanTransformer
from stream_r1.models.compile import compile_student, resolve_compile
from stream_r1.models.denoiser import CausalDenoiser
from stream_r1.models.tiny import TINY_STUDENT
from stream_r1.rollout.streaming import stream_chunks

STEPS = [1000.0, 937.5, 833.33, 625.0]
LATENT = (16, 2, 2)  # 1 token per frame: the geometry logic is the same at any size
WARM_CHUNKS = 3  # window 9 / chunk 3: stored 0, 3, 6 frames, then the same geometry for ever


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: a second intra-op thread only adds barrier waits, which a loaded CI machine turns into
    most of the run time; the graph counts do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _student(seed: int = 0) -> CausalWanTransformer:
    torch.manual_seed(seed)
    return CausalWanTransformer(**{**TINY_STUDENT, "rope_max_seq_len": 1024}).eval()


def _stream(den: CausalDenoiser, text: torch.Tensor, chunks: int, seed: int = 0):
    return stream_chunks(
        den, text, num_frames=3 * chunks, latent_shape=LATENT, timesteps=STEPS,
        rng=torch.Generator().manual_seed(seed), rolling=True,
    )


def test_compile_default_is_on_for_cuda_only() -> None:
    assert resolve_compile(None, "cuda") and resolve_compile(None, torch.device("cuda", 1))
    assert not resolve_compile(None, "cpu")
    assert resolve_compile(True, "cpu") and not resolve_compile(False, "cuda")


@pytest.mark.slow
def test_a_160_chunk_compiled_stream_never_recompiles_after_the_window_fills() -> None:
    torch._dynamo.reset()
    counter = CompileCounter()
    text = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(1))
    eager = CausalDenoiser(_student(), frames_per_block=3, local_attn_frames=9, sink_frames=3)
    compiled = CausalDenoiser(compile_student(_student(), backend=counter), frames_per_block=3,
                              local_attn_frames=9, sink_frames=3)
    frames_after = []
    ref = list(_stream(eager, text, 8))
    for chunk in _stream(compiled, text, 160):
        frames_after.append(counter.frame_count)
        if chunk.index < len(ref):  # same ops, run by the FX graph instead of eagerly
            assert (chunk.x0 - ref[chunk.index].x0).abs().max().item() <= 1e-5
    warm = frames_after[WARM_CHUNKS - 1]
    assert 0 < warm <= torch._dynamo.config.recompile_limit
    assert frames_after[-1] == warm, frames_after  # chunks 4..160: zero new graphs
    # a second stream (new cache, new prompt tensor) reuses the same graphs
    for _ in _stream(compiled, text.clone(), 5, seed=1):
        pass
    assert counter.frame_count == warm
    torch._dynamo.reset()


def test_frame_offset_is_a_value_not_a_graph() -> None:
    """Full-sequence calls at eight stream positions: at most two graphs (static, then symbolic offset)."""
    torch._dynamo.reset()
    counter = CompileCounter()
    eager, model = _student(), compile_student(_student(), backend=counter)
    x, text, t = torch.randn(1, 16, 6, 4, 4), torch.randn(1, 7, 32), torch.full((1, 6), 500.0)
    with torch.no_grad():
        for offset in range(8):
            got = model(x, t, text, frame_offset=offset, frames_per_block=3, return_dict=False)[0]
            ref = eager(x, t, text, frame_offset=offset, frames_per_block=3, return_dict=False)[0]
            assert (got - ref).abs().max().item() <= 1e-5
        model(x, t, text, frame_offset=0, frames_per_block=3, return_dict=False)  # an identical call: no graph
    assert counter.frame_count <= 2
    torch._dynamo.reset()


@pytest.mark.parametrize("command", ["generate", "evaluate"])
def test_generate_and_evaluate_take_compile_flags(command: str) -> None:
    import argparse
    import importlib

    parser = argparse.ArgumentParser()
    importlib.import_module(f"stream_r1.commands.{command}").add_arguments(parser)
    base = ["--config", "tiny_cpu", "--checkpoint", "c", "--prompts", "p", "--output", "o"]
    assert parser.parse_args(base).compile is None  # resolved per device by resolve_compile
    assert parser.parse_args([*base, "--compile"]).compile is True
    assert parser.parse_args([*base, "--no-compile"]).compile is False
