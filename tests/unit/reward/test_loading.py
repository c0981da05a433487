"""Official-layout loading: key remap, LoRA merge numerics, config checks, tokenizer/embedding resize."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import Qwen2VLForConditionalGeneration

from stream_r1.reward.loading import lora_pairs, read_layout, remap_non_lora_key
from stream_r1.reward.model import VideoRewardModel
from stream_r1.reward.tiny import TINY_BASE_NAME, TINY_INFERENCE_CONFIG, TINY_STEP


def test_remap_old_keys_to_v5() -> None:
    assert remap_non_lora_key("base_model.model.visual.blocks.0.attn.qkv.weight") == (
        "model.visual.blocks.0.attn.qkv.weight"
    )
    assert remap_non_lora_key("base_model.model.model.embed_tokens.weight") == (
        "model.language_model.embed_tokens.weight"
    )
    assert remap_non_lora_key("base_model.model.model.layers.3.mlp.up_proj.weight") == (
        "model.language_model.layers.3.mlp.up_proj.weight"
    )
    assert remap_non_lora_key("base_model.model.model.norm.weight") == "model.language_model.norm.weight"
    assert remap_non_lora_key("base_model.model.rm_head.weight") == "rm_head.weight"
    assert remap_non_lora_key("base_model.model.rm_head.modules_to_save.default.weight") == "rm_head.weight"
    assert remap_non_lora_key("base_model.model.rm_head.original_module.weight") is None
    assert remap_non_lora_key("model.visual.merger.mlp.0.bias") == "model.visual.merger.mlp.0.bias"
    with pytest.raises(ValueError, match="unexpected key"):
        remap_non_lora_key("base_model.model.text_encoder.weight")


def test_layout_reads_model_config(tiny_reward_dir: Path) -> None:
    layout = read_layout(tiny_reward_dir)
    assert layout.lora_scale == 2.0  # alpha 8 / r 4
    assert layout.checkpoint_dir.name == f"checkpoint-{TINY_STEP}"
    assert layout.base_dir == tiny_reward_dir / TINY_BASE_NAME
    assert layout.means == {a: TINY_INFERENCE_CONFIG[f"{a}_mean"] for a in ("VQ", "MQ", "TA")}
    assert layout.stds == {a: TINY_INFERENCE_CONFIG[f"{a}_std"] for a in ("VQ", "MQ", "TA")}


def test_lora_merge_numerics(tiny_reward_dir: Path, tiny_reward: VideoRewardModel) -> None:
    base = Qwen2VLForConditionalGeneration.from_pretrained(str(tiny_reward_dir / TINY_BASE_NAME))
    adapter = load_file(str(tiny_reward_dir / f"checkpoint-{TINY_STEP}" / "adapter_model.safetensors"))
    pairs = lora_pairs(adapter)
    assert len(pairs) == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)
    merged = dict(tiny_reward.backbone.named_modules())
    original = dict(base.named_modules())
    for name, (a, b) in pairs.items():
        assert float(b.abs().sum()) > 0  # non-zero LoRA: the merge is really exercised
        expected = original[name].weight + 2.0 * (b @ a)
        torch.testing.assert_close(merged[name].weight, expected, rtol=0, atol=1e-6)
        assert not torch.allclose(merged[name].weight, original[name].weight)


def test_non_lora_state_and_head_loaded(tiny_reward_dir: Path, tiny_reward: VideoRewardModel) -> None:
    raw = torch.load(tiny_reward_dir / f"checkpoint-{TINY_STEP}" / "non_lora_state_dict.pth", weights_only=True)
    own = tiny_reward.backbone.state_dict()
    torch.testing.assert_close(
        own["model.visual.blocks.1.mlp.fc1.weight"], raw["base_model.model.visual.blocks.1.mlp.fc1.weight"]
    )
    torch.testing.assert_close(
        own["model.language_model.embed_tokens.weight"], raw["base_model.model.model.embed_tokens.weight"]
    )
    torch.testing.assert_close(tiny_reward.rm_head.weight, raw["base_model.model.rm_head.weight"])
    # Tokenizer grew by the 3 reward tokens and the embedding was resized to it (VideoAlign).
    assert own["model.language_model.embed_tokens.weight"].shape[0] == len(tiny_reward.tokenizer)
    ids = tiny_reward.reward_token_ids
    assert sorted(ids.values()) == list(range(len(tiny_reward.tokenizer) - 3, len(tiny_reward.tokenizer)))
    assert all(not p.requires_grad for p in tiny_reward.parameters())


def _copy_with(tiny_reward_dir: Path, tmp_path: Path, section: str, key: str, value: object) -> Path:
    dst = tmp_path / "vr"
    shutil.copytree(tiny_reward_dir, dst)
    cfg = json.loads((dst / "model_config.json").read_text())
    cfg[section][key] = value
    (dst / "model_config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize(
    ("section", "key", "value", "match"),
    [
        ("data_config", "prompt_template_type", "simple", "prompt_template_type"),
        ("data_config", "eval_dim", ["VQ", "MQ"], "eval_dim"),
        ("model_config", "reward_token", "last", "reward_token"),
        ("model_config", "output_dim", 4, "output_dim"),
        ("inference_config", "MQ_std", 0.0, "MQ_std"),
    ],
)
def test_config_mismatch_fails_clearly(
    tiny_reward_dir: Path, tmp_path: Path, section: str, key: str, value: object, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        read_layout(_copy_with(tiny_reward_dir, tmp_path, section, key, value))


def test_missing_pieces(tiny_reward_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model_config\.json"):
        read_layout(tmp_path)
    dst = tmp_path / "vr"
    shutil.copytree(tiny_reward_dir, dst)
    (dst / f"checkpoint-{TINY_STEP}" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="adapter_model"):
        read_layout(dst)
    shutil.rmtree(dst / TINY_BASE_NAME)
    shutil.rmtree(dst / f"checkpoint-{TINY_STEP}")
    with pytest.raises(FileNotFoundError, match="checkpoint-"):
        read_layout(dst)


def test_tiny_writer_is_deterministic_and_refuses_non_empty_dir(tiny_reward_dir: Path, tmp_path: Path) -> None:
    from stream_r1.reward.tiny import write_tiny_videoreward
    from stream_r1.utils.io import sha256_file

    def digests(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}

    again = write_tiny_videoreward(tmp_path / "again")
    assert digests(again) == digests(tiny_reward_dir)
    with pytest.raises(ValueError, match="not an empty directory"):
        write_tiny_videoreward(again)
