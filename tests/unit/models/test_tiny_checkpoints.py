"""`stream-r1 make-tiny-checkpoints`: every file written, MANIFEST verifies, everything loads through real loaders."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import WanTransformer3DModel

from stream_r1.cli import main
from stream_r1.commands.make_tiny_checkpoints import MANIFEST, MODEL_PARTS, write_tiny_checkpoints
from stream_r1.config import load_config
from stream_r1.models.loading import inspect_generator_checkpoint, load_generator_state_dict, load_wan_transformer
from stream_r1.models.text_encoder import TextEncoder
from stream_r1.models.vae import WanVAE
from stream_r1.utils.io import sha256_file


def test_every_part_written_and_manifest_verifies(tiny_checkpoints: Path) -> None:
    for part in MODEL_PARTS:
        assert (tiny_checkpoints / part).exists(), part
    manifest = json.loads((tiny_checkpoints / MANIFEST).read_text())
    files = manifest["files"]
    for rel in ("base/config.json", "base/diffusion_pytorch_model.safetensors", "base_original/config.json",
                "teacher/config.json", "ode_init.pt", "vae/config.json", "text_encoder/config.json",
                "tokenizer/tokenizer.json"):
        assert rel in files, rel
    for rel, sha in files.items():
        assert sha256_file(tiny_checkpoints / rel) == sha, rel


def test_everything_loads_through_the_real_loaders(tiny_checkpoints: Path) -> None:
    cfg = load_config("tiny_cpu", [f"checkpoints.root={tiny_checkpoints}"])
    ck = cfg.checkpoints
    root = Path(ck.root)
    base = load_wan_transformer(root / ck.base, causal=False)
    original = load_wan_transformer(tiny_checkpoints / "base_original", causal=False)
    for k, v in base.state_dict().items():
        assert torch.equal(v, original.state_dict()[k]), k
    teacher = load_wan_transformer(root / ck.teacher, causal=False)
    assert isinstance(teacher, WanTransformer3DModel)
    assert (teacher.config.num_layers, teacher.config.num_attention_heads) == (3, 3)
    assert (base.config.num_layers, base.config.num_attention_heads, base.config.attention_head_dim) == (2, 2, 16)
    info = inspect_generator_checkpoint(root / ck.student_init)
    assert (info.layout, info.naming, info.has_ema) == ("nested", "original", False)
    raw = torch.load(root / ck.student_init, weights_only=True)
    assert set(raw) == {"generator"} and all(k.startswith("model.") for k in raw["generator"])
    sd = load_generator_state_dict(root / ck.student_init, use_ema=False)
    base.load_state_dict(sd, strict=True)  # same architecture, different (ODE-init) weights
    assert not torch.equal(sd["proj_out.weight"], original.state_dict()["proj_out.weight"])
    text = TextEncoder.from_pretrained(root / ck.text_encoder, root / ck.tokenizer, cfg.model.text_len_tokens)
    emb = text.encode(["A red fox trotting through fresh snow at dawn, cinematic lighting."])
    assert emb.shape == (1, cfg.model.text_len_tokens, base.config.text_dim)
    vae = WanVAE.from_pretrained(root / ck.vae)
    latents = torch.zeros(1, cfg.model.frames_per_block, 16, cfg.rollout.latent_height, cfg.rollout.latent_width)
    with torch.no_grad():
        assert vae.decode(latents).shape == (1, 9, 3, 32, 32)


def test_idempotent_and_cli(tmp_path: Path, capsys) -> None:
    root = write_tiny_checkpoints(tmp_path / "t", with_reward=False)
    manifest = (root / MANIFEST).read_text()
    mtime = (root / "ode_init.pt").stat().st_mtime_ns
    write_tiny_checkpoints(root, with_reward=False)  # verifies, does not rewrite
    assert (root / "ode_init.pt").stat().st_mtime_ns == mtime
    (root / "vae" / "config.json").write_text("{}")  # a corrupted file fails verification -> rewrite
    assert main(["make-tiny-checkpoints", str(root), "--no-reward"]) == 0
    assert "tiny checkpoints in" in capsys.readouterr().out
    assert (root / MANIFEST).read_text() == manifest  # same seed -> identical bytes


def test_export_command_writes_a_stock_diffusers_dir(tiny_checkpoints: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    rc = main(["export", "--base", str(tiny_checkpoints / "base"), "--checkpoint", str(tiny_checkpoints / "ode_init.pt"),
               "--output", str(out)])
    assert rc == 0
    model = WanTransformer3DModel.from_pretrained(str(out), local_files_only=True)
    sd = load_generator_state_dict(tiny_checkpoints / "ode_init.pt", use_ema=False)
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert main(["export", "--base", str(tiny_checkpoints / "base"), "--checkpoint",
                 str(tiny_checkpoints / "ode_init.pt"), "--output", str(out), "--use-ema"]) == 2


def test_videoreward_part_loads(tiny_checkpoints: Path) -> None:
    from stream_r1.commands.make_tiny_checkpoints import REWARD_PART
    from stream_r1.reward.model import VideoRewardModel

    files = json.loads((tiny_checkpoints / MANIFEST).read_text())["files"]
    assert any(f.startswith(f"{REWARD_PART}/") for f in files)
    model = VideoRewardModel.from_checkpoint(tiny_checkpoints / REWARD_PART)
    assert isinstance(model, VideoRewardModel)


def test_damaged_files_are_rebuilt_reward_part_included(tiny_checkpoints: Path, tmp_path: Path, capsys) -> None:
    # A truncated file (a killed copy, a full disk) used to break every later run: the VideoReward writer
    # refuses a non-empty directory, so neither a rerun nor --force could repair the set.
    import shutil

    root = Path(shutil.copytree(tiny_checkpoints, tmp_path / "t"))
    manifest = (root / MANIFEST).read_text()
    reward_blob = root / "VideoReward" / "Qwen2-VL-tiny" / "model.safetensors"
    reward_blob.write_bytes(reward_blob.read_bytes()[:100])
    (root / "text_encoder" / "model.safetensors").unlink()
    (root / ".staging-left-by-a-killed-rebuild").mkdir()
    assert main(["make-tiny-checkpoints", str(root)]) == 0
    assert (root / MANIFEST).read_text() == manifest  # same seed -> identical bytes, every part back
    for rel, sha in json.loads(manifest)["files"].items():
        assert sha256_file(root / rel) == sha, rel
    assert not list(root.glob(".staging-*"))
    mtime = reward_blob.stat().st_mtime_ns
    assert main(["make-tiny-checkpoints", str(root), "--force"]) == 0  # a verified set, rebuilt on request
    assert reward_blob.stat().st_mtime_ns != mtime and (root / MANIFEST).read_text() == manifest
    assert capsys.readouterr().out.count("tiny checkpoints in") == 2
