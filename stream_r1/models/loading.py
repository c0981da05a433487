"""Load and export Wan2.1 transformers and generator checkpoints in every on-disk format (docs/method.md §1.10, §4.4).

Formats read:

* diffusers directories (``config.json`` + ``diffusion_pytorch_model*.safetensors``, sharded index too);
* original Wan2.1 directories (``config.json`` with ``dim, ffn_dim, num_heads, ...`` and original key names),
  mapped by :mod:`stream_r1.models.wan_keys` (norm2/norm3 swap included);
* generator ``.pt`` files: Self-Forcing / Stream-R1 nested (``{"generator", "critic", ["generator_ema"]}``) and
  Reward Forcing / raw Stream-R1 flat state dicts, with ``model.`` and FSDP fragments stripped and either key
  naming inside. ``.safetensors`` files are read as flat state dicts.

Loading is strict: a missing or unexpected key is an error, never silently skipped.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import WanTransformer3DModel
from safetensors.torch import load_file, save_file

from stream_r1.models.wan_keys import (
    KeyNaming,
    detect_key_naming,
    diffusers_to_original_config,
    diffusers_to_original_key,
    is_original_config,
    original_to_diffusers_config,
    original_to_diffusers_key,
    strip_wrapper_prefixes,
)
from stream_r1.utils.io import atomic_publish_dir, atomic_write, atomic_write_json
from stream_r1.utils.logging import get_logger

logger = get_logger(__name__)

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"

LAYOUTS_TRIED = (
    "nested (Self-Forcing / Stream-R1 training output: top-level 'generator' and/or 'generator_ema', "
    "optionally 'critic')",
    "flat (Reward Forcing rewardforcing.pt / raw Stream-R1: a tensor state dict of Wan transformer keys, "
    "original or diffusers names, optional 'model.' prefix and FSDP fragments)",
)
_NESTED_KEYS = ("generator", "generator_ema")


@dataclass(frozen=True)
class CheckpointInfo:
    """What a generator checkpoint holds, found without materialising its tensors.

    Attributes:
        path: The file.
        layout: ``"nested"`` or ``"flat"``.
        has_ema: Whether ``generator_ema`` is present (only nested files have one).
        naming: Key naming of the generator state dict after prefix stripping.
        num_tensors: Number of tensors in the generator state dict.
    """

    path: Path
    layout: str
    has_ema: bool
    naming: KeyNaming
    num_tensors: int


def _torch_load(path: Path) -> Any:
    """``torch.load`` without code execution; memory-mapped when the zip format allows it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:  # legacy (non-zip) pickles cannot be mmapped
        if "mmap" not in str(e):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def _read_raw(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"generator checkpoint {path} does not exist (expected a .pt/.pth/.safetensors file)")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        return _torch_load(path)
    except Exception as e:  # unpickling errors have many types; all mean a bad file
        raise ValueError(f"cannot read generator checkpoint {path} with torch.load(weights_only=True): {e}") from e


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unknown_layout(path: Path, obj: Any, why: str) -> ValueError:
    top = sorted(map(str, obj.keys()))[:8] if isinstance(obj, dict) else type(obj).__name__
    tried = "; ".join(LAYOUTS_TRIED)
    return ValueError(f"unrecognised generator checkpoint layout in {path} ({why}; top level: {top}). Layouts tried: {tried}")


def _classify(path: Path, obj: Any) -> tuple[str, dict[str, Any]]:
    """Return (layout, the dict holding the generator state(s))."""
    if isinstance(obj, dict) and any(k in obj for k in _NESTED_KEYS):
        for k in _NESTED_KEYS:
            if k in obj and not _is_tensor_dict(obj[k]):
                raise _unknown_layout(path, obj, f"'{k}' is not a state dict of tensors")
        return "nested", obj
    if _is_tensor_dict(obj):
        return "flat", obj
    raise _unknown_layout(path, obj, "no 'generator'/'generator_ema' entry and not a flat tensor state dict")


def _naming_of(path: Path, obj: Any, sd: dict[str, Any]) -> KeyNaming:
    naming = detect_key_naming(strip_wrapper_prefixes(k) for k in sd)
    if naming is None:
        raise _unknown_layout(path, obj, f"keys such as {sorted(sd)[:3]} are neither original Wan nor diffusers names")
    return naming


def _generator_holder(path: Path) -> tuple[CheckpointInfo, dict[str, Any]]:
    obj = _read_raw(path)
    layout, holder = _classify(path, obj)
    sd = holder.get("generator_ema", holder.get("generator")) if layout == "nested" else holder
    info = CheckpointInfo(path, layout, "generator_ema" in holder if layout == "nested" else False,
                          _naming_of(path, obj, sd), len(sd))
    return info, sd


def inspect_generator_checkpoint(path: str | Path) -> CheckpointInfo:
    """Peek at a generator checkpoint cheaply (memory-mapped) to validate it before any model loads.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the layout or key naming is not recognised (the message lists the layouts tried).
    """
    return _generator_holder(Path(path))[0]


