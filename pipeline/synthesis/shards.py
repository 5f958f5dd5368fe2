"""Synthetic datasets as WebDataset tar shards: the format, writing it reproducibly, reading and verifying it.

A dataset directory holds ``<name>-NNNNNN.tar`` shards, ``manifest.json`` and a ``README.md`` dataset card.
Every sample is three tar members in this order: ``<key>.png`` (lossless RGB image), ``<key>.cls`` (the
integer label as ASCII) and ``<key>.json`` (provenance, sorted keys). Shards are uncompressed tars with fixed
member metadata (mtime 0, uid/gid 0, empty owner names, mode 0644): equal samples give byte-identical shards.

Shard ``i`` holds sample ids ``[i*S, min((i+1)*S, total))``; a shard depends only on its own sample ids, which
makes a run resumable (a shard is kept only if its bytes hash to the sha256 recorded when it was written; every
other one is rendered again) and splittable across processes (``shards_for_rank``) with byte-identical output.

Trust boundary: a manifest or plan is text anyone may have edited. Every shard name read from one must be a
plain ``<name>-NNNNNN.tar`` of that dataset resolving to a file directly inside the directory, or the reader
refuses it before opening anything; nothing is ever deleted because a manifest names it. See ``docs/shards.md``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
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

from pipeline.core.digest import file_digest
from pipeline.core.errors import HydraMixError
from pipeline.core.progress import tqdm
from pipeline.data.imageset import ImageSet, decode_png, encode_png

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
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,90}$")  # no dots (WebDataset splits at the first one), fits a ustar name
_MEMBER_SUFFIXES = ("png", "cls", "json")


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
    """What ``write_dataset_shards`` needs from ``pipeline.synthesis.engine.Synthesizer``."""

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
        with _create(tmp) as f:
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


def _create(tmp: Path) -> Any:
    """Open ``tmp`` for writing as a new file: a stale one (or a link planted under its name) is removed first,
    and O_EXCL makes sure nothing is ever written through a link."""
    tmp.unlink(missing_ok=True)
    return open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), "wb")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fresh ``<path>.tmp`` and a rename; the temporary is removed on any
    error (including Ctrl-C), and ``path`` holds either its old content or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with _create(tmp) as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, payload: Any) -> None:
    """Sorted, indented JSON, atomically (the bytes of ``pipeline.core.atomic.write_json``)."""
    _write_atomic(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


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


def _inside(directory: Path, name: str) -> bool:
    """True if ``directory / name`` resolves (links followed) to an entry directly inside ``directory``."""
    return os.path.dirname(os.path.realpath(directory / name)) == os.path.realpath(directory)


def _checked_shards(directory: Path, shards: Any, where: str | Path, name: str | None) -> list[dict[str, Any]]:
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
        if not _inside(directory, fname):
            raise HydraMixError(f"{where}: shards[{i}] {fname} is a link to a file outside {directory}; not read")
        if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
            raise HydraMixError(f"{where}: shards[{i}] ({fname}) has sha256 {_short(sha256)}, not 64 hex digits")
        if type(count) is not int or count < 0:
            raise HydraMixError(f"{where}: shards[{i}] ({fname}) has count {_short(count)}, not an integer >= 0")
        checked.append({"name": fname, "sha256": sha256, "count": count})
    return checked


def _prefix_of(record: dict[str, Any]) -> str | None:
    """The shard file prefix a manifest or plan declares (its ``name``), if it declares a usable one."""
    name = record.get("name")
    return name if isinstance(name, str) else None


# ------------------------------------------------------------------------------------------------------------
# A whole dataset directory: reading and verifying


def read_manifest(dataset_dir: str | Path) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a dataset directory; HydraMixError if absent, not ours or malformed.

    Checked: the types of ``total``, ``resolution``, ``class_names``, ``counts``, ``shards`` (and
    ``card_sha256`` if present), and every shard name (see ``_checked_shards``), so a reader never opens a
    file outside the directory. Consistency between the fields is ``verify``'s job.
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
    if not isinstance(card, str) or not _SHA256_RE.fullmatch(card):
        raise HydraMixError(f"{path}: malformed manifest: 'card_sha256' is {_short(card)}, not 64 hex digits")
    where = f"{path}: malformed manifest"
    manifest["shards"] = _checked_shards(directory, manifest.get("shards"), where, _prefix_of(manifest))
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


@dataclass(frozen=True)
class Verification:
    """What ``verify_dataset`` found. problems: each a reason the dataset is not what its manifest says (empty:
    OK); notes: what was not checked or is worth knowing but is no fault (e.g. an older manifest's missing
    card checksum)."""

    problems: list[str]
    notes: list[str]


def verify(dataset_dir: str | Path, progress: bool = False) -> list[str]:
    """The problems ``verify_dataset`` finds (empty list = OK)."""
    return verify_dataset(dataset_dir, progress).problems


def verify_dataset(dataset_dir: str | Path, progress: bool = False) -> Verification:
    """Check a dataset directory against its manifest, and the manifest against itself.

    The manifest: readable, ours, well-formed, every shard name a plain name of this dataset inside the
    directory (checked before any file is opened); class counts sum to ``total`` and so do shard counts;
    ``counts`` names exactly the ``class_names``; shard i is named ``<name>-i`` and holds the sample count its
    index implies (from ``shard_size`` when recorded). The files: every listed shard present, sha256 and sample
    count equal; no unlisted shard; every sample has its members, a decodable image at the manifest resolution
    and a label in range; labels per class equal ``counts``; where the provenance records them, each sample's
    ``sample_id`` equals its position and its ``class``/``label`` agree with ``class_names``; the dataset card
    hashes to ``card_sha256`` (a note instead for a manifest written before the card was covered).
    """
    dataset_dir = Path(dataset_dir)
    try:
        manifest = read_manifest(dataset_dir)
    except HydraMixError as exc:
        return Verification([str(exc)], [])
    problems = _manifest_problems(manifest)
    notes: list[str] = []
    class_names, res, entries = manifest["class_names"], manifest["resolution"], manifest["shards"]
    card = dataset_dir / CARD
    if "card_sha256" not in manifest:
        notes.append(
            f"the manifest has no card_sha256 (written by an older hydramix), so {CARD} is not checked; re-run "
            "`hydramix synthesize` with the same arguments to add it"
        )
    elif not card.is_file():
        problems.append(f"{CARD}: missing")
    elif not _inside(dataset_dir, CARD):
        problems.append(f"{CARD}: a link to a file outside {dataset_dir}; not read")
    elif file_digest(card) != manifest["card_sha256"]:
        problems.append(f"{CARD}: sha256 differs from the manifest's card_sha256 (card edited or corrupt)")
    if (dataset_dir / PLAN).is_file():
        notes.append(f"{PLAN} present: a synthesize run into {dataset_dir} is in progress or was interrupted")
    listed = {s["name"] for s in entries}
    for path in sorted(dataset_dir.iterdir()):
        if SHARD_RE.fullmatch(path.name) and path.name not in listed:
            problems.append(f"{path.name}: shard not listed in the manifest (not part of this dataset)")
    counts = np.zeros(len(class_names), dtype=np.int64)
    complete = True  # every sample of every shard read, with a label in range
    position = 0  # sample id of the next sample, in manifest order
    # Counted in samples, not shards: a few large shards would leave the ETA blank for minutes.
    bar = tqdm(total=manifest["total"], desc="verify", unit="img", disable=not progress)
    for entry in entries:
        name, path = entry["name"], dataset_dir / entry["name"]
        if not path.is_file():
            problems.append(f"{name}: missing")
            complete = False
            position += entry["count"]
            continue
        found = _SampleProblems(name)
        n, readable = 0, True
        try:
            if file_digest(path) != entry["sha256"]:
                problems.append(f"{name}: sha256 differs from the manifest (file changed or corrupt)")
            for sample in iter_shard(path):
                bar.update()
                if sample.image.shape != (res, res, 3):
                    found.add("size", f"sample {sample.key} is {sample.image.shape}, expected {res}px")
                if not 0 <= sample.label < len(class_names):
                    found.add("range", f"sample {sample.key} label {sample.label} out of range")
                    complete = False
                else:
                    counts[sample.label] += 1
                    found.provenance(sample, position + n, class_names)
                n += 1
        except (ValueError, OSError) as exc:
            problems.append(str(exc) if isinstance(exc, ValueError) else f"{name}: unreadable ({exc})")
            complete = readable = False
        problems += found.messages()
        if readable and n != entry["count"]:
            problems.append(f"{name}: {n} samples, manifest says {entry['count']}")
        position += n if readable else entry["count"]
    bar.close()
    labelled = dict(zip(class_names, map(int, counts), strict=True))
    if complete and labelled != manifest["counts"]:
        problems.append(f"labels in the shards count {labelled} per class, manifest says {manifest['counts']}")
    return Verification(problems, notes)


def _manifest_problems(manifest: dict[str, Any]) -> list[str]:
    """Ways a well-formed manifest contradicts itself (checked without opening a shard)."""
    problems = []
    class_names, counts, entries, total = (manifest[k] for k in ("class_names", "counts", "shards", "total"))
    if len(set(class_names)) != len(class_names):
        problems.append(f"class_names {class_names} has duplicates")
    if set(counts) != set(class_names):
        problems.append(f"counts names the classes {sorted(counts)}, class_names {class_names}")
    if sum(counts.values()) != total:
        problems.append(f"class counts sum to {sum(counts.values())}, total says {total}")
    if sum(e["count"] for e in entries) != total:
        problems.append(f"shard counts sum to {sum(e['count'] for e in entries)}, total says {total}")
    prefix = _prefix_of(manifest) or (SHARD_RE.fullmatch(entries[0]["name"])["name"] if entries else "")
    for i, entry in enumerate(entries):
        if entry["name"] != shard_name(prefix, i):
            problems.append(
                f"shards[{i}] is {entry['name']}, expected {shard_name(prefix, i)} (shard list reordered or edited)"
            )
    size = manifest.get("shard_size")
    if type(size) is int and size >= 1:
        if len(entries) != n_shards(total, size):
            problems.append(
                f"{len(entries)} shards listed; {total} samples in shards of {size} make {n_shards(total, size)}"
            )
        for i, entry in enumerate(entries):
            expected = len(shard_sample_ids(i, size, total))
            if entry["count"] != expected:
                problems.append(
                    f"{entry['name']}: count {entry['count']}, but shard {i} of shards of {size} holds {expected}"
                )
    return problems


class _SampleProblems:
    """Per-sample problems of one shard, reported once per kind (the first, and how many more) so that a
    systematic fault makes one line, not thousands."""

    def __init__(self, shard: str) -> None:
        self.shard = shard
        self.found: dict[str, tuple[str, int]] = {}

    def add(self, kind: str, message: str) -> None:
        first, n = self.found.get(kind, (message, 0))
        self.found[kind] = (first, n + 1)

    def provenance(self, sample: Sample, sample_id: int, class_names: Sequence[str]) -> None:
        """Check what the sample's provenance records (synthesize writes all three) against its place and label."""
        meta = sample.meta if isinstance(sample.meta, dict) else {}
        if "sample_id" in meta and meta["sample_id"] != sample_id:
            self.add("order", f"sample {sample.key} has sample_id {meta['sample_id']}, expected {sample_id} here")
        if "label" in meta and meta["label"] != sample.label:
            self.add("label", f"sample {sample.key} has label {sample.label}, its provenance {meta['label']}")
        if "class" in meta and meta["class"] != class_names[sample.label]:
            self.add(
                "class",
                f"sample {sample.key} is of class {meta['class']!r} by its provenance, "
                f"{class_names[sample.label]!r} by the manifest's class_names",
            )

    def messages(self) -> list[str]:
        return [
            f"{self.shard}: {first}" + (f" (and {n - 1} more)" if n > 1 else "") for first, n in self.found.values()
        ]


