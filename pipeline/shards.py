"""Synthetic datasets as WebDataset tar shards: the format, writing it reproducibly, reading and verifying it.

A dataset directory holds ``<name>-NNNNNN.tar`` shards, ``manifest.json`` and a ``README.md`` dataset card.
Every sample is three tar members in this order: ``<key>.png`` (lossless RGB image), ``<key>.cls`` (the
integer label as ASCII) and ``<key>.json`` (provenance, sorted keys). Shards are uncompressed tars with fixed
member metadata (mtime 0, uid/gid 0, empty owner names, mode 0644): equal samples give byte-identical shards.

Shard ``i`` holds sample ids ``[i*S, min((i+1)*S, total))``; a shard depends only on its own sample ids, which
makes a run resumable (missing shards are rendered again, complete ones kept) and splittable across processes
(``shards_for_rank``) with byte-identical output. See ``docs/shards.md``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import queue
import re
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.atomic import write_json
from pipeline.errors import HydraMixError
from pipeline.imageset import ImageSet, decode_png, encode_png
from pipeline.progress import tqdm

MANIFEST = "manifest.json"
CARD = "README.md"
# Written before the first shard, removed after the manifest: lets an interrupted run be resumed (or refused,
# if the new run would make a different dataset) although its manifest does not exist yet.
PLAN = "plan.json"
FORMAT = "hydramix-webdataset/1"
SHARD_RE = re.compile(r"^(?P<name>.+)-(?P<index>\d{6})\.tar$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,90}$")  # no dots (WebDataset splits at the first one), fits a ustar name
_MEMBER_SUFFIXES = ("png", "cls", "json")
_READ_CHUNK = 1 << 20


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
    """Anything with a Sample's fields (``pipeline.synthesis.Rendered`` is one)."""

    key: str
    image: np.ndarray
    label: int
    meta: dict[str, Any]


class Renderer(Protocol):
    """What ``write_dataset_shards`` needs from ``pipeline.synthesis.Synthesizer``."""

    total: int

    def render(self, sample_ids: np.ndarray) -> Sequence[SampleLike]: ...


# ------------------------------------------------------------------------------------------------------------
# One shard


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


# Block and record sizes of tarfile: an archive ends with two zero blocks, padded to a whole record.
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


def _tar_header(name: str, size: int) -> bytes:
    """The 512-byte ustar header of a regular file with the fixed metadata (mode 0644, uid/gid 0, mtime 0,
    empty owner names): byte-identical to what ``tarfile`` writes for it, but built without TarInfo's
    Python-level overhead, which otherwise costs about as much as the PNG encoding of a 32x32 image."""
    raw = name.encode("ascii")
    if len(raw) > 100:
        raise ValueError(f"tar member name {name!r} is longer than 100 bytes")
    header = b"".join(
        (
            raw.ljust(100, b"\0"),
            b"0000644\0",  # mode
            b"0000000\0",  # uid
            b"0000000\0",  # gid
            b"%011o\0" % size,
            b"00000000000\0",  # mtime
            b"        ",  # checksum placeholder (spaces while summing)
            tarfile.REGTYPE,
            b"\0" * 100,  # linkname
            tarfile.POSIX_MAGIC,  # b"ustar\x0000"
            b"\0" * 64,  # uname, gname
            b"\0" * (16 + 155),  # devmajor, devminor (empty for regular files), prefix
        )
    ).ljust(_BLOCK, b"\0")
    return header[:148] + b"%06o\0" % sum(header) + header[155:]


def _tar_member_bytes(name: str, data: bytes) -> bytes:
    """Header, data and zero padding to a whole block."""
    return _tar_header(name, len(data)) + data + b"\0" * (-len(data) % _BLOCK)


