"""``hydramix prepare`` end to end on a tiny folder, its flags, and its error paths (via CliRunner)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.imageset import read_parquet
from pipeline.prepare import PrepareConfig, prepare
from stages.cli import app

runner = CliRunner()


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (12, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def make_folder_archive(path: Path, n_train: int = 6, n_test: int = 2, classes=("a", "b", "c")) -> Path:
    """A .tar.gz with train/<class>/NNN.png and test/<class>/NNN.png plus one non-image file."""
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", n_train), ("test", n_test)):
            for c, name in enumerate(classes):
                for i in range(n):
                    data = _png((40 * c, 10 * i, 7))
                    info = tarfile.TarInfo(f"{split}/{name}/{i:03d}.png")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("LICENSE")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"MIT"))
    return path


def write_params(path: Path, dataset: str = "folder", folder_path: str = "x", k: int = 2) -> Path:
    path.write_text(
        f"prepare:\n  dataset: {dataset}\n  folder_path: {folder_path}\n  resolution: 8\nsubset:\n  k: {k}\n  seed: 0\n"
    )
    return path


def test_prepare_library_writes_prepared_dir(tmp_path):
    archive = make_folder_archive(tmp_path / "ds.tar.gz")
    manifest = prepare(PrepareConfig("folder", str(archive), 8), tmp_path / "dl", tmp_path / "prep", progress=False)
    assert sorted(p.name for p in (tmp_path / "prep").iterdir()) == [
        "manifest.json",
        "test.parquet",
        "train.parquet",
    ]
    assert manifest == json.loads((tmp_path / "prep" / "manifest.json").read_text())
    assert manifest["dataset"] == "folder" and manifest["resolution"] == 8 and manifest["skipped_files"] == 1
    assert manifest["counts"]["train"] == {"a": 6, "b": 6, "c": 6}
    assert manifest["source"][0]["location"] == str(archive) and len(manifest["source"][0]["sha256"]) == 64
    train = read_parquet(tmp_path / "prep" / "train.parquet")
    assert len(train) == 18 and train.resolution == 8 and train.class_names == ("a", "b", "c")


def test_prepare_command_with_flags(tmp_path):
    archive = make_folder_archive(tmp_path / "ds.tar.gz")
    params = write_params(tmp_path / "params.yaml", dataset="cifair10", folder_path="/nonexistent")
    result = runner.invoke(
        app,
        ["prepare", "--out", str(tmp_path / "prep"), "--params", str(params), "--dataset", "folder"]
        + ["--path", str(archive), "--resolution", "4", "--download-dir", str(tmp_path / "dl")],
    )
    assert result.exit_code == 0, result.output
    assert "18 train + 6 test images, 3 classes, 4 px, 1 non-image file(s) skipped" in result.output
    assert json.loads((tmp_path / "prep" / "manifest.json").read_text())["resolution"] == 4


def test_prepare_help():
    result = runner.invoke(app, ["prepare", "--help"])
    assert result.exit_code == 0
    for option in ("--out", "--download-dir", "--params", "--dataset", "--path", "--resolution"):
        assert option in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--path", "/definitely/missing.tar.gz"], "does not exist"),
        (["--resolution", "0"], "resolution must be in 1..4096"),
    ],
)
def test_prepare_bad_input_is_a_clean_error(tmp_path, args, message):
    params = write_params(tmp_path / "params.yaml", folder_path=str(make_folder_archive(tmp_path / "d.tar.gz")))
    out = tmp_path / "prep"
    result = runner.invoke(app, ["prepare", "--out", str(out), "--params", str(params), *args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_prepare_official_dataset_with_wrong_file_fails_before_any_download(tmp_path):
    downloads = tmp_path / "dl"
    downloads.mkdir()
    (downloads / "cifar-10-python.tar.gz").write_bytes(b"not the real archive")
    params = write_params(tmp_path / "params.yaml", dataset="cifair10")
    result = runner.invoke(
        app,
        ["prepare", "--out", str(tmp_path / "p"), "--params", str(params), "--download-dir", str(downloads)],
    )
    assert result.exit_code == 1
    assert "wrong md5 checksum" in result.output and not (tmp_path / "p").exists()


def test_prepare_failure_keeps_previous_output(tmp_path):
    archive = make_folder_archive(tmp_path / "ds.tar.gz")
    out = tmp_path / "prep"
    prepare(PrepareConfig("folder", str(archive), 8), tmp_path, out, progress=False)
    before = (out / "train.parquet").read_bytes()
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(Exception, match="corrupt"):
        prepare(PrepareConfig("folder", str(corrupt), 8), tmp_path, out, progress=False)
    assert (out / "train.parquet").read_bytes() == before
    assert not (tmp_path / ".prep.tmp").exists()


def test_bad_params_section(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("prepare:\n  dataset: folder\n  folder_path: x\n  resolution: 8\n  colour: red\n")
    result = runner.invoke(app, ["prepare", "--params", str(params), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "unknown key(s) colour" in result.output
