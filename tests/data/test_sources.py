"""Every source's parser on tiny archives fabricated in the exact official formats (no network)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import HydraMixError
from pipeline.data.download import RemoteFile
from pipeline.data.sources import SOURCES, SourceOptions, load_source
from pipeline.data.sources.cifar import CIFAIR10, CIFAIR100, load_cifar_release, parse_cifar_batch
from pipeline.data.sources.folder import load_folder_path
from pipeline.data.sources.stl10 import STL10_BINARY, load_stl10_archive

# --- fabrication helpers ----------------------------------------------------------------------------------


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _cifar_batch(images: np.ndarray, labels: list[int], labels_key: bytes) -> bytes:
    """A batch like the official python pickles: (N, 3072) uint8 channel-major rows, labels as a list."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return pickle.dumps({b"batch_label": b"x", labels_key: labels, b"data": data, b"filenames": []}, protocol=2)


def _remote(path: Path, url: str = "http://127.0.0.1:9/unused") -> RemoteFile:
    return RemoteFile(url, path.name, md5=hashlib.md5(path.read_bytes()).hexdigest())


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


@pytest.fixture
def cifar10_files(tmp_path):
    """cifar-10-python.tar.gz (5 batches of 3) + ciFAIR-10.zip (test of 4), with the official inner paths."""
    train = _images(15, 0)
    train_labels = [i % 3 for i in range(15)]
    names = pickle.dumps({b"label_names": [b"airplane", b"automobile", b"bird"], b"num_vis": 3072}, protocol=2)
    tar_path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        _add(tar, "cifar-10-batches-py/batches.meta", names)
        for b in range(5):
            sl = slice(3 * b, 3 * b + 3)
            _add(
                tar,
                f"cifar-10-batches-py/data_batch_{b + 1}",
                _cifar_batch(train[sl], train_labels[sl], b"labels"),
            )
        _add(tar, "cifar-10-batches-py/test_batch", _cifar_batch(_images(2, 9), [0, 1], b"labels"))
    test = _images(4, 1)
    zip_path = tmp_path / "ciFAIR-10.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("ciFAIR-10/batches.meta", names)
        zf.writestr("ciFAIR-10/test_batch", _cifar_batch(test, [2, 1, 0, 2], b"labels"))
    release = dataclasses.replace(CIFAIR10, train_archive=_remote(tar_path), test_archive=_remote(zip_path))
    return release, train, np.array(train_labels), test


def test_cifair10_parses_official_layout(cifar10_files, tmp_path):
    release, train, train_labels, test = cifar10_files
    data = load_cifar_release(release, SourceOptions(download_dir=tmp_path, progress=False))
    assert data.dataset == "cifair10"
    assert data.train.class_names == ("airplane", "automobile", "bird")
    np.testing.assert_array_equal(data.train.images, train)  # channel-major rows decoded to HWC exactly
    np.testing.assert_array_equal(data.train.labels, train_labels)
    np.testing.assert_array_equal(data.train.indices, np.arange(15))  # batch 1..5 concatenated in order
    np.testing.assert_array_equal(data.test.images, test)  # the ciFAIR test batch, not CIFAR's test_batch
    np.testing.assert_array_equal(data.test.labels, [2, 1, 0, 2])
    assert data.train.images.dtype == np.uint8 and data.train.labels.dtype == np.int64
    assert [f.location for f in data.files] == [release.train_archive.url, release.test_archive.url]
    assert data.files[0].md5 == release.train_archive.md5 and len(data.files[0].sha256) == 64
    assert data.skipped == 0


def test_cifar_pixel_layout_is_rgb_row_major():
    row = np.zeros(3072, np.uint8)
    row[0] = 10  # R of pixel (0, 0)
    row[1] = 11  # R of pixel (0, 1)
    row[32] = 12  # R of pixel (1, 0)
    row[1024] = 20  # G of pixel (0, 0)
    row[2048] = 30  # B of pixel (0, 0)
    blob = pickle.dumps({b"data": row[None], b"labels": [0]})
    images, labels = parse_cifar_batch(blob, b"labels", "x")
    assert images[0, 0, 0].tolist() == [10, 20, 30]
    assert images[0, 0, 1, 0] == 11 and images[0, 1, 0, 0] == 12
    assert labels.tolist() == [0]


