"""Markdown tables of a multi-seed run: test top-1 per seed, and each set's diagnostics over its real subset's.

    python benchmarks/seed_tables.py --metrics docs/results/cpu-quick-k10-5seeds/{baseline,mixup}-s*.json \
        --metrics docs/results/cpu-quick-k10-5seeds-v3 --sets docs/results/cpu-quick-k10-5seeds-v3-inputs/sets

--metrics: evaluation metrics JSONs (`hydramix evaluate --out-metrics`) or directories of them, several per flag;
a later file of the same run and seed replaces an earlier one, so a rerun's directory can follow the one it
updates. Pass only the rows you mean to keep from the older run (above: its classic rows), or a seed the rerun has
not reached yet shows the older figure. --sets: a directory of `hydramix synthesize --metrics` JSONs named
``<set>-s<seed>.json`` (what `run_protocol.py` keeps in ``<results>-inputs/sets``). Rows follow README "Results"
(classic rows, controls, synthetic rows, combinations), other names after them in alphabetical order; a seed a run
lacks prints as "—". The means here are plain means over the seeds present; paired intervals are `hydramix
report`'s job.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.classify.augment import run_name

# README "Results" order.
ORDER = (
    "baseline", "cutout", "random-erasing", "mixup", "cutmix", "autoaugment", "trivialaugment",
    "pixelmix", "pixelmix-blur", "chimeramix", "hydramix",
    "hydramix+mixup", "hydramix+autoaugment", "hydramix+trivialaugment",
)  # fmt: skip


def _ordered(names) -> list[str]:
    return sorted(names, key=lambda n: (ORDER.index(n), "") if n in ORDER else (len(ORDER), n))


def load_top1(paths: list[Path]) -> dict[str, dict[int, float]]:
    """{run: {seed: top-1 in %}} from metrics JSONs (each holds ``method``, ``augment``, ``seed`` and ``top1``, a
    fraction in [0, 1])."""
    files: list[Path] = []
    for p in paths:
        files += sorted(p.glob("*.json")) if p.is_dir() else [p]
    table: dict[str, dict[int, float]] = {}
    for f in files:
        m = json.loads(f.read_text())
        augment = None if m.get("augment") in (None, "baseline") else m["augment"]
        table.setdefault(run_name(m["method"], augment), {})[int(m["seed"])] = 100.0 * m["top1"]
    return table


def load_ratios(sets_dir: Path) -> dict[str, dict[int, tuple[float, float]]]:
    """{set: {seed: (hf share / real's, diversity / real's)}} from ``<set>-s<seed>.json`` synthesize metrics."""
    out: dict[str, dict[int, tuple[float, float]]] = {}
    for f in sorted(sets_dir.glob("*-s*.json")):
        name, seed = f.stem.rsplit("-s", 1)
        diag = json.loads(f.read_text())["diagnostics"]
        real, syn = diag["real"], diag["synthetic"]
        out.setdefault(name, {})[int(seed)] = (syn["hf_share"] / real["hf_share"], syn["diversity"] / real["diversity"])
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def top1_table(table: dict[str, dict[int, float]]) -> str:
    seeds = sorted({s for per in table.values() for s in per})
    lines = ["| run | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |", "|---|" + "---:|" * (len(seeds) + 1)]
    for run in _ordered(table):
        per = table[run]
        cells = [f"{per[s]:.2f}" if s in per else "—" for s in seeds]
        lines.append(f"| {run} | " + " | ".join(cells) + f" | {_mean(list(per.values())):.2f} |")
    return "\n".join(lines)


def ratio_table(ratios: dict[str, dict[int, tuple[float, float]]]) -> str:
    seeds = sorted({s for per in ratios.values() for s in per})
    contiguous = seeds == list(range(seeds[0], seeds[-1] + 1))
    label = f"{seeds[0]}-{seeds[-1]}" if contiguous and len(seeds) > 2 else "/".join(map(str, seeds))
    lines = [
        f"| set | high-frequency share / real (seeds {label}) | mean | within-class diversity / real (seeds {label}) "
        "| mean |",
        "|---|---|---:|---|---:|",
    ]
    for name in _ordered(ratios):
        per = ratios[name]
        hf = [per[s][0] for s in seeds if s in per]
        div = [per[s][1] for s in seeds if s in per]
        lines.append(
            f"| {name} | {' / '.join(f'{v:.2f}' for v in hf)} | {_mean(hf):.2f}x | "
            f"{' / '.join(f'{v:.2f}' for v in div)} | {_mean(div):.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--metrics", type=Path, nargs="+", action="extend", default=[], help="Metrics JSONs and/or directories."
    )
    parser.add_argument("--sets", type=Path, help="Directory of <set>-s<seed>.json synthesize metrics.")
    args = parser.parse_args(argv)
    if not args.metrics and not args.sets:
        parser.error("give --metrics and/or --sets")
    for p in [*args.metrics, *([args.sets] if args.sets else [])]:
        if not p.exists():
            print(f"error: no such file or directory: {p}", file=sys.stderr)
            return 2
    if args.metrics:
        table = load_top1(args.metrics)
        if not table:
            print("error: no metrics JSON found", file=sys.stderr)
            return 2
        print(top1_table(table))
    if args.sets:
        ratios = load_ratios(args.sets)
        if not ratios:
            print(f"error: no <set>-s<seed>.json in {args.sets}", file=sys.stderr)
            return 2
        print("\n" + ratio_table(ratios) if args.metrics else ratio_table(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
