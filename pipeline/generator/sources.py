"""Which images a mix is made of: the one source sampler of training, evaluation and synthesis.

subset -> generator and subset + generator -> shards alike. Every mix has its own seed (``derive_seeds``); from
that seed alone come its N (drawn in ``n_sources``), its N distinct images of the class (the first N of a seeded
random order of the class's members) and their flips, each from its own stream (``STREAM_*`` in ``masks``). So a
mix does not depend on which batch it is drawn in, a process's part of a global batch is that part of the
batch, and the generator is trained on exactly the kind of mix that synthesis later asks it for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.generator.masks import (
    STREAM_CLASS,
    STREAM_FLIPS,
    STREAM_N_SOURCES,
    STREAM_SOURCES,
    derive_seeds,
    row_randint,
    row_uniforms,
)


@dataclass(frozen=True, eq=False)
class ClassMembers:
    """The row positions of each class's images in a train split."""

    members: np.ndarray  # (C, K_max) int64 row positions of class c's images, padded with -1
    counts: np.ndarray  # (C,) int64 images per class

    @classmethod
    def of(cls, labels: np.ndarray, n_classes: int) -> ClassMembers:
        """From (M,) integer labels in [0, n_classes)."""
        counts = np.bincount(labels, minlength=n_classes).astype(np.int64)
        members = np.full((n_classes, max(int(counts.max(initial=0)), 1)), -1, dtype=np.int64)
        for c in range(n_classes):
            rows = np.flatnonzero(labels == c)
            members[c, : len(rows)] = rows
        return cls(members=members, counts=counts)


@dataclass(frozen=True, eq=False)
class SourceDraw:
    """The sources of B mixes."""

    n: np.ndarray  # (B,) int64 sources per mix
    rows: np.ndarray  # (B, N_max) int64 row positions; -1 after the first n[b]
    flipped: np.ndarray  # (B, N_max) bool; False on padding


def mix_seeds(seed: int, stream: int, index: int, size: int) -> np.ndarray:
    """(size,) per-mix seeds of batch ``index`` of a stream (training step, evaluation batch, grid)."""
    batch_seed = int(derive_seeds(seed, np.array([(stream << 40) + index], dtype=np.uint64))[0])
    return derive_seeds(batch_seed, np.arange(size))


def draw_classes(seeds: np.ndarray, n_classes: int) -> np.ndarray:
    """(B,) int64 class of each mix, uniform over the classes (training; synthesis assigns classes by id)."""
    return row_randint(seeds, np.full(len(seeds), n_classes), 1, STREAM_CLASS)[:, 0]


def draw_sources(
    seeds: np.ndarray, labels: np.ndarray, classes: ClassMembers, n_sources: tuple[int, int], flip: bool
) -> SourceDraw:
    """The sources of mixes with per-mix ``seeds`` (B,) uint64 and classes ``labels`` (B,).

    N is uniform in ``n_sources`` (min, max), capped at the class's size (callers that forbid fewer than max
    sources check class sizes first); with ``flip`` each source is mirrored with probability 1/2.
    """
    lo, hi = n_sources
    n = lo + row_randint(seeds, np.full(len(seeds), hi - lo + 1), 1, STREAM_N_SOURCES)[:, 0]
    n = np.minimum(n, classes.counts[labels])
    k_max = classes.members.shape[1]
    keys = row_uniforms(seeds, k_max, STREAM_SOURCES)
    keys = np.where(np.arange(k_max)[None, :] < classes.counts[labels][:, None], keys, 2.0)
    order = np.argsort(keys, axis=1, kind="stable")[:, :hi]
    rows = np.take_along_axis(classes.members[labels], order, axis=1)
    if rows.shape[1] < hi:  # every class is smaller than hi (only where capping is allowed)
        rows = np.pad(rows, ((0, 0), (0, hi - rows.shape[1])), constant_values=-1)
    used = np.arange(hi)[None, :] < n[:, None]
    rows = np.where(used, rows, -1)
    flipped = (row_uniforms(seeds, hi, STREAM_FLIPS) < 0.5) & used if flip else np.zeros_like(used)
    return SourceDraw(n=n, rows=rows, flipped=flipped)
