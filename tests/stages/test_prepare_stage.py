"""``hydramix prepare`` end to end on a tiny folder, its flags, and its error paths (via CliRunner)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.data.imageset import read_parquet
from pipeline.data.prepare import PrepareConfig, prepare
from stages.cli import app

runner = CliRunner()


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (12, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def make_folder_archive(
    path: Path, n_train: int = 6, n_test: int = 2, classes=("a", "b", "c"), test_split: str = "test"
) -> Path:
    """A .tar.gz with train/<class>/NNN.png and <test_split>/<class>/NNN.png plus one non-image file."""
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", n_train), (test_split, n_test)):
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
    # Named after the archive (reports say "ds", not "folder"); a train/ + test/ tree records no test_split.
    assert manifest["dataset"] == "ds" and manifest["resolution"] == 8 and manifest["skipped_files"] == 1
    assert "test_split" not in manifest
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
    assert "prepared ds: 18 train + 6 test images, 3 classes, 4 px, 1 file(s) skipped" in result.output
    # Progress covers the whole run, not only the decoding: encoding the splits was a silent tail.
    assert "decoding ds.tar.gz: 24 img" in result.output
    assert "encoding train.parquet: 18/18 img (100%)" in result.output
    assert "encoding test.parquet: 6/6 img (100%)" in result.output
    assert json.loads((tmp_path / "prep" / "manifest.json").read_text())["resolution"] == 4


@pytest.mark.parametrize("split", ["val", "valid", "validation"])
def test_a_val_folder_is_the_test_split(tmp_path, split):
    archive = make_folder_archive(tmp_path / "photos.tar.gz", test_split=split)
    manifest = prepare(PrepareConfig("folder", str(archive), 8), tmp_path, tmp_path / "prep", progress=False)
    assert manifest["test_split"] == split and manifest["counts"]["test"] == {"a": 2, "b": 2, "c": 2}
    assert manifest["dataset"] == "photos"


def test_test_is_preferred_and_the_other_split_is_skipped(tmp_path):
    tree = tmp_path / "tree"
    for split, n in (("train", 3), ("test", 2), ("val", 1)):
        for c in ("a", "b"):
            (tree / split / c).mkdir(parents=True)
            for i in range(n):
                (tree / split / c / f"{i}.png").write_bytes(_png((60 * i, 9, 9)))
    manifest = prepare(PrepareConfig("folder", str(tree), 8), tmp_path, tmp_path / "prep", progress=False)
    assert "test_split" not in manifest and manifest["counts"]["test"] == {"a": 2, "b": 2}
    assert manifest["skipped_files"] == 2  # the two val/ images
    assert manifest["dataset"] == "tree"


def test_no_test_split_names_what_was_found(tmp_path):
    tree = tmp_path / "mydata"
    for split in ("train", "holdout"):
        (tree / split / "a").mkdir(parents=True)
        (tree / split / "a" / "0.png").write_bytes(_png((1, 2, 3)))
    params = write_params(tmp_path / "params.yaml", folder_path=str(tree))
    result = runner.invoke(app, ["prepare", "--out", str(tmp_path / "p"), "--params", str(params)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]  # after the decoding progress line
    assert line.startswith("error: ") and "no test split" in line
    assert "holdout/" in line and "train/" in line and "val/" in line


def test_name_param_and_flag_name_the_data(tmp_path):
    archive = make_folder_archive(tmp_path / "ds.tar.gz")
    config = PrepareConfig("folder", str(archive), 8, name="cifar10 jpeg")
    assert prepare(config, tmp_path, tmp_path / "p1", progress=False)["dataset"] == "cifar10 jpeg"
    params = write_params(tmp_path / "params.yaml", folder_path=str(archive))
    result = runner.invoke(app, ["prepare", "--out", str(tmp_path / "p2"), "--params", str(params), "--name", "mine"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "p2" / "manifest.json").read_text())["dataset"] == "mine"


def test_dataset_name_strips_archive_suffixes():
    from pipeline.data.sources.folder import dataset_name

    assert dataset_name(Path("../shared/datasets/cifar10-jpeg.tar.gz")) == "cifar10-jpeg"
    assert dataset_name(Path("x/photos.tgz")) == "photos" and dataset_name(Path("x/photos.tar")) == "photos"
    assert dataset_name(Path("/data/my_images/")) == "my_images"


def test_offline_download_error_names_the_folder_alternative(tmp_path, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    params = write_params(tmp_path / "params.yaml", dataset="cifair10")
    result = runner.invoke(
        app, ["prepare", "--out", str(tmp_path / "p"), "--params", str(params), "--download-dir", str(tmp_path / "d")]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("error: cannot download")
    assert "place the file at" in message and "-S prepare.dataset=folder -S prepare.folder_path=PATH" in message


def test_defaults_are_the_dvc_yaml_layout():
    """The paths every run shares default to the ones dvc.yaml passes; per-cell paths have no default."""
    import shlex

    import typer.main
    import yaml

    from stages.app import load_all

    load_all()
    group = typer.main.get_command(app)
    dvc = yaml.safe_load((Path(__file__).resolve().parents[2] / "dvc.yaml").read_text())["stages"]
    checked = 0
    for stage in dvc.values():
        argv = shlex.split(stage["cmd"])
        command = group.get_command(None, argv[1])
        options = {opt: p for p in command.params for opt in p.opts}
        for flag, value in zip(argv[2:], argv[3:], strict=False):
            param = options.get(flag)
            if param is None or "${" in value or getattr(param, "is_flag", False):
                continue
            if param.default is not None and not callable(param.default):
                assert str(param.default) == value, f"{argv[1]} {flag}: default {param.default}, dvc.yaml {value}"
                checked += 1
    assert checked >= 3  # prepare --out, --download-dir, subset --prepared


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
