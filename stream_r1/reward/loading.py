"""Load VideoReward from its official checkpoint layout without peft (docs/method.md §2.2, §4.5).

Layout of a VideoReward directory ``ROOT``::

    ROOT/model_config.json                        data_config, model_config, peft_lora_config, inference_config
    ROOT/checkpoint-<step>/adapter_model.safetensors   LoRA A/B of every adapted LLM linear (peft names)
    ROOT/checkpoint-<step>/non_lora_state_dict.pth     tuned ViT, merger, embeddings, rm_head (old key names)
    <base>/                                       Qwen2-VL-2B-Instruct (config, weights, tokenizer)

The base directory is ``base_dir`` when given, else ``ROOT/<last component of
model_config.model_name_or_path>`` (e.g. ``ROOT/Qwen2-VL-2B-Instruct``), else that path itself.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from stream_r1.reward.prompt import REWARD_AXES, REWARD_TOKENS, TEMPLATE_NAME
from stream_r1.utils.logging import get_logger

_LOG = get_logger(__name__)

_PEFT_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])(?:\.default)?\.weight$")


@dataclass(frozen=True, slots=True)
class VideoRewardLayout:
    """What ``model_config.json`` and the directory say about one VideoReward checkpoint.

    Attributes:
        root: The VideoReward directory.
        checkpoint_dir: The ``checkpoint-<step>`` directory used (the highest step).
        base_dir: The base Qwen2-VL directory.
        lora_scale: Multiplier of ``B @ A`` in the merge: alpha / r (alpha / sqrt(r) with rsLoRA).
        output_dim: Outputs of ``rm_head`` per reward token (1: one scalar per token; 3: diagonal).
        means: Per-axis logit mean used for z-normalisation.
        stds: Per-axis logit std used for z-normalisation.
        fps: Frame rate VideoReward was trained on (data_config.fps).
        max_frame_pixels: Per-frame pixel budget it was trained on.
    """

    root: Path
    checkpoint_dir: Path
    base_dir: Path
    lora_scale: float
    output_dim: int
    means: dict[str, float]
    stds: dict[str, float]
    fps: float
    max_frame_pixels: int


def _require(section: dict[str, Any], key: str, where: str) -> Any:
    if key not in section:
        raise ValueError(f"{where} has no '{key}'; this is not a VideoReward model_config.json (official layout)")
    return section[key]


def _check_model_config(cfg: dict[str, Any], path: Path) -> None:
    """Fail clearly when the checkpoint was trained with a setup this reader does not reproduce."""
    for section in ("data_config", "model_config", "peft_lora_config", "inference_config"):
        if not isinstance(cfg.get(section), dict):
            raise ValueError(f"{path} lacks the '{section}' section; expected the official VideoReward layout")
    data, model = cfg["data_config"], cfg["model_config"]
    template = _require(data, "prompt_template_type", f"{path} data_config")
    if template != TEMPLATE_NAME:
        raise ValueError(
            f"{path}: data_config.prompt_template_type={template!r} but only {TEMPLATE_NAME!r} is supported "
            "(the three-special-token template VideoReward was released with)"
        )
    eval_dim = list(_require(data, "eval_dim", f"{path} data_config"))
    if eval_dim != list(REWARD_AXES):
        raise ValueError(f"{path}: data_config.eval_dim={eval_dim} but {list(REWARD_AXES)} is required")
    token_mode = _require(model, "reward_token", f"{path} model_config")
    if token_mode != "special" or not model.get("use_special_tokens", False):
        raise ValueError(
            f"{path}: model_config.reward_token={token_mode!r}, use_special_tokens="
            f"{model.get('use_special_tokens')!r}; only reward_token='special' with use_special_tokens=true "
            "is supported"
        )
    output_dim = int(_require(model, "output_dim", f"{path} model_config"))
    if output_dim not in (1, 3):
        raise ValueError(f"{path}: model_config.output_dim={output_dim}; allowed 1 or 3")


def _find_checkpoint_dir(root: Path) -> Path:
    steps = []
    for child in root.glob("checkpoint-*"):
        suffix = child.name.split("-", 1)[1]
        if child.is_dir() and suffix.isdigit():
            steps.append((int(suffix), child))
    if not steps:
        raise FileNotFoundError(
            f"no checkpoint-<step>/ directory in {root}; download the VideoReward checkpoint (official layout) there"
        )
    ckpt = max(steps)[1]
    for name in ("adapter_model.safetensors", "non_lora_state_dict.pth"):
        if not (ckpt / name).is_file():
            raise FileNotFoundError(f"{ckpt / name} is missing; the VideoReward checkpoint is incomplete")
    return ckpt


def _find_base_dir(root: Path, model_name: str, base_dir: Path | None) -> Path:
    candidates = [base_dir] if base_dir is not None else [root / Path(model_name).name, Path(model_name)]
    for cand in candidates:
        if cand is not None and (cand / "config.json").is_file():
            return cand
    raise FileNotFoundError(
        f"base Qwen2-VL model not found (looked in {[str(c) for c in candidates]}); download "
        f"{model_name!r} to {root / Path(model_name).name} or pass base_dir"
    )


def read_layout(root: str | Path, *, base_dir: str | Path | None = None) -> VideoRewardLayout:
    """Parse and verify a VideoReward directory before any weights are read.

    Args:
        root: VideoReward directory (official layout, see module docstring).
        base_dir: Base Qwen2-VL directory; default: found from ``model_config.model_name_or_path``.

    Returns:
        The verified layout.

    Raises:
        FileNotFoundError: A required file or directory is missing.
        ValueError: ``model_config.json`` describes a setup other than the released VideoReward.
    """
    root = Path(root)
    cfg_path = root / "model_config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found; point checkpoints.reward at a VideoReward directory")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    _check_model_config(cfg, cfg_path)
    peft = cfg["peft_lora_config"]
    rank, alpha = (
        int(_require(peft, "lora_r", "peft_lora_config")),
        float(_require(peft, "lora_alpha", "peft_lora_config")),
    )
    if rank < 1:
        raise ValueError(f"{cfg_path}: peft_lora_config.lora_r={rank} must be >= 1")
    scale = alpha / math.sqrt(rank) if peft.get("use_rslora", False) else alpha / rank
    inf = cfg["inference_config"]
    means = {a: float(_require(inf, f"{a}_mean", "inference_config")) for a in REWARD_AXES}
    stds = {a: float(_require(inf, f"{a}_std", "inference_config")) for a in REWARD_AXES}
    for axis, std in stds.items():
        if not std > 0:
            raise ValueError(f"{cfg_path}: inference_config.{axis}_std={std} must be > 0")
    data = cfg["data_config"]
    return VideoRewardLayout(
        root=root,
        checkpoint_dir=_find_checkpoint_dir(root),
        base_dir=_find_base_dir(root, str(cfg["model_config"].get("model_name_or_path", "")), _opt_path(base_dir)),
        lora_scale=scale,
        output_dim=int(cfg["model_config"]["output_dim"]),
        means=means,
        stds=stds,
        fps=float(data.get("fps") or 2.0),
        max_frame_pixels=int(data.get("max_frame_pixels") or 200704),
    )


def _opt_path(p: str | Path | None) -> Path | None:
    return None if p is None else Path(p)


def remap_non_lora_key(key: str) -> str | None:
    """Map an old (transformers 4.45 + peft) VideoReward key to the transformers v5 name.

    ``base_model.model.`` is stripped; ``visual.*`` -> ``model.visual.*``; ``model.{layers,embed_tokens,norm}.*``
    -> ``model.language_model.*``; peft's ``modules_to_save.default`` copies replace the module's own weight.

    Args:
        key: A key of ``non_lora_state_dict.pth``.

    Returns:
        The v5 key (``rm_head.weight`` stays as is), or None for peft's frozen ``original_module`` copies.

    Raises:
        ValueError: The key belongs to no known part of the model.
    """
    k = key.removeprefix(_PEFT_PREFIX)
    if ".original_module." in k:
        return None
    k = k.replace(".modules_to_save.default.", ".").replace(".base_layer.", ".")
    if k.startswith(("model.visual.", "model.language_model.")) or k in ("lm_head.weight", "rm_head.weight"):
        return k
    if k.startswith("visual."):
        return "model." + k
    for part in ("layers.", "embed_tokens.", "norm."):
        if k.startswith("model." + part):
            return "model.language_model." + k.removeprefix("model.")
    raise ValueError(f"unexpected key {key!r} in non_lora_state_dict.pth; not a VideoReward (Qwen2-VL) checkpoint")


def lora_pairs(adapter: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Group peft LoRA tensors by adapted module (v5 module names).

    Args:
        adapter: Contents of ``adapter_model.safetensors``: ``<module>.lora_A.weight`` [r, in] and
            ``<module>.lora_B.weight`` [out, r].

    Returns:
        ``{v5 module name: (A [r, in], B [out, r])}``.

    Raises:
        ValueError: A key is not a LoRA A/B weight, or a module lacks A or B.
    """
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in adapter.items():
        m = _LORA_KEY.match(key)
        if m is None:
            raise ValueError(f"unexpected key {key!r} in adapter_model.safetensors (expected *.lora_A/B.weight)")
        module = remap_non_lora_key(m["module"] + ".weight")
        assert module is not None  # LoRA is never stored on peft's original_module copies
        halves.setdefault(module.removesuffix(".weight"), {})[m["which"]] = tensor
    pairs = {}
    for module, ab in halves.items():
        if set(ab) != {"A", "B"}:
            raise ValueError(f"LoRA of {module!r} has only {sorted(ab)}; adapter_model.safetensors is incomplete")
        pairs[module] = (ab["A"], ab["B"])
    return pairs


