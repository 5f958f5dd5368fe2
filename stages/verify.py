"""``hydramix verify DIR``: check a synthetic dataset directory against its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import HydraMixError
from pipeline.shards import read_manifest, verify
from stages.app import existing_dir, stage


@stage(
    "verify",
    help="Check a synthetic dataset (shards, sha256, sample counts, images, labels) against its manifest.",
)
def verify_command(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Dataset directory written by `hydramix synthesize`.")
    ],
) -> None:
    """Print an OK summary, or every problem found and exit 1."""
    existing_dir(directory, "verify", "a dataset directory written by `hydramix synthesize`")
    problems = verify(directory, progress=True)
    if problems:
        for problem in problems:
            typer.echo(f"  {problem}", err=True)
        raise HydraMixError(
            f"{directory}: {len(problems)} problem(s) found; re-run `hydramix synthesize` with the same "
            "arguments to rebuild missing shards, or with --force to rebuild the dataset"
        )
    manifest = read_manifest(directory)
    typer.echo(
        f"OK: {directory}: {len(manifest['shards'])} shard(s), {manifest['total']} samples, "
        f"{len(manifest['class_names'])} classes, every sha256 and image checked"
    )
