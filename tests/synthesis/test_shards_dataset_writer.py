"""Writing a whole dataset (``dataset_writer``, ``writer_thread``) with a tiny stand-in renderer: chunks, ranks,
failures, Ctrl-C; and the helpers the other shard tests share."""

from __future__ import annotations

import errno
import hashlib
import json
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.atomic import write_json
from pipeline.core.errors import HydraMixError
from pipeline.synthesis.shards import dataset_writer, writer
from pipeline.synthesis.shards.dataset_writer import finish_dataset, write_dataset_shards
from pipeline.synthesis.shards.format import CARD, MANIFEST, PLAN, Sample, ShardConfig, n_shards, shards_for_rank
from pipeline.synthesis.shards.plan import plan_dataset
from pipeline.synthesis.shards.verification import verify

CLASSES = ("a", "b", "c")


class StandInRenderer:
    """Renders sample id s as a deterministic 8x8 image of class s % 3, like the Synthesizer contract (and with
    the provenance keys verify cross-checks: sample_id, label, class)."""

    def __init__(self, n_per_class: int, fail_at: int | None = None) -> None:
        self.total = n_per_class * len(CLASSES)
        self.fail_at = fail_at
        self.calls: list[list[int]] = []

    def render(self, sample_ids: np.ndarray) -> list[Sample]:
        self.calls.append([int(s) for s in sample_ids])
        if self.fail_at is not None and self.fail_at in sample_ids:
            raise RuntimeError("renderer broke")
        out = []
        for s in sample_ids:
            img = np.random.default_rng(int(s)).integers(0, 256, (8, 8, 3), dtype=np.uint8)
            label = int(s) % len(CLASSES)
            meta = {"sample_id": int(s), "label": label, "class": CLASSES[label], "sources": [1, 2]}
            out.append(Sample(f"{int(s):08d}", img, label, meta))
        return out


