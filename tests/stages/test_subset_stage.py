"""``hydramix subset``: counts, manifest, determinism, nesting, errors; the real shared CIFAR-10 archive."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_prepare_stage import make_folder_archive, write_params
from typer.testing import CliRunner

from pipeline.core.errors import HydraMixError
from pipeline.data.imageset import read_parquet
from pipeline.data.prepare import PrepareConfig, SubsetConfig, make_subset, prepare
from pipeline.data.subsets import read_subset
from stages.cli import app

runner = CliRunner()


@pytest.fixture
def prepared(tmp_path) -> Path:
    archive = make_folder_archive(tmp_path / "ds.tar.gz", n_train=6, n_test=2)
    prepare(PrepareConfig("folder", str(archive), 8), tmp_path, tmp_path / "prep", progress=False)
    return tmp_path / "prep"


def _subset(prepared: Path, out: Path, *args: str) -> None:
    params = write_params(prepared.parent / "params.yaml")
    result = runner.invoke(
        app, ["subset", "--prepared", str(prepared), "--out", str(out), "--params", str(params), *args]
    )
    assert result.exit_code == 0, result.output


def test_subset_command_writes_k_per_class_and_full_test(prepared, tmp_path):
    _subset(prepared, tmp_path / "s", "--k", "3", "--seed", "1")
    subset = read_subset(tmp_path / "s")
    assert subset.train.counts() == {"a": 3, "b": 3, "c": 3}
    assert len(subset.test) == 6
    m = subset.manifest
    assert (m["k"], m["seed"], m["dataset"]) == (3, 1, "ds")
    assert m["source"] == json.loads((prepared / "manifest.json").read_text())["source"]
    assert m["indices"] == subset.train.indices.tolist() and len(m["indices"]) == 9
    assert m["resolution"] == 8 and m["class_names"] == ["a", "b", "c"]
    # chosen images are the prepared images at those original indices
    full = read_parquet(prepared / "train.parquet")
    np.testing.assert_array_equal(subset.train.images, full.images[subset.train.indices])


def test_subset_reads_k_from_params(prepared, tmp_path):
    _subset(prepared, tmp_path / "s")  # params: k=2
    assert read_subset(tmp_path / "s").manifest["k"] == 2


def test_subset_is_byte_identical_on_rerun(prepared, tmp_path):
    _subset(prepared, tmp_path / "one", "--k", "2")
    _subset(prepared, tmp_path / "two", "--k", "2")
    for name in ("train.parquet", "test.parquet", "manifest.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_subsets_are_nested_across_k(prepared, tmp_path):
    chosen = {}
    for k in (1, 2, 4, 6):
        chosen[k] = set(make_subset(prepared, tmp_path / f"k{k}", SubsetConfig(k, 0))["indices"])
    assert chosen[1] < chosen[2] < chosen[4] < chosen[6]
    other_seed = set(make_subset(prepared, tmp_path / "s1", SubsetConfig(4, 1))["indices"])
    assert other_seed != chosen[4]


def test_validation_split_is_disjoint_and_the_same_for_every_k(prepared, tmp_path):
    _subset(prepared, tmp_path / "k2", "--k", "2", "--val-per-class", "3")
    _subset(prepared, tmp_path / "k3", "--k", "3", "--val-per-class", "3")
    _subset(prepared, tmp_path / "plain", "--k", "2")
    small, large, plain = (read_subset(tmp_path / name) for name in ("k2", "k3", "plain"))
    assert small.val is not None and small.val.counts() == {"a": 3, "b": 3, "c": 3}
    assert small.manifest["counts"]["val"] == {"a": 3, "b": 3, "c": 3}
    assert small.manifest["val_indices"] == large.manifest["val_indices"]
    assert not set(large.manifest["indices"]) & set(large.manifest["val_indices"])
    # The validation draw leaves the subset itself untouched, byte for byte.
    assert (tmp_path / "k2" / "train.parquet").read_bytes() == (tmp_path / "plain" / "train.parquet").read_bytes()
    assert plain.val is None and not (tmp_path / "plain" / "val.parquet").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--k", "4", "--val-per-class", "3"], "k=4 plus val_per_class=3 is larger than class 'a'"),
        (["--val-per-class", "-1"], "val_per_class must be >= 0"),
        (["--k", "0"], "k must be >= 1"),
        (["--k", "-3"], "k must be >= 1"),
        (["--k", "7"], "k=7 is larger than class 'a', which has only 6 images"),
        (["--seed", "-1"], "seed must be >= 0"),
    ],
)
def test_subset_bad_k_is_a_clean_error(prepared, tmp_path, args, message):
    params = write_params(tmp_path / "params.yaml")
    out = tmp_path / "s"
    result = runner.invoke(
        app, ["subset", "--prepared", str(prepared), "--out", str(out), "--params", str(params), *args]
    )
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_subset_missing_prepared_dir(tmp_path):
    params = write_params(tmp_path / "params.yaml")
    result = runner.invoke(
        app,
        [
            "subset",
            "--prepared",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "s"),
            "--params",
            str(params),
        ],
    )
    assert result.exit_code == 1 and "nope: no such directory (expected a prepared dataset" in result.output


def test_subset_help():
    result = runner.invoke(app, ["subset", "--help"])
    assert result.exit_code == 0
    for option in ("--prepared", "--out", "--params", "--k", "--seed"):
        assert option in result.output
    top = runner.invoke(app, ["--help"])
    assert "prepare" in top.output and "subset" in top.output


def test_smallest_class_named_by_library(prepared, tmp_path):
    with pytest.raises(HydraMixError, match="class 'a', which has only 6"):
        make_subset(prepared, tmp_path / "s", SubsetConfig(100, 0))


@pytest.fixture(scope="module")
def real_prepared(tmp_path_factory) -> Path:
    archive = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"real data not available: {archive} is absent")
    out = tmp_path_factory.mktemp("real") / "prepared"
    prepare(PrepareConfig("folder", str(archive), 32), out.parent, out, progress=False)
    return out


@pytest.mark.slow
def test_real_cifar10_archive_k10_seed0(real_prepared, tmp_path):
    manifest = make_subset(real_prepared, tmp_path / "k10", SubsetConfig(10, 0))
    assert sum(manifest["counts"]["train"].values()) == 100
    assert set(manifest["counts"]["train"].values()) == {10}
    assert sum(manifest["counts"]["test"].values()) == 10_000
    assert manifest["source"][0]["sha256"] == "45b041e867f5a40f79bfde38d3dd1fd511103d50068c1afecf6445e25234d4db"
    k5 = make_subset(real_prepared, tmp_path / "k5", SubsetConfig(5, 0))
    assert set(k5["indices"]) < set(manifest["indices"])
    again = make_subset(real_prepared, tmp_path / "k10b", SubsetConfig(10, 0))
    assert again == manifest
    for name in ("train.parquet", "test.parquet"):
        assert (tmp_path / "k10" / name).read_bytes() == (tmp_path / "k10b" / name).read_bytes()
