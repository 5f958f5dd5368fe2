"""Aggregate evaluation metrics JSONs into the results table (method x dataset x k, mean ± std over seeds)
and a plot."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.atomic import save_figure
from pipeline.augment import METHODS
from pipeline.errors import HydraMixError

_REQUIRED = ("method", "dataset", "k", "seed", "top1", "macro_accuracy")


def load_metrics(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read evaluation metrics JSONs (as written by ``hydramix evaluate``); HydraMixError naming a bad
    file."""
    records = []
    for path in paths:
        path = Path(path)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise HydraMixError(f"{path}: not a readable metrics JSON ({exc})") from None
        missing = [key for key in _REQUIRED if not isinstance(record, dict) or key not in record]
        if missing:
            raise HydraMixError(f"{path}: not an evaluation metrics file (missing {', '.join(missing)})")
        # Files from before the split key existed are test evaluations.
        if record.get("split", "test") != "test":
            raise HydraMixError(f"{path}: a '{record['split']}' evaluation; the results table holds test runs only")
        records.append({**record, "path": str(path)})
    return records


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, k, method): top-1 and macro accuracy mean/std over runs, n, the seeds.

    Rows are ordered by dataset, k, then the method order of pipeline.augment.METHODS. Two runs of one group
    with the same seed are an error (a stale metrics file would otherwise count twice).
    """
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((str(record["dataset"]), int(record["k"]), record["method"]), []).append(record)
    rows = []
    for (dataset, k, method), runs in groups.items():
        seeds = [run["seed"] for run in runs]
        if len(set(seeds)) != len(seeds):
            paths = ", ".join(run["path"] for run in runs)
            raise HydraMixError(f"{method} on {dataset} k={k}: seed listed twice among {paths}")
        top1_mean, top1_std = mean_std([run["top1"] for run in runs])
        macro_mean, macro_std = mean_std([run["macro_accuracy"] for run in runs])
        rows.append(
            {
                "dataset": dataset,
                "k": k,
                "method": method,
                "n": len(runs),
                "seeds": sorted(seeds),
                "top1_mean": top1_mean,
                "top1_std": top1_std,
                "macro_mean": macro_mean,
                "macro_std": macro_std,
            }
        )
    order = {m: i for i, m in enumerate(METHODS)}
    rows.sort(key=lambda r: (r["dataset"], r["k"], order.get(r["method"], len(order)), r["method"]))
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results table in Markdown; accuracies in percent, mean ± sample std, Δ = top-1 mean minus
    baseline's."""
    baseline = {(r["dataset"], r["k"]): r["top1_mean"] for r in rows if r["method"] == "baseline"}
    lines = [
        "| dataset | k | method | top-1 (%) | macro (%) | Δ top-1 vs baseline | n | seeds |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        base = baseline.get((r["dataset"], r["k"]))
        delta = "—" if base is None or r["method"] == "baseline" else f"{100 * (r['top1_mean'] - base):+.2f}"
        lines.append(
            f"| {r['dataset']} | {r['k']} | {r['method']} | {_pm(r['top1_mean'], r['top1_std'], r['n'])} | "
            f"{_pm(r['macro_mean'], r['macro_std'], r['n'])} | {delta} | {r['n']} | "
            f"{', '.join(map(str, r['seeds']))} |"
        )
    return "\n".join(lines) + "\n"


def _pm(mean: float, std: float, n: int) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if n > 1 else f"{100 * mean:.2f}"


def plot_results(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Bar chart of top-1 mean (error bar: std) per method, one panel per (dataset, k); PNG written
    atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["dataset"], r["k"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for ax, (dataset, k) in zip(axes[0], panels, strict=True):
        panel = [r for r in rows if (r["dataset"], r["k"]) == (dataset, k)]
        xs = range(len(panel))
        colours = ["tab:red" if r["method"] == "hydramix" else "tab:blue" for r in panel]
        ax.bar(
            xs,
            [100 * r["top1_mean"] for r in panel],
            yerr=[100 * r["top1_std"] for r in panel],
            color=colours,
            capsize=3,
        )
        ax.set_xticks(list(xs), [f"{r['method']}\n(n={r['n']})" for r in panel], rotation=60, fontsize=8)
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(f"{dataset}, k={k}")
    fig.tight_layout()
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
