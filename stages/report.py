"""``hydramix report``: every evaluated run in one Markdown table and one plot."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import HydraMixError
from pipeline.report import aggregate, load_metrics, markdown_table, plot_results
from stages.app import stage


@stage(
    "report",
    "Aggregate evaluations into a results table and plot.",
    help="Aggregate evaluation metrics JSONs into a Markdown table (method x dataset x k, mean ± std over "
    "seeds) and a bar plot.",
)
def report_command(
    metrics: Annotated[
        list[str],
        typer.Option(
            "--metrics",
            help="Metrics JSON files, directories (searched recursively for *.json) or "
            "glob patterns; repeat the option for several.",
        ),
    ],
    out_table: Annotated[Path, typer.Option("--out-table", help="Markdown table to write.")],
    out_plot: Annotated[Path, typer.Option("--out-plot", help="PNG bar plot to write.")],
) -> None:
    """Collect the metrics files, aggregate per (dataset, k, method), write table and plot."""
    paths = _expand(metrics)
    rows = aggregate(load_metrics(paths))
    table = markdown_table(rows)
    out_table.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_table.with_name(out_table.name + ".tmp")
    tmp.write_text(table)
    tmp.replace(out_table)
    plot_results(rows, out_plot)
    typer.echo(table, nl=False)
    typer.echo(f"{len(paths)} run(s) in {len(rows)} row(s); wrote {out_table} and {out_plot}")


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
