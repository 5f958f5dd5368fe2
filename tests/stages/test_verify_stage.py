"""``hydramix verify DIR`` end to end on a small hand-made dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.synthesis.shards import reader, verification
from pipeline.synthesis.shards.dataset_writer import finish_dataset
from pipeline.synthesis.shards.format import MANIFEST, Sample, shard_name
from pipeline.synthesis.shards.verification import verify
from pipeline.synthesis.shards.writer import write_shard
from stages.cli import app

runner = CliRunner()


def make_dataset(directory: Path) -> None:
    """9 samples of 3 classes in shards of 4 (4 + 4 + 1)."""
    rng = np.random.default_rng(0)
    samples = [
        Sample(f"{s:06d}", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), s % 3, {"sample_id": s}) for s in range(9)
    ]
    directory.mkdir()
    entries = [write_shard(directory / shard_name("t", i), samples[4 * i : 4 * i + 4]) for i in range(3)]
    finish_dataset(
        directory,
        entries,
        class_names=("a", "b", "c"),
        resolution=8,
        counts={"a": 3, "b": 3, "c": 3},
        identity={"name": "t"},
        card="card\n",
    )


def test_verify_ok(tmp_path):
    make_dataset(tmp_path / "ds")
    result = runner.invoke(app, ["verify", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    assert "OK" in result.stdout and "3 shard(s), 9 samples, 3 classes" in result.stdout


def test_verify_names_each_problem_and_exits_1(tmp_path):
    ds = tmp_path / "ds"
    make_dataset(ds)
    (ds / "t-000002.tar").unlink()
    path = ds / "t-000000.tar"
    data = bytearray(path.read_bytes())
    data[600] ^= 0x01
    path.write_bytes(bytes(data))
    result = runner.invoke(app, ["verify", str(ds)])
    assert result.exit_code == 1
    assert "t-000002.tar: missing" in result.stderr
    assert "t-000000.tar: sha256 differs" in result.stderr
    assert "2 problem(s)" in result.stderr or "problem(s)" in result.stderr


def test_verify_a_directory_that_is_not_a_dataset(tmp_path):
    result = runner.invoke(app, ["verify", str(tmp_path)])
    assert result.exit_code == 1
    assert "no manifest.json" in result.stderr


def edit_manifest(directory: Path, edit) -> None:
    path = directory / MANIFEST
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps(edit(manifest)))


def one_line_error(result) -> str:
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda m: {**m, "shards": None}, "'shards' must be an array of shard entries, got null"),
        (lambda m: {**m, "shards": [None]}, "shards[0] must be an object with exactly name, sha256 and count"),
        (lambda m: {**m, "shards": [{"name": "t-000000.tar"}]}, "shards[0] must be an object"),
        (lambda m: {**m, "total": "9"}, "'total' must be an integer, got a string"),
        (lambda m: {**m, "class_names": None}, "'class_names' must be an array of strings, got null"),
        (lambda m: {**m, "class_names": [1, 2, 3]}, "'class_names' must be an array of strings"),
        (lambda m: {**m, "counts": [3, 3, 3]}, "'counts' must be an object of integers, got an array"),
        (lambda m: {**m, "card_sha256": 5}, "'card_sha256' is 5, not 64 hex digits"),
        (lambda m: [m], "not a hydramix dataset manifest"),
        (lambda m: {k: v for k, v in m.items() if k != "resolution"}, "'resolution' must be an integer, got null"),
    ],
)
def test_verify_a_malformed_manifest_is_one_line_error(tmp_path, edit, expected):
    """Issue 14.8: "shards": null (or any other malformed structure) is a one-line error, no traceback."""
    make_dataset(tmp_path / "ds")
    edit_manifest(tmp_path / "ds", edit)
    assert expected in one_line_error(runner.invoke(app, ["verify", str(tmp_path / "ds")]))


def test_verify_an_unreadable_manifest_is_one_line_error(tmp_path):
    make_dataset(tmp_path / "ds")
    (tmp_path / "ds" / MANIFEST).write_text("{not json")
    assert "unreadable manifest" in one_line_error(runner.invoke(app, ["verify", str(tmp_path / "ds")]))


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "t-000001.tar/../../x", "u-000001.tar"])
def test_verify_refuses_a_name_outside_the_dataset_before_opening_anything(tmp_path, monkeypatch, name):
    """Issue 14.2: the containment check comes before any file is opened."""
    make_dataset(tmp_path / "ds")
    edit_manifest(tmp_path / "ds", lambda m: {**m, "shards": [*m["shards"][:1], {**m["shards"][1], "name": name}]})
    opened = []
    for module in (reader, verification):  # where the readers look them up
        monkeypatch.setattr(module, "file_digest", lambda path: opened.append(path) or "")
        monkeypatch.setattr(module, "iter_shard", lambda path: opened.append(path) or iter(()))
    message = one_line_error(runner.invoke(app, ["verify", str(tmp_path / "ds")]))
    assert f"shards[1] names {name!r}, which is not a shard of this dataset" in message
    assert opened == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda m: {**m, "total": 2999}, "shard counts sum to 9, total says 2999"),
        (lambda m: {**m, "shards": m["shards"][::-1]}, "shards[0] is t-000002.tar, expected t-000000.tar"),
        (lambda m: {**m, "counts": {"a": 4, "b": 2, "c": 3}}, "labels in the shards count"),
        (lambda m: {**m, "card_sha256": "f" * 64}, "README.md: sha256 differs"),
    ],
)
def test_verify_lists_inconsistencies_of_the_manifest(tmp_path, edit, expected):
    make_dataset(tmp_path / "ds")
    edit_manifest(tmp_path / "ds", edit)
    result = runner.invoke(app, ["verify", str(tmp_path / "ds")])
    assert result.exit_code == 1 and expected in result.stderr and "Traceback" not in result.output


def test_verify_an_older_manifest_without_card_sha256_passes_with_a_note(tmp_path):
    make_dataset(tmp_path / "ds")
    edit_manifest(tmp_path / "ds", lambda m: {k: v for k, v in m.items() if k != "card_sha256"})
    result = runner.invoke(app, ["verify", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    assert "note: the manifest has no card_sha256" in result.stderr and "OK" in result.stdout
    assert "every sha256 and image checked" in result.stdout


def test_verify_ok_says_the_card_was_checked(tmp_path):
    make_dataset(tmp_path / "ds")
    result = runner.invoke(app, ["verify", str(tmp_path / "ds")])
    assert "every shard sha256, image and the dataset card checked" in result.stdout and "note" not in result.stderr


def test_verify_a_missing_path_says_it_does_not_exist(tmp_path):
    result = runner.invoke(app, ["verify", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr == (
        f"error: verify {tmp_path / 'nowhere'}: no such directory "
        "(expected a dataset directory written by `hydramix synthesize`)\n"
    )
    (tmp_path / "file").write_text("x")
    assert "is a file, not a directory" in runner.invoke(app, ["verify", str(tmp_path / "file")]).stderr


def test_verify_progress_counts_images_so_the_eta_moves_within_a_shard(tmp_path, capsys):
    make_dataset(tmp_path / "ds")
    assert verify(tmp_path / "ds", progress=True) == []
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("verify: 1/9 img") and lines[-1].startswith("verify: 9/9 img (100%)")
