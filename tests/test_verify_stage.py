"""``hydramix verify DIR`` end to end on a small hand-made dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from pipeline import shards
from pipeline.shards import Sample
from stages.cli import app

runner = CliRunner()


def make_dataset(directory: Path) -> None:
    """9 samples of 3 classes in shards of 4 (4 + 4 + 1)."""
    rng = np.random.default_rng(0)
    samples = [Sample(f"{s:06d}", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), s % 3, {"s": s}) for s in range(9)]
    directory.mkdir()
    entries = [shards.write_shard(directory / shards.shard_name("t", i), samples[4 * i : 4 * i + 4]) for i in range(3)]
    shards.finish_dataset(
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