def test_cifair100_uses_fine_labels(tmp_path):
    train, test = _images(6, 2), _images(3, 3)
    meta = pickle.dumps({b"fine_label_names": [b"apple", b"bee"], b"coarse_label_names": [b"food"]}, protocol=2)

    def batch(images, fine):
        data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
        return pickle.dumps({b"data": data, b"fine_labels": fine, b"coarse_labels": [0] * len(fine)}, protocol=2)

    tar_path = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        _add(tar, "cifar-100-python/meta", meta)
        _add(tar, "cifar-100-python/train", batch(train, [0, 1, 0, 1, 0, 1]))
        _add(tar, "cifar-100-python/test", batch(_images(1, 7), [0]))
    zip_path = tmp_path / "ciFAIR-100.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("ciFAIR-100/meta", meta)
        zf.writestr("ciFAIR-100/test", batch(test, [1, 1, 0]))
    release = dataclasses.replace(CIFAIR100, train_archive=_remote(tar_path), test_archive=_remote(zip_path))
    data = load_cifar_release(release, SourceOptions(download_dir=tmp_path, progress=False))
    assert data.dataset == "cifair100" and data.train.class_names == ("apple", "bee")
    assert data.train.labels.tolist() == [0, 1, 0, 1, 0, 1] and data.test.labels.tolist() == [1, 1, 0]
    np.testing.assert_array_equal(data.test.images, test)


def test_cifar_wrong_checksum_is_refused(cifar10_files, tmp_path):
    release, *_ = cifar10_files
    bad = dataclasses.replace(release, train_archive=dataclasses.replace(release.train_archive, md5="0" * 32))
    with pytest.raises(HydraMixError, match="wrong md5 checksum"):
        load_cifar_release(bad, SourceOptions(download_dir=tmp_path, progress=False))


def test_cifar_corrupt_archive_and_foreign_pickles(cifar10_files, tmp_path):
    release, *_ = cifar10_files
    junk = tmp_path / "junk" / "cifar-10-python.tar.gz"
    junk.parent.mkdir()
    junk.write_bytes(b"\x1f\x8b" + b"garbage" * 100)  # gzip magic, corrupt body
    (junk.parent / "ciFAIR-10.zip").write_bytes((tmp_path / "ciFAIR-10.zip").read_bytes())
    release = dataclasses.replace(release, train_archive=_remote(junk))
    with pytest.raises(HydraMixError, match=r"cifar-10-python\.tar\.gz: corrupt or unreadable archive"):
        load_cifar_release(release, SourceOptions(download_dir=junk.parent, progress=False))
    with pytest.raises(HydraMixError, match="no b'labels' entry"):
        parse_cifar_batch(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8)}), b"labels", "b")
    # a pickle that would run code is refused, not executed
    evil = pickle.dumps({b"data": os.getcwd, b"labels": []})  # would import posix.getcwd
    with pytest.raises(HydraMixError, match="refusing to load"):
        parse_cifar_batch(evil, b"labels", "evil")


# --- STL-10 ------------------------------------------------------------------------------------------------


def _stl10_archive(tmp_path: Path, train: np.ndarray, test: np.ndarray, train_y, test_y) -> Path:
    """stl10_binary.tar.gz: images stored (N, C, W, H) = channel by channel, column-major; labels 1-based."""
    path = tmp_path / "stl10_binary.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "stl10_binary/class_names.txt", b"airplane\nbird\ncar\n")
        _add(tar, "stl10_binary/fold_indices.txt", b"0 1\n")
        _add(tar, "stl10_binary/unlabeled_X.bin", bytes(3 * 96 * 96))
        _add(tar, "stl10_binary/train_X.bin", train.transpose(0, 3, 2, 1).tobytes())
        _add(tar, "stl10_binary/train_y.bin", bytes(train_y))
        _add(tar, "stl10_binary/test_X.bin", test.transpose(0, 3, 2, 1).tobytes())
        _add(tar, "stl10_binary/test_y.bin", bytes(test_y))
    return path


def test_stl10_parses_column_major_binaries(tmp_path):
    rng = np.random.default_rng(4)
    train = rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    train[0, 0, 95] = [255, 0, 0]  # top-right pixel red: catches a row/column mix-up
    test = rng.integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    path = _stl10_archive(tmp_path, train, test, [1, 3, 2], [3, 1])
    data = load_stl10_archive(_remote(path), SourceOptions(download_dir=tmp_path, progress=False))
    assert data.train.class_names == ("airplane", "bird", "car")
    np.testing.assert_array_equal(data.train.images, train)
    np.testing.assert_array_equal(data.test.images, test)
    assert data.train.labels.tolist() == [0, 2, 1] and data.test.labels.tolist() == [2, 0]
    assert data.train.resolution == 96 and data.test.indices.tolist() == [0, 1]
    assert STL10_BINARY.md5 == "91f7769df0f17e558f3565bffb0c7dfb"


def test_stl10_bad_labels_and_sizes(tmp_path):
    imgs = np.zeros((1, 96, 96, 3), np.uint8)
    path = _stl10_archive(tmp_path, imgs, imgs, [11], [1])
    with pytest.raises(HydraMixError, match=r"labels must lie in 1\.\.3"):
        load_stl10_archive(_remote(path), SourceOptions(download_dir=tmp_path, progress=False))


# --- registry ----------------------------------------------------------------------------------------------


