"""Random-weight checkpoints at the real geometry, in the real on-disk layout of ``wan2.1_1gpu_smoke``.

A lent GPU machine has no hub access, so the one-GPU smoke training cannot load the released weights.
Step time and peak memory do not depend on the weights' values, only on the geometry, so this writes
random models of the real sizes where they dominate the step and in the files and formats the preset
loads (every loading path runs):

* ``Wan2.1-T2V-1.3B-Diffusers/transformer`` — the 1.3B ``WanTransformer3DModel`` (teacher = base, as the
  preset), ``Self-Forcing/checkpoints/ode_init.pt`` — the student in Self-Forcing's ``.pt`` layout;
* ``Wan2.1-T2V-1.3B-Diffusers/vae`` — ``AutoencoderKLWan`` at Wan2.1's default geometry;
* ``Wan2.1-T2V-1.3B-Diffusers/{text_encoder,tokenizer}`` — umT5 at d_model 4096 (the student's text_dim)
  but ``--t5-layers`` deep (default 2 of 24) and a small word-level vocabulary: it runs once per prompt,
  off the training step's critical path;
* ``VideoReward`` — the official layout on a Qwen2-VL-2B-geometry base (text 1536 x 28 layers, ViT 1280 x 32).

``--geometry tiny`` writes the same layout with the tiny models (a CPU test of this script)::

    python benchmarks/gpu_smoke_checkpoints.py /tmp/smoke-ckpt            # full geometry (GPU machine)
    python benchmarks/gpu_smoke_checkpoints.py /tmp/smoke-ckpt --geometry tiny
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch

WAN_1_3B = {
    "patch_size": (1, 2, 2), "num_attention_heads": 12, "attention_head_dim": 128, "in_channels": 16,
    "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 8960, "num_layers": 30,
    "cross_attn_norm": True, "rope_max_seq_len": 1024,
}
UMT5_XXL = {"d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_heads": 64, "feed_forward_proj": "gated-gelu",
            "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128}
QWEN2_VL_2B_VOCAB = 151936


def qwen2vl_2b_config(token_ids: dict[str, int]) -> object:
    """Qwen2-VL-2B-Instruct's geometry with the tiny tokenizer's special-token ids."""
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config={
            "hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
            "intermediate_size": 8960, "vocab_size": QWEN2_VL_2B_VOCAB, "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1.0e6, "mrope_section": [16, 24, 24]},
            "bos_token_id": None, "eos_token_id": token_ids["<|im_end|>"], "pad_token_id": None,
        },
        vision_config={"depth": 32, "embed_dim": 1280, "hidden_size": 1536, "num_heads": 16, "mlp_ratio": 4,
                       "patch_size": 14, "temporal_patch_size": 2, "spatial_merge_size": 2},
        image_token_id=token_ids["<|image_pad|>"], video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"], vision_end_token_id=token_ids["<|vision_end|>"],
        tie_word_embeddings=True,  # as the released 2B model: lm_head shares the embedding matrix
    )


def write(root: Path, *, geometry: str, t5_layers: int, seed: int = 0) -> Path:
    """Write the checkpoint set under ``root`` (layout of the ``wan2.1_1gpu_smoke`` preset)."""
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    from stream_r1.models.causal_wan import CausalWanTransformer
    from stream_r1.models.loading import export_diffusers, original_state_dict
    from stream_r1.models.tiny import TINY_STUDENT, TINY_UMT5, TINY_VAE, build_tiny_tokenizer
    from stream_r1.reward.tiny import write_tiny_videoreward
    from stream_r1.utils.io import atomic_write_bytes

    full = geometry == "full"
    wan = root / "Wan2.1-T2V-1.3B-Diffusers"
    dtype = torch.bfloat16 if full else torch.float32
    torch.manual_seed(seed)
    student_cfg = WAN_1_3B if full else TINY_STUDENT
    print(f"[smoke-ckpt] transformer ({'1.3B' if full else 'tiny'})", flush=True)
    base = CausalWanTransformer(**student_cfg).to(dtype)
    export_diffusers(base, wan / "transformer")
    buf = io.BytesIO()
    torch.save({"generator": original_state_dict(base, prefix="model.")}, buf)
    atomic_write_bytes(root / "Self-Forcing" / "checkpoints" / "ode_init.pt", buf.getvalue())
    del base
    print("[smoke-ckpt] vae", flush=True)
    (AutoencoderKLWan() if full else AutoencoderKLWan(**TINY_VAE)).save_pretrained(str(wan / "vae"))
    print("[smoke-ckpt] text encoder + tokenizer", flush=True)
    tokenizer = build_tiny_tokenizer()
    tokenizer.save_pretrained(str(wan / "tokenizer"))
    t5 = {**UMT5_XXL, "num_layers": t5_layers} if full else dict(TINY_UMT5)
    UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **t5)).to(dtype).save_pretrained(str(wan / "text_encoder"))
    print("[smoke-ckpt] VideoReward", flush=True)
    if full:
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)  # 2.2B random parameters: half the bytes to init and write
        try:
            write_tiny_videoreward(root / "VideoReward", seed=seed, base_config=qwen2vl_2b_config)
        finally:
            torch.set_default_dtype(previous)
    else:
        write_tiny_videoreward(root / "VideoReward", seed=seed)
    prompts = root / "prompts.txt"
    prompts.write_text("a red fox trotting through fresh snow\na paper boat drifting down a rain gutter\n")
    return root


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="output directory (checkpoints.root of the smoke run)")
    p.add_argument("--geometry", choices=["full", "tiny"], default="full")
    p.add_argument("--t5-layers", type=int, default=2, help="umT5 depth at full geometry (the real one has 24)")
    args = p.parse_args(argv)
    write(args.root, geometry=args.geometry, t5_layers=args.t5_layers)
    print(f"[smoke-ckpt] wrote {args.root}")


if __name__ == "__main__":
    main()
