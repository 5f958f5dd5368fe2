"""A synthetic dataset directory -> its gallery page on disk: the work of ``hydramix gallery``.

``make_gallery`` reads what the page shows (the manifest, the first samples of every class, the dataset card and,
where given, the CLIP scores of ``hydramix score`` and the subset's source images, after checking that it is the
subset the dataset was made from), renders the page (``gallery.render_gallery``, which reads and writes nothing)
and writes it atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.atomic import write_file
from pipeline.core.digest import file_digest
from pipeline.core.errors import HydraMixError
from pipeline.data.imageset import read_parquet
from pipeline.synthesis.gallery import DEFAULT_PER_CLASS, pick_samples, render_gallery
from pipeline.synthesis.shards.format import CARD
from pipeline.synthesis.shards.reader import iter_samples, read_manifest


@dataclass(frozen=True)
class GalleryRequest:
    """What to picture and where.

    directory: a dataset written by ``hydramix synthesize``; out: the HTML page to write; per_class: samples shown
    per class (the first ones). subset: the subset directory the dataset was made from, to show each sample's
    source images. scores: the metrics JSON of ``hydramix score``; scores_name: this dataset's name in it (None:
    the directory's name, as ``hydramix score`` names it).
    """

    directory: Path
    out: Path
    per_class: int = DEFAULT_PER_CLASS
    subset: Path | None = None
    scores: Path | None = None
    scores_name: str | None = None


@dataclass(frozen=True)
class Gallery:
    """What the written page shows: images and classes, and its size in bytes."""

    images: int
    classes: int
    size: int


def make_gallery(request: GalleryRequest) -> Gallery:
    """Render the gallery page ``request`` asks for and write it to ``request.out``.

    HydraMixError for a directory that is not a dataset, scores that are not those of ``hydramix score``, a subset
    the dataset was not made from, or a page that cannot be written.
    """
    manifest = read_manifest(request.directory)
    score_figures = _read_scores(request.scores) if request.scores is not None else None
    source_images = _read_sources(request.subset, manifest) if request.subset is not None else None
    card_path = request.directory / CARD
    card = card_path.read_text(encoding="utf-8", errors="replace") if card_path.is_file() else None

    picked = pick_samples(iter_samples(request.directory), len(manifest["class_names"]), request.per_class)
    page = render_gallery(
        manifest,
        picked,
        card=card,
        scores=score_figures,
        scores_name=request.scores_name or request.directory.resolve().name,
        sources=source_images,
    )
    try:
        write_file(request.out, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    except OSError as exc:
        raise HydraMixError(f"--out {request.out}: cannot write ({exc.strerror or exc})") from None
    return Gallery(sum(len(v) for v in picked.values()), len(picked), len(page.encode()))


def _read_scores(path: Path) -> dict[str, Any]:
    try:
        figures = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HydraMixError(f"--scores {path}: not readable JSON ({exc})") from None
    if not isinstance(figures, dict) or "status" not in figures:
        raise HydraMixError(f"--scores {path}: not the metrics JSON of `hydramix score` (no 'status')")
    return figures


def _read_sources(subset: Path, manifest: dict[str, Any]) -> dict[int, np.ndarray]:
    """{dataset index: image} of the subset's train split, after checking it is the subset the dataset names."""
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
