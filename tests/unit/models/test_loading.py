"""Checkpoint formats: key map, .pt layouts, original vs diffusers directories, export (docs/method.md §1.10, §4.4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from safetensors.torch import save_file

from stream_r1.models.loading import (
    export_diffusers,
    export_original,
    inspect_generator_checkpoint,
    load_generator_state_dict,
    load_wan_transformer,
    original_state_dict,
)
from stream_r1.models.tiny import TINY_STUDENT, build_tiny_transformer
from stream_r1.models.wan_keys import (
    detect_key_naming,
    diffusers_to_original_config,
    diffusers_to_original_key,
    original_to_diffusers_config,
    original_to_diffusers_key,
    strip_wrapper_prefixes,
)


@pytest.fixture(scope="module")
def student() -> WanTransformer3DModel:
    return build_tiny_transformer(0)


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 3, 4, 4, generator=g)  # diffusers layout [B, C, F, H, W]
    return x, torch.tensor([500.0]), torch.randn(1, 16, 32, generator=g)


# ------------------------------------------------------------------------------------------------ key map


@pytest.mark.parametrize("teacher", [False, True])
def test_key_map_round_trip_and_matches_diffusers_converter(teacher: bool) -> None:
    sd = build_tiny_transformer(0, teacher=teacher).state_dict()
    original = {diffusers_to_original_key(k): v for k, v in sd.items()}
    assert {original_to_diffusers_key(k) for k in original} == set(sd)
    for k in sd:
        assert original_to_diffusers_key(diffusers_to_original_key(k)) == k
    # diffusers' own single-file converter maps our original names back to the same keys.
    assert set(convert_wan_transformer_to_diffusers(dict(original))) == set(sd)


def test_norm2_norm3_swap_and_names() -> None:
    assert original_to_diffusers_key("blocks.3.norm3.weight") == "blocks.3.norm2.weight"
    assert original_to_diffusers_key("blocks.3.norm2.weight") == "blocks.3.norm3.weight"
    assert original_to_diffusers_key("blocks.0.self_attn.o.bias") == "blocks.0.attn1.to_out.0.bias"
    assert original_to_diffusers_key("blocks.0.cross_attn.norm_k.weight") == "blocks.0.attn2.norm_k.weight"
    assert original_to_diffusers_key("blocks.1.ffn.0.weight") == "blocks.1.ffn.net.0.proj.weight"
    assert original_to_diffusers_key("head.modulation") == "scale_shift_table"
    assert original_to_diffusers_key("blocks.1.modulation") == "blocks.1.scale_shift_table"
    assert original_to_diffusers_key("time_projection.1.weight") == "condition_embedder.time_proj.weight"


def test_unknown_key_is_an_error() -> None:
    with pytest.raises(ValueError, match="img_emb"):
        original_to_diffusers_key("img_emb.proj.0.weight")


def test_strip_wrapper_prefixes_and_naming() -> None:
    k = "model._fsdp_wrapped_module.blocks.0._checkpoint_wrapped_module.self_attn.q.weight"
    assert strip_wrapper_prefixes(k) == "blocks.0.self_attn.q.weight"
    assert strip_wrapper_prefixes("_orig_mod.proj_out.bias") == "proj_out.bias"
    assert detect_key_naming(["blocks.0.self_attn.q.weight", "head.head.bias"]) == "original"
    assert detect_key_naming(["blocks.0.attn1.to_q.weight", "proj_out.bias"]) == "diffusers"
    assert detect_key_naming(["encoder.conv.weight"]) is None


def test_config_round_trip(student: WanTransformer3DModel) -> None:
    cfg = dict(student.config)
    back = original_to_diffusers_config(diffusers_to_original_config(cfg))
    for k, v in back.items():
        want = list(cfg[k]) if isinstance(cfg[k], tuple) else cfg[k]
        assert want == v, k
    real_13b = {"dim": 1536, "ffn_dim": 8960, "num_heads": 12, "num_layers": 30, "freq_dim": 256, "model_type": "t2v"}
    d = original_to_diffusers_config(real_13b)
    assert (d["attention_head_dim"], d["text_dim"], d["rope_max_seq_len"]) == (128, 4096, 1024)
    with pytest.raises(ValueError, match="t2v"):
        original_to_diffusers_config({**real_13b, "model_type": "i2v"})


# ------------------------------------------------------------------------------------------- .pt layouts


def test_every_generator_layout_loads_the_same_weights(student: WanTransformer3DModel, tmp_path: Path) -> None:
    ref = student.state_dict()
    ema = {k: v + 1.0 for k, v in ref.items()}
    orig_prefixed = original_state_dict(student, prefix="model.")
    fsdp = {
        k.replace("model.", "model._fsdp_wrapped_module.", 1).replace(".self_attn", "._checkpoint_wrapped_module.self_attn"): v
        for k, v in orig_prefixed.items()
    }
    files = {
        "self_forcing.pt": {"generator": orig_prefixed, "critic": {"model.x": torch.zeros(1)}},
        "self_forcing_fsdp.pt": {"generator": fsdp, "critic": {}, "generator_ema": fsdp},
        "reward_forcing.pt": {k: v.clone() for k, v in ref.items()},
        "stream_r1_raw.pt": {f"_orig_mod.{k}": v for k, v in ref.items()},
        "stream_r1_nested.pt": {"generator": {f"model.{k}": v for k, v in ref.items()}, "generator_ema": ema},
    }
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
        _assert_same(load_generator_state_dict(tmp_path / name, use_ema=False), ref)
    save_file({k: v.contiguous() for k, v in ref.items()}, str(tmp_path / "flat.safetensors"))
    _assert_same(load_generator_state_dict(tmp_path / "flat.safetensors", use_ema=False), ref)
    # use_ema picks generator_ema.
    _assert_same(load_generator_state_dict(tmp_path / "stream_r1_nested.pt", use_ema=True), ema)
    info = inspect_generator_checkpoint(tmp_path / "stream_r1_nested.pt")
    assert (info.layout, info.has_ema, info.naming, info.num_tensors) == ("nested", True, "diffusers", len(ref))
    info = inspect_generator_checkpoint(tmp_path / "self_forcing.pt")
    assert (info.layout, info.has_ema, info.naming) == ("nested", False, "original")
    assert inspect_generator_checkpoint(tmp_path / "reward_forcing.pt").layout == "flat"


def test_use_ema_without_ema_is_a_clear_error(student: WanTransformer3DModel, tmp_path: Path) -> None:
    torch.save({"generator": student.state_dict()}, tmp_path / "sf.pt")
    with pytest.raises(ValueError, match=r"no 'generator_ema'.*drop --use-ema"):
        load_generator_state_dict(tmp_path / "sf.pt", use_ema=True)
    torch.save(student.state_dict(), tmp_path / "flat.pt")
    with pytest.raises(ValueError, match=r"flat generator state dict.*use_ema=False"):
        load_generator_state_dict(tmp_path / "flat.pt", use_ema=True)
    torch.save({"generator_ema": student.state_dict()}, tmp_path / "ema_only.pt")
    with pytest.raises(ValueError, match="no 'generator' entry"):
        load_generator_state_dict(tmp_path / "ema_only.pt", use_ema=False)


@pytest.mark.parametrize(
    "obj",
    [
        {"step": 3, "optimizer": {"lr": 1.0}},
        {"weights": torch.zeros(2)},
        [torch.zeros(1)],
        {"generator": {"a": 1}},
    ],
)
def test_unknown_layout_lists_layouts_tried(obj: object, tmp_path: Path) -> None:
    torch.save(obj, tmp_path / "bad.pt")
    for fn in (lambda: load_generator_state_dict(tmp_path / "bad.pt", use_ema=False),
               lambda: inspect_generator_checkpoint(tmp_path / "bad.pt")):
        with pytest.raises(ValueError, match=r"Layouts tried: nested .*; flat "):
            fn()


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_generator_state_dict(tmp_path / "nope.pt", use_ema=False)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read generator checkpoint"):
        inspect_generator_checkpoint(tmp_path / "junk.pt")


# ------------------------------------------------------------------------------------------- directories


def test_original_dir_loads_equal_to_diffusers_dir(student: WanTransformer3DModel, tmp_path: Path) -> None:
    export_diffusers(student, tmp_path / "diffusers")
    export_original(student, tmp_path / "original")
    cfg = json.loads((tmp_path / "original" / "config.json").read_text())
    assert cfg["dim"] == 32 and cfg["num_heads"] == 2 and "num_attention_heads" not in cfg
    a = load_wan_transformer(tmp_path / "diffusers", causal=False)
    b = load_wan_transformer(tmp_path / "original", causal=False)
    assert type(a) is WanTransformer3DModel and type(b) is WanTransformer3DModel
    _assert_same(a.state_dict(), b.state_dict())
    _assert_same(a.state_dict(), student.state_dict())
    x, t, text = _inputs()
    with torch.no_grad():
        out_a, out_b = (m(x, t, text, return_dict=False)[0] for m in (a, b))
        # from_pretrained's loading path may change memory layout, hence 1 ulp-level differences.
        torch.testing.assert_close(out_a, out_b, rtol=0, atol=1e-6)
        assert torch.equal(out_b, student(x, t, text, return_dict=False)[0])


def test_sharded_directories(student: WanTransformer3DModel, tmp_path: Path) -> None:
    student.save_pretrained(str(tmp_path / "sharded"), max_shard_size="50KB")
    assert (tmp_path / "sharded" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    _assert_same(load_wan_transformer(tmp_path / "sharded", causal=False).state_dict(), student.state_dict())
    # Original format, sharded by hand with an index (as the 14B release).
    orig = original_state_dict(student)
    keys = sorted(orig)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[::2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[1::2]}
    d = tmp_path / "orig_sharded"
    d.mkdir()
    weight_map = {}
    for fname, ks in shards.items():
        save_file({k: orig[k].contiguous() for k in ks}, str(d / fname))
        weight_map.update(dict.fromkeys(ks, fname))
    (d / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (d / "config.json").write_text(json.dumps(diffusers_to_original_config(dict(student.config))))
    _assert_same(load_wan_transformer(d, causal=False).state_dict(), student.state_dict())


def test_strict_loading_of_original_dir(student: WanTransformer3DModel, tmp_path: Path) -> None:
    export_original(student, tmp_path / "o")
    cfg = diffusers_to_original_config({**dict(student.config), "num_layers": 3})
    (tmp_path / "o" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"missing \(\d+\): \['blocks.2"):
        load_wan_transformer(tmp_path / "o", causal=False)
    with pytest.raises(FileNotFoundError, match=r"no config.json"):
        load_wan_transformer(tmp_path, causal=False)


def test_bf16_keeps_fp32_modules_like_diffusers(student: WanTransformer3DModel, tmp_path: Path) -> None:
    export_diffusers(student, tmp_path / "d")
    export_original(student, tmp_path / "o")
    a = load_wan_transformer(tmp_path / "d", causal=False, dtype=torch.bfloat16)
    b = load_wan_transformer(tmp_path / "o", causal=False, dtype=torch.bfloat16)
    dtypes_a = {k: v.dtype for k, v in a.state_dict().items()}
    assert dtypes_a == {k: v.dtype for k, v in b.state_dict().items()}
    assert dtypes_a["blocks.0.attn1.to_q.weight"] == torch.bfloat16
    assert dtypes_a["blocks.0.scale_shift_table"] == torch.float32


def test_export_is_loadable_by_stock_diffusers(student: WanTransformer3DModel, tmp_path: Path) -> None:
    out = export_diffusers(student, tmp_path / "exp")
    assert json.loads((out / "config.json").read_text())["_class_name"] == "WanTransformer3DModel"
    stock = WanTransformer3DModel.from_pretrained(str(out), local_files_only=True)
    _assert_same(stock.state_dict(), student.state_dict())
    assert stock.config.rope_max_seq_len == TINY_STUDENT["rope_max_seq_len"]
    # Re-export over an existing directory replaces it atomically.
    export_diffusers(build_tiny_transformer(5), out)
    assert not torch.equal(WanTransformer3DModel.from_pretrained(str(out)).proj_out.weight, student.proj_out.weight)


def test_load_student_is_causal_with_checkpoint_weights(student: WanTransformer3DModel, tmp_path: Path) -> None:
    from stream_r1.models.causal_wan import CausalWanTransformer
    from stream_r1.models.loading import load_student

    export_original(student, tmp_path / "base")
    trained = build_tiny_transformer(9)
    torch.save({"generator": original_state_dict(trained, prefix="model."), "generator_ema": student.state_dict()},
               tmp_path / "ckpt.pt")
    model = load_student(tmp_path / "base", tmp_path / "ckpt.pt", use_ema=False)
    assert isinstance(model, CausalWanTransformer)
    _assert_same(model.state_dict(), trained.state_dict())
    _assert_same(load_student(tmp_path / "base", tmp_path / "ckpt.pt", use_ema=True).state_dict(), student.state_dict())
    _assert_same(load_student(tmp_path / "base", None, use_ema=False).state_dict(), student.state_dict())
    with pytest.raises(ValueError, match="does not match the transformer architecture"):
        load_student(tmp_path / "base", _teacher_ckpt(tmp_path), use_ema=False)


def _teacher_ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "teacher.pt"
    torch.save(build_tiny_transformer(0, teacher=True).state_dict(), path)
    return path


def test_check_checkpoint_matches_base_reads_headers_only(student: WanTransformer3DModel, tmp_path: Path) -> None:
    from stream_r1.models.loading import check_checkpoint_matches_base, read_transformer_config

    export_original(student, tmp_path / "base")
    assert read_transformer_config(tmp_path / "base")["num_attention_heads"] == 2
    torch.save({"generator": original_state_dict(student, prefix="model.")}, tmp_path / "ok.pt")
    assert check_checkpoint_matches_base(tmp_path / "base", tmp_path / "ok.pt").naming == "original"
    with pytest.raises(ValueError, match="does not fit the base architecture"):
        check_checkpoint_matches_base(tmp_path / "base", _teacher_ckpt(tmp_path))