@torch.no_grad()
def merge_lora_(model: torch.nn.Module, pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], scale: float) -> int:
    """Merge LoRA in place: ``W += scale * B @ A`` for every adapted linear (computed in float32).

    Args:
        model: The model holding the adapted ``torch.nn.Linear`` modules (v5 names).
        pairs: Output of :func:`lora_pairs`.
        scale: alpha / r (or alpha / sqrt(r) for rsLoRA).

    Returns:
        The number of merged modules.

    Raises:
        ValueError: A module is missing, not a Linear, or the LoRA shapes do not fit its weight.
    """
    modules = dict(model.named_modules())
    for name, (a, b) in pairs.items():
        mod = modules.get(name)
        if not isinstance(mod, torch.nn.Linear):
            raise ValueError(f"LoRA target {name!r} is not a Linear of the base model (got {type(mod).__name__})")
        w = mod.weight
        if a.shape[1] != w.shape[1] or b.shape[0] != w.shape[0] or a.shape[0] != b.shape[1]:
            raise ValueError(
                f"LoRA shapes A{tuple(a.shape)} B{tuple(b.shape)} do not fit {name}.weight{tuple(w.shape)}"
            )
        delta = scale * (b.to(device=w.device, dtype=torch.float32) @ a.to(device=w.device, dtype=torch.float32))
        w.copy_((w.float() + delta).to(w.dtype))
    return len(pairs)


