"""Reading a dataset directory: the manifest, checked at the trust boundary, then shards, samples and images.

Where it sits: subset + generator -> **shards** -> score / classifier; scoring, the classifier and the gallery read
a synthetic dataset through here (``pipeline.synthesis.shards`` re-exports the public names). Trust boundary: a
manifest or plan is text anyone may have edited. Every shard name read from one must be a plain
``<name>-NNNNNN.tar`` of that dataset resolving to a file directly inside the directory (``checked_shards``), or
the reader refuses it before opening anything; ``plan`` reads plans through the same check, and nothing is ever
deleted because a manifest names it. See ``docs/shards.md``.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.digest import file_digest
from pipeline.core.errors import HydraMixError
from pipeline.data.imageset import ImageSet, decode_png
from pipeline.synthesis.shards.format import FORMAT, MANIFEST, MEMBER_SUFFIXES, SHA256_RE, SHARD_RE, Sample

# ------------------------------------------------------------------------------------------------------------
# Names read from a manifest or plan: checked before any is used


def _json_type(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages."""
    if value is None:
        return "null"
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string")):
        if isinstance(value, kind):
            return name
    return "an array" if isinstance(value, list) else "an object" if isinstance(value, dict) else type(value).__name__


def _short(value: Any, limit: int = 200) -> str:
    """``repr(value)`` cut to ``limit`` characters (one line: repr escapes newlines)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def inside(directory: Path, name: str) -> bool:
    """True if ``directory / name`` resolves (links followed) to an entry directly inside ``directory``."""
    return os.path.dirname(os.path.realpath(directory / name)) == os.path.realpath(directory)


def checked_shards(directory: Path, shards: Any, where: str | Path, name: str | None) -> list[dict[str, Any]]:
    """The ``shards`` list of a manifest or plan, checked before any of its names is used.

    Each entry must be ``{"name", "sha256", "count"}``; every name a shard file name of one dataset (``name``,
    or that of the first entry when None) that resolves to a file directly inside ``directory`` (no separators,
    no ``..``, no link leaving it). HydraMixError naming the first bad entry; nothing is opened or deleted here.
    """
    if not isinstance(shards, list):
        raise HydraMixError(f"{where}: 'shards' must be an array of shard entries, got {_json_type(shards)}")
    checked = []
    for i, entry in enumerate(shards):
        if not isinstance(entry, dict) or set(entry) != {"name", "sha256", "count"}:
            raise HydraMixError(
                f"{where}: shards[{i}] must be an object with exactly name, sha256 and count, got {_short(entry)}"
            )
        fname, sha256, count = entry["name"], entry["sha256"], entry["count"]
        match = SHARD_RE.fullmatch(fname) if isinstance(fname, str) else None
        if match is None or name is not None and match["name"] != name:
            expected = f"{name}-NNNNNN.tar" if name else "NAME-NNNNNN.tar"
            raise HydraMixError(
                f"{where}: shards[{i}] names {_short(fname)}, which is not a shard of this dataset "
                f"(a plain file name {expected} in {directory})"
            )
        name = match["name"]  # every further entry must belong to the same dataset
        if not inside(directory, fname):
            raise HydraMixError(f"{where}: shards[{i}] {fname} is a link to a file outside {directory}; not read")
        if not isinstance(sha256, str) or not SHA256_RE.fullmatch(sha256):
            raise HydraMixError(f"{where}: shards[{i}] ({fname}) has sha256 {_short(sha256)}, not 64 hex digits")
        if type(count) is not int or count < 0:
            raise HydraMixError(f"{where}: shards[{i}] ({fname}) has count {_short(count)}, not an integer >= 0")
        checked.append({"name": fname, "sha256": sha256, "count": count})
    return checked


def prefix_of(record: dict[str, Any]) -> str | None:
    """The shard file prefix a manifest or plan declares (its ``name``), if it declares a usable one."""
    name = record.get("name")
    return name if isinstance(name, str) else None


# ------------------------------------------------------------------------------------------------------------
# A dataset directory: its manifest, shards, samples and images


def read_manifest(dataset_dir: str | Path) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a dataset directory; HydraMixError if absent, not ours or malformed.

    Checked: the types of ``total``, ``resolution``, ``class_names``, ``counts``, ``shards`` (and
    ``card_sha256`` if present), and every shard name (see ``checked_shards``), so a reader never opens a
    file outside the directory. Consistency between the fields is ``verification``'s job.
    """
    directory = Path(dataset_dir)
    path = directory / MANIFEST
    if not path.is_file():
        raise HydraMixError(f"{dataset_dir}: not a synthetic dataset (no {MANIFEST}); run `hydramix synthesize`")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HydraMixError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise HydraMixError(f"{path}: not a hydramix dataset manifest (expected format {FORMAT!r})")
    for key, kind, what in (
        ("total", int, "an integer"),
        ("resolution", int, "an integer"),
        ("class_names", list, "an array of strings"),
        ("counts", dict, "an object of integers"),
    ):
        value = manifest.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise HydraMixError(f"{path}: malformed manifest: {key!r} must be {what}, got {_json_type(value)}")
    if not all(isinstance(c, str) for c in manifest["class_names"]):
        raise HydraMixError(f"{path}: malformed manifest: 'class_names' must be an array of strings")
    if not all(type(n) is int for n in manifest["counts"].values()):
        raise HydraMixError(f"{path}: malformed manifest: 'counts' must be an object of integers")
    card = manifest.get("card_sha256", "0" * 64)
    if not isinstance(card, str) or not SHA256_RE.fullmatch(card):
        raise HydraMixError(f"{path}: malformed manifest: 'card_sha256' is {_short(card)}, not 64 hex digits")
    where = f"{path}: malformed manifest"
    manifest["shards"] = checked_shards(directory, manifest.get("shards"), where, prefix_of(manifest))
    return manifest


