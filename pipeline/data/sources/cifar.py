"""ciFAIR-10 / ciFAIR-100: CIFAR's training set (official python tarball) + the ciFAIR test set.

Both archives are downloaded (or found) in the download directory and verified by md5 before anything is
parsed. CIFAR "python version" batches are pickled dicts: ``b'data'`` (N, 3072) uint8 in channel-major order
(1024 R, 1024 G, 1024 B, each row-major 32x32), ``b'labels'`` (CIFAR-10) or ``b'fine_labels'`` (CIFAR-100);
class names come from ``batches.meta`` (``b'label_names'``) or ``meta`` (``b'fine_label_names'``).
Original indices: position in the concatenation of the train batches in file order (0..49,999) and position
in the ciFAIR test batch (0..9,999).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from io import BytesIO

import numpy as np

from pipeline.core.digest import file_digest
from pipeline.core.errors import HydraMixError
from pipeline.data.download import RemoteFile, fetch, read_members
from pipeline.data.imageset import ImageSet
from pipeline.data.sources.source_data import SourceData, SourceFile, SourceOptions

CIFAR10_PYTHON = RemoteFile(
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    filename="cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
)
CIFAR100_PYTHON = RemoteFile(
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    filename="cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
)
# md5s as published in the ciFAIR project's own loaders (cvjena/cifair, loaders/pytorch/cifair.py).
CIFAIR10_ZIP = RemoteFile(
    url="https://github.com/cvjena/cifair/releases/download/v1.0/ciFAIR-10.zip",
    filename="ciFAIR-10.zip",
    md5="ca08fd390f0839693d3fc45c4e49585f",
)
CIFAIR100_ZIP = RemoteFile(
    url="https://github.com/cvjena/cifair/releases/download/v1.0/ciFAIR-100.zip",
    filename="ciFAIR-100.zip",
    md5="ddc236ab4b12eeb8b20b952614861a33",
)


@dataclass(frozen=True)
class CifarRelease:
    """Where the pieces of one ciFAIR variant live: archives and member paths inside them."""

    dataset: str
    train_archive: RemoteFile
    train_members: tuple[str, ...]  # batches, concatenated in this order
    meta_member: str
    names_key: bytes
    labels_key: bytes
    test_archive: RemoteFile
    test_member: str


CIFAIR10 = CifarRelease(
    dataset="cifair10",
    train_archive=CIFAR10_PYTHON,
    train_members=tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
    meta_member="cifar-10-batches-py/batches.meta",
    names_key=b"label_names",
    labels_key=b"labels",
    test_archive=CIFAIR10_ZIP,
    test_member="ciFAIR-10/test_batch",
)
CIFAIR100 = CifarRelease(
    dataset="cifair100",
    train_archive=CIFAR100_PYTHON,
    train_members=("cifar-100-python/train",),
    meta_member="cifar-100-python/meta",
    names_key=b"fine_label_names",
    labels_key=b"fine_labels",
    test_archive=CIFAIR100_ZIP,
    test_member="ciFAIR-100/test",
)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a pickle can run code, these ones never need to."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> type:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(blob: bytes, where: str) -> dict:
    try:
        obj = _NumpyOnlyUnpickler(BytesIO(blob), encoding="bytes").load()
    except Exception as exc:  # any unpickling failure means a corrupt or foreign file
        raise HydraMixError(f"{where}: not a CIFAR python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise HydraMixError(f"{where}: not a CIFAR python batch (expected a dict, got {type(obj).__name__})")
    return obj


def parse_cifar_batch(blob: bytes, labels_key: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A pickled CIFAR batch -> images (N, 32, 32, 3) uint8 RGB and labels (N,) int64."""
    batch = _unpickle(blob, where)
    for key in (b"data", labels_key):
        if key not in batch:
            raise HydraMixError(f"{where}: not a CIFAR python batch (no {key!r} entry)")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[labels_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise HydraMixError(f"{where}: b'data' must be (N, 3072) uint8 with N labels, got {data.shape}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # channel-major rows -> (N, H, W, C)
    return np.ascontiguousarray(images), labels


def parse_label_names(blob: bytes, names_key: bytes, where: str) -> tuple[str, ...]:
    """A pickled CIFAR meta file -> class names in label order."""
    meta = _unpickle(blob, where)
    if names_key not in meta:
        raise HydraMixError(f"{where}: not a CIFAR meta file (no {names_key!r} entry)")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key])


def load_cifar_release(release: CifarRelease, options: SourceOptions) -> SourceData:
    """Fetch, verify and parse both archives of ``release``."""
    train_path = fetch(release.train_archive, options.download_dir, progress=options.progress)
    test_path = fetch(release.test_archive, options.download_dir, progress=options.progress)

    blobs = read_members(train_path, {*release.train_members, release.meta_member})
    meta_where = f"{train_path}:{release.meta_member}"
    names = parse_label_names(blobs[release.meta_member], release.names_key, meta_where)
    parts = [parse_cifar_batch(blobs[m], release.labels_key, f"{train_path}:{m}") for m in release.train_members]
    train_images = np.concatenate([p[0] for p in parts])
    train_labels = np.concatenate([p[1] for p in parts])

    test_blob = read_members(test_path, {release.test_member})[release.test_member]
    test_where = f"{test_path}:{release.test_member}"
    test_images, test_labels = parse_cifar_batch(test_blob, release.labels_key, test_where)

    for split, labels in (("train", train_labels), ("test", test_labels)):
        if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
            raise HydraMixError(f"{release.dataset}: a {split} label is outside the {len(names)} class names")
    train = ImageSet(train_images, train_labels, np.arange(len(train_labels), dtype=np.int64), names)
    test = ImageSet(test_images, test_labels, np.arange(len(test_labels), dtype=np.int64), names)
    files = tuple(
        SourceFile(remote.url, file_digest(path, "sha256"), remote.md5)
        for remote, path in ((release.train_archive, train_path), (release.test_archive, test_path))
    )
    return SourceData(release.dataset, train, test, files)


def load_cifair10(options: SourceOptions) -> SourceData:
    """CIFAR-10 train (50,000) + ciFAIR-10 test (10,000), 32x32, 10 classes."""
    return load_cifar_release(CIFAIR10, options)


def load_cifair100(options: SourceOptions) -> SourceData:
    """CIFAR-100 train (50,000) + ciFAIR-100 test (10,000), 32x32, 100 fine classes."""
    return load_cifar_release(CIFAIR100, options)