def test_registry_and_unknown_dataset(tmp_path):
    assert set(SOURCES) == {"cifair10", "cifair100", "stl10", "folder"}
    with pytest.raises(HydraMixError, match="unknown dataset 'imagenet'.*cifair10"):
        load_source("imagenet", SourceOptions(download_dir=tmp_path))
    with pytest.raises(HydraMixError, match="needs a path"):
        load_source("folder", SourceOptions(download_dir=tmp_path))


# --- folder ------------------------------------------------------------------------------------------------


def _png(colour, size=(20, 20), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _tree_files() -> dict[str, bytes]:
    """A messy ImageFolder layout; 3 classes; a README and hidden files that must be skipped."""
    return {
        "train/dog/b.png": _png((0, 0, 200)),
        "train/dog/a.png": _png((0, 0, 100)),
        "train/cat/x.png": _png(128, mode="L"),
        "train/cat/sub/y.png": _png((10, 20, 30, 0), size=(50, 30), mode="RGBA"),
        "train/ant/1.png": _png((1, 2, 3)),
        "train/ant/notes.txt": b"not an image",
        "train/.DS_Store": b"\x00\x00\x00\x01Bud1",
        "train/cat/._x.png": b"\x00\x05\x16\x07 AppleDouble",
        "README.md": b"# my dataset",
        "test/dog/t.png": _png((0, 0, 50)),
        "test/cat/t.png": _png(200, mode="L"),
        "test/ant/t.png": _png((4, 5, 6)),
    }


def _write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _write_tar(path: Path, files: dict[str, bytes], dirs: tuple[str, ...] = ()) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in files.items():
            _add(tar, name, data)
    return path


def test_folder_tree_classes_indices_and_skips(tmp_path):
    data = load_folder_path(_write_tree(tmp_path / "ds", _tree_files()), 16, progress=False)
    assert data.train.class_names == ("ant", "cat", "dog")  # sorted folder names
    assert data.train.labels.tolist() == [0, 1, 1, 2, 2]
    assert data.train.indices.tolist() == [0, 1, 2, 3, 4]  # sorted (class, path in class), images only
    # dog/a.png sorts before dog/b.png
    assert data.train.images[3, 0, 0, 2] == 100 and data.train.images[4, 0, 0, 2] == 200
    assert data.train.images[1, 0, 0].tolist() == [255, 255, 255]  # cat/sub/y.png: transparent -> white
    assert data.train.images.shape == (5, 16, 16, 3)
    assert data.test.labels.tolist() == [0, 1, 2]
    assert data.skipped == 4  # notes.txt, .DS_Store, ._x.png, README.md
    assert data.files[0].location == str(tmp_path / "ds") and len(data.files[0].sha256) == 64


def test_folder_archive_equals_tree_and_accepts_a_root_folder(tmp_path):
    tree = load_folder_path(_write_tree(tmp_path / "ds", _tree_files()), 16, progress=False)
    files = {f"mydata/{k}": v for k, v in _tree_files().items() if not k.startswith("README")}
    archive = load_folder_path(_write_tar(tmp_path / "ds.tar.gz", files), 16, progress=False)
    np.testing.assert_array_equal(archive.train.images, tree.train.images)
    np.testing.assert_array_equal(archive.test.labels, tree.test.labels)
    assert archive.skipped == 3
    assert archive.files[0].sha256 == hashlib.sha256((tmp_path / "ds.tar.gz").read_bytes()).hexdigest()


def test_folder_many_files_use_worker_processes(tmp_path):
    files = {f"train/c{i % 2}/{i:05d}.png": _png((i % 256, 0, 0), size=(8, 8)) for i in range(1100)}
    files |= {"test/c0/a.png": _png((1, 1, 1), (8, 8)), "test/c1/a.png": _png((2, 2, 2), (8, 8))}
    data = load_folder_path(_write_tar(tmp_path / "big.tar", files), 8, progress=False)
    assert len(data.train) == 1100 and data.train.counts() == {"c0": 550, "c1": 550}
    # class c0 holds files 0, 2, 4, ... in sorted order
    assert data.train.images[:3, 0, 0, 0].tolist() == [0, 2, 4]


def test_folder_bad_inputs(tmp_path):
    with pytest.raises(HydraMixError, match="does not exist"):
        load_folder_path(tmp_path / "nope", 16, progress=False)
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "test").mkdir()
    with pytest.raises(HydraMixError, match="no classes in train/"):
        load_folder_path(empty, 16, progress=False)
    files = _tree_files()
    tree = _write_tree(tmp_path / "emptyclass", files)
    (tree / "train" / "zebra").mkdir()
    (tree / "test" / "zebra").mkdir()
    with pytest.raises(HydraMixError, match="class 'zebra' in train/ has no images"):
        load_folder_path(tree, 16, progress=False)
    no_test_ants = {k: v for k, v in files.items() if k != "test/ant/t.png"}
    with pytest.raises(HydraMixError, match=r"different classes \(only in train: \['ant'\]"):
        load_folder_path(_write_tree(tmp_path / "mismatch", no_test_ants), 16, progress=False)
    corrupt = dict(files, **{"train/dog/c.png": _png((1, 1, 1))[:30]})
    with pytest.raises(HydraMixError, match=r"train/dog/c\.png: unreadable image"):
        load_folder_path(_write_tar(tmp_path / "corrupt.tar.gz", corrupt), 16, progress=False)


