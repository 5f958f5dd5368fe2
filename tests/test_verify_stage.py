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
    assert shards.verify(tmp_path / "ds", progress=True) == []
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("verify: 1/9 img") and lines[-1].startswith("verify: 9/9 img (100%)")
