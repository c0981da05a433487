"""Original Wan2.1 <-> diffusers names for the transformer: state-dict keys and config fields.

Pure functions, no torch. The map follows diffusers' ``convert_wan_to_diffusers`` (docs/method.md §4.4),
including the **norm2/norm3 swap**: the original's affine cross-attention LayerNorm is ``norm3``, diffusers
calls it ``norm2``. Every rename is a prefix rename, so the map is a bijection and
``diffusers_to_original_key(original_to_diffusers_key(k)) == k`` for every valid key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

KeyNaming = Literal["original", "diffusers"]

# (original prefix, diffusers prefix) for module paths outside the blocks.
_TOP_LEVEL: tuple[tuple[str, str], ...] = (
    ("patch_embedding", "patch_embedding"),
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("head.head", "proj_out"),
    ("head.modulation", "scale_shift_table"),
)

# (original, diffusers) module paths inside ``blocks.<i>``.
_IN_BLOCK: tuple[tuple[str, str], ...] = (
    ("modulation", "scale_shift_table"),
    ("self_attn.q", "attn1.to_q"),
    ("self_attn.k", "attn1.to_k"),
    ("self_attn.v", "attn1.to_v"),
    ("self_attn.o", "attn1.to_out.0"),
    ("self_attn.norm_q", "attn1.norm_q"),
    ("self_attn.norm_k", "attn1.norm_k"),
    ("cross_attn.q", "attn2.to_q"),
    ("cross_attn.k", "attn2.to_k"),
    ("cross_attn.v", "attn2.to_v"),
    ("cross_attn.o", "attn2.to_out.0"),
    ("cross_attn.norm_q", "attn2.norm_q"),
    ("cross_attn.norm_k", "attn2.norm_k"),
    ("norm1", "norm1"),
    # §4.4: the affine cross-attention LN is norm3 in Wan and norm2 in diffusers (and vice versa).
    ("norm3", "norm2"),
    ("norm2", "norm3"),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
)

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")

# Prefixes left by wrappers around the transformer (Self-Forcing's WanDiffusionWrapper, FSDP, activation
# checkpointing, torch.compile); §1.10, §5 item 19.
_WRAPPER_FRAGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
_OUTER_PREFIXES = ("model.diffusion_model.", "model.")


def _rename(rest: str, table: tuple[tuple[str, str], ...], src: int, key: str) -> str:
    """Rename the longest matching module-path prefix of ``rest`` (``src`` 0: original->diffusers, 1: back)."""
    dst = 1 - src
    best: tuple[str, str] | None = None
    for pair in table:
        prefix = pair[src]
        if (rest == prefix or rest.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[src])):
            best = pair
    if best is None:
        side = "original Wan" if src == 0 else "diffusers"
        raise ValueError(
            f"unknown {side} transformer key {key!r}: no rename rule matches; only Wan2.1 T2V transformer "
            "weights are supported (I2V/VACE extras are not)"
        )
    return best[dst] + rest[len(best[src]) :]


def _map_key(key: str, src: int) -> str:
    m = _BLOCK_RE.match(key)
    if m:
        return f"blocks.{m.group(1)}." + _rename(m.group(2), _IN_BLOCK, src, key)
    return _rename(key, _TOP_LEVEL, src, key)


def original_to_diffusers_key(key: str) -> str:
    """Map one original Wan2.1 key (``blocks.0.self_attn.q.weight``) to diffusers (``blocks.0.attn1.to_q.weight``).

    Raises:
        ValueError: the key is not a Wan2.1 T2V transformer key.
    """
    return _map_key(key, 0)


def diffusers_to_original_key(key: str) -> str:
    """Inverse of :func:`original_to_diffusers_key`.

    Raises:
        ValueError: the key is not a diffusers ``WanTransformer3DModel`` key.
    """
    return _map_key(key, 1)


def strip_wrapper_prefixes(key: str) -> str:
    """Remove FSDP/checkpoint/compile fragments anywhere and a leading ``model.`` (Self-Forcing wrapper)."""
    for frag in _WRAPPER_FRAGMENTS:
        key = key.replace(frag, "")
    for prefix in _OUTER_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


_ORIGINAL_MARKERS = ("text_embedding.", "time_embedding.", "time_projection.", "head.head.", ".self_attn.", ".ffn.0.")
_DIFFUSERS_MARKERS = ("condition_embedder.", "proj_out.", ".attn1.", ".ffn.net.")


def detect_key_naming(keys: Iterable[str]) -> KeyNaming | None:
    """Which naming a set of (prefix-stripped) transformer keys uses, or None when neither is recognised."""
    orig = diff = 0
    for k in keys:
        probe = "." + k
        orig += any(m in probe or k.startswith(m) for m in _ORIGINAL_MARKERS)
        diff += any(m in probe or k.startswith(m) for m in _DIFFUSERS_MARKERS)
    if orig and not diff:
        return "original"
    if diff and not orig:
        return "diffusers"
    return None


# ---------------------------------------------------------------------------------------------- config

_ORIGINAL_DEFAULTS: dict[str, Any] = {
    "model_type": "t2v",
    "patch_size": [1, 2, 2],
    "text_len": 512,
    "in_dim": 16,
    "out_dim": 16,
    "freq_dim": 256,
    "text_dim": 4096,
    "window_size": [-1, -1],
    "qk_norm": True,
    "cross_attn_norm": True,
    "eps": 1e-6,
}
_DEFAULT_ROPE_MAX_SEQ_LEN = 1024  # Wan's RoPE table length per axis (§4.1)


def is_original_config(cfg: dict[str, Any]) -> bool:
    """True for an original Wan ``config.json`` (``dim``/``num_heads``), False for a diffusers one."""
    return "dim" in cfg and "num_heads" in cfg and "num_attention_heads" not in cfg


def original_to_diffusers_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Translate an original Wan2.1 config (``dim, ffn_dim, num_heads, num_layers, ...``) to diffusers kwargs.

    Raises:
        ValueError: a required field is missing, the model type is not T2V, or ``dim`` is not divisible by
            ``num_heads``.
    """
    missing = [k for k in ("dim", "ffn_dim", "num_heads", "num_layers") if k not in cfg]
    if missing:
        raise ValueError(f"original Wan config lacks {missing}; it needs dim, ffn_dim, num_heads and num_layers")
    c = {**_ORIGINAL_DEFAULTS, **cfg}
    if c["model_type"] != "t2v":
        raise ValueError(f"original Wan config model_type={c['model_type']!r}: only 't2v' is supported")
    if c["dim"] % c["num_heads"]:
        raise ValueError(f"original Wan config dim={c['dim']} is not divisible by num_heads={c['num_heads']}")
    if not c["cross_attn_norm"]:
        # §5 item 19: the released models all carry the affine cross-attention LN.
        raise ValueError("original Wan config cross_attn_norm=false is not supported (Wan2.1 uses true)")
    return {
        "patch_size": list(c["patch_size"]),
        "num_attention_heads": int(c["num_heads"]),
        "attention_head_dim": int(c["dim"]) // int(c["num_heads"]),
        "in_channels": int(c["in_dim"]),
        "out_channels": int(c["out_dim"]),
        "text_dim": int(c["text_dim"]),
        "freq_dim": int(c["freq_dim"]),
        "ffn_dim": int(c["ffn_dim"]),
        "num_layers": int(c["num_layers"]),
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads" if c["qk_norm"] else None,
        "eps": float(c["eps"]),
        "rope_max_seq_len": int(c.get("rope_max_seq_len", _DEFAULT_ROPE_MAX_SEQ_LEN)),
    }


