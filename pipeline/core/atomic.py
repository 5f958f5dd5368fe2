"""Atomic file and directory writes: an interrupted stage never leaves a half-written output under its final name.

Every failure to write (read-only folder, full disk, a file where a folder should be) is a ``WriteError`` naming
the output; ``check_writable`` finds most of them before a stage starts its work.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.core.errors import WriteError


def os_reason(exc: OSError) -> str:
    """The OS's reason for ``exc`` in one line, with the file it concerns: "No space left on device (x.tmp)"."""
    reason = exc.strerror or (str(exc).splitlines() or [type(exc).__name__])[0]
    return f"{reason} ({exc.filename})" if exc.filename else reason


def check_writable(files: tuple[Path, ...] = (), dirs: tuple[Path, ...] = ()) -> None:
    """Fail fast, before any work: for each output file in ``files`` and output directory in ``dirs``, create its
    parent folders and create, write and remove a probe file beside it (where the temporary output will go).

    WriteError naming the output if a step fails, or if a file output is an existing directory (or the
    reverse). A probe cannot reserve space: a disk that fills up later still fails at the write, as a WriteError.
    """
    for path, is_dir in [(Path(p), False) for p in files] + [(Path(p), True) for p in dirs]:
        if path.exists() and path.is_dir() != is_dir:
            kind = "a folder" if path.is_dir() else "a file"
            raise WriteError(f"cannot write {path}: it exists and is {kind} (checked before starting)")
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise WriteError(f"cannot write {path}: {blocker} is a file, not a folder (checked before starting)")
        probe = path.with_name(f".{path.name}.probe-{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, b"probe")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise WriteError(f"cannot write {path}: {os_reason(exc)} (checked before starting)") from None
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()


def write_file(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it to ``path``; on any error the
    temporary file is removed and ``path`` (old content or absent) is untouched."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {os_reason(exc)}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``write_file``)."""
    write_file(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as sorted, indented JSON atomically."""
    write_file(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n"))


def save_figure(fig: Any, path: str | Path) -> None:
    """Save a matplotlib figure as PNG atomically, without the 'Software' entry (bytes independent of the
    matplotlib version)."""
    write_file(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None}))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``path``; on success it replaces ``path``, on error it is removed.

    The old ``path`` (if any) survives until the new one is complete.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {os_reason(exc)}") from None
    try:
        yield tmp
    except WriteError as exc:  # name the output the user asked for, not its temporary folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteError(str(exc).replace(str(tmp), str(path))) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old")
    try:
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except OSError as exc:
        if old.exists() and not path.exists():  # put the previous version back
            with contextlib.suppress(OSError):
                os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteError(f"cannot write {path}: {os_reason(exc)}") from None
    shutil.rmtree(old, ignore_errors=True)
