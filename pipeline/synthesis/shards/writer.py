"""Writing files into a dataset directory: one shard as a deterministic tar, and the card, manifest and plan.

Where it sits: subset + generator -> **shards** -> score / classifier; the bottom of the writing side
(``writer_thread`` feeds ``write_shard``; ``plan`` and ``dataset_writer`` write their JSON and the card here). A
shard is an uncompressed ustar tar with fixed member metadata (mtime 0, uid/gid 0, empty owner names, mode 0644),
built by hand byte for byte as ``tarfile`` writes it: equal samples give byte-identical shards. Every file goes
through a fresh ``<name>.tmp`` (``O_EXCL``: never written through a link) and a rename, so no partial file ever
stands under a final name; errors stay ``OSError`` for the caller to name (a full disk, say).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.imageset import encode_png
from pipeline.synthesis.shards.format import KEY_RE, SampleLike

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
    if not isinstance(key, str) or not KEY_RE.match(key):
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


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fresh ``<path>.tmp`` and a rename; the temporary is removed on any
    error (including Ctrl-C), and ``path`` holds either its old content or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with _create(tmp) as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Sorted, indented JSON, atomically (the bytes of ``pipeline.core.atomic.write_json``)."""
    write_atomic(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())
