"""Where the shapes world's VideoReward loses the video: linear probes of a random tiny base.

Diagnostic for the world's reward (docs/benchmarks.md "Shapes world"): on labelled world videos it
fits a ridge regression (standardised features, so the large component common to every video does
not hide the rest) from two places of the random tiny Qwen2-VL VideoReward base and reports the
held-out Spearman per axis (VQ, MQ, TA):

* ``video``: the merged ViT features of the video tokens, flattened (what the LLM is given);
* ``reward_tokens``: the final hidden states at the three reward tokens (what ``rm_head`` reads),
  captured with a forward pre-hook on ``rm_head`` of :class:`VideoRewardModel`'s own forward.

If the first is informative and the second is not, the video is lost inside the LLM (the rubric
around the video tokens dilutes it) and training has to grow that path from almost nothing::

    .venv/bin/python benchmarks/shapes_reward_probe.py --train 1500 --held 200 --out /tmp/probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream_r1.reward.model import VideoRewardModel  # noqa: E402
from stream_r1.reward.preprocess import PreprocessOptions, patchify, preprocess_frames  # noqa: E402
from stream_r1.reward.prompt import REWARD_AXES, REWARD_TOKENS  # noqa: E402
from stream_r1.reward.tiny import write_tiny_base  # noqa: E402
from stream_r1.shapes.reward import WORLD_WORDS, labelled_video, rank_correlation  # noqa: E402
from stream_r1.shapes.sizes import get_size  # noqa: E402
from stream_r1.shapes.world import HELD_OUT_SEED_BASE, split_prompts  # noqa: E402


def _features(model: VideoRewardModel, examples: list, opts: PreprocessOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """``(flattened merged video tokens [N, M*D], reward-token hidden states [N, 3*D])``."""
    captured: list[torch.Tensor] = []
    hook = model.rm_head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].flatten()))
    video_rows = []
    with torch.no_grad():
        for ex in examples:
            v = preprocess_frames(ex.frames, opts)
            x, grid = patchify(v.x), v.grid_tensor()
            video_rows.append(model.embed_video(x, grid).flatten())
            model(x, grid, model.encode_prompt(ex.prompt, v.num_video_tokens))
    hook.remove()
    return torch.stack(video_rows), torch.stack(captured)


def _ridge_spearman(xt: torch.Tensor, yt: torch.Tensor, xh: torch.Tensor, yh: torch.Tensor, lam: float) -> list[float]:
    mu, sd = xt.mean(0), xt.std(0) + 1e-6
    a, b = (xt - mu) / sd, (xh - mu) / sd
    w = torch.linalg.solve(a.T @ a + lam * torch.eye(a.shape[1]), a.T @ (yt - yt.mean(0)))
    pred = b @ w
    return [round(rank_correlation(pred[:, k].tolist(), yh[:, k].tolist()), 3) for k in range(yh.shape[1])]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=1500, help="labelled training videos for the probes")
    ap.add_argument("--held", type=int, default=200, help="held-out videos (held-out prompts and seeds)")
    ap.add_argument("--size", default="ci", help="world size whose frames/pixels are used")
    ap.add_argument("--ridge", type=float, default=10.0, help="ridge penalty on standardised features")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    args = ap.parse_args(argv)
    ws = get_size(args.size)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        backbone, tokenizer = write_tiny_base(Path(tmp), seed=args.seed, extra_words=WORLD_WORDS)
    hidden = backbone.config.text_config.hidden_size
    rm_head = torch.nn.Linear(hidden, 1, bias=False)
    ids = {a: tokenizer.convert_tokens_to_ids(REWARD_TOKENS[a]) for a in REWARD_AXES}
    model = VideoRewardModel(
        backbone.eval(), rm_head, tokenizer, ids, dict.fromkeys(REWARD_AXES, 0.0), dict.fromkeys(REWARD_AXES, 1.0)
    )
    train_prompts, held_prompts = split_prompts()
    train = [labelled_video(train_prompts, 17 * 1_000_003 + i, ws.pixel_frames, ws.pixels) for i in range(args.train)]
    held = [labelled_video(held_prompts, HELD_OUT_SEED_BASE + i, ws.pixel_frames, ws.pixels) for i in range(args.held)]
    opts = PreprocessOptions(min_pixels=3136, max_pixels=3136)
    (vt, rt), (vh, rh) = _features(model, train, opts), _features(model, held, opts)
    yt = torch.tensor([[ex.labels[a] for a in REWARD_AXES] for ex in train])
    yh = torch.tensor([[ex.labels[a] for a in REWARD_AXES] for ex in held])
    result = {
        "train": args.train,
        "held": args.held,
        "size": ws.name,
        "seed": args.seed,
        "spearman_video_tokens": dict(zip(REWARD_AXES, _ridge_spearman(vt, yt, vh, yh, args.ridge), strict=True)),
        "spearman_reward_tokens": dict(zip(REWARD_AXES, _ridge_spearman(rt, yt, rh, yh, args.ridge), strict=True)),
        "reward_token_relative_spread": float(((rt - rt.mean(0)).norm(dim=1) / rt.norm(dim=1)).mean()),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