def write_dataset(directory: Path, renderer: StandInRenderer, cfg: ShardConfig, batch_size: int = 4) -> dict:
    """A minimal dataset writer as the synthesize stage does it: plan, shards, manifest."""
    plan_dataset(directory, {"what": "test"}, force=False)
    written = write_dataset_shards(directory, renderer, cfg, batch_size, progress=False)
    return finish_dataset(
        directory,
        [written[i] for i in sorted(written)],
        class_names=CLASSES,
        resolution=8,
        counts={c: renderer.total // 3 for c in CLASSES},
        identity={"what": "test"},
        card="card\n",
    )


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.tar"))}


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes (a deletion or an edit anywhere shows)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def edit_manifest(ds: Path, edit) -> None:
    manifest = json.loads((ds / MANIFEST).read_text())
    edit(manifest)
    write_json(ds / MANIFEST, manifest)


def interrupted_at_shard(directory: Path, cfg: ShardConfig, shard: int, n_per_class: int = 4) -> None:
    """The state a kill leaves: the plan and the complete shards before ``shard`` (and no manifest)."""

    class Interrupting(StandInRenderer):
        def render(self, sample_ids):
            if sample_ids[0] >= shard * cfg.shard_size:
                raise KeyboardInterrupt
            return super().render(sample_ids)

    with pytest.raises(KeyboardInterrupt):
        write_dataset(directory, Interrupting(n_per_class), cfg)
    assert not list(directory.glob("*.tmp")) and not (directory / MANIFEST).exists()


# ------------------------------------------------------------------------------------------------------------
# Shards, ranks and the manifest


def test_chunks_start_at_each_shard_start(tmp_path):
    renderer = StandInRenderer(4)  # 12 samples, shards of 5, batches of 2
    write_dataset(tmp_path / "ds", renderer, ShardConfig("toy", 5), batch_size=2)
    assert renderer.calls == [[0, 1], [2, 3], [4], [5, 6], [7, 8], [9], [10, 11]]


def test_split_across_ranks_is_byte_identical(tmp_path):
    cfg = ShardConfig("toy", 4)
    whole = StandInRenderer(5)
    for directory in ("one", "split"):
        plan_dataset(tmp_path / directory, {"what": "test"}, force=False)
    write_dataset_shards(tmp_path / "one", whole, cfg, 3, progress=False)
    count = n_shards(whole.total, cfg.shard_size)
    parts = [shards_for_rank(count, r, 2) for r in range(2)]
    assert parts == [[0, 2], [1, 3]]
    for part in parts:  # two separate "processes", each with its own renderer
        write_dataset_shards(tmp_path / "split", StandInRenderer(5), cfg, 3, indices=part, progress=False)
    assert digests(tmp_path / "one") == digests(tmp_path / "split") and len(digests(tmp_path / "one")) == 4
    with pytest.raises(HydraMixError):
        shards_for_rank(4, 2, 2)


def test_manifest_lists_every_shard(tmp_path):
    manifest = write_dataset(tmp_path / "ds", StandInRenderer(3), ShardConfig("toy", 4))
    on_disk = json.loads((tmp_path / "ds" / MANIFEST).read_text())
    assert on_disk == manifest
    assert on_disk["total"] == 9 and on_disk["counts"] == {"a": 3, "b": 3, "c": 3}
    assert digests(tmp_path / "ds") == {s["name"]: s["sha256"] for s in on_disk["shards"]}
    assert (tmp_path / "ds" / CARD).read_text() == "card\n"


def test_write_dataset_split_writes_the_manifest_when_the_last_share_is_done(tmp_path):
    kwargs = dict(identity={"what": "split"}, class_names=CLASSES, resolution=8, card=lambda m: f"{m['total']}\n")
    cfg = ShardConfig("toy", 4)
    manifest, written = dataset_writer.write_dataset(
        tmp_path / "ds", StandInRenderer(5), cfg, 4, indices=[1, 3], progress=False, **kwargs
    )
    assert manifest is None and sorted(written) == [1, 3] and not (tmp_path / "ds" / MANIFEST).exists()
    manifest, written = dataset_writer.write_dataset(
        tmp_path / "ds", StandInRenderer(5), cfg, 4, indices=[0, 2], progress=False, **kwargs
    )
    assert manifest is not None and manifest["counts"] == {"a": 5, "b": 5, "c": 5}
    assert (tmp_path / "ds" / CARD).read_text() == "15\n"
    assert verify(tmp_path / "ds") == []
    # the same dataset again: nothing is rendered, the manifest is identical
    renderer = StandInRenderer(5)
    again, written = dataset_writer.write_dataset(tmp_path / "ds", renderer, cfg, 4, progress=False, **kwargs)
    assert again == manifest and renderer.calls == [] and not any(e["rendered"] for e in written.values())


def test_render_failure_and_full_disk_leave_no_final_shard(tmp_path, monkeypatch):
    cfg = ShardConfig("toy", 6)
    plan_dataset(tmp_path / "ds", {"what": "test"}, force=False)
    with pytest.raises(RuntimeError, match="renderer broke"):
        write_dataset_shards(tmp_path / "ds", StandInRenderer(4, fail_at=9), cfg, 2, progress=False)
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == [PLAN, "toy-000000.tar"]

    real = writer._tar_member_bytes
    calls = {"n": 0}

    def full_disk(name, data):
        calls["n"] += 1
        if calls["n"] == 5:  # mid-shard
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(name, data)

    monkeypatch.setattr(writer, "_tar_member_bytes", full_disk)
    with pytest.raises(HydraMixError, match="disk full"):
        write_dataset_shards(tmp_path / "ds", StandInRenderer(4), cfg, 2, progress=False)
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == [PLAN, "toy-000000.tar"]


# ------------------------------------------------------------------------------------------------------------
# Interruption: no temporary survives Ctrl-C


def interrupt_main_thread_at(n: int, monkeypatch) -> None:
    """Make the writer thread deliver SIGINT to the main thread while it encodes sample ``n`` (the main thread
    is then rendering, handing a chunk over or waiting for the writer), and dawdle so that the main thread's
    handling runs while the shard is half written."""
    real = writer._sample_members
    calls = {"n": 0}

    def members(sample):
        calls["n"] += 1
        if calls["n"] == n:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            time.sleep(0.2)
        return real(sample)

    monkeypatch.setattr(writer, "_sample_members", members)


@pytest.mark.parametrize("at_sample", [2, 5, 11])
def test_sigint_anywhere_in_a_shard_leaves_no_temporary(tmp_path, monkeypatch, at_sample):
    """Issue 14.12: whatever the main thread is doing when Ctrl-C arrives, the exception leaves only after the
    writer thread has removed its temporary file."""
    ds = tmp_path / "ds"
    plan_dataset(ds, {"what": "test"}, force=False)
    interrupt_main_thread_at(at_sample, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        write_dataset_shards(ds, StandInRenderer(4), ShardConfig("toy", 12), 2, progress=False)
    assert not list(ds.glob("*.tmp"))
    assert sorted(p.name for p in ds.iterdir()) in ([PLAN], [PLAN, "toy-000000.tar"])


def test_keyboard_interrupt_from_the_renderer_mid_shard_leaves_no_temporary(tmp_path):
    ds, cfg = tmp_path / "ds", ShardConfig("toy", 4)
    interrupted_at_shard(ds, cfg, 1)  # the first chunk of shard 1 is handed over, the second interrupted
    assert sorted(p.name for p in ds.iterdir()) == [PLAN, "toy-000000.tar"]
