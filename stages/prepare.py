"""``hydramix prepare``: acquire a dataset (download + verify, or read a folder or archive) once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.atomic import check_writable
from pipeline.core.config import replace
from pipeline.core.errors import DownloadError, HydraMixError, WriteError
from pipeline.data.prepare import PrepareConfig, prepare
from stages.app import ParamsOption, ThreadsOption, load_section, parse_threads, stage

# What a user without network can do instead of downloading (README "Your own dataset").
OFFLINE_ALTERNATIVE = (
    "or use images you have: dvc exp run -S prepare.dataset=folder -S prepare.folder_path=PATH "
    "(hydramix prepare --dataset folder --path PATH), PATH an ImageFolder tree or .tar/.tar.gz with "
    "train/<class>/* and test/<class>/*"
)


@stage(
    "prepare",
    help="Download/verify an official dataset (cifair10, cifair100, stl10) or read a folder/archive "
    "(folder) and write it as train/test Parquet + manifest.json.",
)
def prepare_command(
    out: Annotated[Path, typer.Option("--out", help="Prepared dataset directory to write.")] = Path("data/prepared"),
    download_dir: Annotated[
        Path,
        typer.Option(
            "--download-dir",
            help="Where official archives are downloaded to (or placed by hand when offline).",
        ),
    ] = Path("data/downloads"),
    params: ParamsOption = Path("params.yaml"),
    dataset: Annotated[
        str | None,
        typer.Option(help="cifair10, cifair100, stl10 or folder (overrides prepare.dataset)."),
    ] = None,
    path: Annotated[
        str | None,
        typer.Option(
            "--path",
            metavar="PATH",
            help="For dataset folder: an ImageFolder tree or .tar/.tar.gz with train/<class>/* and "
            "test/<class>/* (or val/, valid/, validation/) (overrides prepare.folder_path).",
        ),
    ] = None,
    resolution: Annotated[
        int | None,
        typer.Option(help="For dataset folder: output side length in px (overrides prepare.resolution)."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="What manifests and reports call the data (overrides prepare.name; default: the official "
            "dataset's name, or the folder's or archive's name)."
        ),
    ] = None,
    threads: ThreadsOption = None,
) -> None:
    """Write OUT/train.parquet, OUT/test.parquet and OUT/manifest.json."""
    config = load_section(params, "prepare", PrepareConfig)
    try:
        config = replace(
            config, dataset=dataset, folder_path=path, resolution=resolution, name=name, threads=parse_threads(threads)
        )
    except ValueError as exc:  # the config's own range checks, for values given as flags
        raise HydraMixError(str(exc)) from None
    check_writable(dirs=(out,))  # before reading or downloading anything
    try:
        manifest = prepare(config, download_dir, out)
    except DownloadError as exc:
        raise DownloadError(f"{exc}; {OFFLINE_ALTERNATIVE}") from None
    except WriteError as exc:
        raise WriteError(
            f"{exc}; nothing was kept ({out} is as it was before): free space or fix the folder and rerun"
        ) from None
    counts = {split: sum(c.values()) for split, c in manifest["counts"].items()}
    test_split = f" (test split from {manifest['test_split']}/)" if "test_split" in manifest else ""
    typer.echo(
        f"prepared {manifest['dataset']}: {counts['train']} train + {counts['test']} test images{test_split}, "
        f"{len(manifest['class_names'])} classes, {manifest['resolution']} px, "
        f"{manifest['skipped_files']} file(s) skipped (not an image, or outside train/ and the test split) -> {out}"
    )
