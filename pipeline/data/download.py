"""Resumable, atomic, checksum-verified downloads, and archive reading that refuses escaping members.

A download goes to ``<dest>.part`` (resumed with an HTTP Range request when a partial file exists), is
verified against its md5/sha256, and only then renamed to ``dest``: a file under its final name is always
complete and correct. Archives are read in place (members streamed into memory) and always to their end: a tar
must end with its end-of-archive blocks and a compressed one with its stream's end (gzip: the CRC and length
trailer), so that a truncated file is an error, never a dataset that silently lacks its last members. The
extraction helper for callers that do need files on disk rejects absolute paths, ``..`` components and links
pointing outside the target directory.
"""

from __future__ import annotations

import bz2
import collections
import lzma
import os
import posixpath
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pipeline.core.atomic import check_writable
from pipeline.core.digest import file_digest
from pipeline.core.errors import DownloadError, HydraMixError
from pipeline.core.progress import tqdm

_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """A file published at ``url``, saved as ``filename``, with at least one checksum (lowercase hex)."""

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        if self.md5 is None and self.sha256 is None:
            raise ValueError(f"{self.filename}: a RemoteFile needs an md5 or a sha256")


def checksum_problem(path: Path, md5: str | None, sha256: str | None) -> str | None:
    """None if ``path`` matches every given checksum, else a sentence saying which one differs."""
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected is not None:
            actual = file_digest(path, algorithm)
            if actual != expected.lower():
                return f"wrong {algorithm} checksum: expected {expected}, got {actual}"
    return None


def fetch(remote: RemoteFile, directory: str | Path, progress: bool = True, timeout: float = 30.0) -> Path:
    """``directory/remote.filename``, downloaded if absent; checksum-verified either way.

    A file already there (downloaded earlier or placed by hand) is used only if its checksum matches;
    otherwise HydraMixError, and the file is left alone so a user can inspect it.
    """
    dest = Path(directory) / remote.filename
    if dest.exists():
        problem = checksum_problem(dest, remote.md5, remote.sha256)
        if problem:
            raise HydraMixError(f"{dest}: {problem}; delete it to download it again from {remote.url}")
        return dest
    return download(remote.url, dest, md5=remote.md5, sha256=remote.sha256, progress=progress, timeout=timeout)


