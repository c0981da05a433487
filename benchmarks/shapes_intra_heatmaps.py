"""W_intra heatmaps beside the object's mask, from a ``shapes_ablation.py`` result file.

For the Stream-R1 rows (each holds ``intra_vs_mask``: the training code's W_intra of a few decoded rollouts and
the object's coverage of each latent cell), one figure row per rollout: for every latent frame, W_intra then
the mask, with the prompt and the rollout's Pearson correlation. The question it answers: does the saliency
land where the object is, i.e. where the reward can still improve?

    python benchmarks/shapes_intra_heatmaps.py /tmp/shapes_ablation.json --out docs/images/shapes_intra.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def intra_rollouts(results: dict, method: str, limit: int) -> list[dict]:
    """The first ``limit`` rollouts with W_intra of ``method``'s rows, each with its seed added.

    Raises:
        ValueError: no row of ``method`` holds ``intra_vs_mask`` (one line naming the fix).
    """
    found = []
    for row in results.get("rows", {}).get(method, []):
        for rollout in row.get("intra_vs_mask", []):
            found.append({**rollout, "seed": row.get("seed")})
    if not found:
        raise ValueError(f"no `{method}` row with intra_vs_mask in the result file; run shapes_ablation.py with "
                         f"--methods {method}")
    return found[:limit]


def draw(rollouts: list[dict], out: Path) -> None:
    """One row per rollout: W_intra (F, h, w) and the mask coverage (F, h, w) per latent frame, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = len(rollouts[0]["w_intra"])
    fig, axes = plt.subplots(len(rollouts), 2 * frames, figsize=(1.5 * 2 * frames, 1.7 * len(rollouts)),
                             squeeze=False)
    for i, r in enumerate(rollouts):
        w, cov = np.asarray(r["w_intra"]), np.asarray(r["coverage"])
        for f in range(frames):
            for j, (grid, name, cmap) in enumerate(((w, "W_intra", "magma"), (cov, "mask", "gray"))):
                ax = axes[i, 2 * f + j]
                # One colour scale per rollout, so frames compare (the temporal weight shows as brightness).
                ax.imshow(grid[f], cmap=cmap, vmin=float(grid.min()), vmax=float(grid.max()), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(f"{name} f{f}", fontsize=8)
        axes[i, 0].set_ylabel(f"{r['prompt'].removeprefix('a ')}\nseed {r['seed']}, r={r['correlation']:+.2f}",
                              fontsize=6)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", help="JSON written by benchmarks/shapes_ablation.py")
    p.add_argument("--method", default="stream_r1")
    p.add_argument("--rollouts", type=int, default=6, help="rollouts to draw (across seeds, in file order)")
    p.add_argument("--out", default="docs/images/shapes_intra.png")
    args = p.parse_args()
    try:
        rollouts = intra_rollouts(json.loads(Path(args.results).read_text()), args.method, args.rollouts)
    except (OSError, ValueError) as e:
        print(f"error: {e}")
        return 2
    draw(rollouts, Path(args.out))
    corr = [r["correlation"] for r in rollouts]
    print(f"wrote {args.out}: {len(rollouts)} rollouts, correlation mean {np.mean(corr):+.3f} "
          f"(min {min(corr):+.3f}, max {max(corr):+.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