# ------------------------------------------------------------------------------------------------------------
# Writing a whole dataset


@contextlib.contextmanager
def lock_directory(directory: str | Path) -> Iterator[None]:
    """Hold the dataset ``directory`` (created if needed) for the body: the one process writing into it.

    An exclusive ``fcntl.flock`` on ``DIR/.synthesize.lock``, which holds this process's pid and is removed on
    release. A second process gets HydraMixError "another synthesize is writing to DIR (pid N)". The kernel
    drops the lock of a killed process, so a lock file left by a SIGKILL never blocks the next run.
    """
    directory = Path(directory)
    path = directory / LOCK
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = _lock_file(path)
    except OSError as exc:
        raise HydraMixError(f"{directory}: cannot take the writer's lock {LOCK} ({exc})") from None
    if fd is None:
        pid = "unknown"
        with contextlib.suppress(OSError), open(path, "rb") as f:
            pid = f.read(32).decode("ascii", "replace").strip() or pid
        raise HydraMixError(f"another synthesize is writing to {directory} (pid {pid}); wait for it or stop it")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before unlocking: see _lock_file
        os.close(fd)


def _lock_file(path: Path) -> int | None:
    """Lock ``path`` (created if absent) and write our pid into it; its descriptor, or None if held elsewhere."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        # The holder removes the file before unlocking it: if it did so after our open, we hold a lock on a
        # removed file and must lock the one now under that name instead.
        try:
            now, held = os.stat(path, follow_symlinks=False), os.fstat(fd)
            if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def plan_dataset(directory: str | Path, identity: dict[str, Any], force: bool) -> None:
    """Claim ``directory`` for the dataset described by ``identity`` (JSON: inputs, params, versions).

    Writes ``plan.json``: the identity and the shards recorded so far (by the plan of an interrupted run and by
    an existing manifest; ``write_dataset_shards`` keeps one only if its file still hashes to the record). A
    manifest or plan listing anything but a plain shard name of this dataset inside ``directory`` is refused
    (HydraMixError naming the entry; nothing is deleted) unless ``force``. A directory holding a different
    dataset (manifest or plan with another identity) or shards of unknown origin is refused unless ``force``,
    which deletes the shards, temporaries, manifest, card and plan found in ``directory`` (nothing else, and
    never a file because a manifest names it).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    identity = json.loads(json.dumps(identity))  # tuples -> lists, as they will read back from the file
    previous: list[Any] = []  # the identity each existing manifest or plan records (None: unreadable)
    records: list[dict[str, Any]] = []
    for fname in (MANIFEST, PLAN):
        path = directory / fname
        if not path.is_file():
            continue
        try:
            recorded = json.loads(path.read_text())
        except (OSError, ValueError):
            recorded = None
        if not isinstance(recorded, dict):
            previous.append(None)
            continue
        try:
            # names of the dataset that recorded them: another --name is a different identity, refused below
            records += _checked_shards(directory, recorded.get("shards", []), path, _prefix_of(recorded))
        except HydraMixError as exc:
            if not force:
                raise HydraMixError(
                    f"{exc}; nothing was deleted. Pass --force to rebuild the dataset (deletes only its shards, "
                    "manifest, card and plan) or choose another --out"
                ) from None
            previous.append(None)
            continue
        previous.append(_identity_of(recorded))
    ours = _our_files(directory)
    differing = [p for p in previous if p != identity]
    if differing or not previous and ours:
        other = differing[0] if differing else None
        if not force:
            what = _describe_difference(other, identity) if isinstance(other, dict) else "of unknown origin"
            raise HydraMixError(
                f"{directory} already holds a different synthetic dataset ({what}); "
                "pass --force to replace it or choose another --out"
            )
        for path in ours:
            path.unlink()
        records = []
    _write_json(directory / PLAN, {"format": FORMAT, **identity, "shards": _agreeing(records)})


