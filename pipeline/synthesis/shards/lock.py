"""One writer per dataset directory: ``lock_directory``, an ``fcntl.flock`` on ``DIR/.synthesize.lock``.

Where it sits: subset + generator -> **shards** -> score / classifier; ``synthesize`` takes the lock before it
claims the directory (``plan.plan_dataset``) and holds it until the manifest is written. The library writers
(``dataset_writer``) take no lock themselves.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from pipeline.core.errors import HydraMixError
from pipeline.synthesis.shards.format import LOCK


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
