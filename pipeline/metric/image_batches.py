"""The image side's input: datasets as streams of uint8 batches (weights -> model -> **shards** -> generality score).

A ``ScoreSource`` is one dataset to score: its name, class names and an iterable of ``ImageBatch``es, built by
``batches_from_arrays`` (an in-memory split, e.g. the real subset) or ``batches_from_samples`` (a stream of shard
samples, holding one batch at a time so memory is flat in dataset size). ``prefetch`` decodes the next batches in
a background thread while the model runs on the current one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class ImageBatch:
    """keys: B sample keys; images: (B, H, W, 3) uint8; labels: (B,) int64 class ids."""

    keys: list[str]
    images: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True, eq=False)
class ScoreSource:
    """One dataset to score: a name for reports, its class names (prompts and ids), a stream of batches and,
    where known, its size (for the progress bar)."""

    name: str
    class_names: tuple[str, ...]
    batches: Iterable[ImageBatch]
    total: int | None = None


def batches_from_arrays(
    keys: list[str], images: np.ndarray, labels: np.ndarray, batch_size: int
) -> Iterator[ImageBatch]:
    """Slice in-memory arrays (images (N, H, W, 3) uint8, labels (N,)) into batches."""
    for start in range(0, len(images), batch_size):
        stop = start + batch_size
        yield ImageBatch(keys[start:stop], images[start:stop], np.asarray(labels[start:stop], dtype=np.int64))


def batches_from_samples(samples: Iterable[Any], batch_size: int) -> Iterator[ImageBatch]:
    """Group a stream of samples (anything with .key, .image (H, W, 3) uint8, .label) into batches.

    Holds at most one batch; a change of image size closes the current batch early (tensors must stack).
    """
    keys: list[str] = []
    images: list[np.ndarray] = []
    labels: list[int] = []
    for sample in samples:
        if images and sample.image.shape != images[0].shape:
            yield ImageBatch(keys, np.stack(images), np.asarray(labels, dtype=np.int64))
            keys, images, labels = [], [], []
        keys.append(sample.key)
        images.append(sample.image)
        labels.append(int(sample.label))
        if len(images) == batch_size:
            yield ImageBatch(keys, np.stack(images), np.asarray(labels, dtype=np.int64))
            keys, images, labels = [], [], []
    if images:
        yield ImageBatch(keys, np.stack(images), np.asarray(labels, dtype=np.int64))


def prefetch(items: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Iterate ``items`` in a background thread, ``depth`` ahead: decoding (PNG, tar) overlaps model compute.

    Exceptions from the producer are re-raised in the consumer; abandoning the iterator stops the producer.
    """
    handoff: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        handoff.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handoff.put(("end", done))
        except BaseException as exc:  # handed to the consumer, raised there
            handoff.put(("error", exc))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
