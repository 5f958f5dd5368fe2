"""Verifying a dataset (``verification``): the files against the manifest, the manifest against itself, the card."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from test_shards_dataset_writer import StandInRenderer, edit_manifest, write_dataset

from pipeline.core.atomic import write_json
from pipeline.core.errors import HydraMixError
from pipeline.synthesis.shards.format import CARD, MANIFEST, ShardConfig
from pipeline.synthesis.shards.reader import load_images, read_manifest
from pipeline.synthesis.shards.verification import verify, verify_dataset


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