def _agreeing(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records by name, sorted; a name recorded twice with different contents is dropped (re-rendered)."""
    by_name: dict[str, dict[str, Any]] = {}
    disputed = set()
    for entry in records:
        if by_name.setdefault(entry["name"], entry) != entry:
            disputed.add(entry["name"])
    return [by_name[name] for name in sorted(by_name) if name not in disputed]


def _plan_records(directory: Path) -> dict[str, dict[str, Any]]:
    """The shards ``plan.json`` records, by name; HydraMixError if the directory was not claimed (no plan)."""
    path = directory / PLAN
    if not path.is_file():
        raise HydraMixError(f"{directory}: no {PLAN}, so the directory was not claimed; run the command again")
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HydraMixError(f"{path}: unreadable ({exc}); run the command again") from None
    if not isinstance(plan, dict):
        raise HydraMixError(f"{path}: not a plan; run the command again")
    return {e["name"]: e for e in _checked_shards(directory, plan.get("shards", []), path, _prefix_of(plan))}


def _record_shard(directory: Path, entry: dict[str, Any]) -> None:
    """Add a shard just renamed into place to the plan: the record a resume proves it against. Processes that
    write shards of one dataset (torchrun ranks) take turns through a lock on the directory itself."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = directory / PLAN
        try:
            plan = json.loads(path.read_text())
            kept = [s for s in plan.get("shards", []) if s["name"] != entry["name"]]
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise HydraMixError(f"{path}: changed while shards were written ({exc}); run the command again") from None
        record = {k: entry[k] for k in ("name", "sha256", "count")}
        plan["shards"] = sorted([*kept, record], key=lambda s: s["name"])
        _write_json(path, plan)
    finally:
        os.close(fd)  # releases the lock


# Manifest keys that describe the result rather than the inputs; every other key is part of the identity.
_RESULT_KEYS = ("format", "total", "class_names", "resolution", "counts", "shards", "diagnostics", "card_sha256")


def _identity_of(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k not in _RESULT_KEYS}


def _our_files(directory: Path) -> list[Path]:
    """Files this module writes: shards, manifest, card, plan and their temporaries (links named so too)."""
    names = {MANIFEST, CARD, PLAN}
    return sorted(
        p
        for p in directory.iterdir()
        if (p.is_symlink() or p.is_file())
        and (p.name.removesuffix(".tmp") in names or SHARD_RE.fullmatch(p.name.removesuffix(".tmp")))
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
    """Render and write the shards ``indices`` (default: all) of ``renderer``'s dataset into ``directory``,
    which ``plan_dataset`` has claimed.

    Shard i holds sample ids [i*S, min((i+1)*S, total)), rendered in chunks of ``batch_size`` from the
    shard's first id, so its bytes do not depend on which other shards are written, by which process or in
    which order. A shard is kept only if the plan records it and its file hashes to the recorded sha256 (a
    damaged or unrecorded file is rendered again); each shard written is recorded in the plan once it is in
    place. PNG encoding and tar writing run in a background thread while the next chunk renders. Returns
    ``{index: {"name", "sha256", "count", "rendered", "repaired"}}`` (rendered: False for a kept shard;
    repaired: rendered again because the file differed from its record). A full disk raises HydraMixError; no
    partial shard or temporary is left, also on Ctrl-C.
    """
    directory = Path(directory)
    if batch_size < 1:
        raise HydraMixError(f"batch_size must be >= 1, got {batch_size}")
    total = int(renderer.total)
    count = n_shards(total, shards.shard_size)
    todo = list(range(count)) if indices is None else sorted(set(indices))
    if any(not 0 <= i < count for i in todo):
        raise HydraMixError(f"shard indices must lie in [0, {count}), got {todo}")
    recorded = _plan_records(directory)
    written: dict[int, dict[str, Any]] = {}
    pending: list[int] = []
    damaged: set[int] = set()
    for i in todo:
        path = directory / shard_name(shards.name, i)
        record = recorded.get(path.name)
        if record is not None and record["count"] == len(shard_sample_ids(i, shards.shard_size, total)):
            if path.is_file() and file_digest(path) == record["sha256"]:
                written[i] = {**record, "rendered": False, "repaired": False}
                continue
            if path.exists():
                damaged.add(i)
        pending.append(i)
    n_pending = sum(len(shard_sample_ids(i, shards.shard_size, total)) for i in pending)
    with tqdm(total=n_pending, desc="synthesize", unit="img", disable=not progress or not pending) as bar:
        for i in pending:
            ids = shard_sample_ids(i, shards.shard_size, total)
            chunks = (ids[s : s + batch_size] for s in range(0, len(ids), batch_size))
            try:
                entry = _write_rendered_shard(directory / shard_name(shards.name, i), renderer, chunks, bar.update)
                _record_shard(directory, entry)
                written[i] = {**entry, "rendered": True, "repaired": i in damaged}
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
    level. card: the README text, or a function of the manifest returning it (called before ``card_sha256``,
    the sha256 of the card's bytes, is added to the manifest). diagnostics: optional figures measured on the
    written set (a result, not part of the identity), stored under ``diagnostics``.
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
    text = (card(manifest) if callable(card) else card).encode("utf-8")
    _write_atomic(directory / CARD, text)
    manifest["card_sha256"] = hashlib.sha256(text).hexdigest()
    _write_json(directory / MANIFEST, manifest)
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
    is present and matches its record in the plan. Returns (the manifest or None if shards are still missing,
    the per-shard results of this call). HydraMixError for a directory holding another dataset (unless
    ``force``) or a full disk. describe: optional ``(directory, shard names in order) -> diagnostics``, called
    once every shard is written, before the manifest; its result is the manifest's ``diagnostics``. Takes no
    lock: a caller that may race another writer holds ``lock_directory``.
    """
    directory = Path(directory)
    try:
        plan_dataset(directory, identity, force)
        written = write_dataset_shards(directory, renderer, shards, batch_size, indices, progress)
        total = int(renderer.total)
        recorded = _plan_records(directory)
        entries = []
        for i in range(n_shards(total, shards.shard_size)):
            if i in written:
                entries.append(written[i])
                continue
            path = directory / shard_name(shards.name, i)
            record = recorded.get(path.name)
            expected = len(shard_sample_ids(i, shards.shard_size, total))
            if record is None or record["count"] != expected or not path.is_file():
                return None, written  # another process's shard, not written yet
            if file_digest(path) != record["sha256"]:
                return None, written  # changed since it was written: the next run renders it again
            entries.append(record)
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


_DONE = object()


class _Aborted(Exception):
    """Raised inside the writer thread when rendering failed: the shard must not be completed."""


def _write_rendered_shard(
    path: Path, renderer: Renderer, chunks: Iterable[np.ndarray], advance: Callable[[int], Any]
) -> dict[str, Any]:
    """Render ``chunks`` on this thread while a writer thread encodes and tars the previous chunk.

    The queue holds at most two rendered chunks, so memory stays flat whatever the dataset size. Whatever this
    thread is doing when it fails or is interrupted (rendering, handing a chunk over, waiting for the writer),
    it sets ``stop`` and waits until the writer has finished, which abandons the shard at its next sample: the
    temporary file is removed, never renamed, before the exception goes on.
    """
    handoff: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop, finished = threading.Event(), threading.Event()
    result: dict[str, Any] = {}
    failure: list[BaseException] = []

    def samples() -> Iterator[SampleLike]:
        while True:
            try:
                batch = handoff.get(timeout=0.05)
            except queue.Empty:
                if stop.is_set():
                    raise _Aborted from None
                continue
            if batch is _DONE:
                return
            for sample in batch:
                if stop.is_set():
                    raise _Aborted
                yield sample
            advance(len(batch))

    def writer() -> None:
        try:
            result.update(write_shard(path, samples()))
        except BaseException as exc:  # handed to the rendering thread, re-raised there
            failure.append(exc)
        finally:
            finished.set()

    # Waiting is on ``finished``, not Thread.join: an interrupted join (CPython <= 3.12) marks the thread as
    # stopped although it still runs, and a second join or is_alive() then no longer waits for it.
    thread = threading.Thread(target=writer, name=f"write {path.name}", daemon=True)
    try:
        thread.start()
        for ids in chunks:
            batch = renderer.render(ids)
            if len(batch) != len(ids):
                raise HydraMixError(f"renderer returned {len(batch)} samples for {len(ids)} ids")
            if not _put_unless(handoff, batch, finished):
                break  # the writer failed; its exception is raised below
        _put_unless(handoff, _DONE, finished)
        finished.wait()
    except BaseException:
        stop.set()
        _wait_through_interrupts(finished, thread)
        raise
    if failure:
        raise failure[0]
    return result


def _wait_through_interrupts(finished: threading.Event, thread: threading.Thread) -> None:
    """Wait until the writer has finished, even if Ctrl-C is pressed again meanwhile: once told to stop it is at
    most one sample away from removing its temporary file. (Returns at once if it never started.)"""
    while True:
        try:
            if finished.wait(timeout=0.1) or not thread.is_alive():
                return
        except KeyboardInterrupt:
            continue


def _put_unless(handoff: queue.Queue[Any], item: Any, finished: threading.Event) -> bool:
    """Put ``item`` unless the consuming writer has finished (failed); True if it was put."""
    while not finished.is_set():
        try:
            handoff.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