def download(
    url: str,
    dest: str | Path,
    md5: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest`` via ``dest.part`` (resumed if present), verify, rename; return ``dest``.

    Raises HydraMixError on a network failure (the partial file is kept for the next attempt) or a checksum
    mismatch (the partial file is deleted: resuming a corrupt file can never succeed).
    """
    dest = Path(dest)
    check_writable(files=(dest,))  # a read-only or full download folder fails here, not after the transfer
    part = dest.with_name(dest.name + ".part")
    manual = f"place the file at {dest} manually" + (
        f" (md5 {md5})" if md5 else f" (sha256 {sha256})" if sha256 else ""
    )
    try:
        _download_to(url, part, progress, timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(f"cannot download {url} ({reason}); {manual}") from None
    problem = checksum_problem(part, md5, sha256)
    if problem:
        part.unlink(missing_ok=True)
        raise HydraMixError(f"downloaded {url} has a {problem}; deleted it. Retry, or {manual}")
    os.replace(part, dest)
    return dest


def _download_to(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Append the rest of ``url`` to ``part``; restart from zero if the server ignores the Range header."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the partial file is already whole
            return
        raise
    with response:
        resumed = have and response.status == 206
        mode = "ab" if resumed else "wb"
        start = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with (
            open(part, mode) as out,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
            ) as bar,
        ):
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
        if total is not None and part.stat().st_size < total:
            raise OSError(f"connection closed after {part.stat().st_size} of {total} bytes")


def safe_member_name(name: str, archive: str | Path) -> str:
    """``name`` as a normalised relative POSIX path; HydraMixError if absolute or climbing out with ``..``."""
    normal = posixpath.normpath(name.replace("\\", "/"))
    if normal.startswith("/") or (len(normal) > 1 and normal[1] == ":") or normal == ".." or normal.startswith("../"):
        raise HydraMixError(f"{archive}: member '{name}' would escape the target directory (path traversal)")
    return "" if normal == "." else normal


def _check_link(member: tarfile.TarInfo, name: str, archive: str | Path) -> None:
    """A symlink/hardlink member must point inside the archive root (symlinks resolve from their folder)."""
    target = member.linkname.replace("\\", "/")
    if member.issym() and not target.startswith("/"):
        target = posixpath.join(posixpath.dirname(name), target)
    normal = posixpath.normpath(target)
    if normal.startswith("/") or normal == ".." or normal.startswith("../"):
        raise HydraMixError(
            f"{archive}: link '{member.name}' -> '{member.linkname}' points outside the target directory"
        )


class _Truncated(Exception):
    """The archive file ends before its content does; the message says what is missing."""


# What tarfile's ReadError says when the data stops inside a header or a member (CPython's wording).
_TARFILE_OUT_OF_DATA = ("unexpected end of data", "truncated header", "empty file")
_TAR_BLOCK = 512
_END_OF_ARCHIVE = bytes(2 * _TAR_BLOCK)  # two zero blocks end every tar
_READ_CHUNK = 1 << 16
_TAIL = 1 << 15  # bytes kept after handing them out: more than tarfile buffers ahead (one 10 KiB record)
# Compression by magic bytes: (name, decompressor factory, what the end of its stream is).
_COMPRESSIONS = (
    (b"\x1f\x8b", "gzip", lambda: zlib.decompressobj(wbits=16 + zlib.MAX_WBITS), "its CRC and length trailer"),
    (b"BZh", "bz2", bz2.BZ2Decompressor, "its end-of-stream marker and CRC"),
    (b"\xfd7zXZ\x00", "xz", lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ), "its end-of-stream footer"),
)


class _TarStream:
    """The tar bytes of an archive file, decompressed here (not by tarfile, which never checks a gzip trailer
    and accepts a stream that just stops), with the checks that need the whole file.

    ``read`` raises _Truncated when the file ends inside a compressed stream; concatenated streams (gzip
    members) are read one after another. ``end_blocks`` and ``finish`` check the tar's own end.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        head = raw.read(8)
        raw.seek(0)
        self.kind, self.new_decoder, self.trailer = "tar", None, ""
        for magic, kind, factory, trailer in _COMPRESSIONS:
            if head.startswith(magic):
                self.kind, self.new_decoder, self.trailer = kind, factory, trailer
        self.decoder = self.new_decoder() if self.new_decoder else None
        self.buffer, self.offset = b"", 0  # decoded bytes not yet handed out: buffer[offset:]
        self.position = 0  # bytes handed out so far
        self.tail: collections.deque[bytes] = collections.deque()  # the last >= _TAIL bytes handed out
        self.tail_size = 0
        self.input_done = False  # the whole file was read (and every compressed stream in it was complete)

    def _fill(self) -> bool:
        """Decode the next chunk of the file into the buffer; False at the end of a complete file."""
        chunk = self.raw.read(_READ_CHUNK)
        if not chunk:
            if self.decoder is not None and not self.decoder.eof:
                raise _Truncated(f"the {self.kind} stream ends before {self.trailer}")
            self.input_done = True
            return False
        if self.decoder is None:
            self.buffer, self.offset = chunk, 0
            return True
        parts = []
        while chunk:
            if self.decoder.eof:  # another compressed stream follows the last one
                self.decoder = self.new_decoder()
            parts.append(self.decoder.decompress(chunk))
            chunk = self.decoder.unused_data if self.decoder.eof else b""
        self.buffer, self.offset = b"".join(parts), 0
        return True

    def read(self, size: int = -1) -> bytes:
        parts, need = [], size if size >= 0 else float("inf")
        while need > 0:
            if self.offset >= len(self.buffer) and not self._fill():
                break
            take = self.buffer[self.offset : self.offset + int(min(need, len(self.buffer) - self.offset))]
            self.offset += len(take)
            need -= len(take)
            parts.append(take)
        out = b"".join(parts)
        self.position += len(out)
        if out:
            self.tail.append(out)
            self.tail_size += len(out)
            while self.tail_size - len(self.tail[0]) >= _TAIL:
                self.tail_size -= len(self.tail.popleft())
        return out

    def end_blocks(self, offset: int) -> bytes:
        """The (up to) 1024 bytes of the tar from ``offset``, where tarfile saw its last header."""
        start = self.position - self.tail_size
        if offset < start:  # cannot happen: tarfile buffers less than _TAIL ahead
            raise RuntimeError(f"tar offset {offset} is behind the kept tail (from {start})")
        if offset > self.position:
            self.read(offset - self.position)
        kept = b"".join(self.tail)[offset - start :]
        if len(kept) < len(_END_OF_ARCHIVE):
            kept += self.read(len(_END_OF_ARCHIVE) - len(kept))
        return kept[: len(_END_OF_ARCHIVE)]

    def finish(self) -> None:
        """Read the file to its end (the padding after the end-of-archive blocks, the compression trailer)."""
        while self.read(_READ_CHUNK):
            pass
        if self.position % _TAR_BLOCK:
            raise _Truncated(f"its tar data is {self.position} bytes, not a whole number of 512-byte blocks")


@dataclass(frozen=True)
class ArchiveMember:
    """One archive member: its normalised relative path and its bytes (None for directories and links)."""

    name: str
    data: bytes | None
    is_dir: bool = False


def iter_tar(path: str | Path, want: Callable[[str], bool] | None = None) -> Iterator[ArchiveMember]:
    """Stream the members of a .tar(.gz/.bz2/.xz) at ``path`` in archive order, without extracting.

    Regular files come with their bytes, directories with ``is_dir``, links (checked to stay inside) with
    no data. Files for which ``want(name)`` is false are passed over unread, so a multi-GB member we do not
    need is never held in memory. Devices and FIFOs are skipped. The archive is read to its end: after the
    last member come the tar end-of-archive blocks and then the end of the compressed stream (gzip: its CRC
    and length trailer), or it is an error that says the file is truncated. HydraMixError on a truncated or
    corrupt archive or an escaping member.
    """
    stream = None
    try:
        with open(path, "rb") as raw:
            stream = _TarStream(raw)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    name = safe_member_name(member.name, path)
                    if member.isdir():
                        yield ArchiveMember(name, None, is_dir=True)
                    elif member.issym() or member.islnk():
                        _check_link(member, name, path)
                        yield ArchiveMember(name, None)
                    elif member.isfile() and (want is None or want(name)):
                        f = tar.extractfile(member)
                        yield ArchiveMember(name, f.read() if f is not None else b"")
                # tarfile stops at the first block that is not a header: zeros, a cut, or garbage.
                end = stream.end_blocks(tar.offset)
            if end != _END_OF_ARCHIVE:
                if len(end) < len(_END_OF_ARCHIVE) and stream.input_done:
                    raise _Truncated(f"the tar data ends at byte {stream.position}, before its end-of-archive blocks")
                raise HydraMixError(
                    f"{path}: corrupt archive: no valid tar header or end-of-archive blocks at byte {tar.offset} "
                    "of its tar data"
                )
            stream.finish()
    except _Truncated as exc:
        raise HydraMixError(
            f"{path}: truncated archive: {exc}; the file is incomplete (get or copy it again)"
        ) from None
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
        if stream is not None and stream.input_done and str(exc) in _TARFILE_OUT_OF_DATA:
            where = f"at byte {stream.position}, inside a header or member" if stream.position else "before it starts"
            raise HydraMixError(
                f"{path}: truncated archive: the tar data ends {where} ({exc}); the file is incomplete "
                "(get or copy it again)"
            ) from None
        raise HydraMixError(f"{path}: corrupt or unreadable archive ({exc})") from None


def iter_zip(path: str | Path, want: Callable[[str], bool] | None = None) -> Iterator[ArchiveMember]:
    """Members of the zip file at ``path``, like ``iter_tar`` (zip entries carry no links)."""
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = safe_member_name(info.filename, path)
                if info.is_dir():
                    yield ArchiveMember(name, None, is_dir=True)
                elif want is None or want(name):
                    yield ArchiveMember(name, zf.read(info))
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise HydraMixError(f"{path}: corrupt or unreadable zip archive ({exc})") from None


def read_members(path: str | Path, wanted: set[str]) -> dict[str, bytes]:
    """The bytes of the members named in ``wanted`` (normalised relative paths) from a tar or zip archive.

    HydraMixError naming the archive and the missing names if any is absent.
    """
    members = iter_zip(path, wanted.__contains__) if zipfile.is_zipfile(path) else iter_tar(path, wanted.__contains__)
    found: dict[str, bytes] = {}
    for member in members:
        if member.name in wanted and member.data is not None:
            found[member.name] = member.data
    missing = sorted(wanted - set(found))
    if missing:
        raise HydraMixError(f"{path}: archive lacks {', '.join(missing)}; is it the right file?")
    return found


def safe_extract(archive: str | Path, target: str | Path) -> Path:
    """Extract a tar or zip ``archive`` into ``target`` atomically (temp dir, then rename); return ``target``.

    Absolute paths, ``..`` and links pointing outside ``target`` raise HydraMixError; the temporary
    directory is then removed, so nothing is left behind and ``target`` is untouched. Links that stay inside
    are not materialised.
    """
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    members = iter_zip(archive) if zipfile.is_zipfile(archive) else iter_tar(archive)
    try:
        tmp.mkdir(parents=True)
        for member in members:
            if not member.name:
                continue
            out = tmp / member.name
            if member.is_dir:
                out.mkdir(parents=True, exist_ok=True)
            elif member.data is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(member.data)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target
