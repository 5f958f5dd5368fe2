"""``hydramix subset``: draw k train images per class (seeded, nested across k) + the full test split (+ an
optional validation draw from the rest of the train split)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.atomic import check_writable
from pipeline.core.config import replace
from pipeline.core.errors import HydraMixError, WriteError
from pipeline.data.prepare import SubsetConfig, make_subset
from stages.app import ParamsOption, existing_dir, load_section, stage


@stage(
    "subset",
    help="Draw k train images per class with a seed (nested: k=5 lies inside k=10) from a prepared "
    "dataset and write them with the full test split (and, with --val-per-class, a validation draw).",
)
def subset_command(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Subset directory to write (train.parquet, test.parquet, manifest.json); dvc.yaml writes "
            "data/subsets/kK-seedS.",
        ),
    ],
    prepared: Annotated[
        Path, typer.Option("--prepared", help="Prepared dataset directory from `hydramix prepare`.")
    ] = Path("data/prepared"),
    params: ParamsOption = Path("params.yaml"),
    k: Annotated[int | None, typer.Option("--k", help="Train images per class (overrides subset.k).")] = None,
    seed: Annotated[int | None, typer.Option(help="Subset seed (overrides subset.seed).")] = None,
    val_per_class: Annotated[
        int | None,
        typer.Option(
            help="Also write val.parquet: this many further train-split images per class, disjoint from the "
            "subset for every k (overrides subset.val_per_class). For choosing a recipe on a development seed; "
            "`hydramix evaluate --split val` reads it."
        ),
    ] = None,
) -> None:
    """Write OUT/train.parquet (k per class), OUT/test.parquet, OUT/manifest.json (and OUT/val.parquet)."""
    config = load_section(params, "subset", SubsetConfig)
    try:
        config = replace(config, k=k, seed=seed, val_per_class=val_per_class)
    except ValueError as exc:
        raise HydraMixError(str(exc)) from None
    check_writable(dirs=(out,))  # before reading anything
    existing_dir(prepared, "--prepared", "a prepared dataset directory written by `hydramix prepare`")
    try:
        manifest = make_subset(prepared, out, config)
    except WriteError as exc:
        raise WriteError(
            f"{exc}; nothing was kept ({out} is as it was before): free space or fix the folder and rerun"
        ) from None
    n_train = sum(manifest["counts"]["train"].values())
    n_test = sum(manifest["counts"]["test"].values())
    n_val = sum(manifest["counts"].get("val", {}).values())
    extra = f" + {n_val} validation" if n_val else ""
    typer.echo(
        f"subset {manifest['dataset']} k={config.k} seed={config.seed}: {n_train} train + {n_test} test{extra} "
        f"images -> {out}"
    )
