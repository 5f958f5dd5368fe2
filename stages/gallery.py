"""``hydramix gallery DIR --out PAGE.html``: one static, self-contained HTML page picturing a synthetic dataset.

The work is ``pipeline.synthesis.make_gallery.make_gallery``; this command checks the flags and paths, calls it
and prints the page's size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.errors import HydraMixError
from pipeline.synthesis.gallery import DEFAULT_PER_CLASS
from pipeline.synthesis.make_gallery import GalleryRequest, make_gallery
from stages.app import existing_dir, existing_file, stage


@stage(
    "gallery",
    help="Write one static HTML page (no network, no server: images inlined) picturing a synthetic dataset: per "
    "class a grid of its first samples with their provenance (and, with --subset, their source images) on hover "
    "or click, the set diagnostics, the CLIP scores (with --scores) and the dataset card.",
)
def gallery(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Dataset directory written by `hydramix synthesize`.")
    ],
    out: Annotated[Path, typer.Option("--out", help="HTML page to write.")],
    per_class: Annotated[int, typer.Option("--per-class", help="Samples shown per class (the first ones).")] = (
        DEFAULT_PER_CLASS
    ),
    subset: Annotated[
        Path | None,
        typer.Option(help="The subset directory the dataset was made from: shows each sample's source images."),
    ] = None,
    scores: Annotated[
        Path | None, typer.Option(help="Metrics JSON of `hydramix score` (--out-metrics): shows the CLIP scores.")
    ] = None,
    scores_name: Annotated[
        str | None,
        typer.Option(
            metavar="NAME", help="This dataset's name in --scores [default: DIR's name, as `hydramix score` names it]."
        ),
    ] = None,
) -> None:
    """Check the flags and paths, then render the page, write it atomically and print its size."""
    existing_dir(directory, "gallery", "a dataset directory written by `hydramix synthesize`")
    if per_class < 1:
        raise HydraMixError(f"--per-class must be >= 1, got {per_class}")
    if out.is_dir():
        raise HydraMixError(f"--out {out}: is a directory, not a file (expected the HTML page to write)")
    if scores is not None:
        existing_file(scores, "--scores", "the metrics JSON of `hydramix score`")
    if subset is not None:
        existing_dir(subset, "--subset", "the subset directory the dataset was made from")
    request = GalleryRequest(
        directory=directory, out=out, per_class=per_class, subset=subset, scores=scores, scores_name=scores_name
    )
    page = make_gallery(request)
    typer.echo(f"{out}: {page.images} images of {page.classes} classes, {page.size / 1e6:.1f} MB")
