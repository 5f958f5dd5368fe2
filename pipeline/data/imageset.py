"""The one in-memory and on-disk form every data source, subset and stage shares.

In memory: ``ImageSet`` (uint8 RGB images, int64 labels, int64 original indices, class names).
On disk: a Parquet file with one row per image (``png`` bytes, ``label``, ``class_name``, ``index``) and the
class-name list in the schema metadata, so a file describes itself. Writes are deterministic (fixed PNG settings,
no timestamps) and atomic (temporary name, then rename).
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.core.atomic import os_reason
from pipeline.core.errors import HydraMixError, WriteError
from pipeline.core.progress import tqdm

_SCHEMA_KEY = b"hydramix.class_names"
# fork: workers start instantly and inherit the loaded modules (spawn would re-import the whole CLI, torch
# included, in every worker); they only run Pillow/numpy code, as PyTorch's DataLoader workers do.
_FORK = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
_CODEC_WORKERS = max(1, min(4, os.cpu_count() or 1))
# For small (e.g. 32x32) images Pillow's Python-level overhead, which holds the GIL, dominates the codec time,
# so large tables are coded in worker processes; below this many images starting processes costs more.
_PROCESS_MIN_IMAGES = 4096
_PROCESS_CHUNK = 1024


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images of one split.

    images: (N, H, W, 3) uint8 RGB; labels: (N,) int64 in [0, len(class_names)); indices: (N,) int64, the stable
    position of each image in its source split; class_names: one name per label id.
    """

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be (N, H, W, 3) uint8, got {self.images.shape} {self.images.dtype}")
        if self.labels.shape != (n,) or self.indices.shape != (n,):
            raise ValueError("labels and indices must be 1-D with one entry per image")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError("a label is outside the range of class_names")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def resolution(self) -> int:
        """Side length in pixels (images are square at the configured resolution)."""
        return int(self.images.shape[1])

    def counts(self) -> dict[str, int]:
        """Images per class name, in class order."""
        per_label = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(c) for name, c in zip(self.class_names, per_label, strict=True)}

    def take(self, positions: Sequence[int] | np.ndarray) -> ImageSet:
        """The images at ``positions`` (row positions, not original indices), in that order."""
        pos = np.asarray(positions, dtype=np.int64)
        return ImageSet(self.images[pos], self.labels[pos], self.indices[pos], self.class_names)


def encode_png(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes; fixed settings so equal pixels give equal bytes."""
    buf = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG (or any Pillow-readable) bytes -> (H, W, 3) uint8 RGB."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _encode_many(images: np.ndarray) -> list[bytes]:
    return [encode_png(image) for image in images]


def _decode_many(pngs: list[bytes]) -> list[np.ndarray]:
    return [decode_png(data) for data in pngs]


def _map_chunks(
    fn: Callable[[Sequence], list],
    items: Sequence,
    workers: int | None = None,
    done: Callable[[int], object] | None = None,
) -> list:
    """``fn`` over chunks of ``items``, results in order: processes for large inputs, threads otherwise.

    workers: pool size (None: ``_CODEC_WORKERS``); done: called with the size of each finished chunk, in order.
    """
    workers = workers or _CODEC_WORKERS
    if len(items) < _PROCESS_MIN_IMAGES or workers == 1:
        pool, size = ThreadPoolExecutor(workers), 256
    else:
        pool, size = ProcessPoolExecutor(workers, mp_context=_FORK), _PROCESS_CHUNK
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    out: list = []
    with pool:
        for chunk, part in zip(chunks, pool.map(fn, chunks), strict=True):
            out.extend(part)
            if done is not None:
                done(len(chunk))
    return out


def write_parquet(images: ImageSet, path: str | Path, progress: bool = False, workers: int | None = None) -> None:
    """Write ``images`` to ``path`` atomically (a ``.tmp`` sibling renamed on success).

    progress: show the PNG encoding (the slow part for a large split) as a bar or progress lines.
    workers: processes (or threads, for small inputs) that encode; None = up to 4, one per CPU.
    """
    path = Path(path)
    with tqdm(total=len(images), desc=f"encoding {path.name}", unit="img", disable=not progress) as bar:
        pngs = _map_chunks(_encode_many, images.images, workers, bar.update)
    table = pa.table(
        {
            "png": pa.array(pngs, type=pa.binary()),
            "label": pa.array(images.labels, type=pa.int64()),
            "class_name": pa.array([images.class_names[i] for i in images.labels], type=pa.string()),
            "index": pa.array(images.indices, type=pa.int64()),
        }
    )
    table = table.replace_schema_metadata({_SCHEMA_KEY: json.dumps(list(images.class_names)).encode()})
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp, compression="zstd", row_group_size=4096)
        os.replace(tmp, path)
    except OSError as exc:  # pyarrow's IO errors are OSErrors too
        raise WriteError(f"cannot write {path}: {os_reason(exc)}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def read_parquet(path: str | Path, rows: Sequence[int] | np.ndarray | None = None) -> ImageSet:
    """Read a file written by ``write_parquet``; raise HydraMixError if it is missing or not ours.

    ``rows`` (optional): only these row positions, in this order, are decoded and returned.
    """
    path = Path(path)
    if not path.is_file():
        raise HydraMixError(f"{path}: no such file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise HydraMixError(f"{path}: not a readable Parquet file ({exc})") from None
    meta = table.schema.metadata or {}
    if _SCHEMA_KEY not in meta or set(table.column_names) < {"png", "label", "index"}:
        raise HydraMixError(f"{path}: not a hydramix image table (missing class names or columns)")
    class_names = tuple(json.loads(meta[_SCHEMA_KEY]))
    if rows is not None:
        table = table.take(pa.array(np.asarray(rows, dtype=np.int64)))
    pngs = table.column("png").to_pylist()
    decoded = _map_chunks(_decode_many, pngs)
    if decoded:
        images = np.stack(decoded)
    else:
        images = np.zeros((0, 1, 1, 3), np.uint8)
    return ImageSet(
        images=images,
        labels=table.column("label").to_numpy().astype(np.int64),
        indices=table.column("index").to_numpy().astype(np.int64),
        class_names=class_names,
    )
