"""Aggregate evaluation metrics JSONs into the results table (run x dataset x k, mean ± std over seeds, paired
differences with 95% t-intervals) and a plot. The statistics are described in docs/statistics.md.

``make_report`` is the work of ``hydramix report``: metrics files in, table, plot (and CSV) written; the functions
it chains (``load_metrics`` -> ``aggregate`` -> ``compare`` -> ``markdown_table``, ``plot_results``,
``results_csv``) are usable one by one."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.classify.augment import CLASSIC_AUGMENTATIONS, SYNTHETIC_METHODS, run_name
from pipeline.core.atomic import save_figure, write_file
from pipeline.core.errors import HydraMixError

_REQUIRED = ("method", "dataset", "k", "seed", "top1", "macro_accuracy")
CONFIDENCE = 0.95


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
        # Files from before the augment key existed are runs of the method alone.
        if not isinstance(record.get("augment"), str | None):
            raise HydraMixError(f"{path}: 'augment' must be a string or null, got {record['augment']!r}")
        records.append({**record, "path": str(path)})
    return records


def make_report(
    paths: Iterable[str | Path],
    out_table: str | Path,
    out_plot: str | Path,
    reference: str = "baseline",
    out_csv: str | Path | None = None,
) -> tuple[dict[str, Any], str]:
    """Aggregate the evaluation metrics files ``paths`` per (dataset, k, run), compare every run with
    ``reference``, and write the Markdown table, the plot and (if ``out_csv``) the CSV, each atomically.

    Returns (the ``compare`` report, the table text). HydraMixError for a file that is not an evaluation's metrics,
    a reference run in no panel, or runs whose seeds do not pair.
    """
    report = compare(aggregate(load_metrics(paths)), reference=reference)
    table = markdown_table(report)
    write_file(out_table, lambda tmp: tmp.write_text(table))
    plot_results(report, out_plot)
    if out_csv is not None:
        csv = results_csv(report)
        write_file(out_csv, lambda tmp: tmp.write_text(csv))
    return report, table


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def run_order(name: str) -> tuple[int, int, int, str]:
    """Sort key of a run name: classic augmentations in CLASSIC_AUGMENTATIONS order, then each synthetic method
    (SYNTHETIC_METHODS order) followed by its ``method+augment`` combinations in CLASSIC_AUGMENTATIONS order;
    any other name last, alphabetically."""
    if name in CLASSIC_AUGMENTATIONS:
        return (0, CLASSIC_AUGMENTATIONS.index(name), 0, "")
    method, plus, augment = name.partition("+")
    if method in SYNTHETIC_METHODS and not plus:
        return (1, SYNTHETIC_METHODS.index(method), 0, "")
    if method in SYNTHETIC_METHODS and augment in CLASSIC_AUGMENTATIONS:
        return (1, SYNTHETIC_METHODS.index(method), 1 + CLASSIC_AUGMENTATIONS.index(augment), "")
    return (2, 0, 0, name)


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, k, run): top-1 and macro accuracy mean/std over seeds, n, the seeds and each seed's
    top-1 (``top1_values``, aligned with ``seeds``).

    The run is ``pipeline.classify.augment.run_name(method, augment)``. Rows are ordered by dataset, k, then run_order.
    Two runs of one group with the same seed are an error (a stale metrics file would otherwise count twice).
    """
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for record in records:
        key = (str(record["dataset"]), int(record["k"]), run_name(record["method"], record.get("augment")))
        groups.setdefault(key, []).append(record)
    rows = []
    for (dataset, k, run), runs in groups.items():
        seeds = [r["seed"] for r in runs]
        if len(set(seeds)) != len(seeds):
            paths = ", ".join(r["path"] for r in runs)
            raise HydraMixError(f"{run} on {dataset} k={k}: seed listed twice among {paths}")
        runs = sorted(runs, key=lambda r: r["seed"])
        top1_mean, top1_std = mean_std([r["top1"] for r in runs])
        macro_mean, macro_std = mean_std([r["macro_accuracy"] for r in runs])
        rows.append(
            {
                "dataset": dataset,
                "k": k,
                "run": run,
                "n": len(runs),
                "seeds": [r["seed"] for r in runs],
                "top1_values": [r["top1"] for r in runs],
                "top1_mean": top1_mean,
                "top1_std": top1_std,
                "macro_mean": macro_mean,
                "macro_std": macro_std,
            }
        )
    rows.sort(key=lambda r: (r["dataset"], r["k"], run_order(r["run"])))
    return rows