def to_diffusers_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes and map original Wan names to diffusers names (no-op for diffusers names).

    Raises:
        ValueError: the keys are in neither naming, or two keys collide after stripping.
    """
    stripped: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        s = strip_wrapper_prefixes(k)
        if s in stripped:
            raise ValueError(f"keys collide after stripping wrapper prefixes: {k!r} -> {s!r}")
        stripped[s] = v
    naming = detect_key_naming(stripped)
    if naming is None:
        raise ValueError(f"state dict keys such as {sorted(stripped)[:3]} are neither original Wan nor diffusers names")
    if naming == "diffusers":
        return stripped
    return {original_to_diffusers_key(k): v for k, v in stripped.items()}


def load_generator_state_dict(path: str | Path, *, use_ema: bool) -> dict[str, torch.Tensor]:
    """Read a generator checkpoint into a diffusers-named state dict.

    Args:
        path: ``.pt``/``.pth`` (nested or flat layout) or ``.safetensors`` (flat).
        use_ema: Take ``generator_ema`` (nested layouts only) instead of ``generator``.

    Returns:
        ``{diffusers key: tensor}`` (CPU, dtype as stored).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unknown layout (lists the layouts tried), or ``use_ema`` without an EMA in the file.
    """
    path = Path(path)
    obj = _read_raw(path)
    layout, holder = _classify(path, obj)
    if layout == "flat":
        if use_ema:
            raise ValueError(
                f"use_ema=True but {path} is a flat generator state dict (Reward Forcing / raw Stream-R1 layout) "
                "with no 'generator_ema'; load it with use_ema=False (drop --use-ema)"
            )
        sd = holder
    else:
        key = "generator_ema" if use_ema else "generator"
        if key not in holder:
            fix = "use_ema=False (drop --use-ema)" if use_ema else "use_ema=True (--use-ema)"
            raise ValueError(f"{path} has no '{key}' entry (it holds {sorted(holder)}); load it with {fix}")
        sd = holder[key]
    _naming_of(path, obj, sd)
    return {k: v.detach().clone() for k, v in to_diffusers_state_dict(sd).items()}


# ------------------------------------------------------------------------------------------- directories


def read_transformer_config(directory: str | Path) -> dict[str, Any]:
    """A transformer directory's config in diffusers terms (original Wan configs are translated).

    Raises:
        FileNotFoundError: no ``config.json``.
    """
    cfg = _read_config(Path(directory))
    return original_to_diffusers_config(cfg) if is_original_config(cfg) else cfg


def _read_config(directory: Path) -> dict[str, Any]:
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"{directory} has no config.json; expected a diffusers or original Wan2.1 transformer directory"
        )
    return json.loads(cfg_path.read_text(encoding="utf-8"))


def _read_safetensors_dir(directory: Path) -> dict[str, torch.Tensor]:
    index = directory / WEIGHTS_INDEX_NAME
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        files = [directory / s for s in shards]
    elif (directory / WEIGHTS_NAME).is_file():
        files = [directory / WEIGHTS_NAME]
    else:
        files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{directory} has no *.safetensors weights (looked for {WEIGHTS_NAME} and its index)")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(str(f)))
    return sd


def transformer_dir_shapes(directory: str | Path) -> dict[str, tuple[int, ...]]:
    """Diffusers key -> shape of a transformer directory's weights, read from safetensors headers only."""
    from safetensors import safe_open

    directory = Path(directory)
    cfg = _read_config(directory)
    index = directory / WEIGHTS_INDEX_NAME
    if index.is_file():
        files = sorted({directory / s for s in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()})
    else:
        files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{directory} has no *.safetensors weights")
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            for k in handle.keys():  # noqa: SIM118 -- safe_open handles are not iterable
                shapes[k] = tuple(handle.get_slice(k).get_shape())
    if is_original_config(cfg):
        return {original_to_diffusers_key(k): v for k, v in shapes.items()}
    return shapes


def check_checkpoint_matches_base(base_dir: str | Path, checkpoint: str | Path) -> CheckpointInfo:
    """Cheaply check a generator checkpoint against the base architecture (headers / memory-mapped tensors).

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: unknown layout, or keys/shapes that do not match the base transformer.
    """
    info, sd = _generator_holder(Path(checkpoint))
    want = transformer_dir_shapes(base_dir)
    have = {k: tuple(v.shape) for k, v in to_diffusers_state_dict(sd).items()}
    missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    bad = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if missing or unexpected or bad:
        raise ValueError(
            f"generator checkpoint {checkpoint} does not fit the base architecture in {base_dir} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, shape mismatch {bad[:3]}); pass the checkpoint "
            "of a student trained from this base, or point checkpoints.base at its architecture"
        )
    return info


