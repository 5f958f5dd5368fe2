"""The shard format: file names, which sample ids a shard holds, and the types a dataset is written from.

Where it sits: subset + generator -> **shards** -> score / classifier. Every other module of
``pipeline.synthesis.shards`` speaks in these names. A dataset directory holds ``<name>-NNNNNN.tar`` shards,
``manifest.json`` (format ``FORMAT``) and a ``README.md`` dataset card; while a run is unfinished also ``plan.json``,
and while a process writes into it ``.synthesize.lock``. Every sample is three tar members in this order:
``<key>.png`` (lossless RGB image), ``<key>.cls`` (the integer label as ASCII) and ``<key>.json`` (provenance,
sorted keys).

Shard ``i`` holds sample ids ``[i*S, min((i+1)*S, total))``; a shard depends only on its own sample ids, which
makes a run resumable and splittable across processes (``shards_for_rank``) with byte-identical output.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pipeline.core.errors import HydraMixError

MANIFEST = "manifest.json"
CARD = "README.md"
# Written before the first shard, removed after the manifest: lets an interrupted run be resumed (or refused,
# if the new run would make a different dataset) although its manifest does not exist yet.
PLAN = "plan.json"
# Held (fcntl.flock) by the one process writing into a dataset directory; holds its pid, removed on release.
LOCK = ".synthesize.lock"
FORMAT = "hydramix-webdataset/1"
# A shard file name as ShardConfig allows it (use fullmatch): no dots, no separators, so a name that matches is
# a plain file name inside its directory.
SHARD_RE = re.compile(r"(?P<name>[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*)-(?P<index>\d{6})\.tar")
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*$")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,90}$")  # no dots (WebDataset splits at the first one), fits a ustar name
MEMBER_SUFFIXES = ("png", "cls", "json")
# Manifest keys that describe the result rather than the inputs; every other key is part of the identity.
RESULT_KEYS = ("format", "total", "class_names", "resolution", "counts", "shards", "diagnostics", "card_sha256")


@dataclass(frozen=True)
class ShardConfig:
    """How a synthetic dataset is cut into shards (params ``synthesize.shards``).

    name: shard file prefix, ``<name>-NNNNNN.tar`` (letters, digits, '_' and single '-').
    shard_size: samples per shard (the last shard may hold fewer).
    """

    name: str = "hydramix"
    shard_size: int = 1000

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"name must be letters, digits, '_' or '-' (no dots or slashes), got {self.name!r}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")


@dataclass(frozen=True, eq=False)
class Sample:
    """One sample. key: no dots or slashes; image: (H, W, 3) uint8 RGB; label: class id; meta: JSON-able."""

    key: str
    image: np.ndarray
    label: int
    meta: dict[str, Any]


class SampleLike(Protocol):
    """Anything with a Sample's fields (``pipeline.synthesis.engine.Rendered`` is one)."""

    key: str
    image: np.ndarray
    label: int
    meta: dict[str, Any]


class Renderer(Protocol):
    """What ``dataset_writer.write_dataset_shards`` needs from ``pipeline.synthesis.engine.Synthesizer``."""

    total: int

    def render(self, sample_ids: np.ndarray) -> Sequence[SampleLike]: ...


def shard_name(name: str, index: int) -> str:
    """The file name of shard ``index`` of dataset ``name``: ``<name>-NNNNNN.tar``."""
    return f"{name}-{index:06d}.tar"


def shard_sample_ids(index: int, shard_size: int, total: int) -> np.ndarray:
    """(n,) int64 sample ids held by shard ``index``: ``[index*S, min((index+1)*S, total))``."""
    start = index * shard_size
    return np.arange(start, min(start + shard_size, total), dtype=np.int64)


def n_shards(total: int, shard_size: int) -> int:
    """How many shards ``total`` samples fill at ``shard_size`` per shard."""
    return -(-total // shard_size)


def shards_for_rank(count: int, rank: int, world_size: int) -> list[int]:
    """The shard indices that process ``rank`` of ``world_size`` writes: rank, rank + W, ... (< count)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise HydraMixError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    return list(range(rank, count, world_size))
