"""Shard format, writing, reading and verifying, with hand-made samples and a tiny stand-in renderer."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import tarfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.atomic import write_json
from pipeline.core.digest import file_digest
from pipeline.core.errors import HydraMixError
from pipeline.synthesis.shards import dataset_writer, reader, verification, writer
from pipeline.synthesis.shards.dataset_writer import finish_dataset, write_dataset_shards
from pipeline.synthesis.shards.format import (
    CARD,
    FORMAT,
    LOCK,
    MANIFEST,
    PLAN,
    Sample,
    ShardConfig,
    n_shards,
    shards_for_rank,
)
from pipeline.synthesis.shards.lock import lock_directory
from pipeline.synthesis.shards.plan import plan_dataset
from pipeline.synthesis.shards.reader import iter_samples, load_images, read_manifest, shard_paths
from pipeline.synthesis.shards.verification import verify, verify_dataset
from pipeline.synthesis.shards.writer import write_shard

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


def test_roundtrip_iter_samples_and_load_images(tmp_path):
    renderer = StandInRenderer(5)
    manifest = write_dataset(tmp_path / "ds", renderer, ShardConfig("toy", 4))
    assert [s["name"] for s in manifest["shards"]] == [f"toy-{i:06d}.tar" for i in range(4)]
    assert [s["count"] for s in manifest["shards"]] == [4, 4, 4, 3]
    expected = renderer.render(np.arange(15))
    got = list(iter_samples(tmp_path / "ds"))
    assert [s.key for s in got] == [s.key for s in expected]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g.image, e.image)
        assert g.label == e.label and g.meta == e.meta
    images = load_images(tmp_path / "ds")
    assert images.images.shape == (15, 8, 8, 3) and images.class_names == CLASSES
    np.testing.assert_array_equal(images.labels, np.arange(15) % 3)
    np.testing.assert_array_equal(images.images[7], expected[7].image)
    assert verify(tmp_path / "ds") == []
    assert not (tmp_path / "ds" / PLAN).exists()


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


def test_verify_catches_flipped_byte_missing_and_unlisted_shards(tmp_path):
    ds = tmp_path / "ds"
    write_dataset(ds, StandInRenderer(4), ShardConfig("toy", 4))
    path = ds / "toy-000001.tar"
    data = bytearray(path.read_bytes())
    data[700] ^= 0xFF  # inside the first PNG
    path.write_bytes(bytes(data))
    (ds / "toy-000002.tar").unlink()
    problems = verify(ds)
    assert any("toy-000001.tar: sha256" in p for p in problems)
    assert any("toy-000002.tar: missing" in p for p in problems)
    with pytest.raises(HydraMixError, match="hydramix verify"):
        load_images(ds)
    (ds / "extra-000000.tar").write_bytes(b"")
    assert any("not listed" in p for p in verify(ds))
    assert verify(tmp_path / "nothing") and "no manifest.json" in verify(tmp_path / "nothing")[0]


def test_verify_checks_labels_against_classes(tmp_path):
    ds = tmp_path / "ds"
    manifest = write_dataset(ds, StandInRenderer(2), ShardConfig("toy", 10))
    manifest["class_names"] = ["a", "b"]
    manifest["counts"] = {"a": 2, "b": 2}
    write_json(ds / MANIFEST, manifest)
    problems = verify(ds)
    assert any("label 2 out of range" in p for p in problems)


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


def test_stock_webdataset_reads_the_shards(tmp_path):
    wds = pytest.importorskip("webdataset")
    ds = tmp_path / "ds"
    write_dataset(ds, StandInRenderer(3), ShardConfig("toy", 4))
    urls = [str(p) for p in shard_paths(ds)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("png", "cls", "json")
        rows = list(dataset)
    expected = StandInRenderer(3).render(np.arange(9))
    assert len(rows) == 9
    for (img, cls, meta), e in zip(rows, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(img), e.image)
        assert cls == e.label and meta == e.meta


def test_manifest_lists_every_shard(tmp_path):
    manifest = write_dataset(tmp_path / "ds", StandInRenderer(3), ShardConfig("toy", 4))
    on_disk = json.loads((tmp_path / "ds" / MANIFEST).read_text())
    assert on_disk == manifest
    assert on_disk["total"] == 9 and on_disk["counts"] == {"a": 3, "b": 3, "c": 3}
    assert digests(tmp_path / "ds") == {s["name"]: s["sha256"] for s in on_disk["shards"]}
    assert (tmp_path / "ds" / CARD).read_text() == "card\n"


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


def test_plan_names_the_differing_nested_key(tmp_path):
    plan_dataset(tmp_path, {"synthesis": {"seed": 0, "n": 1}, "masks": (2, 3)}, force=False)
    plan_dataset(tmp_path, {"synthesis": {"seed": 0, "n": 1}, "masks": (2, 3)}, force=False)
    with pytest.raises(HydraMixError, match=r"differs in synthesis\.seed\)"):
        plan_dataset(tmp_path, {"synthesis": {"seed": 1, "n": 1}, "masks": (2, 3)}, force=False)


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


def test_licence_caveat_follows_the_source_dataset():
    from pipeline.synthesis.dataset_card import licence_caveat

    assert "ciFAIR" in licence_caveat({"dataset": "cifair100"})
    assert "Krizhevsky" in licence_caveat({"dataset": "folder", "source": "/data/cifar10-jpeg.tar.gz"})
    assert "ImageNet" in licence_caveat({"dataset": "stl10"})
    assert "not recorded" in licence_caveat({"dataset": "folder", "source": "/my/photos"})


# ------------------------------------------------------------------------------------------------------------
# Trust boundary: names read from a manifest or plan


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes (a deletion or an edit anywhere shows)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "bad",
    [
        "../victimdir/victim.txt",
        "ABSOLUTE",  # replaced by the victim's absolute path
        "toy-000001.tar/../../victimdir/victim.txt",
        "toy-000001.tar\n",
        "other-000001.tar",  # a plain shard name, but of another dataset
        "toy-1.tar",
        "",
        7,
    ],
)
@pytest.mark.parametrize("record", [MANIFEST, PLAN])
def test_a_crafted_manifest_or_plan_is_refused_and_nothing_is_deleted(tmp_path, bad, record):
    """Issue 14.1: an entry naming a file outside the directory (with a wrong sha256, so that the old resume
    deleted it as 'corrupt') is refused by name; neither the victim nor any file of the dataset is deleted."""
    victim = tmp_path / "victimdir" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("precious")
    ds = tmp_path / "ds"
    write_dataset(ds, StandInRenderer(2), ShardConfig("toy", 4))
    bad = str(victim) if bad == "ABSOLUTE" else bad
    crafted = json.loads((ds / MANIFEST).read_text())
    crafted["shards"].append({"name": bad, "sha256": "0" * 64, "count": 1})
    if record == PLAN:  # the state of an interrupted run: a plan and no manifest
        (ds / MANIFEST).unlink()
        crafted = {"format": FORMAT, "what": "test", "shards": crafted["shards"]}
    write_json(ds / record, crafted)
    before = tree(tmp_path)
    with pytest.raises(HydraMixError) as refused:
        write_dataset(ds, StandInRenderer(2), ShardConfig("toy", 4))
    message = str(refused.value)
    assert "shards[2]" in message and repr(bad) in message and "nothing was deleted" in message
    assert "\n" not in message
    assert tree(tmp_path) == before and victim.read_text() == "precious"


def test_force_rebuilds_past_a_crafted_manifest_and_deletes_only_its_own_files(tmp_path):
    victim = tmp_path / "victim-000000.tar"  # even a file named like a shard, outside the directory
    victim.write_bytes(b"precious")
    ds = tmp_path / "ds"
    write_dataset(ds, StandInRenderer(2), ShardConfig("toy", 4))
    (ds / "notes.txt").write_text("user file")
    crafted = json.loads((ds / MANIFEST).read_text())
    crafted["shards"].append({"name": "../victim-000000.tar", "sha256": "0" * 64, "count": 1})
    write_json(ds / MANIFEST, crafted)
    plan_dataset(ds, {"what": "test"}, force=True)
    assert victim.read_bytes() == b"precious"
    assert sorted(p.name for p in ds.iterdir()) == ["notes.txt", PLAN]


def test_another_shard_name_is_a_different_dataset_not_a_bad_entry(tmp_path):
    ds = tmp_path / "ds"
    plan_dataset(ds, {"name": "toy"}, force=False)
    write_dataset_shards(ds, StandInRenderer(2), ShardConfig("toy", 4), 2, progress=False)
    with pytest.raises(HydraMixError, match=r"different synthetic dataset \(differs in name\)"):
        plan_dataset(ds, {"name": "other"}, force=False)


def test_a_shard_that_links_out_of_the_directory_is_never_read(tmp_path, monkeypatch):
    outside = tmp_path / "outside.tar"
    ds = tmp_path / "ds"
    write_dataset(ds, StandInRenderer(2), ShardConfig("toy", 4))
    os.replace(ds / "toy-000001.tar", outside)
    (ds / "toy-000001.tar").symlink_to(outside)
    opened = []
    for module in (reader, verification):  # where the readers look them up
        monkeypatch.setattr(module, "file_digest", lambda path: opened.append(Path(path)) or "")
        monkeypatch.setattr(module, "iter_shard", lambda path: opened.append(Path(path)) or iter(()))
    problems = verify(ds)
    assert len(problems) == 1 and "toy-000001.tar is a link to a file outside" in problems[0] and opened == []
    with pytest.raises(HydraMixError, match="outside"):
        load_images(ds)
    with pytest.raises(HydraMixError, match="outside"):
        plan_dataset(ds, {"what": "test"}, force=False)
    assert outside.is_file() and (ds / "toy-000001.tar").is_symlink()


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


# ------------------------------------------------------------------------------------------------------------
# Resume proves what it keeps


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


def test_write_dataset_shards_needs_a_claimed_directory(tmp_path):
    with pytest.raises(HydraMixError, match="not claimed"):
        write_dataset_shards(tmp_path, StandInRenderer(1), ShardConfig("toy", 4), 2, progress=False)


# ------------------------------------------------------------------------------------------------------------
# Verify: the manifest against itself, the card


def edit_manifest(ds: Path, edit) -> None:
    manifest = json.loads((ds / MANIFEST).read_text())
    edit(manifest)
    write_json(ds / MANIFEST, manifest)


def swap_files(ds: Path, a: str, b: str) -> None:
    os.replace(ds / a, ds / "swap")
    os.replace(ds / b, ds / a)
    os.replace(ds / "swap", ds / b)


def rename_class(m: dict) -> None:
    m["class_names"][0] = "z"
    m["counts"]["z"] = m["counts"].pop("a")


def swap_shard_hashes(m: dict) -> None:
    m["shards"][0]["sha256"], m["shards"][1]["sha256"] = m["shards"][1]["sha256"], m["shards"][0]["sha256"]


@pytest.mark.parametrize(
    ("edit", "files", "expected"),
    [
        (lambda m: m.update(total=2999), None, "total says 2999"),
        (lambda m: m["counts"].update(a=5), None, "class counts sum to 13, total says 12"),
        (rename_class, None, "'a' by its provenance, 'z' by the manifest's class_names"),
        (lambda m: m["shards"].reverse(), None, "shards[0] is toy-000002.tar, expected toy-000000.tar"),
        (lambda m: m["shards"][0].update(count=3), None, "toy-000000.tar: 4 samples, manifest says 3"),
        (lambda m: m.update(counts={"a": 4, "b": 4, "x": 4}), None, "counts names the classes"),
        # shard files swapped on disk and their hashes in the manifest: every sha256 matches, the order does not
        (swap_shard_hashes, ("toy-000000.tar", "toy-000001.tar"), "has sample_id 4, expected 0 here"),
        (lambda m: m.update(card_sha256="0" * 64), None, "README.md: sha256 differs"),
    ],
)
def test_verify_catches_an_internally_inconsistent_manifest(tmp_path, edit, files, expected):
    ds = tmp_path / "ds"
    write_dataset(ds, StandInRenderer(4), ShardConfig("toy", 4))  # 12 samples: shards of 4, 4, 4
    assert verify(ds) == []
    edit_manifest(ds, edit)
    if files:
        swap_files(ds, *files)
    problems = verify(ds)
    assert any(expected in p for p in problems), problems


def test_verify_covers_the_dataset_card(tmp_path):
    ds = tmp_path / "ds"
    manifest = write_dataset(ds, StandInRenderer(2), ShardConfig("toy", 4))
    assert manifest["card_sha256"] == hashlib.sha256(b"card\n").hexdigest()
    (ds / CARD).write_text("card, edited\n")
    assert verify(ds) == ["README.md: sha256 differs from the manifest's card_sha256 (card edited or corrupt)"]
    (ds / CARD).unlink()
    assert verify(ds) == ["README.md: missing"]


def test_an_older_manifest_without_card_sha256_verifies_with_a_note(tmp_path):
    ds = tmp_path / "ds"
    write_dataset(ds, StandInRenderer(2), ShardConfig("toy", 4))
    edit_manifest(ds, lambda m: m.pop("card_sha256"))
    report = verify_dataset(ds)
    assert report.problems == [] and len(report.notes) == 1 and "no card_sha256" in report.notes[0]
    # the same command again adds it (the identity is unchanged: card_sha256 is a result, not an input)
    write_dataset(ds, StandInRenderer(2), ShardConfig("toy", 4))
    assert "card_sha256" in read_manifest(ds) and verify_dataset(ds).notes == []


@pytest.mark.parametrize(
    ("shards_value", "expected"),
    [
        (None, "'shards' must be an array of shard entries, got null"),
        ({"toy-000000.tar": 1}, "'shards' must be an array of shard entries, got an object"),
        ([1], "shards[0] must be an object with exactly name, sha256 and count, got 1"),
        ([{"name": "toy-000000.tar", "count": 4}], "shards[0] must be an object with exactly name, sha256"),
        ([{"name": "toy-000000.tar", "sha256": "abc", "count": 4}], "has sha256 'abc', not 64 hex digits"),
        ([{"name": "toy-000000.tar", "sha256": "0" * 64, "count": "4"}], "has count '4', not an integer"),
    ],
)
def test_a_malformed_shard_list_is_one_clear_error(tmp_path, shards_value, expected):
    ds = tmp_path / "ds"
    write_dataset(ds, StandInRenderer(2), ShardConfig("toy", 4))
    edit_manifest(ds, lambda m: m.update(shards=shards_value))
    with pytest.raises(HydraMixError) as caught:
        read_manifest(ds)
    assert expected in str(caught.value) and "malformed manifest" in str(caught.value)
    assert verify(ds) == [str(caught.value)]


# ------------------------------------------------------------------------------------------------------------
# Lock and interruption


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
