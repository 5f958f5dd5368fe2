"""torch files (models, training checkpoints): written atomically, read with ``weights_only=True``, errors in
one line of our own.

``save_torch`` serialises in memory and then writes the bytes (``pipeline.core.atomic.write_bytes``): a full disk is
then an ``OSError`` we turn into a ``WriteError``, not torch's ``RuntimeError: [enforce fail at
inline_container.cc]``, and the bytes do not depend on the file's name (torch names the archive's top folder
after the file it writes to). ``load_torch`` never passes torch's text on: its advice for a file it refuses is to
load it with ``weights_only=False``, which would run whatever code the file holds.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from pipeline.core.atomic import write_bytes
from pipeline.core.errors import HydraMixError, WriteError

# What torch's weights-only unpickler says when a pickle asks for a callable or class it does not allow.
_UNSAFE_GLOBAL = re.compile(r"GLOBAL (\S+?)[ .]*(?: was not an allowed global| whose module)")


def save_torch(path: str | Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically (WriteError if it cannot be written)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def load_error(path: str | Path, what: str, exc: BaseException) -> HydraMixError:
    """Our one-line error for ``exc``, raised by ``torch.load(path, weights_only=True)`` (or by a library that
    called it) on a file that should be a ``what``."""
    if isinstance(exc, pickle.UnpicklingError):
        unsafe = _UNSAFE_GLOBAL.search(str(exc))
        if unsafe:
            return HydraMixError(
                f"{path}: refused to load this {what}: it asks to import {unsafe.group(1)}, which could run code "
                "(a file of weights needs nothing but tensors and plain containers)"
            )
        return HydraMixError(
            f"{path}: not a readable {what}: not a torch file of tensors and plain containers (a foreign pickle "
            "or another format; refused without running any of it)"
        )
    first = str(exc).split(". ")[0].splitlines()[0][:160] if str(exc) else ""
    detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return HydraMixError(f"{path}: not a readable {what} (corrupt or truncated? {detail})")


def load_torch(path: str | Path, what: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; HydraMixError (one line, see ``load_error``) if it fails."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says it all
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated, foreign or unsafe files
        raise load_error(path, what, exc) from None


def checkpoint_not_written(exc: WriteError, step: int, iterations: int, saved_step: int | None) -> WriteError:
    """The error of a training run whose checkpoint at ``step`` could not be written: where it stopped and which
    checkpoint (of ``saved_step``, or none) a rerun resumes from."""
    kept = f"the checkpoint of step {saved_step} is kept" if saved_step else "no checkpoint was kept"
    return WriteError(
        f"{exc}; training stopped at step {step} of {iterations} and {kept}; free space and rerun the same command "
        "to resume"
    )


def outputs_not_written(exc: WriteError, checkpoint: Path | None, iterations: int) -> WriteError:
    """The error of a finished training run whose outputs could not be written: whether its final checkpoint is
    kept, so that a rerun writes them without training again."""
    if checkpoint is None:
        return WriteError(f"{exc}; no training checkpoint was kept (no --checkpoint given)")
    return WriteError(
        f"{exc}; the training checkpoint at {checkpoint} (all {iterations} steps) is kept: free space and rerun the "
        "same command to write the outputs without training again"
    )
