"""Class-balanced, seeded, nested subsets of a train split, and the subset directory format.

A subset directory holds ``train.parquet`` (k images per class), ``test.parquet`` (the full test split) and
``manifest.json`` (source, its checksum, k, seed, chosen indices, class names, resolution, counts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import atomic_dir, write_json
from pipeline.errors import HydraMixError
from pipeline.imageset import ImageSet, read_parquet, write_parquet


@dataclass(frozen=True, eq=False)
class Subset:
    """A loaded subset directory: the k-per-class train images, the full test split and the manifest dict."""

    train: ImageSet
    test: ImageSet
    manifest: dict[str, Any]


def draw_subset(labels: np.ndarray, class_names: tuple[str, ...], k: int, seed: int) -> np.ndarray:
    """Row positions of ``k`` images per class, chosen with ``seed``; class-major, ascending within a class.

    Nested by construction: each class's candidates are put in one seeded random order (independent of k) and the
    first k are taken, so for one seed the k=5 subset lies inside the k=10 subset, and so on.
    """
    if k < 1:
        raise HydraMixError(f"k must be >= 1, got {k}")
    counts = np.bincount(labels, minlength=len(class_names))
    smallest = int(np.argmin(counts))
    if counts[smallest] < k:
        raise HydraMixError(
            f"k={k} is larger than class '{class_names[smallest]}', which has only {counts[smallest]} images"
        )
    chosen = []
    for c in range(len(class_names)):
        members = np.flatnonzero(labels == c)
        # One stream per (seed, class): adding a class or changing k never reshuffles the others.
        order = np.random.default_rng([seed, c]).permutation(len(members))
        chosen.append(np.sort(members[order[:k]]))
    return np.concatenate(chosen)


def write_subset(directory: str | Path, train: ImageSet, test: ImageSet, manifest: dict[str, Any]) -> None:
    """Write a subset directory atomically; ``manifest`` gets counts, class names and resolution filled in."""
    if train.class_names != test.class_names:
        raise HydraMixError("train and test splits have different class names")
    manifest = {
        **manifest,
        "class_names": list(train.class_names),
        "resolution": train.resolution,
        "counts": {"train": train.counts(), "test": test.counts()},
        "indices": [int(i) for i in train.indices],
    }
    with atomic_dir(directory) as tmp:
        write_parquet(train, tmp / "train.parquet")
        write_parquet(test, tmp / "test.parquet")
        write_json(tmp / "manifest.json", manifest)


def read_subset(directory: str | Path) -> Subset:
    """Load a subset directory written by ``write_subset``; HydraMixError if anything is missing."""
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise HydraMixError(f"{directory}: not a subset directory (no manifest.json); run `hydramix subset`")
    manifest = json.loads(manifest_path.read_text())
    return Subset(read_parquet(directory / "train.parquet"), read_parquet(directory / "test.parquet"), manifest)
