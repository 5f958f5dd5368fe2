"""Shard format, writing, reading and verifying, with hand-made samples and a tiny stand-in renderer."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from pipeline import shards
from pipeline.atomic import write_json
from pipeline.errors import HydraMixError
from pipeline.shards import Sample, ShardConfig

CLASSES = ("a", "b", "c")


class StandInRenderer:
    """Renders sample id s as a deterministic 8x8 image of class s % 3, like the Synthesizer contract."""

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
            out.append(Sample(f"{int(s):08d}", img, int(s) % len(CLASSES), {"sample": int(s), "sources": [1, 2]}))
        return out


def write_dataset(directory: Path, renderer: StandInRenderer, cfg: ShardConfig, batch_size: int = 4) -> dict:
    """A minimal dataset writer as the synthesize stage does it: plan, shards, manifest."""
    shards.plan_dataset(directory, {"what": "test"}, force=False)
    written = shards.write_dataset_shards(directory, renderer, cfg, batch_size, progress=False)
    return shards.finish_dataset(
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
    a = shards.write_shard(tmp_path / "x-000000.tar", samples)
    b = shards.write_shard(tmp_path / "y-000000.tar", samples)
    assert a["sha256"] == b["sha256"] == shards.file_sha256(tmp_path / "x-000000.tar")
    assert a["count"] == 6 and a["name"] == "x-000000.tar"
    with tarfile.open(tmp_path / "x-000000.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members[:3]] == ["00000000.png", "00000000.cls", "00000000.json"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}
    assert not list(tmp_path.glob("*.tmp"))


def test_tar_bytes_equal_what_tarfile_writes(tmp_path):
    samples = StandInRenderer(2).render(np.arange(5))
    ours = shards.write_shard(tmp_path / "ours-000000.tar", samples)
    with tarfile.open(tmp_path / "ref.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            for name, data in shards._sample_members(sample):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
    assert (tmp_path / "ours-000000.tar").read_bytes() == (tmp_path / "ref.tar").read_bytes()
    assert ours["sha256"] == shards.file_sha256(tmp_path / "ref.tar")
    empty = shards.write_shard(tmp_path / "empty-000000.tar", [])
    assert empty["count"] == 0 and (tmp_path / "empty-000000.tar").stat().st_size == tarfile.RECORDSIZE


def test_write_shard_rejects_bad_samples_and_leaves_nothing(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    for bad in (
        [Sample("has.dot", img, 0, {})],
        [Sample("k", img, 0, {}), Sample("k", img, 0, {})],
        [Sample("k", np.zeros((4, 4), np.uint8), 0, {})],
    ):
        with pytest.raises(ValueError):
            shards.write_shard(tmp_path / "s-000000.tar", bad)
        assert not list(tmp_path.iterdir())


def test_roundtrip_iter_samples_and_load_images(tmp_path):
    renderer = StandInRenderer(5)
    manifest = write_dataset(tmp_path / "ds", renderer, ShardConfig("toy", 4))
    assert [s["name"] for s in manifest["shards"]] == [f"toy-{i:06d}.tar" for i in range(4)]
    assert [s["count"] for s in manifest["shards"]] == [4, 4, 4, 3]
    expected = renderer.render(np.arange(15))
    got = list(shards.iter_samples(tmp_path / "ds"))
    assert [s.key for s in got] == [s.key for s in expected]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g.image, e.image)
        assert g.label == e.label and g.meta == e.meta
    images = shards.load_images(tmp_path / "ds")
    assert images.images.shape == (15, 8, 8, 3) and images.class_names == CLASSES
    np.testing.assert_array_equal(images.labels, np.arange(15) % 3)
    np.testing.assert_array_equal(images.images[7], expected[7].image)
    assert shards.verify(tmp_path / "ds") == []
    assert not (tmp_path / "ds" / shards.PLAN).exists()


def test_chunks_start_at_each_shard_start(tmp_path):
    renderer = StandInRenderer(4)  # 12 samples, shards of 5, batches of 2
    write_dataset(tmp_path / "ds", renderer, ShardConfig("toy", 5), batch_size=2)
    assert renderer.calls == [[0, 1], [2, 3], [4], [5, 6], [7, 8], [9], [10, 11]]


def test_split_across_ranks_is_byte_identical(tmp_path):
    cfg = ShardConfig("toy", 4)
    whole = StandInRenderer(5)
    shards.write_dataset_shards(tmp_path / "one", whole, cfg, 3, progress=False)
    count = shards.n_shards(whole.total, cfg.shard_size)
    parts = [shards.shards_for_rank(count, r, 2) for r in range(2)]
    assert parts == [[0, 2], [1, 3]]
    for part in parts:  # two separate "processes", each with its own renderer
        shards.write_dataset_shards(tmp_path / "split", StandInRenderer(5), cfg, 3, indices=part, progress=False)
    assert digests(tmp_path / "one") == digests(tmp_path / "split") and len(digests(tmp_path / "one")) == 4
    with pytest.raises(HydraMixError):
        shards.shards_for_rank(4, 2, 2)


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
    assert shards.verify(tmp_path / "ds") == []


def test_render_failure_and_full_disk_leave_no_final_shard(tmp_path, monkeypatch):
    cfg = ShardConfig("toy", 6)
    (tmp_path / "ds").mkdir()
    with pytest.raises(RuntimeError, match="renderer broke"):
        shards.write_dataset_shards(tmp_path / "ds", StandInRenderer(4, fail_at=9), cfg, 2, progress=False)
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["toy-000000.tar"]

    real = shards._tar_member_bytes
    calls = {"n": 0}

    def full_disk(name, data):
        calls["n"] += 1
        if calls["n"] == 5:  # mid-shard
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(name, data)

    monkeypatch.setattr(shards, "_tar_member_bytes", full_disk)
    with pytest.raises(HydraMixError, match="disk full"):
        shards.write_dataset_shards(tmp_path / "ds", StandInRenderer(4), cfg, 2, progress=False)
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["toy-000000.tar"]


def test_verify_catches_flipped_byte_missing_and_unlisted_shards(tmp_path):
    ds = tmp_path / "ds"
    write_dataset(ds, StandInRenderer(4), ShardConfig("toy", 4))
    path = ds / "toy-000001.tar"
    data = bytearray(path.read_bytes())
    data[700] ^= 0xFF  # inside the first PNG
    path.write_bytes(bytes(data))
    (ds / "toy-000002.tar").unlink()
    problems = shards.verify(ds)
    assert any("toy-000001.tar: sha256" in p for p in problems)
    assert any("toy-000002.tar: missing" in p for p in problems)
    with pytest.raises(HydraMixError, match="hydramix verify"):
        shards.load_images(ds)
    (ds / "extra-000000.tar").write_bytes(b"")
    assert any("not listed" in p for p in shards.verify(ds))
    assert shards.verify(tmp_path / "nothing") and "no manifest.json" in shards.verify(tmp_path / "nothing")[0]


def test_verify_checks_labels_against_classes(tmp_path):
    ds = tmp_path / "ds"
    manifest = write_dataset(ds, StandInRenderer(2), ShardConfig("toy", 10))
    manifest["class_names"] = ["a", "b"]
    manifest["counts"] = {"a": 2, "b": 2}
    write_json(ds / shards.MANIFEST, manifest)
    problems = shards.verify(ds)
    assert any("label 2 out of range" in p for p in problems)


def test_plan_refuses_a_different_dataset_unless_forced(tmp_path):
    ds = tmp_path / "ds"
    write_dataset(ds, StandInRenderer(2), ShardConfig("toy", 4))
    (ds / "notes.txt").write_text("user file")
    with pytest.raises(HydraMixError, match="different synthetic dataset.*seed"):
        shards.plan_dataset(ds, {"what": "test", "seed": 1}, force=False)
    shards.plan_dataset(ds, {"what": "test", "seed": 1}, force=True)
    assert sorted(p.name for p in ds.iterdir()) == ["notes.txt", shards.PLAN]
    # a plan (interrupted run) counts as a claim too
    with pytest.raises(HydraMixError, match="different"):
        shards.plan_dataset(ds, {"what": "other"}, force=False)
    shards.plan_dataset(ds, {"what": "test", "seed": 1}, force=False)  # same identity: resume is fine


def test_plan_refuses_shards_of_unknown_origin(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "toy-000000.tar").write_bytes(b"")
    with pytest.raises(HydraMixError, match="unknown origin"):
        shards.plan_dataset(tmp_path / "ds", {"x": 1}, force=False)


def test_stock_webdataset_reads_the_shards(tmp_path):
    wds = pytest.importorskip("webdataset")
    ds = tmp_path / "ds"
    write_dataset(ds, StandInRenderer(3), ShardConfig("toy", 4))
    urls = [str(p) for p in shards.shard_paths(ds)]
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
    on_disk = json.loads((tmp_path / "ds" / shards.MANIFEST).read_text())
    assert on_disk == manifest
    assert on_disk["total"] == 9 and on_disk["counts"] == {"a": 3, "b": 3, "c": 3}
    assert digests(tmp_path / "ds") == {s["name"]: s["sha256"] for s in on_disk["shards"]}
    assert (tmp_path / "ds" / shards.CARD).read_text() == "card\n"


def test_resume_replaces_a_corrupt_shard_listed_in_the_manifest(tmp_path):
    ds = tmp_path / "ds"
    write_dataset(ds, StandInRenderer(4), ShardConfig("toy", 4))
    before = digests(ds)
    path = ds / "toy-000001.tar"
    data = bytearray(path.read_bytes())
    data[700] ^= 0xFF
    path.write_bytes(bytes(data))
    assert shards.plan_dataset(ds, {"what": "test"}, force=False) == ["toy-000001.tar"]
    written = shards.write_dataset_shards(ds, StandInRenderer(4), ShardConfig("toy", 4), 4, progress=False)
    assert {e["name"]: e["sha256"] for e in written.values()} == before


def test_plan_names_the_differing_nested_key(tmp_path):
    shards.plan_dataset(tmp_path, {"synthesis": {"seed": 0, "n": 1}, "masks": (2, 3)}, force=False)
    shards.plan_dataset(tmp_path, {"synthesis": {"seed": 0, "n": 1}, "masks": (2, 3)}, force=False)
    with pytest.raises(HydraMixError, match=r"differs in synthesis\.seed\)"):
        shards.plan_dataset(tmp_path, {"synthesis": {"seed": 1, "n": 1}, "masks": (2, 3)}, force=False)


def test_write_dataset_split_writes_the_manifest_when_the_last_share_is_done(tmp_path):
    kwargs = dict(identity={"what": "split"}, class_names=CLASSES, resolution=8, card=lambda m: f"{m['total']}\n")
    cfg = ShardConfig("toy", 4)
    manifest, written = shards.write_dataset(
        tmp_path / "ds", StandInRenderer(5), cfg, 4, indices=[1, 3], progress=False, **kwargs
    )
    assert manifest is None and sorted(written) == [1, 3] and not (tmp_path / "ds" / shards.MANIFEST).exists()
    manifest, written = shards.write_dataset(
        tmp_path / "ds", StandInRenderer(5), cfg, 4, indices=[0, 2], progress=False, **kwargs
    )
    assert manifest is not None and manifest["counts"] == {"a": 5, "b": 5, "c": 5}
    assert (tmp_path / "ds" / shards.CARD).read_text() == "15\n"
    assert shards.verify(tmp_path / "ds") == []
    # the same dataset again: nothing is rendered, the manifest is identical
    renderer = StandInRenderer(5)
    again, written = shards.write_dataset(tmp_path / "ds", renderer, cfg, 4, progress=False, **kwargs)
    assert again == manifest and renderer.calls == [] and not any(e["rendered"] for e in written.values())


def test_licence_caveat_follows_the_source_dataset():
    from pipeline.dataset_card import licence_caveat

    assert "ciFAIR" in licence_caveat({"dataset": "cifair100"})
    assert "Krizhevsky" in licence_caveat({"dataset": "folder", "source": "/data/cifar10-jpeg.tar.gz"})
    assert "ImageNet" in licence_caveat({"dataset": "stl10"})
    assert "not recorded" in licence_caveat({"dataset": "folder", "source": "/my/photos"})