def t_interval(values: list[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Mean of ``values`` and its two-sided t-interval: mean ± t_{(1+confidence)/2, n-1} * sd / sqrt(n), sd the
    sample std (ddof=1). Returns {"n", "mean", "low", "high"}; low and high are None for n = 1."""
    mean, sd = mean_std(values)
    n = len(values)
    if n < 2:
        return {"n": n, "mean": mean, "low": None, "high": None}
    from scipy.stats import t  # lazy: scipy is heavy and only the report needs it

    half = float(t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "low": mean - half, "high": mean + half}


def paired_difference(row: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """``row`` top-1 minus ``reference`` top-1, paired by seed: t_interval of the per-seed differences, plus
    {"reference": name}. The two rows must hold the same seeds (HydraMixError naming both and their seeds)."""
    if row["seeds"] != reference["seeds"]:
        raise HydraMixError(
            f"{row['dataset']} k={row['k']}: {row['run']} (seeds {_seed_list(row)}) cannot be paired with "
            f"{reference['run']} (seeds {_seed_list(reference)}); evaluate both on the same seeds"
        )
    diffs = [a - b for a, b in zip(row["top1_values"], reference["top1_values"], strict=True)]
    return {"reference": reference["run"], **t_interval(diffs)}


def best_classic(panel: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row of ``panel`` (one dataset and k) among CLASSIC_AUGMENTATIONS other than "baseline" with the highest
    mean top-1 (a tie goes to the earlier in CLASSIC_AUGMENTATIONS order); None if the panel has none."""
    classic = [r for r in panel if r["run"] in CLASSIC_AUGMENTATIONS and r["run"] != "baseline"]
    classic.sort(key=lambda r: CLASSIC_AUGMENTATIONS.index(r["run"]))
    return max(classic, key=lambda r: r["top1_mean"], default=None)


def compare(rows: list[dict[str, Any]], reference: str = "baseline") -> dict[str, Any]:
    """The report: rows of ``aggregate`` with paired differences against ``reference`` and the best classic
    augmentation of their (dataset, k).

    Returns {"reference", "confidence", "panels": [{"dataset", "k", "best_classic": name or None}], "rows"}; each
    row gains "vs_reference" and "vs_best_classic" (paired_difference dicts, or None where the other row is absent
    or is the row itself), and "vs_parts": for a combination ``method+augment``, its paired differences against
    ``augment`` alone and ``method`` alone (those of the two present, in that order; empty for other rows), which
    say whether the two help in different ways. HydraMixError if ``reference`` is in no panel, or if a row's seeds
    differ from those of a row it is compared with.
    """
    if not any(r["run"] == reference for r in rows):
        present = ", ".join(sorted({r["run"] for r in rows}, key=run_order))
        raise HydraMixError(f"reference run '{reference}' is in no panel; runs present: {present}")
    panels, out = [], []
    for dataset, k in dict.fromkeys((r["dataset"], r["k"]) for r in rows):
        panel = [r for r in rows if (r["dataset"], r["k"]) == (dataset, k)]
        ref = next((r for r in panel if r["run"] == reference), None)
        best = best_classic(panel)
        panels.append({"dataset": dataset, "k": k, "best_classic": None if best is None else best["run"]})
        by_run = {r["run"]: r for r in panel}
        for r in panel:
            method, plus, augment = r["run"].partition("+")
            parts = [by_run[name] for name in (augment, method) if plus and name in by_run]
            out.append(
                {
                    **r,
                    "vs_reference": None if ref is None or r is ref else paired_difference(r, ref),
                    "vs_best_classic": None if best is None or r is best else paired_difference(r, best),
                    "vs_parts": [paired_difference(r, part) for part in parts],
                }
            )
    return {"reference": reference, "confidence": CONFIDENCE, "panels": panels, "rows": out}


def markdown_table(report: dict[str, Any]) -> str:
    """The results table of a ``compare`` report in Markdown: accuracies in percent (mean ± sample std), paired
    differences in percentage points with their confidence interval; a line above says which classic augmentation
    was the best per panel and how the interval is computed."""
    best = "; ".join(f"{p['dataset']} k={p['k']}: {p['best_classic'] or 'none'}" for p in report["panels"])
    pct = round(100 * report["confidence"])
    lines = [
        f"Best classic augmentation (highest mean top-1, baseline excluded) — {best}. "
        f"Δ: top-1 difference in percentage points, paired by seed (mean of per-seed differences); "
        f"[{pct}% CI] = mean ± t({(1 + report['confidence']) / 2:g}; n−1 df) · sd / √n of the per-seed differences, "
        f"none for n = 1.",
        "",
        f"| dataset | k | run | top-1 (%) | macro (%) | n | Δ vs {report['reference']} [{pct}% CI] | "
        f"Δ vs best classic [{pct}% CI] | Δ vs its parts [{pct}% CI] | seeds |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        vs_best = r["vs_best_classic"]
        lines.append(
            f"| {r['dataset']} | {r['k']} | {r['run']} | {_pm(r['top1_mean'], r['top1_std'], r['n'])} | "
            f"{_pm(r['macro_mean'], r['macro_std'], r['n'])} | {r['n']} | {_delta(r['vs_reference'])} | "
            f"{_delta(vs_best)}{'' if vs_best is None else ' vs ' + vs_best['reference']} | {_parts(r)} | "
            f"{_seed_list(r)} |"
        )
    return "\n".join(lines) + "\n"


def results_csv(report: dict[str, Any]) -> str:
    """One CSV row per run of a ``compare`` report (for ``dvc plots``): label, dataset, k, run, n, and top-1 and
    macro accuracy in percent (mean over seeds, and top-1's sample std). ``label`` is the run, prefixed with its
    dataset and k where the report holds several panels, so that a bar chart by label never merges two panels."""
    several = len(report["panels"]) > 1
    lines = ["label,dataset,k,run,n,top1,top1_std,macro"]
    for r in report["rows"]:
        label = f"{r['dataset']} k={r['k']}: {r['run']}" if several else r["run"]
        fields = [label, r["dataset"], str(r["k"]), r["run"], str(r["n"])]
        fields += [f"{100 * r['top1_mean']:.2f}", f"{100 * r['top1_std']:.2f}", f"{100 * r['macro_mean']:.2f}"]
        lines.append(",".join(_csv_field(f) for f in fields))
    return "\n".join(lines) + "\n"


def _csv_field(text: str) -> str:
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\n') else text


def _pm(mean: float, std: float, n: int) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if n > 1 else f"{100 * mean:.2f}"


def _delta(diff: dict[str, Any] | None) -> str:
    """'+3.18 [+1.02, +5.34]' in percentage points; '+3.18 [—]' without an interval; '—' without a difference."""
    if diff is None:
        return "—"
    if diff["low"] is None:
        return f"{100 * diff['mean']:+.2f} [—]"
    return f"{100 * diff['mean']:+.2f} [{100 * diff['low']:+.2f}, {100 * diff['high']:+.2f}]"


def _parts(row: dict[str, Any]) -> str:
    """'+0.07 [-0.80, +0.94] vs mixup; +4.52 [+3.1, +5.9] vs hydramix' for a combination row; '—' otherwise."""
    return "; ".join(f"{_delta(d)} vs {d['reference']}" for d in row.get("vs_parts", [])) or "—"


def _seed_list(row: dict[str, Any]) -> str:
    return ", ".join(map(str, row["seeds"]))


def plot_results(report: dict[str, Any], path: str | Path) -> None:
    """PNG, written atomically: per (dataset, k) one column of two panels. Top: bars of mean top-1 (error bar: std,
    only where n > 1). Bottom: the paired top-1 difference to the reference (error bar: its confidence interval,
    where n > 1), with a line at 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels, reference = report["panels"], report["reference"]
    by_panel = [[r for r in report["rows"] if (r["dataset"], r["k"]) == (p["dataset"], p["k"])] for p in panels]
    width = max(4.5, 0.45 * max(map(len, by_panel)))  # panel width grows with its number of bars
    fig, axes = plt.subplots(2, len(panels), figsize=(width * len(panels), 8), squeeze=False)
    for col, (p, panel) in enumerate(zip(panels, by_panel, strict=True)):
        xs = list(range(len(panel)))
        labels = [f"{r['run']}\n(n={r['n']})" for r in panel]
        colours = ["tab:red" if r["run"].partition("+")[0] == "hydramix" else "tab:blue" for r in panel]

        top = axes[0][col]
        _bars(
            top,
            xs,
            [100 * r["top1_mean"] for r in panel],
            [(100 * r["top1_std"],) * 2 if r["n"] > 1 else None for r in panel],
            colours,
        )
        top.set_ylabel("test top-1 (%), mean ± std")
        top.set_title(f"{p['dataset']}, k={p['k']}")

        bottom = axes[1][col]
        bottom.axhline(0, color="black", linewidth=0.8)
        drawn = [(x, r["vs_reference"], c) for x, r, c in zip(xs, panel, colours, strict=True) if r["vs_reference"]]
        _bars(
            bottom,
            [x for x, _, _ in drawn],
            [100 * d["mean"] for _, d, _ in drawn],
            [
                None if d["low"] is None else (100 * (d["mean"] - d["low"]), 100 * (d["high"] - d["mean"]))
                for _, d, _ in drawn
            ],
            [c for _, _, c in drawn],
        )
        if not drawn:
            bottom.text(0.5, 0.5, f"no {reference} runs", ha="center", va="center", transform=bottom.transAxes)
        bottom.set_ylabel(f"Δ top-1 vs {reference} (pp), {round(100 * report['confidence'])}% CI")
        for ax in (top, bottom):
            ax.set_xlim(-0.6, len(panel) - 0.4)  # the same x for a run in both rows
            ax.set_xticks(xs, labels, rotation=60, fontsize=8)
    fig.tight_layout()
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)


def _bars(
    ax: Any, xs: list[int], heights: list[float], errors: list[tuple[float, float] | None], colours: list[str]
) -> None:
    """Bars at ``xs``; a black (below, above) error bar on each bar whose entry of ``errors`` is not None."""
    ax.bar(xs, heights, color=colours)
    with_error = [(x, h, e) for x, h, e in zip(xs, heights, errors, strict=True) if e is not None]
    if with_error:
        ax.errorbar(
            [x for x, _, _ in with_error],
            [h for _, h, _ in with_error],
            yerr=[[e[0] for *_, e in with_error], [e[1] for *_, e in with_error]],
            fmt="none",
            ecolor="black",
            capsize=3,
        )