def shard_paths(dataset_dir: str | Path) -> list[Path]:
    """Paths of the manifest's shards, in manifest (= sample id) order."""
    dataset_dir = Path(dataset_dir)
    return [dataset_dir / s["name"] for s in read_manifest(dataset_dir)["shards"]]


def iter_shard(path: str | Path) -> Iterator[Sample]:
    """Stream the samples of one shard in stored order; ValueError for a bad tar or an incomplete sample."""
    path = Path(path)
    current: str | None = None
    parts: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, suffix = member.name.partition(".")
                if key != current:
                    if current is not None:
                        yield _decode_sample(path, current, parts)
                    current, parts = key, {}
                handle = tar.extractfile(member)
                parts[suffix] = handle.read() if handle else b""
    except tarfile.TarError as exc:
        raise ValueError(f"{path.name}: not a readable tar ({exc})") from None
    if current is not None:
        yield _decode_sample(path, current, parts)


def _decode_sample(path: Path, key: str, parts: dict[str, bytes]) -> Sample:
    missing = [s for s in MEMBER_SUFFIXES if s not in parts]
    if missing:
        raise ValueError(f"{path.name}: sample {key} lacks .{', .'.join(missing)}")
    try:
        image = decode_png(parts["png"])
    except Exception as exc:  # Pillow raises many types for broken data
        raise ValueError(f"{path.name}: sample {key}: image not decodable ({exc})") from None
    try:
        label = int(parts["cls"].decode("ascii"))
        meta = json.loads(parts["json"])
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path.name}: sample {key}: bad label or provenance ({exc})") from None
    return Sample(key=key, image=image, label=label, meta=meta)


def iter_samples(dataset_dir: str | Path) -> Iterator[Sample]:
    """Stream every sample of a dataset directory in manifest order (memory stays flat: one sample at a time).

    Checks presence of every shard up front; raises HydraMixError naming the shard on a malformed one.
    """
    dataset_dir = Path(dataset_dir)
    paths = shard_paths(dataset_dir)
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise HydraMixError(
            f"{dataset_dir}: missing shard(s) {', '.join(missing)}; run `hydramix verify {dataset_dir}`"
        )
    for path in paths:
        try:
            yield from iter_shard(path)
        except ValueError as exc:
            raise HydraMixError(f"{dataset_dir}: {exc}; run `hydramix verify {dataset_dir}`") from None


def load_images(dataset_dir: str | Path) -> ImageSet:
    """Load a whole dataset into memory as an ImageSet (for classifier training).

    images: (total, H, W, 3) uint8; labels: (total,) int64; indices: (total,) int64 sample ids (0..total-1,
    manifest order); class_names from the manifest. Every shard's presence and sha256 are checked first; a
    missing or corrupt shard raises HydraMixError pointing to ``hydramix verify``.
    """
    dataset_dir = Path(dataset_dir)
    manifest = read_manifest(dataset_dir)
    for entry in manifest["shards"]:
        path = dataset_dir / entry["name"]
        if not path.is_file():
            raise HydraMixError(f"{path}: shard missing; run `hydramix verify {dataset_dir}`")
        if file_digest(path) != entry["sha256"]:
            raise HydraMixError(f"{path}: sha256 differs from the manifest; run `hydramix verify {dataset_dir}`")
    total, res = int(manifest["total"]), int(manifest["resolution"])
    images = np.empty((total, res, res, 3), dtype=np.uint8)  # filled in place: no list of arrays, no copy
    labels = np.empty(total, dtype=np.int64)
    n = 0
    for sample in iter_samples(dataset_dir):
        if n >= total or sample.image.shape != (res, res, 3):
            raise HydraMixError(
                f"{dataset_dir}: shards disagree with the manifest; run `hydramix verify {dataset_dir}`"
            )
        images[n], labels[n] = sample.image, sample.label
        n += 1
    if n != total:
        raise HydraMixError(f"{dataset_dir}: {n} samples, manifest says {total}; run `hydramix verify {dataset_dir}`")
    try:
        return ImageSet(images, labels, np.arange(total, dtype=np.int64), tuple(manifest["class_names"]))
    except ValueError as exc:
        raise HydraMixError(f"{dataset_dir}: {exc}; run `hydramix verify {dataset_dir}`") from None
