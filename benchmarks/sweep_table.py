"""The validation table of issue 13's sweep (``run_sweep.py``), as Markdown.

    python benchmarks/sweep_table.py [docs/results/val-sweep]

One row per recipe: validation top-1 (%) per development seed and the mean, for each classifier run; the
generator's minutes (one thread) and its mask-fidelity gap; the set's high-frequency share and within-class
diversity as ratios to the real subset's (means over the seeds). Missing runs print as "·". Validation figures
only: the test split is never read here.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from run_sweep import CLASSIC, DEFAULT_RUNS, DEV_SEEDS, RECIPES

from pipeline.classify.augment import run_name


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _top1(results: Path, tag: str, run: str) -> str:
    values = [_load(results / f"{tag}__{run}-s{s}.json") for s in DEV_SEEDS]
    cells = [f"{100 * v['top1']:.2f}" if v else "·" for v in values]
    if all(values):
        cells.append(f"**{100 * statistics.mean(v['top1'] for v in values):.2f}**")
    else:
        cells.append("·")
    return " / ".join(cells[:-1]) + f" → {cells[-1]}"


def _mean(results: Path, tag: str, run: str) -> float | None:
    values = [_load(results / f"{tag}__{run}-s{s}.json") for s in DEV_SEEDS]
    return 100 * statistics.mean(v["top1"] for v in values) if all(values) else None


def _delta(results: Path, recipe: str, run: str) -> str:
    """The recipe's mean minus the default recipe's, in points (paired by seed: same draws)."""
    mine, default = _mean(results, recipe, run), _mean(results, "default", run)
    return f"{mine - default:+.2f}" if mine is not None and default is not None else "·"


def _inputs(inputs: Path, recipe: str) -> list[str]:
    sets = [_load(inputs / f"{recipe}__set-s{s}.json") for s in DEV_SEEDS]
    gens = [_load(inputs / f"{recipe}__generator-s{s}.json") for s in DEV_SEEDS]
    times = [_load(inputs / f"{recipe}__timings-s{s}.json") for s in DEV_SEEDS]
    cells = []
    cells.append(f"{statistics.mean(t['train_seconds'] for t in times) / 60:.1f}" if all(times) else "·")
    cells.append(
        f"{statistics.mean(g['mask_fidelity']['generator']['gap_db'] for g in gens):.2f}" if all(gens) else "·"
    )
    if all(sets):
        d = [s["diagnostics"] for s in sets]
        hf = statistics.mean(x["synthetic"]["hf_share"] / x["real"]["hf_share"] for x in d)
        div = statistics.mean(x["synthetic"]["diversity"] / x["real"]["diversity"] for x in d)
        cells += [f"{hf:.2f}x", f"{div:.2f}x"]
    else:
        cells += ["·", "·"]
    return cells


def table(results: Path) -> str:
    inputs = Path(f"{results}-inputs")
    runs = [run_name(m, a) for m, a in DEFAULT_RUNS]
    head = ["recipe", *(f"{r} val top-1 {DEV_SEEDS[0]} / {DEV_SEEDS[1]} → mean" for r in runs)]
    head += [f"Δ {r} vs default" for r in runs]
    head += ["G min", "gap dB", "HF share", "diversity"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for recipe, spec in RECIPES.items():
        if recipe == "classic":
            continue
        source = spec.get("from", recipe)
        row = [recipe, *(_top1(results, recipe, r) for r in runs), *(_delta(results, recipe, r) for r in runs)]
        row += _inputs(inputs, source)
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("| classic (real only) | val top-1 " + f"{DEV_SEEDS[0]} / {DEV_SEEDS[1]} → mean |")
    lines.append("|---|---|")
    for method in CLASSIC:
        lines.append(f"| {method} | {_top1(results, 'classic', method)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/val-sweep")))