def load_non_lora_state(path: Path) -> dict[str, torch.Tensor]:
    """Read ``non_lora_state_dict.pth`` and rename its keys to transformers v5 names."""
    raw = torch.load(path, map_location="cpu", weights_only=True)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in raw.items():
        new = remap_non_lora_key(key)
        if new is not None:
            out[new] = tensor
    return out


def load_adapter(path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Read ``adapter_model.safetensors`` as :func:`lora_pairs`."""
    return lora_pairs(load_file(str(path)))


@dataclass(slots=True)
class LoadedVideoReward:
    """The pieces :class:`stream_r1.reward.model.VideoRewardModel` is assembled from.

    Attributes:
        backbone: Qwen2-VL with merged LoRA and the tuned non-LoRA weights, frozen, eval mode.
        rm_head: ``Linear(hidden -> output_dim, bias=False)``, frozen.
        tokenizer: Base tokenizer with the three reward tokens added.
        reward_token_ids: ``{axis: token id}`` (151657/151658/151659 for the real tokenizer).
        layout: The verified checkpoint layout.
    """

    backbone: Any
    rm_head: torch.nn.Linear
    tokenizer: Any
    reward_token_ids: dict[str, int]
    layout: VideoRewardLayout


def load_tokenizer(base_dir: Path) -> tuple[Any, dict[str, int]]:
    """Base Qwen2 tokenizer plus the three reward tokens, added as VideoAlign does.

    Returns:
        ``(tokenizer, {axis: id})``.

    Raises:
        ValueError: A reward token did not become a single new id.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    tokens = [REWARD_TOKENS[a] for a in REWARD_AXES]
    tokenizer.add_special_tokens({"additional_special_tokens": tokens})
    ids = {a: int(tokenizer.convert_tokens_to_ids(REWARD_TOKENS[a])) for a in REWARD_AXES}
    if len(set(ids.values())) != 3 or tokenizer.unk_token_id in ids.values():
        raise ValueError(f"reward tokens did not get distinct ids in the tokenizer of {base_dir}: {ids}")
    return tokenizer, ids


def load_video_reward(
    root: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    base_dir: str | Path | None = None,
) -> LoadedVideoReward:
    """Build VideoReward from the official layout: base + resized embeddings + non-LoRA state + merged LoRA.

    Weights are merged in float32 and cast to ``dtype`` afterwards. All parameters end frozen
    (``requires_grad=False``); saliency still flows through the activations.

    Args:
        root: VideoReward directory.
        dtype: Final parameter dtype (bfloat16 on GPU, float32 on CPU).
        device: Target device.
        base_dir: Base Qwen2-VL directory (default: see :func:`read_layout`).

    Returns:
        The assembled parts.

    Raises:
        FileNotFoundError, ValueError: See :func:`read_layout`; also when the stored state does not fit the base.
    """
    from transformers import Qwen2VLForConditionalGeneration

    from stream_r1.reward.patch_embed import use_linear_patch_embed

    layout = read_layout(root, base_dir=base_dir)
    tokenizer, ids = load_tokenizer(layout.base_dir)
    backbone = Qwen2VLForConditionalGeneration.from_pretrained(str(layout.base_dir), dtype=torch.float32)
    backbone.resize_token_embeddings(len(tokenizer))
    hidden = backbone.config.text_config.hidden_size
    rm_head = torch.nn.Linear(hidden, layout.output_dim, bias=False)

    state = load_non_lora_state(layout.checkpoint_dir / "non_lora_state_dict.pth")
    head = state.pop("rm_head.weight", None)
    if head is None:
        raise ValueError(f"{layout.checkpoint_dir}/non_lora_state_dict.pth has no rm_head weight")
    if tuple(head.shape) != (layout.output_dim, hidden):
        raise ValueError(f"rm_head weight {tuple(head.shape)} != (output_dim={layout.output_dim}, hidden={hidden})")
    rm_head.weight.data.copy_(head.float())
    own = backbone.state_dict()
    for key, tensor in state.items():
        if key not in own:
            raise ValueError(f"non-LoRA key {key!r} does not exist in the base model from {layout.base_dir}")
        if own[key].shape != tensor.shape:
            raise ValueError(
                f"non-LoRA {key!r} has shape {tuple(tensor.shape)} but the base (tokenizer len {len(tokenizer)}) "
                f"has {tuple(own[key].shape)}"
            )
    backbone.load_state_dict(state, strict=False)
    merged = merge_lora_(backbone, load_adapter(layout.checkpoint_dir / "adapter_model.safetensors"), layout.lora_scale)
    _LOG.info("VideoReward: %d non-LoRA tensors loaded, %d LoRA modules merged from %s", len(state), merged, root)

    use_linear_patch_embed(backbone)  # same function, one matrix product (see stream_r1.reward.patch_embed)
    backbone.to(device=device, dtype=dtype).eval()
    rm_head.to(device=device, dtype=dtype).eval()
    for p in (*backbone.parameters(), *rm_head.parameters()):
        p.requires_grad_(False)
    return LoadedVideoReward(backbone, rm_head, tokenizer, ids, layout)
