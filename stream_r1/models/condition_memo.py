"""Per-stream memo of the student's time/text conditioning (streaming generation only).

A stream runs the same few timestep tensors (one per denoising step, one for the context pass) with
the same prompt tensor chunk after chunk, so the condition embedder's time embedding, per-frame
modulation and text projection of a chunk are the values the previous chunk computed: 4 of the 5
forwards of a chunk would recompute exactly the same tensors.

Who may use it: only a caller whose weights are fixed for the whole life of its cache, i.e. streaming
generation (:func:`stream_r1.rollout.streaming.stream_chunks` attaches one to the cache it creates). A
cache without a memo (``KVCache.conditions is None``, the default, and every training rollout's cache)
computes the conditioning on every forward and holds nothing of the model. The reasons training must
not use it: weight updates are not reliably visible through version counters (FSDP2 writes its
all-gathered parameters while preserving their version counters), and with FSDP2 merely keeping
references to the gathered parameters in a cache that lives through the backward changed the reduced
generator gradient (docs/benchmarks.md, "Streaming speed-up").

Validity of an entry (checked on every lookup, all must hold):

* the very same timestep tensor and text tensor objects (the entry holds them, so their ids cannot be
  taken over by new tensors), neither written in place since (version counters);
* the same model (the memo serves one model; another one clears it);
* no parameter of the model's ``condition_embedder`` written in place since (their version counters,
  read from the module on every lookup; no reference to a parameter is kept).

Nothing is memoised with autograd on, under ``torch.compile`` or for inference tensors (which have no
version counter); those calls compute as usual.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

_MAX_ENTRIES = 16  # a stream has len(steps) + 1 timestep tensors; more means a caller builds new ones per call


@dataclass
class _Entry:
    t: Tensor
    text: Tensor
    stamp: tuple[int, ...]
    value: tuple[Tensor, ...]


@dataclass
class ConditionMemo:
    """The conditioning of each timestep tensor of one stream, for one model.

    Attributes:
        hits: lookups answered from the memo (for tests and benchmarks).
        misses: lookups that computed (and stored) the conditioning.
    """

    hits: int = 0
    misses: int = 0
    _owner: weakref.ref[nn.Module] | None = field(default=None, repr=False)
    _entries: dict[int, _Entry] = field(default_factory=dict, repr=False)

    def _owned_by(self, model: nn.Module) -> bool:
        return self._owner is not None and self._owner() is model

    def clear(self) -> None:
        """Forget every entry (a reset stream starts over)."""
        self._entries.clear()
        self._owner = None

    @staticmethod
    def usable(t: Tensor, text: Tensor) -> bool:
        """Whether a forward with these inputs may use the memo (no autograd, eager, no inference tensors)."""
        return not (
            torch.is_grad_enabled()
            or torch.compiler.is_compiling()
            or torch.is_inference_mode_enabled()
            or t.is_inference()
            or text.is_inference()
        )

    def lookup(self, model: nn.Module, embedder: nn.Module, t: Tensor, text: Tensor) -> tuple[Tensor, ...] | None:
        """The stored conditioning of ``(t, text)`` for ``model`` if still valid, else None (see the module doc)."""
        if not self._owned_by(model):
            return None
        entry = self._entries.get(id(t))
        if entry is None or entry.t is not t or entry.text is not text or entry.stamp != _stamp(embedder, t, text):
            return None
        self.hits += 1
        return entry.value

    def store(self, model: nn.Module, embedder: nn.Module, t: Tensor, text: Tensor, value: tuple[Tensor, ...]) -> None:
        """Keep ``value`` (computed from ``t``, ``text`` and ``embedder``'s current weights) for ``model``."""
        stamp = _stamp(embedder, t, text)
        if not self._owned_by(model) or len(self._entries) >= _MAX_ENTRIES:
            self._entries.clear()
            self._owner = weakref.ref(model)  # weak: the memo keeps nothing of the model alive
        self.misses += 1
        self._entries[id(t)] = _Entry(t, text, stamp, value)


def _stamp(embedder: nn.Module, t: Tensor, text: Tensor) -> tuple[int, ...]:
    """Version counters of the inputs and of every embedder parameter (inference parameters: -1, see below)."""
    # Parameters created under inference mode have no version counter; they cannot be written outside
    # inference mode either, and the memo is never used inside it.
    weights = tuple(-1 if p.is_inference() else p._version for p in embedder.parameters())
    return (t._version, text._version, *weights)
