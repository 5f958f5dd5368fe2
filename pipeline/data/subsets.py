"""Class-balanced, seeded, nested subsets of a train split, and the subset directory format.

A subset directory holds ``train.parquet`` (k images per class), ``test.parquet`` (the full test split),
optionally ``val.parquet`` (a validation draw from the rest of the train split, for choosing a recipe on a
development seed; docs/classifier.md) and ``manifest.json`` (source, its checksum, k, seed, chosen indices, class
names, resolution, counts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.atomic import atomic_dir, write_json
from pipeline.core.errors import HydraMixError
from pipeline.data.imageset import ImageSet, read_parquet, write_parquet


@dataclass(frozen=True, eq=False)
class Subset:
    """A loaded subset directory: the k-per-class train images, the full test split, the validation draw
    (None unless the subset was written with one) and the manifest dict."""

    train: ImageSet
    test: ImageSet
    manifest: dict[str, Any]
    val: ImageSet | None = None


def class_order(labels: np.ndarray, c: int, seed: int) -> np.ndarray:
    """Row positions of class ``c``'s images in the seeded random order every draw for ``seed`` takes from.

    One stream per (seed, class): adding a class or changing k never reshuffles the others.
    """
    members = np.flatnonzero(labels == c)
    return members[np.random.default_rng([seed, c]).permutation(len(members))]


def draw_subset(
    labels: np.ndarray, class_names: tuple[str, ...], k: int, seed: int, val_per_class: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of ``k`` images per class and of ``val_per_class`` validation images per class, both
    chosen with ``seed``; each class-major, ascending within a class.

    Nested by construction: each class's images are put in one seeded random order (independent of k); the
    subset is the first k of it, so for one seed the k=5 subset lies inside the k=10 subset, and the validation
    draw is the last ``val_per_class``, so it is the same for every k and disjoint from every subset.
    """
    if k < 1:
        raise HydraMixError(f"k must be >= 1, got {k}")
    if val_per_class < 0:
        raise HydraMixError(f"val_per_class must be >= 0, got {val_per_class}")
    counts = np.bincount(labels, minlength=len(class_names))
    smallest = int(np.argmin(counts))
    if counts[smallest] < k + val_per_class:
        wanted = f"k={k}" if val_per_class == 0 else f"k={k} plus val_per_class={val_per_class}"
        raise HydraMixError(
            f"{wanted} is larger than class '{class_names[smallest]}', which has only {counts[smallest]} images"
        )
    chosen, held_out = [], []
    for c in range(len(class_names)):
        order = class_order(labels, c, seed)
        chosen.append(np.sort(order[:k]))
        held_out.append(np.sort(order[len(order) - val_per_class :]))
    return np.concatenate(chosen), np.concatenate(held_out)


def write_subset(
    directory: str | Path,
    train: ImageSet,
    test: ImageSet,
    manifest: dict[str, Any],
    val: ImageSet | None = None,
) -> None:
    """Write a subset directory atomically; ``manifest`` gets counts, class names and resolution filled in."""
    if train.class_names != test.class_names or (val is not None and val.class_names != train.class_names):
        raise HydraMixError("train, test and validation splits have different class names")
    counts = {"train": train.counts(), "test": test.counts()}
    if val is not None:
        counts["val"] = val.counts()
    manifest = {
        **manifest,
        "class_names": list(train.class_names),
        "resolution": train.resolution,
        "counts": counts,
        "indices": [int(i) for i in train.indices],
    }
    if val is not None:
        manifest["val_indices"] = [int(i) for i in val.indices]
    with atomic_dir(directory) as tmp:
        write_parquet(train, tmp / "train.parquet")
        write_parquet(test, tmp / "test.parquet")
        if val is not None:
            write_parquet(val, tmp / "val.parquet")
        write_json(tmp / "manifest.json", manifest)


def read_subset(directory: str | Path) -> Subset:
    """Load a subset directory written by ``write_subset``; HydraMixError if anything is missing."""
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise HydraMixError(f"{directory}: not a subset directory (no manifest.json); run `hydramix subset`")
    manifest = json.loads(manifest_path.read_text())
    val_path = directory / "val.parquet"
    val = read_parquet(val_path) if val_path.is_file() else None
    return Subset(read_parquet(directory / "train.parquet"), read_parquet(directory / "test.parquet"), manifest, val)
