"""Claiming a directory and resuming (``plan``): a different dataset is refused, and a resume keeps only the
shards it can prove."""

from __future__ import annotations

import json

import pytest
from test_shards_dataset_writer import StandInRenderer, digests, interrupted_at_shard, tree, write_dataset

from pipeline.core.atomic import write_json
from pipeline.core.digest import file_digest
from pipeline.core.errors import HydraMixError
from pipeline.synthesis.shards.dataset_writer import write_dataset_shards
from pipeline.synthesis.shards.format import FORMAT, PLAN, ShardConfig
from pipeline.synthesis.shards.plan import plan_dataset
from pipeline.synthesis.shards.verification import verify
from pipeline.synthesis.shards.writer import write_shard


def test_plan_refuses_a_different_dataset_unless_forced(tmp_path):
    ds = tmp_path / "ds"
    write_dataset(ds, StandInRenderer(2), ShardConfig("toy", 4))
    (ds / "notes.txt").write_text("user file")
    with pytest.raises(HydraMixError, match="different synthetic dataset.*seed"):
        plan_dataset(ds, {"what": "test", "seed": 1}, force=False)
    plan_dataset(ds, {"what": "test", "seed": 1}, force=True)
    assert sorted(p.name for p in ds.iterdir()) == ["notes.txt", PLAN]
    # a plan (interrupted run) counts as a claim too
    with pytest.raises(HydraMixError, match="different"):
        plan_dataset(ds, {"what": "other"}, force=False)
    plan_dataset(ds, {"what": "test", "seed": 1}, force=False)  # same identity: resume is fine


def test_plan_refuses_shards_of_unknown_origin(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "toy-000000.tar").write_bytes(b"")
    with pytest.raises(HydraMixError, match="unknown origin"):
        plan_dataset(tmp_path / "ds", {"x": 1}, force=False)


def test_plan_names_the_differing_nested_key(tmp_path):
    plan_dataset(tmp_path, {"synthesis": {"seed": 0, "n": 1}, "masks": (2, 3)}, force=False)
    plan_dataset(tmp_path, {"synthesis": {"seed": 0, "n": 1}, "masks": (2, 3)}, force=False)
    with pytest.raises(HydraMixError, match=r"differs in synthesis\.seed\)"):
        plan_dataset(tmp_path, {"synthesis": {"seed": 1, "n": 1}, "masks": (2, 3)}, force=False)


def test_another_shard_name_is_a_different_dataset_not_a_bad_entry(tmp_path):
    ds = tmp_path / "ds"
    plan_dataset(ds, {"name": "toy"}, force=False)
    write_dataset_shards(ds, StandInRenderer(2), ShardConfig("toy", 4), 2, progress=False)
    with pytest.raises(HydraMixError, match=r"different synthetic dataset \(differs in name\)"):
        plan_dataset(ds, {"name": "other"}, force=False)


def test_write_dataset_shards_needs_a_claimed_directory(tmp_path):
    with pytest.raises(HydraMixError, match="not claimed"):
        write_dataset_shards(tmp_path, StandInRenderer(1), ShardConfig("toy", 4), 2, progress=False)


# ------------------------------------------------------------------------------------------------------------
# Resume proves what it keeps


def test_resume_keeps_complete_shards_and_redoes_missing(tmp_path):
    cfg = ShardConfig("toy", 4)
    write_dataset(tmp_path / "ds", StandInRenderer(5), cfg)
    before = digests(tmp_path / "ds")
    (tmp_path / "ds" / "toy-000001.tar").unlink()
    (tmp_path / "ds" / "toy-000002.tar").write_bytes(b"truncated")  # cannot happen via rename, but be safe
    (tmp_path / "ds" / "toy-000003.tar.tmp").write_bytes(b"partial")  # left by a killed run
    renderer = StandInRenderer(5)
    write_dataset(tmp_path / "ds", renderer, cfg)
    assert sorted({s // 4 for call in renderer.calls for s in call}) == [1, 2]
    assert digests(tmp_path / "ds") == before
    assert verify(tmp_path / "ds") == []


def test_resume_replaces_a_corrupt_shard_listed_in_the_manifest(tmp_path):
    ds = tmp_path / "ds"
    write_dataset(ds, StandInRenderer(4), ShardConfig("toy", 4))
    before = digests(ds)
    path = ds / "toy-000001.tar"
    data = bytearray(path.read_bytes())
    data[700] ^= 0xFF
    path.write_bytes(bytes(data))
    plan_dataset(ds, {"what": "test"}, force=False)
    written = write_dataset_shards(ds, StandInRenderer(4), ShardConfig("toy", 4), 4, progress=False)
    assert {e["name"]: e["sha256"] for e in written.values()} == before == digests(ds)
    assert [i for i, e in written.items() if e["rendered"]] == [i for i, e in written.items() if e["repaired"]] == [1]


def test_the_plan_records_each_shard_written(tmp_path):
    ds, cfg = tmp_path / "ds", ShardConfig("toy", 4)
    interrupted_at_shard(ds, cfg, 2)
    plan = json.loads((ds / PLAN).read_text())
    assert plan["what"] == "test" and plan["format"] == FORMAT
    assert plan["shards"] == [{"name": p.name, "sha256": file_digest(p), "count": 4} for p in sorted(ds.glob("*.tar"))]
    assert [s["name"] for s in plan["shards"]] == ["toy-000000.tar", "toy-000001.tar"]


@pytest.mark.parametrize("damage", ["flip", "other-shard", "truncate", "empty-tar", "unrecorded"])
def test_resume_renders_a_damaged_or_unproven_shard_again(tmp_path, damage):
    """Issue 14.5: a shard under its final name is kept only if it hashes to its record in the plan."""
    cfg = ShardConfig("toy", 4)
    clean = tmp_path / "clean"
    write_dataset(clean, StandInRenderer(4), cfg)
    ds = tmp_path / "ds"
    interrupted_at_shard(ds, cfg, 2)
    victim = ds / "toy-000001.tar"
    if damage == "flip":
        data = bytearray(victim.read_bytes())
        data[700] ^= 0xFF  # inside the first PNG: still a tar with 4 complete samples
        victim.write_bytes(bytes(data))
    elif damage == "other-shard":
        victim.write_bytes((ds / "toy-000000.tar").read_bytes())
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:-2048])
    elif damage == "empty-tar":
        write_shard(victim, [])
    else:  # a complete shard whose record never reached the plan (killed between rename and record)
        plan = json.loads((ds / PLAN).read_text())
        plan["shards"] = [s for s in plan["shards"] if s["name"] != victim.name]
        write_json(ds / PLAN, plan)
    renderer = StandInRenderer(4)
    write_dataset(ds, renderer, cfg)
    assert sorted({s // 4 for call in renderer.calls for s in call}) == [1, 2]  # shard 0 kept, 1 rendered again
    assert tree(ds) == tree(clean) and verify(ds) == []


def test_a_plan_of_an_older_version_records_nothing_so_everything_is_rendered_again(tmp_path):
    cfg = ShardConfig("toy", 4)
    ds = tmp_path / "ds"
    interrupted_at_shard(ds, cfg, 2)
    write_json(ds / PLAN, {"format": FORMAT, "what": "test"})  # no "shards" key
    renderer = StandInRenderer(4)
    write_dataset(ds, renderer, cfg)
    assert sorted({s // 4 for call in renderer.calls for s in call}) == [0, 1, 2]
    assert verify(ds) == []
