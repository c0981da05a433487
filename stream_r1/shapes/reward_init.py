"""Structured initialisation of the shapes world's tiny VideoReward base (docs/benchmarks.md "Shapes world").

transformers draws every weight of the tiny Qwen2-VL from N(0, 0.02), the scale of a 1536-wide model: in the
32-wide base the attention starts uniform and the reward tokens' states barely differ between videos, so the
readout and the attention wait on each other for hundreds of steps. These initialisations give training a start
that reads the inputs: fan-in scales (:func:`fan_in_init`), temporal-difference filters in the patch embedding
(:func:`motion_init`), attention heads routed to the video tokens and the world's words (:func:`route_init`), and
a head of every video token routed to the same place one temporal patch earlier (:func:`temporal_route_init`).
Every one only writes weights of the stock modules, so the result is an ordinary Qwen2-VL checkpoint.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from stream_r1.reward.model import VideoRewardModel
from stream_r1.reward.preprocess import RewardVideo, patchify
from stream_r1.shapes.world import COLORS, DIRECTIONS, SHAPES


@torch.no_grad()
def fan_in_init(model: nn.Module, seed: int) -> None:
    """Re-draw every linear / conv weight from N(0, 1/fan_in), biases 0, embeddings N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv3d)):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.Embedding):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g))


@torch.no_grad()
def motion_init(model: nn.Module, channels: int) -> None:
    """Make the first ``channels`` patch-embedding filters pure temporal differences of their own random kernel.

    Qwen2-VL's patch embedding sees two consecutive frames (temporal patch 2); a filter whose second-frame slice is
    minus its first responds only to what changed between them, so jitter (an irregular displacement between frames)
    reaches every token as motion energy that the ViT's nonlinearities rectify and an attention average keeps. The
    filter norm is kept (the second slice is replaced, not added), so the init's scale is unchanged.
    """
    for m in model.modules():
        if hasattr(m, "proj") and isinstance(m.proj, nn.Conv3d):
            w = m.proj.weight  # [D, C, Tp, P, P]
            w[:channels, :, 1] = -w[:channels, :, 0]
            return
    raise ValueError("no Conv3d patch embedding found")


ROUTES = {
    "words": ((0, 0, 0, 7), (0, 1, 0, 7), (1, 1, 1, 7)),
    "video2": ((0, 0, 0, 7), (0, 1, 0, 7), (1, 1, 1, 7), (1, 0, 0, 6)),
}
"""``route_init`` tables: (layer, query head, marker dimension, rotary dimension) per routed head. ``words``: both
layer-0 heads read the video, layer-1 head 1 the world's words; ``video2``: layer-1 head 0 reads the video too."""


@torch.no_grad()
def route_init(model: VideoRewardModel, routes: str = "words", marker: float = 4.0, gain: float = 16.0) -> None:
    """Initialise the LLM to read the video and the prompt's words through the heads of ``ROUTES[routes]``.

    Hidden dimension 0 marks video tokens (the merger writes ``marker`` there, token embeddings 0) and dimension 1
    the world's words (colour, shape, direction: ``marker`` in their embeddings). For each routed head a query bias
    and a key reading the marker put the logit ``gain * normalised marker / sqrt(head_dim)`` on marked tokens in one
    of the lowest rotary frequencies (dimensions 6, 7 of 8 pairs), which barely turn over a whole input, so the
    routing is position-free. Key dimensions are shared by the query heads of a key/value head.
    """
    backbone, tok = model.backbone, model.tokenizer
    merger = backbone.model.visual.merger.mlp[-1]
    merger.weight[0].zero_()
    merger.bias[0] = marker
    emb = backbone.get_input_embeddings().weight
    emb[:, :2] = 0.0
    words = [i for w in (*COLORS, *SHAPES, *DIRECTIONS) for i in tok(w, add_special_tokens=False)["input_ids"]]
    emb[words, 1] = marker
    layers = backbone.model.language_model.layers
    head_dim = layers[0].self_attn.head_dim
    for layer, head, dim, rot in ROUTES[routes]:
        att = layers[layer].self_attn
        for kv in range(att.k_proj.out_features // head_dim):
            for j in (kv * head_dim + rot, kv * head_dim + rot + head_dim // 2):
                att.k_proj.weight[j].zero_()
                att.k_proj.bias[j] = 0.0
            att.k_proj.weight[kv * head_dim + rot, dim] = gain**0.5
        for j in (head * head_dim + rot, head * head_dim + rot + head_dim // 2):
            att.q_proj.weight[j].zero_()
            att.q_proj.bias[j] = 0.0
        att.q_proj.bias[head * head_dim + rot] = gain**0.5


@torch.no_grad()
def temporal_route_init(
    model: VideoRewardModel, offset: int, normed_marker: float, head: int = 1, gain: float = 8.0
) -> None:
    """Make layer-0 query head ``head`` of every video token attend ``offset`` positions back: one slice earlier.

    Video tokens are laid out time-major (``t``, then the merged spatial blocks), so with VideoReward's 1-D positions
    the token ``offset`` (= tokens per temporal patch) back is the same place one temporal patch earlier. The video
    marker (hidden dim 0, ``normed_marker`` after the layer's RMSNorm) is written as a key into the two highest rotary
    frequencies (pairs 0 and 1: the temporal section of Qwen2-VL's M-RoPE), and the query of ``head`` reads the same
    marker rotated back by ``offset`` positions, so the logit between two video tokens at distance ``d`` is
    ``gain * (cos(w0 (d - offset)) + cos(w1 (d - offset))) / 2``: largest at ``d = offset``. Only video tokens carry
    the marker, so text queries see nothing of it; the other query heads' rows on these rotary dimensions are zeroed
    (the key/value head is shared). A token's comparison with its predecessor is then one MLP away, where changes
    from one temporal patch to the next (jitter) become a feature that a later attention average keeps.
    """
    att = model.backbone.model.language_model.layers[0].self_attn
    head_dim = att.head_dim
    freqs = model.backbone.model.language_model.rotary_emb.inv_freq[:2].tolist()
    w = (2 * gain) ** 0.5 / normed_marker
    for kv in range(att.k_proj.out_features // head_dim):
        for i in range(2):
            for j in (kv * head_dim + i, kv * head_dim + i + head_dim // 2):
                att.k_proj.weight[j].zero_()
                att.k_proj.bias[j] = 0.0
            att.k_proj.weight[kv * head_dim + i, 0] = w
    for h in range(att.q_proj.out_features // head_dim):
        for i in range(2):
            for j in (h * head_dim + i, h * head_dim + i + head_dim // 2):
                att.q_proj.weight[j].zero_()
                att.q_proj.bias[j] = 0.0
            if h == head:
                att.q_proj.weight[h * head_dim + i, 0] = w * math.cos(offset * freqs[i])
                att.q_proj.weight[h * head_dim + i + head_dim // 2, 0] = -w * math.sin(offset * freqs[i])


@torch.no_grad()
def normed_video_marker(model: VideoRewardModel, video: RewardVideo) -> float:
    """Mean of hidden dim 0 over ``video``'s merged tokens after the first LLM layer's RMSNorm (the routed marker)."""
    backbone = model.backbone
    emb = backbone.model.visual(patchify(video.x), grid_thw=video.grid_tensor()).pooler_output
    return float(backbone.model.language_model.layers[0].input_layernorm(emb)[:, 0].mean())
