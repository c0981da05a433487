"""Where the world's VideoReward puts its saliency, on renders whose object position is known.

``benchmarks/shapes_ablation.py`` found Stream-R1's W_intra on student rollouts uncorrelated with the object's
mask and alike from one rollout to the next. This probe takes the student out of the question: it computes the
training code's W_intra (:func:`stream_r1.reward.rollout_weights.compute_rollout_weights`, the run's reward
config) on *renders* of held-out prompts, clean and degraded, and on an all-black video, and prints:

* the Pearson correlation of W_intra with the object's coverage of each latent cell (mean over renders);
* the mean pairwise correlation of W_intra between renders of different scenes, and with the black video's W_intra
  (a saliency that is a property of the network, not of the video, correlates with the black video's);
* the same two figures for each axis's pixel saliency (before fusion, on the reward's input grid), against the
  object mask resized to that grid;
* the share of W_intra in each latent row and column (a position preference shows as a share far from 1 / side);
* where the preference enters: the VQ gradient with respect to the merged video tokens the LLM reads (saliency
  space ``embeds``), as each token's share of the mean, for the renders and the black video (a share far above 1
  on one token at every video means the LLM reads that token most whatever it shows).

    python benchmarks/shapes_saliency_probe.py --world DIR [--per-prompt 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path

import torch


def _mean_pairwise(maps: list[torch.Tensor]) -> float:
    from stream_r1.shapes.saliency import pearson

    vals = [pearson(a, b) for a, b in itertools.combinations(maps, 2)]
    return statistics.fmean(v for v in vals if v == v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", type=Path, required=True, help="a built shapes world (stream-r1 shapes build)")
    p.add_argument("--per-prompt", type=int, default=2, help="renders per held-out prompt and mode")
    p.add_argument("--modes", nargs="+", default=["clean", "blur", "jitter"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    from stream_r1.config.derived import checkpoint_path
    from stream_r1.method.build import build_balancer
    from stream_r1.reward.model import VideoRewardModel
    from stream_r1.reward.preprocess import PreprocessOptions, preprocess_frames
    from stream_r1.reward.rollout_weights import compute_rollout_weights
    from stream_r1.reward.saliency import compute_saliency
    from stream_r1.shapes.build import world_config
    from stream_r1.shapes.data import held_out_clips, render_clips
    from stream_r1.shapes.detect import object_mask
    from stream_r1.shapes.saliency import latent_coverage, pearson

    cfg = world_config(a.world)
    r = cfg.rollout
    latent = (cfg.eval.num_frames, r.latent_height, r.latent_width)
    frames = 1 + 4 * (latent[0] - 1)
    reward = VideoRewardModel.from_checkpoint(checkpoint_path(cfg, "reward"))
    opts = PreprocessOptions.from_config(cfg.reward)
    clips = [c for m in a.modes for c in held_out_clips(a.per_prompt, m)]
    videos = list(render_clips(clips, frames, r.latent_height * 8))
    prompts = [c.prompt for c in clips]
    black = torch.full_like(videos[0], -1.0)

    def weights(v: torch.Tensor, prompt: str) -> torch.Tensor:
        w = compute_rollout_weights(reward, v, prompt, latent, cfg.reward, build_balancer(cfg.reward)).w_intra
        assert w is not None
        return w.float()

    def saliency(v: torch.Tensor, prompt: str, space: str) -> dict[str, torch.Tensor]:
        """{axis: map}: ``[T', Hr, Wr]`` in pixel space, ``[t, h/2, w/2]`` over the merged tokens in ``embeds``."""
        rv = preprocess_frames(v, opts)
        ids = reward.encode_prompt(prompt, rv.num_video_tokens)
        return compute_saliency(reward, rv, ids, space=space)[1]

    w_all = [weights(v, p) for v, p in zip(videos, prompts, strict=True)]
    w_black = weights(black, prompts[0])
    cover = [latent_coverage(v, latent) for v in videos]
    out: dict[str, object] = {
        "videos": len(videos),
        "w_intra_vs_mask": statistics.fmean(pearson(w, c) for w, c in zip(w_all, cover, strict=True)),
        "w_intra_pairwise": _mean_pairwise(w_all),
        "w_intra_vs_black": statistics.fmean(pearson(w, w_black) for w in w_all),
        "w_intra_row_share": (torch.stack(w_all).mean(dim=(0, 1, 3)) / torch.stack(w_all).mean()).tolist(),
        "w_intra_col_share": (torch.stack(w_all).mean(dim=(0, 1, 2)) / torch.stack(w_all).mean()).tolist(),
    }
    sal_black = saliency(black, prompts[0], "pixel")
    per_axis: dict[str, dict[str, float]] = {}
    sal_all = [saliency(v, p, "pixel") for v, p in zip(videos, prompts, strict=True)]
    shown = list(preprocess_frames(videos[0], opts).frame_indices)
    grid = sal_black["VQ"].shape[-2:]
    resize = torch.nn.functional.interpolate
    masks = [  # the object mask of the frames the reward sees, on its input grid
        resize(object_mask(v).float()[shown].unsqueeze(1), size=grid, mode="bilinear").squeeze(1) for v in videos
    ]
    for axis in sal_black:
        maps = [s[axis] for s in sal_all]
        per_axis[axis] = {
            "vs_mask": statistics.fmean(pearson(s, m) for s, m in zip(maps, masks, strict=True)),
            "pairwise": _mean_pairwise(maps),
            "vs_black": statistics.fmean(pearson(s, sal_black[axis]) for s in maps),
        }
    out["pixel_saliency"] = per_axis

    def token_share(v: torch.Tensor, prompt: str) -> torch.Tensor:
        sal = saliency(v, prompt, "embeds")["VQ"].flatten()
        return sal / sal.mean()

    shares = torch.stack([token_share(v, p) for v, p in zip(videos, prompts, strict=True)])  # [N, merged tokens]
    out["embeds_token_share"] = {
        "renders_median": shares.median(dim=0).values.tolist(),
        "black": token_share(black, prompts[0]).tolist(),
        "renders_argmax_counts": torch.bincount(shares.argmax(dim=1), minlength=shares.shape[1]).tolist(),
    }
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
