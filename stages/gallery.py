"""``hydramix gallery DIR --out PAGE.html``: one static, self-contained HTML page picturing a synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from pipeline.core.atomic import write_file
from pipeline.core.digest import file_digest
from pipeline.core.errors import HydraMixError
from pipeline.data.imageset import read_parquet
from pipeline.synthesis.gallery import DEFAULT_PER_CLASS, pick_samples, render_gallery
from pipeline.synthesis.shards.format import CARD
from pipeline.synthesis.shards.reader import iter_samples, read_manifest
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
    """Check every input, render the page, write it atomically and print its size."""
    existing_dir(directory, "gallery", "a dataset directory written by `hydramix synthesize`")
    manifest = read_manifest(directory)
    if per_class < 1:
        raise HydraMixError(f"--per-class must be >= 1, got {per_class}")
    if out.is_dir():
        raise HydraMixError(f"--out {out}: is a directory, not a file (expected the HTML page to write)")
    score_figures = _read_scores(scores) if scores is not None else None
    source_images = _read_sources(subset, manifest) if subset is not None else None
    card_path = directory / CARD
    card = card_path.read_text(encoding="utf-8", errors="replace") if card_path.is_file() else None

    picked = pick_samples(iter_samples(directory), len(manifest["class_names"]), per_class)
    page = render_gallery(
        manifest,
        picked,
        card=card,
        scores=score_figures,
        scores_name=scores_name or directory.resolve().name,
        sources=source_images,
    )
    try:
        write_file(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    except OSError as exc:
        raise HydraMixError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    shown = sum(len(v) for v in picked.values())
    typer.echo(f"{out}: {shown} images of {len(picked)} classes, {len(page.encode()) / 1e6:.1f} MB")


def _read_scores(path: Path) -> dict[str, Any]:
    existing_file(path, "--scores", "the metrics JSON of `hydramix score`")
    try:
        figures = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HydraMixError(f"--scores {path}: not readable JSON ({exc})") from None
    if not isinstance(figures, dict) or "status" not in figures:
        raise HydraMixError(f"--scores {path}: not the metrics JSON of `hydramix score` (no 'status')")
    return figures


def _read_sources(subset: Path, manifest: dict[str, Any]) -> dict[int, np.ndarray]:
    """{dataset index: image} of the subset's train split, after checking it is the subset the dataset names."""
    existing_dir(subset, "--subset", "the subset directory the dataset was made from")
    subset_manifest = subset / "manifest.json"
    if not subset_manifest.is_file():
        raise HydraMixError(f"--subset {subset}: not a subset directory (no manifest.json)")
    expected = (manifest.get("subset") or {}).get("manifest_sha256")
    if expected is not None and file_digest(subset_manifest) != expected:
        raise HydraMixError(
            f"--subset {subset}: not the subset this dataset was made from (its manifest.json sha256 differs "
            "from the dataset manifest's subset.manifest_sha256)"
        )
    train = read_parquet(subset / "train.parquet")
    return {int(i): image for i, image in zip(train.indices.tolist(), train.images, strict=True)}
