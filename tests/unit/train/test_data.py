"""Prompt sampler (seeded shuffle, drop_last, disjoint ranks, resumable) and the embedding cache."""

from __future__ import annotations

import pytest
import torch

from stream_r1.train.data import PromptSampler, TextEmbeddingCache, read_prompts


def test_read_prompts(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("a cat\n\n  a dog  \n", encoding="utf-8")
    assert read_prompts(f) == ["a cat", "a dog"]
    with pytest.raises(FileNotFoundError, match=r"data\.prompts"):
        read_prompts(tmp_path / "missing.txt")
    (tmp_path / "e.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no non-empty"):
        read_prompts(tmp_path / "e.txt")


def test_sampler_ranks_disjoint_and_drop_last():
    a = PromptSampler(num_prompts=7, world_size=2, rank=0, batch_size=1, seed=3)
    b = PromptSampler(num_prompts=7, world_size=2, rank=1, batch_size=1, seed=3)
    ea = [a.next_indices()[0] for _ in range(3)]
    eb = [b.next_indices()[0] for _ in range(3)]
    assert not set(ea) & set(eb) and len(set(ea + eb)) == 6  # one prompt dropped per epoch
    assert a.next_indices() and a.epoch == 1  # wraps into the next epoch (new permutation)


def test_sampler_resume_is_exact():
    a = PromptSampler(num_prompts=5, world_size=1, rank=0, batch_size=2, seed=0)
    for _ in range(3):
        a.next_indices()
    b = PromptSampler(num_prompts=5, world_size=1, rank=0, batch_size=2, seed=0)
    b.load_state_dict(a.state_dict())
    assert [a.next_indices() for _ in range(4)] == [b.next_indices() for _ in range(4)]


def test_sampler_too_few_prompts():
    with pytest.raises(ValueError, match="global_batch_size"):
        PromptSampler(num_prompts=1, world_size=2, rank=0, batch_size=1, seed=0)


def test_embedding_cache_hits(tmp_path):
    calls = []

    def encode(prompts):
        calls.append(list(prompts))
        return torch.stack([torch.full((4, 3), float(len(p))) for p in prompts])

    cache = TextEmbeddingCache(tmp_path, "enc-v1", encode)
    e1 = cache.get(["ab", "abc"])
    assert e1.shape == (2, 4, 3) and calls == [["ab", "abc"]]
    e2 = cache.get(["abc", "abcd"])
    assert calls[-1] == ["abcd"] and torch.equal(e2[0], e1[1])
    fresh = TextEmbeddingCache(tmp_path, "enc-v1", encode)
    fresh.get(["ab"])
    assert fresh.hits == 1 and len(calls) == 2
    other = TextEmbeddingCache(tmp_path, "enc-v2", encode)
    other.get(["ab"])
    assert other.misses == 1  # a different encoder identity never reuses entries