def cast_keeping_fp32_modules(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast parameters to ``dtype`` in place but keep diffusers' ``_keep_in_fp32_modules`` in fp32.

    The same dtype policy as ``from_pretrained(torch_dtype=...)``, for models built or loaded another way.
    """
    keep = tuple(getattr(type(model), "_keep_in_fp32_modules", None) or ())
    for name, p in model.named_parameters():
        target = torch.float32 if any(m in name for m in keep) else dtype
        if p.dtype != target:
            p.data = p.data.to(target)


def _model_class(causal: bool) -> type[WanTransformer3DModel]:
    if not causal:
        return WanTransformer3DModel
    from stream_r1.models.causal_wan import CausalWanTransformer

    return CausalWanTransformer


def check_state_dict_keys(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Raise ``ValueError`` naming missing/unexpected keys and shape mismatches (strict loading)."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    bad_shape = [k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape)]
    if missing or unexpected or bad_shape:
        detail = "; ".join(
            f"{label} ({len(ks)}): {sorted(ks)[:5]}"
            for label, ks in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", bad_shape))
            if ks
        )
        raise ValueError(f"{source} does not match the transformer architecture: {detail}")


def load_wan_transformer(
    path: str | Path, *, causal: bool, dtype: torch.dtype = torch.float32
) -> WanTransformer3DModel:
    """Load a Wan2.1 transformer directory in diffusers or original format.

    Args:
        path: Directory with ``config.json`` and safetensors weights.
        causal: Return the streaming student class ``CausalWanTransformer`` (same parameters) instead of
            the stock ``WanTransformer3DModel``.
        dtype: Parameter dtype (fp32-kept modules stay fp32, as in diffusers).

    Returns:
        The model in eval mode on CPU.

    Raises:
        FileNotFoundError: the directory, its config or its weights are missing.
        ValueError: weights do not match the config (strict).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"transformer directory {path} does not exist")
    cfg = _read_config(path)
    cls = _model_class(causal)
    if not is_original_config(cfg):
        model = cls.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)
        return model.eval()
    # Parameters on the meta device (buffers such as the RoPE tables stay real): a 14B teacher is never
    # randomly initialised just to be overwritten.
    with init_empty_weights(include_buffers=False):
        model = cls.from_config(original_to_diffusers_config(cfg))
    sd = {original_to_diffusers_key(k): v for k, v in _read_safetensors_dir(path).items()}
    check_state_dict_keys(model, sd, f"original Wan weights in {path}")
    model.load_state_dict(sd, strict=True, assign=True)
    cast_keeping_fp32_modules(model, dtype)
    return model.eval()


def load_student(
    base_dir: str | Path, checkpoint: str | Path | None, *, use_ema: bool, dtype: torch.dtype = torch.float32
) -> WanTransformer3DModel:
    """The causal student: architecture (and default weights) from ``base_dir``, weights from ``checkpoint``.

    Args:
        base_dir: Diffusers or original Wan transformer directory of the student architecture.
        checkpoint: Generator ``.pt``/``.safetensors`` file or a transformer directory; None = base weights.
        use_ema: Load ``generator_ema`` from a nested checkpoint.
        dtype: Parameter dtype.

    Returns:
        A ``CausalWanTransformer`` in eval mode.
    """
    model = load_wan_transformer(base_dir, causal=True, dtype=dtype)
    if checkpoint is None or str(checkpoint) == "":
        return model
    ckpt = Path(checkpoint)
    if ckpt.is_dir():
        if use_ema:
            raise ValueError(f"use_ema=True but {ckpt} is a transformer directory (no EMA); drop --use-ema")
        sd = load_wan_transformer(ckpt, causal=False).state_dict()
    else:
        sd = load_generator_state_dict(ckpt, use_ema=use_ema)
    check_state_dict_keys(model, sd, f"generator checkpoint {ckpt}")
    model.load_state_dict(sd, strict=True)
    cast_keeping_fp32_modules(model, dtype)
    return model


# ------------------------------------------------------------------------------------------------ export


def export_diffusers(model: WanTransformer3DModel, out_dir: str | Path) -> Path:
    """Write ``model`` as a stock diffusers ``WanTransformer3DModel`` directory (safetensors), atomically.

    The config names the stock class so the directory loads with ``WanTransformer3DModel.from_pretrained``
    even when ``model`` is the causal subclass (identical parameters).
    """
    out_dir = Path(out_dir)
    staging = out_dir.with_name(f".{out_dir.name}.staging")
    if staging.exists():
        shutil.rmtree(staging)
    model.save_pretrained(str(staging), safe_serialization=True)
    cfg = json.loads((staging / "config.json").read_text(encoding="utf-8"))
    cfg["_class_name"] = WanTransformer3DModel.__name__
    atomic_write_json(staging / "config.json", cfg)
    return atomic_publish_dir(staging, out_dir)


def export_original(model: WanTransformer3DModel, out_dir: str | Path) -> Path:
    """Write ``model`` in the original Wan2.1 layout (original ``config.json`` + original key names)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = {diffusers_to_original_key(k): v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write(out_dir / WEIGHTS_NAME, lambda p: save_file(sd, str(p)))
    atomic_write_json(out_dir / "config.json", diffusers_to_original_config(dict(model.config)))
    return out_dir


def original_state_dict(model: WanTransformer3DModel, prefix: str = "") -> dict[str, torch.Tensor]:
    """The model's weights under original Wan names, e.g. ``prefix="model."`` for Self-Forcing files."""
    return {prefix + diffusers_to_original_key(k): v.detach().clone() for k, v in model.state_dict().items()}