def _sample_members(sample: SampleLike) -> list[tuple[str, bytes]]:
    """Check one sample and encode it into its three (member name, bytes) pairs."""
    key = sample.key
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(f"sample key {key!r} must be 1-90 letters, digits, '_' or '-' (no dots)")
    image = np.asarray(sample.image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"sample {key}: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    meta = json.dumps(sample.meta, sort_keys=True, separators=(",", ":")).encode()
    return [
        (f"{key}.png", encode_png(np.ascontiguousarray(image))),
        (f"{key}.cls", str(int(sample.label)).encode("ascii")),
        (f"{key}.json", meta),
    ]


def write_shard(path: str | Path, samples: Iterable[SampleLike]) -> dict[str, Any]:
    """Write ``samples`` (consumed lazily, in order) as one deterministic tar at ``path``.

    The tar (ustar, byte for byte as ``tarfile`` would write it) is built under ``<path>.tmp`` and renamed to
    ``path`` only when complete, so ``path`` never holds a partial shard. Returns ``{"name": file name,
    "sha256": hex digest, "count": samples}``. Raises ValueError for a malformed sample (bad key, duplicate
    key, bad image); any error removes the temporary file.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    digest = hashlib.sha256()
    seen: set[str] = set()
    count = 0
    try:
        with open(tmp, "wb") as f:
            offset = 0
            for sample in samples:
                if sample.key in seen:
                    raise ValueError(f"duplicate sample key {sample.key!r} in {path.name}")
                seen.add(sample.key)
                chunk = b"".join(_tar_member_bytes(name, data) for name, data in _sample_members(sample))
                f.write(chunk)
                digest.update(chunk)
                offset += len(chunk)
                count += 1
            end = b"\0" * (2 * _BLOCK)
            end += b"\0" * (-(offset + len(end)) % _RECORD)
            f.write(end)
            digest.update(end)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"name": path.name, "sha256": digest.hexdigest(), "count": count}


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
    missing = [s for s in _MEMBER_SUFFIXES if s not in parts]
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


def count_shard_samples(path: str | Path) -> int | None:
    """Number of complete samples in a shard from its tar headers only (no decoding); None if unreadable."""
    keys: dict[str, set[str]] = {}
    try:
        with tarfile.open(path, mode="r|") as tar:
            for member in tar:
                key, _, suffix = member.name.partition(".")
                keys.setdefault(key, set()).add(suffix)
    except (tarfile.TarError, OSError):
        return None
    if any(parts != set(_MEMBER_SUFFIXES) for parts in keys.values()):
        return None
    return len(keys)


# ------------------------------------------------------------------------------------------------------------
# A whole dataset directory: reading and verifying


def read_manifest(dataset_dir: str | Path) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a dataset directory; HydraMixError if absent or not ours."""
    path = Path(dataset_dir) / MANIFEST
    if not path.is_file():
        raise HydraMixError(f"{dataset_dir}: not a synthetic dataset (no {MANIFEST}); run `hydramix synthesize`")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HydraMixError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise HydraMixError(f"{path}: not a hydramix dataset manifest (expected format {FORMAT!r})")
    return manifest


def shard_paths(dataset_dir: str | Path) -> list[Path]:
    """Paths of the manifest's shards, in manifest (= sample id) order."""
    dataset_dir = Path(dataset_dir)
    return [dataset_dir / s["name"] for s in read_manifest(dataset_dir)["shards"]]


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
        if file_sha256(path) != entry["sha256"]:
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


def verify(dataset_dir: str | Path, progress: bool = False) -> list[str]:
    """Check a dataset directory against its manifest; return the problems found (empty list = OK).

    Checks: manifest readable; every listed shard present, sha256 equal, sample count equal; no unlisted
    shard; every image decodable at the manifest resolution; every label in range; per-class counts as listed.
    """
    dataset_dir = Path(dataset_dir)
    try:
        manifest = read_manifest(dataset_dir)
    except HydraMixError as exc:
        return [str(exc)]
    problems: list[str] = []
    class_names = list(manifest.get("class_names", []))
    res = manifest.get("resolution")
    counts = np.zeros(len(class_names), dtype=np.int64)
    listed = {s["name"] for s in manifest["shards"]}
    for path in sorted(dataset_dir.glob("*.tar")):
        if SHARD_RE.match(path.name) and path.name not in listed:
            problems.append(f"{path.name}: shard not listed in the manifest")
    # Counted in samples, not shards: a few large shards would leave the ETA blank for minutes.
    bar = tqdm(total=manifest.get("total"), desc="verify", unit="img", disable=not progress)
    for entry in manifest["shards"]:
        path = dataset_dir / entry["name"]
        if not path.is_file():
            problems.append(f"{entry['name']}: missing")
            continue
        if file_sha256(path) != entry["sha256"]:
            problems.append(f"{entry['name']}: sha256 differs from the manifest (file changed or corrupt)")
        n = 0
        try:
            for sample in iter_shard(path):
                n += 1
                bar.update()
                if res is not None and sample.image.shape != (res, res, 3):
                    problems.append(f"{entry['name']}: sample {sample.key} is {sample.image.shape}, expected {res}px")
                if not 0 <= sample.label < len(class_names):
                    problems.append(f"{entry['name']}: sample {sample.key} label {sample.label} out of range")
                else:
                    counts[sample.label] += 1
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if n != entry["count"]:
            problems.append(f"{entry['name']}: {n} samples, manifest says {entry['count']}")
    bar.close()
    expected = manifest.get("counts", {})
    if not problems and expected != dict(zip(class_names, map(int, counts), strict=True)):
        problems.append(
            f"per-class counts {dict(zip(class_names, map(int, counts), strict=True))} != manifest {expected}"
        )
    return problems


# ------------------------------------------------------------------------------------------------------------
# Writing a whole dataset


def plan_dataset(directory: str | Path, identity: dict[str, Any], force: bool) -> list[str]:
    """Claim ``directory`` for the dataset described by ``identity`` (JSON: inputs, params, versions).

    Resuming the same dataset keeps its shards, except those whose sha256 differs from an existing manifest
    (corrupt: deleted so they are rendered again; their names are returned). A directory holding a different
    dataset (manifest or plan with another identity), or shards of unknown origin, is refused with
    HydraMixError unless ``force``, which deletes the old shards, temporaries, manifest, card and plan
    (nothing else). Writes ``plan.json``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    identity = json.loads(json.dumps(identity))  # tuples -> lists, as they will read back from the file
    previous: Any = None
    old_shards: list[dict[str, Any]] = []
    for fname in (MANIFEST, PLAN):
        path = directory / fname
        if path.is_file():
            try:
                recorded = json.loads(path.read_text())
                previous = _identity_of(recorded)
                old_shards = recorded.get("shards", [])
            except (OSError, ValueError, AttributeError):
                previous = "unreadable"
            break
    ours = _our_files(directory)
    if previous is not None and previous != identity or previous is None and ours:
        if not force:
            what = _describe_difference(previous, identity) if isinstance(previous, dict) else "of unknown origin"
            raise HydraMixError(
                f"{directory} already holds a different synthetic dataset ({what}); "
                "pass --force to replace it or choose another --out"
            )
        for path in ours:
            path.unlink()
        old_shards = []
    corrupt = []
    for entry in old_shards:
        path = directory / entry["name"]
        if path.is_file() and file_sha256(path) != entry["sha256"]:
            path.unlink()
            corrupt.append(entry["name"])
    write_json(directory / PLAN, {"format": FORMAT, **identity})
    return corrupt


# Manifest keys that describe the result rather than the inputs; every other key is part of the identity.
_RESULT_KEYS = ("format", "total", "class_names", "resolution", "counts", "shards", "diagnostics")


def _identity_of(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k not in _RESULT_KEYS}


def _our_files(directory: Path) -> list[Path]:
    """Files this module writes: shards, their temporaries, manifest, card, plan."""
    names = {MANIFEST, CARD, PLAN}
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and (p.name in names or SHARD_RE.match(p.name.removesuffix(".tmp")))
    )


def _describe_difference(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            keys.append(_describe_difference(a, b, f"{prefix}{k}.").removeprefix("differs in "))
        else:
            keys.append(f"{prefix}{k}")
    return "differs in " + ", ".join(keys) if keys else "different"


def write_dataset_shards(
    directory: str | Path,
    renderer: Renderer,
    shards: ShardConfig,
    batch_size: int,
    indices: Iterable[int] | None = None,
    progress: bool = True,
) -> dict[int, dict[str, Any]]:
    """Render and write the shards ``indices`` (default: all) of ``renderer``'s dataset into ``directory``.

    Shard i holds sample ids [i*S, min((i+1)*S, total)), rendered in chunks of ``batch_size`` from the
    shard's first id, so its bytes do not depend on which other shards are written, by which process or in
    which order. A shard already present under its final name with the right sample count is kept (its sha256
    is read back). PNG encoding and tar writing run in a background thread while the next chunk renders.
    Returns ``{index: {"name", "sha256", "count", "rendered"}}`` (rendered: False for a kept shard). A full
    disk raises HydraMixError; no partial shard is left.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if batch_size < 1:
        raise HydraMixError(f"batch_size must be >= 1, got {batch_size}")
    total = int(renderer.total)
    count = n_shards(total, shards.shard_size)
    todo = list(range(count)) if indices is None else sorted(set(indices))
    if any(not 0 <= i < count for i in todo):
        raise HydraMixError(f"shard indices must lie in [0, {count}), got {todo}")
    written: dict[int, dict[str, Any]] = {}
    pending: list[int] = []
    for i in todo:
        path = directory / shard_name(shards.name, i)
        expected = len(shard_sample_ids(i, shards.shard_size, total))
        if path.is_file() and count_shard_samples(path) == expected:
            written[i] = {
                "name": path.name,
                "sha256": file_sha256(path),
                "count": expected,
                "rendered": False,
            }
        else:
            pending.append(i)
    n_pending = sum(len(shard_sample_ids(i, shards.shard_size, total)) for i in pending)
    with tqdm(total=n_pending, desc="synthesize", unit="img", disable=not progress or not pending) as bar:
        for i in pending:
            ids = shard_sample_ids(i, shards.shard_size, total)
            chunks = (ids[s : s + batch_size] for s in range(0, len(ids), batch_size))
            try:
                entry = _write_rendered_shard(directory / shard_name(shards.name, i), renderer, chunks, bar.update)
                written[i] = {**entry, "rendered": True}
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise HydraMixError(
                        f"{directory}: disk full while writing {shard_name(shards.name, i)}; no partial "
                        "shard was kept. Free space and run the same command again to finish the rest."
                    ) from None
                raise HydraMixError(f"{directory}: cannot write {shard_name(shards.name, i)} ({exc})") from None
    return written


def finish_dataset(
    directory: str | Path,
    entries: Sequence[dict[str, Any]],
    *,
    class_names: Sequence[str],
    resolution: int,
    counts: dict[str, int],
    identity: dict[str, Any],
    card: Callable[[dict[str, Any]], str] | str,
    diagnostics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the dataset card and, last, ``manifest.json``; remove the plan. Returns the manifest.

    entries: ``write_shard`` results for shards 0..n-1 in order. identity: the JSON description of inputs and
    params (generator and subset checksums, synthesis and mask params, versions), stored at the manifest's top
    level. card: the README text, or a function of the manifest returning it. diagnostics: optional figures
    measured on the written set (a result, not part of the identity), stored under ``diagnostics``.
    """
    directory = Path(directory)
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names) or sum(e["count"] for e in entries) != sum(counts.values()):
        raise HydraMixError(f"{directory}: shard list does not add up to the class counts {counts}")
    clash = sorted(set(identity) & set(_RESULT_KEYS))
    if clash:
        raise ValueError(f"identity may not use the manifest's own keys {clash}")
    manifest = {
        "format": FORMAT,
        "total": int(sum(counts.values())),
        "class_names": list(class_names),
        "resolution": int(resolution),
        "counts": {k: int(v) for k, v in counts.items()},
        "shards": [{"name": e["name"], "sha256": e["sha256"], "count": int(e["count"])} for e in entries],
        **identity,
    }
    if diagnostics is not None:
        manifest["diagnostics"] = diagnostics
    text = card(manifest) if callable(card) else card
    tmp = directory / (CARD + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, directory / CARD)
    write_json(directory / MANIFEST, manifest)
    (directory / PLAN).unlink(missing_ok=True)
    return manifest


def class_counts(total: int, class_names: Sequence[str]) -> dict[str, int]:
    """Samples per class when sample s has class s % C (the Synthesizer's rule)."""
    c = len(class_names)
    return {name: len(range(label, total, c)) for label, name in enumerate(class_names)}


def write_dataset(
    directory: str | Path,
    renderer: Renderer,
    shards: ShardConfig,
    batch_size: int,
    *,
    identity: dict[str, Any],
    class_names: Sequence[str],
    resolution: int,
    card: Callable[[dict[str, Any]], str] | str,
    force: bool = False,
    indices: Iterable[int] | None = None,
    progress: bool = True,
    describe: Callable[[Path, list[str]], dict[str, Any]] | None = None,
) -> tuple[dict[str, Any] | None, dict[int, dict[str, Any]]]:
    """Plan, render and finish a synthetic dataset in ``directory``: the whole ``synthesize`` stage's work.

    ``renderer`` renders sample s as class s % len(class_names). With ``indices`` (this process's share, see
    ``shards_for_rank``) only those shards are written, and the manifest only once every shard of the dataset
    is present. Returns (the manifest or None if shards are still missing, the per-shard results of
    this call). HydraMixError for a directory holding another dataset (unless ``force``) or a full disk.
    describe: optional ``(directory, shard names in order) -> diagnostics``, called once every shard is
    written, before the manifest; its result is the manifest's ``diagnostics``.
    """
    directory = Path(directory)
    try:
        plan_dataset(directory, identity, force)
        written = write_dataset_shards(directory, renderer, shards, batch_size, indices, progress)
        total = int(renderer.total)
        entries = []
        for i in range(n_shards(total, shards.shard_size)):
            if i in written:
                entries.append(written[i])
                continue
            path = directory / shard_name(shards.name, i)
            expected = len(shard_sample_ids(i, shards.shard_size, total))
            if not (path.is_file() and count_shard_samples(path) == expected):
                return None, written  # another process's shard, not written yet
            entries.append({"name": path.name, "sha256": file_sha256(path), "count": expected})
        manifest = finish_dataset(
            directory,
            entries,
            class_names=class_names,
            resolution=resolution,
            counts=class_counts(total, class_names),
            identity=identity,
            card=card,
            diagnostics=describe(directory, [e["name"] for e in entries]) if describe else None,
        )
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise HydraMixError(f"{directory}: disk full ({exc}); free space and run the command again") from None
        raise HydraMixError(f"{directory}: cannot write ({exc})") from None
    return manifest, written


_DONE, _ABORT = object(), object()


class _Aborted(Exception):
    """Raised inside the writer thread when rendering failed: the shard must not be completed."""


def _write_rendered_shard(
    path: Path, renderer: Renderer, chunks: Iterable[np.ndarray], advance: Callable[[int], Any]
) -> dict[str, Any]:
    """Render ``chunks`` on this thread while a writer thread encodes and tars the previous chunk.

    The queue holds at most two rendered chunks, so memory stays flat whatever the dataset size. If rendering
    fails (or is interrupted) the writer is told to abort, so its temporary file is removed and never renamed.
    """
    handoff: queue.Queue[Any] = queue.Queue(maxsize=2)
    result: dict[str, Any] = {}
    failure: list[BaseException] = []

    def samples() -> Iterator[SampleLike]:
        while True:
            batch = handoff.get()
            if batch is _DONE:
                return
            if batch is _ABORT:
                raise _Aborted
            yield from batch
            advance(len(batch))

    def writer() -> None:
        try:
            result.update(write_shard(path, samples()))
        except BaseException as exc:  # handed to the rendering thread, re-raised there
            failure.append(exc)

    thread = threading.Thread(target=writer, name=f"write {path.name}", daemon=True)
    thread.start()
    finished = False
    try:
        for ids in chunks:
            batch = renderer.render(ids)
            if len(batch) != len(ids):
                raise HydraMixError(f"renderer returned {len(batch)} samples for {len(ids)} ids")
            if not _put_while_alive(handoff, batch, thread):
                break  # the writer failed; its exception is raised below
        finished = True
    finally:
        _put_while_alive(handoff, _DONE if finished else _ABORT, thread)
        thread.join()
    if failure:
        raise failure[0]
    return result


def _put_while_alive(handoff: queue.Queue[Any], item: Any, thread: threading.Thread) -> bool:
    """Put ``item`` unless the consuming ``thread`` has ended; True if it was put."""
    while thread.is_alive():
        try:
            handoff.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
