"""STL-10, official binary release: labelled train (5,000) and test (8,000) at 96x96; unlabelled ignored.

Inside ``stl10_binary.tar.gz`` (folder ``stl10_binary/``): ``train_X.bin`` / ``test_X.bin`` hold images as
consecutive 3 x 96 x 96 uint8 blocks, channel by channel, each channel stored column-major (Matlab order);
``train_y.bin`` / ``test_y.bin`` hold one uint8 label in 1..10 per image; ``class_names.txt`` has one name
per line.
The 2.7 GB ``unlabeled_X.bin`` is streamed past without being held in memory.
Original indices: position of the image in its ``*_X.bin`` file.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.digest import file_digest
from pipeline.core.errors import HydraMixError
from pipeline.data.download import RemoteFile, fetch, read_members
from pipeline.data.imageset import ImageSet
from pipeline.data.sources.source_data import SourceData, SourceFile, SourceOptions

STL10_BINARY = RemoteFile(
    url="http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
    filename="stl10_binary.tar.gz",
    md5="91f7769df0f17e558f3565bffb0c7dfb",
)
_ROOT = "stl10_binary"
_SIDE = 96


def parse_stl10_images(blob: bytes, where: str) -> np.ndarray:
    """The bytes of a ``*_X.bin`` file -> (N, 96, 96, 3) uint8 RGB."""
    block = 3 * _SIDE * _SIDE
    if len(blob) % block:
        raise HydraMixError(f"{where}: {len(blob)} bytes is not a whole number of 3x96x96 images")
    # (N, C, W, H) as stored column-major -> (N, H, W, C)
    images = np.frombuffer(blob, dtype=np.uint8).reshape(-1, 3, _SIDE, _SIDE).transpose(0, 3, 2, 1)
    return np.ascontiguousarray(images)


def parse_stl10_labels(blob: bytes, n_classes: int, where: str) -> np.ndarray:
    """The bytes of a ``*_y.bin`` file (labels 1..n_classes) -> (N,) int64 labels 0..n_classes-1."""
    labels = np.frombuffer(blob, dtype=np.uint8).astype(np.int64) - 1
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise HydraMixError(f"{where}: labels must lie in 1..{n_classes}")
    return labels


def parse_class_names(blob: bytes, where: str) -> tuple[str, ...]:
    """``class_names.txt`` -> the non-empty lines, stripped."""
    names = tuple(line.strip() for line in blob.decode("utf-8").splitlines() if line.strip())
    if not names:
        raise HydraMixError(f"{where}: no class names")
    return names


def load_stl10_archive(archive: RemoteFile, options: SourceOptions) -> SourceData:
    """Fetch, verify and parse an STL-10 binary tarball described by ``archive``."""
    path = fetch(archive, options.download_dir, progress=options.progress)
    wanted = {f"{_ROOT}/{name}" for name in ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")}
    names_member = f"{_ROOT}/class_names.txt"
    blobs = read_members(path, wanted | {names_member})
    names = parse_class_names(blobs[names_member], f"{path}:{names_member}")
    splits = {}
    for split in ("train", "test"):
        x_member, y_member = f"{_ROOT}/{split}_X.bin", f"{_ROOT}/{split}_y.bin"
        images = parse_stl10_images(blobs[x_member], f"{path}:{x_member}")
        labels = parse_stl10_labels(blobs[y_member], len(names), f"{path}:{y_member}")
        if len(images) != len(labels):
            raise HydraMixError(f"{path}: {split} has {len(images)} images but {len(labels)} labels")
        splits[split] = ImageSet(images, labels, np.arange(len(labels), dtype=np.int64), names)
    files = (SourceFile(archive.url, file_digest(path, "sha256"), archive.md5),)
    return SourceData("stl10", splits["train"], splits["test"], files)


def load_stl10(options: SourceOptions) -> SourceData:
    """STL-10 labelled train (5,000) + test (8,000), 96x96, 10 classes."""
    return load_stl10_archive(STL10_BINARY, options)
