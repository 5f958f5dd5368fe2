"""Reading a dataset (``reader``): round trips, stock WebDataset, and the trust boundary on names read from a
manifest or plan."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_shards_dataset_writer import CLASSES, StandInRenderer, edit_manifest, tree, write_dataset

from pipeline.core.atomic import write_json
from pipeline.core.errors import HydraMixError
from pipeline.synthesis.shards import reader, verification
from pipeline.synthesis.shards.format import FORMAT, MANIFEST, PLAN, ShardConfig
from pipeline.synthesis.shards.plan import plan_dataset
from pipeline.synthesis.shards.reader import iter_samples, load_images, read_manifest, shard_paths
from pipeline.synthesis.shards.verification import verify


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


def test_the_package_exposes_the_reading_and_verifying_api():
    """Every dataset card tells its user to call ``pipeline.synthesis.shards.load_images(DIR)`` or
    ``pipeline.synthesis.shards.iter_samples(DIR)``: the package exposes those, and the rest of the reading and
    verifying API, as the functions of their home modules."""
    import pipeline.synthesis.shards as package

    assert package.load_images is load_images and package.iter_samples is iter_samples and package.verify is verify
    assert package.__all__ == [
        "Sample",
        "Verification",
        "iter_samples",
        "iter_shard",
        "load_images",
        "read_manifest",
        "shard_paths",
        "verify",
        "verify_dataset",
    ]
    assert all(getattr(package, name).__module__.startswith("pipeline.synthesis.shards.") for name in package.__all__)


# ------------------------------------------------------------------------------------------------------------
# Trust boundary: names read from a manifest or plan


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
