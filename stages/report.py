"""``hydramix report``: every evaluated run in one Markdown table and one plot.

The work is ``pipeline.classify.report.make_report``; this command expands --metrics (files, directories, globs)
into the files it reads, calls it, and prints the table and a one-line summary.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Annotated

import typer

from pipeline.classify.report import make_report
from pipeline.core.errors import HydraMixError
from stages.app import stage


@stage(
    "report",
    help="Aggregate evaluation metrics JSONs into a Markdown table (run x dataset x k: mean ± std over seeds, and "
    "the top-1 difference to a reference run and to the best classic augmentation, paired by seed, with 95% "
    "t-intervals) and a plot. See docs/statistics.md.",
)
def report_command(
    metrics: Annotated[
        list[str],
        typer.Option(
            "--metrics",
            metavar="PATH",
            help="Metrics JSON files, directories (searched recursively for *.json) or "
            "glob patterns; repeat the option for several.",
        ),
    ],
    out_table: Annotated[Path, typer.Option("--out-table", help="Markdown table to write.")],
    out_plot: Annotated[Path, typer.Option("--out-plot", help="PNG bar plot to write.")],
    reference: Annotated[
        str,
        typer.Option(
            "--reference",
            metavar="RUN",
            help="Name of the run to compare every other run of the same dataset and k with (e.g. baseline, "
            "mixup, hydramix+mixup): the 'Δ vs' column and the lower plot show each run's top-1 minus the "
            "reference's, paired by seed, with a 95% t-interval. Both runs must hold the same seeds. An error if "
            "no panel has this run.",
        ),
    ] = "baseline",
    out_csv: Annotated[
        Path | None,
        typer.Option("--out-csv", help="Also write one CSV row per run (top-1 and macro in %, n) for `dvc plots`."),
    ] = None,
) -> None:
    """Collect the metrics files, aggregate per (dataset, k, run), compare with the reference, write table and
    plot."""
    paths = _expand(metrics)
    report, table = make_report(paths, out_table, out_plot, reference=reference, out_csv=out_csv)
    written = [out_table, out_plot] + ([out_csv] if out_csv is not None else [])
    typer.echo(table, nl=False)
    typer.echo(
        f"{len(paths)} run(s) in {len(report['rows'])} row(s), {len(report['panels'])} panel(s), reference "
        f"{reference}; wrote {', '.join(map(str, written[:-1]))} and {written[-1]}"
    )


def _expand(patterns: list[str]) -> list[Path]:
    """Files named directly, *.json under directories, and glob matches; sorted, no duplicates."""
    found: set[Path] = set()
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found.update(p for p in path.rglob("*.json"))
        elif path.is_file():
            found.add(path)
        else:
            matches = [Path(m) for m in glob.glob(pattern, recursive=True)]
            if not matches:
                raise HydraMixError(f"--metrics {pattern}: no such file, directory or matching files")
            found.update(m for m in matches if m.is_file())
    if not found:
        raise HydraMixError("no metrics files found; run `hydramix evaluate` first")
    return sorted(found)