def diffusers_to_original_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`original_to_diffusers_config` (writes ``rope_max_seq_len`` only when non-default)."""
    heads, head_dim = int(cfg["num_attention_heads"]), int(cfg["attention_head_dim"])
    out: dict[str, Any] = {
        "_class_name": "WanModel",
        "model_type": "t2v",
        "patch_size": list(cfg.get("patch_size", [1, 2, 2])),
        "text_len": 512,
        "in_dim": int(cfg.get("in_channels", 16)),
        "dim": heads * head_dim,
        "ffn_dim": int(cfg["ffn_dim"]),
        "freq_dim": int(cfg.get("freq_dim", 256)),
        "text_dim": int(cfg.get("text_dim", 4096)),
        "out_dim": int(cfg.get("out_channels", 16)),
        "num_heads": heads,
        "num_layers": int(cfg["num_layers"]),
        "window_size": [-1, -1],
        "qk_norm": cfg.get("qk_norm", "rms_norm_across_heads") is not None,
        "cross_attn_norm": bool(cfg.get("cross_attn_norm", True)),
        "eps": float(cfg.get("eps", 1e-6)),
    }
    rope = int(cfg.get("rope_max_seq_len", _DEFAULT_ROPE_MAX_SEQ_LEN))
    if rope != _DEFAULT_ROPE_MAX_SEQ_LEN:
        out["rope_max_seq_len"] = rope
    return out
