"""Side-by-side comparison of two evaluations' metrics.json (what a reviewer needs to accept a retrain)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from stream_r1.eval.keys import direction, verdict
from stream_r1.utils.io import atomic_write, atomic_write_json, atomic_write_text

METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class ComparisonRow:
    """One metric of the comparison; ``a``/``b`` are ``None`` when a run lacks the key."""

    key: str
    a: float | None
    b: float | None
    diff: float | None
    """b - a."""
    rel_diff: float | None
    """(b - a) / |a| (None when a is 0 or missing)."""
    direction: str
    verdict: str


def load_metrics(run: str | Path) -> dict[str, float]:
    """Read ``metrics.json`` from a run directory or a file path.

    Raises:
        FileNotFoundError: neither ``run`` nor ``run/metrics.json`` exists.
        ValueError: the file is not a flat JSON object.
    """
    path = Path(run)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no metrics at {str(path)!r}; pass an evaluation output directory (with {METRICS_FILE}) or the file"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a flat JSON object of metrics, got {type(data).__name__}")
    out: dict[str, float] = {}
    for k, v in data.items():
        if isinstance(v, bool):
            out[k] = 1.0 if v else 0.0
        elif isinstance(v, (int, float)):
            out[k] = float(v)
    return out


def compare_metrics(a: dict[str, float], b: dict[str, float]) -> list[ComparisonRow]:
    """Rows for the union of keys (sorted), with difference and better/worse per direction."""
    rows = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        both = va is not None and vb is not None and math.isfinite(va) and math.isfinite(vb)
        diff = vb - va if both else None
        rel = diff / abs(va) if both and va != 0 else None
        rows.append(ComparisonRow(key, va, vb, diff, rel, direction(key), verdict(key, va, vb) if both else "missing"))
    return rows


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
        return f"{v:.3e}"
    return f"{v:.4f}"


def to_markdown(rows: list[ComparisonRow], name_a: str, name_b: str) -> str:
    """A markdown table: metric, A, B, B - A, relative, better-is, verdict, plus a tally line."""
    lines = [
        f"| metric | A: {name_a} | B: {name_b} | B − A | rel. | better | verdict |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    arrows = {"higher": "higher ↑", "lower": "lower ↓", "zero": "closer to 0", "info": "—"}
    for r in rows:
        rel = "—" if r.rel_diff is None else f"{100 * r.rel_diff:+.1f}%"
        diff = "—" if r.diff is None else f"{r.diff:+.4g}"
        lines.append(
            f"| {r.key} | {_fmt(r.a)} | {_fmt(r.b)} | {diff} | {rel} | {arrows[r.direction]} | {r.verdict} |"
        )
    tally = {v: sum(r.verdict == v for r in rows) for v in ("better", "worse", "same", "missing")}
    lines.append("")
    lines.append(
        f"B vs A: {tally['better']} better, {tally['worse']} worse, {tally['same']} same, "
        f"{tally['missing']} missing in one run."
    )
    return "\n".join(lines) + "\n"


def plot_comparison(rows: list[ComparisonRow], name_a: str, name_b: str, path: str | Path) -> Path:
    """Horizontal bar plot of the relative change B vs A per comparable metric (green = better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.diff is not None]
    fig_h = max(2.0, 0.32 * len(shown) + 1.0)
    fig, ax = plt.subplots(figsize=(8, fig_h))
    colours = {"better": "tab:green", "worse": "tab:red", "same": "tab:gray", "n/a": "tab:blue"}
    values = [100 * (r.rel_diff if r.rel_diff is not None else 0.0) for r in shown]
    ax.barh([r.key for r in shown], values, color=[colours.get(r.verdict, "tab:blue") for r in shown])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"relative change, B ({name_b}) vs A ({name_a}) [%]")
    ax.invert_yaxis()
    ax.set_title("green = better, red = worse, blue = no preferred direction")
    fig.tight_layout()
    out = Path(path)
    atomic_write(out, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    return out


def compare_runs(run_a: str | Path, run_b: str | Path, output_dir: str | Path | None = None) -> tuple[str, list[ComparisonRow]]:
    """Compare two evaluations; with ``output_dir`` write ``comparison.md``, ``.json`` and ``.png``.

    Returns:
        ``(markdown, rows)``.
    """
    a, b = load_metrics(run_a), load_metrics(run_b)
    name_a, name_b = Path(run_a).name or str(run_a), Path(run_b).name or str(run_b)
    if name_a == name_b:
        name_a, name_b = str(run_a), str(run_b)
    rows = compare_metrics(a, b)
    md = to_markdown(rows, name_a, name_b)
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "comparison.md", f"# Evaluation comparison\n\n{md}")
        atomic_write_json(
            out / "comparison.json",
            {"run_a": str(run_a), "run_b": str(run_b), "rows": [asdict(r) for r in rows]},
        )
        plot_comparison(rows, name_a, name_b, out / "comparison.png")
    return md, rows
