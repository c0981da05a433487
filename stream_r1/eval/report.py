"""Self-contained HTML evaluation report for the KFP UI (KFP renders HTML artifacts inline, so the report embeds its clips).

Everything is embedded: frame strips and matplotlib plots as base64 PNG data URIs, inline CSS, no
scripts, no external ``src``/``href``. A KFP ``HTML`` artifact is shown in a sandboxed iframe that
cannot fetch other artifacts, so nothing may be referenced by path or URL.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stream_r1.eval.keys import METRIC_KEYS, direction
from stream_r1.utils.io import atomic_write_text

STRIP_FRAMES = 8
STRIP_HEIGHT = 96
MAX_STRIPS = 48
"""Frame strips embedded at most (~50 KB each): a 946-video VBench run must not make a 50 MB page."""
MAX_PLOT_LINES = 8


def _png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def frame_strip_png(frames: np.ndarray, num: int = STRIP_FRAMES, height: int = STRIP_HEIGHT) -> bytes:
    """``num`` evenly spaced frames of ``[T, H, W, 3]`` uint8, resized to ``height`` and tiled left to right."""
    from PIL import Image

    t = frames.shape[0]
    idx = np.unique(np.linspace(0, t - 1, num=min(num, t)).round().astype(int))
    h, w = frames.shape[1:3]
    width = max(1, round(w * height / h))
    tiles = [Image.fromarray(frames[i]).resize((width, height), Image.BILINEAR) for i in idx]
    strip = Image.new("RGB", (width * len(tiles) + 2 * (len(tiles) - 1), height), (255, 255, 255))
    for k, tile in enumerate(tiles):
        strip.paste(tile, (k * (width + 2), 0))
    buf = io.BytesIO()
    strip.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def chunk_plots_png(per_video: Sequence[dict]) -> bytes:
    """One figure: per-chunk brightness, saturation, sharpness and per-frame MAE, one line per video."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 2, figsize=(10, 6))
    panels = (
        ("brightness", "brightness (luma / 255)"),
        ("saturation", "HSV saturation"),
        ("sharpness", "sharpness (Laplacian variance)"),
    )
    many = len(per_video) > MAX_PLOT_LINES
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        all_series = [v.get("chunks", {}).get(key, []) for v in per_video]
        for v, series in zip(per_video, all_series, strict=True):
            ax.plot(range(len(series)), series, marker="o", markersize=2, label=v.get("name", ""),
                    linewidth=0.5 if many else 1.0, alpha=0.3 if many else 1.0)
        if len(per_video) > 1 and len({len(x) for x in all_series}) == 1 and all_series[0]:
            ax.plot(np.mean(all_series, axis=0), color="black", linewidth=2.0, label="mean")
        ax.set_title(title)
        ax.set_xlabel("chunk")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax = axes.flat[3]
    for v in per_video:
        ax.plot(v.get("frame_mae", []), linewidth=0.8)
    ax.set_title("consecutive-frame MAE (0-255)")
    ax.set_xlabel("frame")
    if 0 < len(per_video) <= MAX_PLOT_LINES:
        axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _metrics_table(metrics: dict[str, float]) -> str:
    arrows = {"higher": "↑", "lower": "↓", "zero": "→0", "info": ""}
    rows = []
    for k in sorted(metrics):
        desc = METRIC_KEYS.get(k, ("", ""))[1]
        rows.append(
            f"<tr><td><code>{html.escape(k)}</code></td><td class='num'>{_fmt(metrics[k])}</td>"
            f"<td>{arrows[direction(k)]}</td><td>{html.escape(desc)}</td></tr>"
        )
    return (
        "<table><thead><tr><th>metric</th><th>value</th><th>better</th><th>meaning</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


PER_VIDEO_COLUMNS = (
    "temporal_flickering", "motion_score", "drift_brightness", "drift_color", "drift_sharpness",
    "reward_vq", "reward_mq", "reward_ta", "gt_total", "gt_color", "gt_shape", "gt_direction", "gt_degraded",
    "duration_s",
)


def _per_video_table(per_video: Sequence[dict]) -> str:
    cols = [c for c in PER_VIDEO_COLUMNS if any(c in v for v in per_video)]
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = []
    for v in per_video:
        cells = "".join(f"<td class='num'>{_fmt(v.get(c, ''))}</td>" for c in cols)
        body.append(f"<tr><td>{html.escape(str(v.get('name', '')))}</td><td>{html.escape(v.get('prompt', ''))}</td>{cells}</tr>")
    return f"<table><thead><tr><th>video</th><th>prompt</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_CSS = """
body{font-family:system-ui,sans-serif;margin:16px;color:#222}
table{border-collapse:collapse;margin:8px 0 16px 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
.video{margin:12px 0;padding:8px;border:1px solid #ddd}
.note{background:#fff6d6;padding:6px;border:1px solid #e8d27c}
img{max-width:100%}
"""


def render_report(
    metrics: dict[str, float],
    per_video: Sequence[dict],
    strips: dict[str, bytes],
    *,
    title: str = "stream-r1 evaluation",
    info: dict | None = None,
    notes: Sequence[str] = (),
    max_strips: int = MAX_STRIPS,
) -> str:
    """The report as one HTML string.

    Args:
        metrics: the flat metrics.json dict.
        per_video: per_video.json entries (``name``, ``prompt``, scalars, ``chunks``, ``frame_mae``).
        strips: ``{video name: PNG bytes}`` frame strips (see :func:`frame_strip_png`).
        info: run facts shown at the top (checkpoint, suite, config hash, ...).
        notes: warnings such as "VideoReward skipped (eval.reward_scores=false)".
        max_strips: embed frame strips of at most this many videos (the tables list all).
    """
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if info:
        items = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in info.items())
        parts.append(f"<table>{items}</table>")
    for note in notes:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    parts.append("<h2>Scores</h2>")
    parts.append(_metrics_table(metrics))
    if per_video:
        parts.append("<h2>Per video</h2>")
        parts.append(_per_video_table(per_video))
        parts.append("<h2>Per-chunk statistics</h2>")
        parts.append(f"<img alt='per-chunk plots' src='{_png_data_uri(chunk_plots_png(per_video))}'>")
        parts.append("<h2>Frame strips</h2>")
        if len(per_video) > max_strips:
            parts.append(f"<p class='note'>Frame strips of the first {max_strips} of {len(per_video)} videos.</p>")
        for v in per_video[:max_strips]:
            name = str(v.get("name", ""))
            parts.append(f"<div class='video'><b>{html.escape(name)}</b> — {html.escape(v.get('prompt', ''))}")
            if name in strips:
                parts.append(f"<br><img alt='frames of {html.escape(name)}' src='{_png_data_uri(strips[name])}'>")
            parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, *args: object, **kwargs: object) -> Path:
    """Render with :func:`render_report` and write atomically to ``path``."""
    return atomic_write_text(path, render_report(*args, **kwargs))  # type: ignore[arg-type]