def test_folder_archive_traversal_and_empty_class_dir(tmp_path):
    files = dict(_tree_files(), **{"../escape.png": _png((1, 2, 3))})
    with pytest.raises(HydraMixError, match="path traversal"):
        load_folder_path(_write_tar(tmp_path / "evil.tar.gz", files), 16, progress=False)
    archive = _write_tar(tmp_path / "e.tar.gz", _tree_files(), dirs=("train/yak/", "test/yak/"))
    with pytest.raises(HydraMixError, match="class 'yak' in train/ has no images"):
        load_folder_path(archive, 16, progress=False)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b\x08" + b"\x00" * 50)
    with pytest.raises(HydraMixError, match="corrupt"):
        load_folder_path(junk, 16, progress=False)


# --- links: one policy for trees and archives ---------------------------------------------------------------


def _symlink_tar(path: Path, files: dict[str, bytes], links: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            _add(tar, name, data)
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("train/dog/evil.png", "outside.png"),  # a file outside
        ("train/dog/more", "outside"),  # a folder of images outside
        ("train/.hidden.png", "outside.png"),  # even where nothing would be read
    ],
)
def test_links_out_of_the_tree_are_refused_in_trees_and_archives_alike(tmp_path, link, target):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.png").write_bytes(_png((9, 9, 9)))
    (tmp_path / "outside.png").write_bytes(_png((9, 9, 9)))
    tree = _write_tree(tmp_path / "ds", _tree_files())
    (tree / link).symlink_to(tmp_path / target)
    with pytest.raises(HydraMixError, match=rf"link '{re.escape(link)}' -> .* points outside the tree"):
        load_folder_path(tree, 16, progress=False)
    depth = "../" * link.count("/")
    for name, pointer in ((link, f"{depth}../{target}"), (link, str(tmp_path / target))):
        archive = _symlink_tar(tmp_path / "ds.tar.gz", _tree_files(), {name: pointer})
        with pytest.raises(HydraMixError, match="points outside the target directory"):
            load_folder_path(archive, 16, progress=False)


def test_links_inside_the_tree_are_skipped_and_counted_in_trees_and_archives_alike(tmp_path):
    plain = load_folder_path(_write_tree(tmp_path / "plain", _tree_files()), 16, progress=False)
    tree = _write_tree(tmp_path / "ds", _tree_files())
    (tree / "train" / "dog" / "copy.png").symlink_to("a.png")
    (tree / "train" / "cat" / "dogs").symlink_to("../dog", target_is_directory=True)
    linked_tree = load_folder_path(tree, 16, progress=False)
    links = {"train/dog/copy.png": "a.png", "train/cat/dogs": "../dog"}
    linked_archive = load_folder_path(_symlink_tar(tmp_path / "ds.tar.gz", _tree_files(), links), 16, progress=False)
    for data in (linked_tree, linked_archive):
        np.testing.assert_array_equal(data.train.images, plain.train.images)  # nothing read twice
        np.testing.assert_array_equal(data.train.labels, plain.train.labels)
    assert linked_tree.skipped == linked_archive.skipped == plain.skipped + 2
    # The folder the user names may itself be a link.
    (tmp_path / "alias").symlink_to(tmp_path / "plain", target_is_directory=True)
    via_alias = load_folder_path(tmp_path / "alias", 16, progress=False)
    np.testing.assert_array_equal(via_alias.train.images, plain.train.images)


def test_a_file_swapped_for_a_link_after_the_walk_is_not_followed(tmp_path, monkeypatch):
    import pipeline.data.sources.folder as folder

    tree = _write_tree(tmp_path / "ds", _tree_files())
    (tmp_path / "secret.png").write_bytes(_png((7, 7, 7)))
    real_walk = folder._iter_tree

    def walk_then_swap(root):
        entries = list(real_walk(root))
        victim = tree / "train" / "dog" / "a.png"
        victim.unlink()
        victim.symlink_to(tmp_path / "secret.png")  # a race: the check has already passed
        yield from entries

    monkeypatch.setattr(folder, "_iter_tree", walk_then_swap)
    with pytest.raises(HydraMixError, match=r"train/dog/a\.png: cannot read it"):
        load_folder_path(tree, 16, progress=False)
