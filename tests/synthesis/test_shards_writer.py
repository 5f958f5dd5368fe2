"""One shard on disk (``writer``): deterministic bytes equal to ``tarfile``'s, bad samples refused, temporaries
created afresh."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from test_shards_dataset_writer import StandInRenderer, write_dataset

from pipeline.core.digest import file_digest
from pipeline.synthesis.shards import writer
from pipeline.synthesis.shards.format import Sample, ShardConfig
from pipeline.synthesis.shards.plan import plan_dataset
from pipeline.synthesis.shards.verification import verify
from pipeline.synthesis.shards.writer import write_shard


def test_write_shard_is_deterministic_and_tar_metadata_fixed(tmp_path):
    samples = StandInRenderer(2).render(np.arange(6))
    a = write_shard(tmp_path / "x-000000.tar", samples)
    b = write_shard(tmp_path / "y-000000.tar", samples)
    assert a["sha256"] == b["sha256"] == file_digest(tmp_path / "x-000000.tar")
    assert a["count"] == 6 and a["name"] == "x-000000.tar"
    with tarfile.open(tmp_path / "x-000000.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members[:3]] == ["00000000.png", "00000000.cls", "00000000.json"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}
    assert not list(tmp_path.glob("*.tmp"))


def test_tar_bytes_equal_what_tarfile_writes(tmp_path):
    samples = StandInRenderer(2).render(np.arange(5))
    ours = write_shard(tmp_path / "ours-000000.tar", samples)
    with tarfile.open(tmp_path / "ref.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            for name, data in writer._sample_members(sample):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
    assert (tmp_path / "ours-000000.tar").read_bytes() == (tmp_path / "ref.tar").read_bytes()
    assert ours["sha256"] == file_digest(tmp_path / "ref.tar")
    empty = write_shard(tmp_path / "empty-000000.tar", [])
    assert empty["count"] == 0 and (tmp_path / "empty-000000.tar").stat().st_size == tarfile.RECORDSIZE


def test_write_shard_rejects_bad_samples_and_leaves_nothing(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    for bad in (
        [Sample("has.dot", img, 0, {})],
        [Sample("k", img, 0, {}), Sample("k", img, 0, {})],
        [Sample("k", np.zeros((4, 4), np.uint8), 0, {})],
    ):
        with pytest.raises(ValueError):
            write_shard(tmp_path / "s-000000.tar", bad)
        assert not list(tmp_path.iterdir())


def test_temporaries_are_created_afresh_never_written_through_a_link(tmp_path):
    """A link planted under a temporary's name (DIR/x.tar.tmp -> a file of the user's) is replaced, and the file
    it pointed at keeps its bytes."""
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    ds = tmp_path / "ds"
    plan_dataset(ds, {"what": "test"}, force=False)  # an interrupted run's directory
    for name in ("toy-000000.tar.tmp", "README.md.tmp", "manifest.json.tmp", "plan.json.tmp"):
        (ds / name).symlink_to(precious)
    write_dataset(ds, StandInRenderer(2), ShardConfig("toy", 10))
    assert precious.read_text() == "keep me" and verify(ds) == []
    assert not list(ds.glob("*.tmp"))
