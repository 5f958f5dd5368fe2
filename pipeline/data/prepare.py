"""The prepared directory (one dataset, converted once) and subsets drawn from it.

A prepared directory holds ``train.parquet`` and ``test.parquet`` (the ``pipeline.data.imageset`` format) and
``manifest.json``: dataset, source files (location, sha256, md5), class names, resolution, counts, skipped
file count. It is written atomically (temporary directory, then rename).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.atomic import atomic_dir, write_json
from pipeline.core.errors import HydraMixError
from pipeline.core.threads import Threads, check_threads, resolve_threads
from pipeline.data.imageset import read_parquet, write_parquet
from pipeline.data.sources import SOURCES, SourceOptions, load_source
from pipeline.data.subsets import draw_subset, write_subset


@dataclass(frozen=True)
class PrepareConfig:
    """``prepare:`` in params.yaml. ``folder_path`` and ``resolution`` are read only for dataset ``folder``
    (the official datasets keep their native 32 / 96 px). ``name``: what manifests and reports call the data
    (None: the official dataset's name, or the folder's or archive's name). ``threads``: image decoding and
    encoding processes ("auto" or N, see ``pipeline.core.threads``)."""

    dataset: str
    folder_path: str
    resolution: int
    name: str | None = None
    threads: Threads = "auto"

    def __post_init__(self) -> None:
        check_threads(self.threads)
        if self.name is not None and not self.name.strip():
            raise ValueError("name must be null or a non-empty string")
        if self.dataset not in SOURCES:
            raise ValueError(f"unknown dataset '{self.dataset}'; choose one of: {', '.join(SOURCES)}")
        if not 1 <= self.resolution <= 4096:
            raise ValueError(f"resolution must be in 1..4096, got {self.resolution}")


@dataclass(frozen=True)
class SubsetConfig:
    """``subset:`` in params.yaml: ``k`` train images per class, drawn with ``seed`` (nested across k), and
    ``val_per_class`` validation images per class from the rest of the train split (0: no validation split)."""

    k: int
    seed: int
    val_per_class: int = 0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.val_per_class < 0:
            raise ValueError(f"val_per_class must be >= 0, got {self.val_per_class}")


def prepare(config: PrepareConfig, download_dir: Path, out: Path, progress: bool = True) -> dict[str, Any]:
    """Load ``config.dataset`` and write the prepared directory ``out``; return its manifest.

    ``download_dir`` holds (or receives) the official archives; for ``folder``, ``config.folder_path`` is the
    tree or archive, read as given (relative paths from the working directory).
    """
    workers = resolve_threads(config.threads)
    options = SourceOptions(
        download_dir=Path(download_dir),
        folder_path=Path(config.folder_path) if config.dataset == "folder" else None,
        resolution=config.resolution,
        progress=progress,
        workers=workers,
    )
    data = load_source(config.dataset, options)
    manifest = {
        "dataset": config.name or data.dataset,
        "source": [f.to_dict() for f in data.files],
        "class_names": list(data.train.class_names),
        "resolution": data.train.resolution,
        "counts": {"train": data.train.counts(), "test": data.test.counts()},
        "skipped_files": data.skipped,
    }
    if data.test_split != "test":  # absent otherwise, so a train/ + test/ tree's manifest is as before
        manifest["test_split"] = data.test_split
    with atomic_dir(out) as tmp:
        write_parquet(data.train, tmp / "train.parquet", progress=progress, workers=workers)
        write_parquet(data.test, tmp / "test.parquet", progress=progress, workers=workers)
        write_json(tmp / "manifest.json", manifest)
    return manifest


def read_prepared_manifest(prepared: Path) -> dict[str, Any]:
    """The manifest of a prepared directory; HydraMixError if ``prepared`` is not one."""
    path = Path(prepared) / "manifest.json"
    if not path.is_file():
        raise HydraMixError(f"{prepared}: not a prepared dataset directory (no manifest.json); run `hydramix prepare`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise HydraMixError(f"{path}: not valid JSON ({exc})") from None


def make_subset(prepared: Path, out: Path, config: SubsetConfig) -> dict[str, Any]:
    """Draw ``config.k`` train images per class from the prepared directory; write subset dir ``out``.

    Only the chosen train (and validation) images are decoded; the test split is rewritten whole. Returns the
    subset manifest (source and its checksums from the prepared manifest, k, seed, chosen original indices,
    counts, ...).
    """
    prepared = Path(prepared)
    manifest = read_prepared_manifest(prepared)
    train_path = prepared / "train.parquet"
    try:
        labels = pq.read_table(train_path, columns=["label"]).column("label").to_numpy().astype(np.int64)
    except (pa.ArrowException, OSError) as exc:
        raise HydraMixError(f"{train_path}: not a readable Parquet file ({exc})") from None
    class_names = tuple(manifest["class_names"])
    positions, val_positions = draw_subset(labels, class_names, config.k, config.seed, config.val_per_class)
    train = read_parquet(train_path, rows=positions)
    val = read_parquet(train_path, rows=val_positions) if config.val_per_class else None
    test = read_parquet(prepared / "test.parquet")
    subset_manifest = {
        "dataset": manifest["dataset"],
        "source": manifest["source"],
        "k": config.k,
        "seed": config.seed,
    }
    if config.val_per_class:  # absent otherwise, so a plain subset's manifest is the same as before the option
        subset_manifest["val_per_class"] = config.val_per_class
    write_subset(out, train, test, subset_manifest, val)
    return json.loads((Path(out) / "manifest.json").read_text())
