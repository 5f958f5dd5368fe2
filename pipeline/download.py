"""Resumable, atomic, checksum-verified downloads, and archive reading that refuses escaping members.

A download goes to ``<dest>.part`` (resumed with an HTTP Range request when a partial file exists), is
verified against its md5/sha256, and only then renamed to ``dest``: a file under its final name is always
complete and correct. Archives are read in place (members streamed into memory); the extraction helper for
callers that do need files on disk rejects absolute paths, ``..`` components and links pointing outside the
target directory.
"""

from __future__ import annotations

import hashlib
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

from pipeline.errors import DownloadError, HydraMixError
from pipeline.progress import tqdm

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


def file_digest(path: str | Path, algorithm: str) -> str:
    """Hex digest (``md5`` or ``sha256``) of the file at ``path``, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


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
    dest.parent.mkdir(parents=True, exist_ok=True)
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
    need is never held in memory. Devices and FIFOs are skipped. HydraMixError on a corrupt archive or an
    escaping member.
    """
    try:
        with tarfile.open(path, mode="r|*") as tar:
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
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
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
