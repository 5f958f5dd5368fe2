"""One shard rendered on the caller's thread while a writer thread encodes and tars the previous chunk.

Where it sits: subset + generator -> **shards** -> score / classifier; ``dataset_writer`` writes every shard it
renders through ``write_rendered_shard``, which feeds ``writer.write_shard`` from a background thread and leaves no
temporary file behind on a failure or Ctrl-C.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import HydraMixError
from pipeline.synthesis.shards.format import Renderer, SampleLike
from pipeline.synthesis.shards.writer import write_shard

_DONE = object()


class _Aborted(Exception):
    """Raised inside the writer thread when rendering failed: the shard must not be completed."""


def write_rendered_shard(
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
