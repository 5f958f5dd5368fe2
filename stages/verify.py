"""``hydramix verify DIR``: check a synthetic dataset directory against its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.errors import HydraMixError
from pipeline.synthesis.shards.reader import read_manifest
from pipeline.synthesis.shards.verification import verify_dataset
from stages.app import existing_dir, stage


@stage(
    "verify",
    help="Check a synthetic dataset (shards, sha256, sample counts, images, labels, dataset card) against its "
    "manifest, and the manifest against itself. See docs/shards.md for what this proves and what it cannot.",
)
def verify_command(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Dataset directory written by `hydramix synthesize`.")
    ],
) -> None:
    """Print an OK summary, or every problem found and exit 1; a manifest that cannot be read is a one-line error."""
    existing_dir(directory, "verify", "a dataset directory written by `hydramix synthesize`")
    manifest = read_manifest(directory)  # absent, unreadable or malformed: nothing else can be checked
    report = verify_dataset(directory, progress=True)
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)
    if report.problems:
        for problem in report.problems:
            typer.echo(f"  {problem}", err=True)
        raise HydraMixError(
            f"{directory}: {len(report.problems)} problem(s) found; re-run `hydramix synthesize` with the same "
            "arguments to render missing or damaged shards again and rewrite the manifest and card (remove files "
            "the manifest does not list by hand), or with --force to rebuild the dataset"
        )
    checked = (
        "every shard sha256, image and the dataset card" if "card_sha256" in manifest else "every sha256 and image"
    )
    typer.echo(
        f"OK: {directory}: {len(manifest['shards'])} shard(s), {manifest['total']} samples, "
        f"{len(manifest['class_names'])} classes, {checked} checked"
    )
