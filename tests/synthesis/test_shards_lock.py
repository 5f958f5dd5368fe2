"""One writer per directory (``lock``)."""

from __future__ import annotations

import os

import pytest

from pipeline.core.errors import HydraMixError
from pipeline.synthesis.shards.format import LOCK
from pipeline.synthesis.shards.lock import lock_directory


def test_lock_refuses_a_second_writer_and_is_gone_after_release(tmp_path):
    ds = tmp_path / "ds"
    with lock_directory(ds):
        assert (ds / LOCK).read_text() == f"{os.getpid()}\n"
        with pytest.raises(HydraMixError, match=rf"another synthesize is writing to {ds} \(pid {os.getpid()}\)"):
            with lock_directory(ds):
                pass  # pragma: no cover
    assert not (ds / LOCK).exists()
    (ds / LOCK).write_text("12345\n")  # left by a killed writer: its lock died with it
    with lock_directory(ds):
        assert (ds / LOCK).read_text() == f"{os.getpid()}\n"
    assert list(ds.iterdir()) == []
