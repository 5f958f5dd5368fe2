"""Any ImageFolder tree or .tar / .tar.gz archive holding ``train/<class>/*`` and ``test/<class>/*``.

Layout: ``train/`` and ``test/`` at the top, or inside one top-level folder (``mydata/train/...``). The test split
may also be called ``val/``, ``valid/`` or ``validation/`` (the first of ``TEST_SPLITS`` present is used; the
files of the others count as skipped). Classes are the sub-folders of ``train/`` in sorted order (label =
position); the test split must have the same classes. The dataset is named after the folder or archive
(``dataset_name``: ``cifar10-jpeg.tar.gz`` -> ``cifar10-jpeg``).
Files deeper inside a class folder belong to that class. Archives are streamed, never extracted.
Skipped (and counted): files that are not images, files outside any class folder, hidden files and folders
(``.DS_Store``, ``._*``, ``__MACOSX``). An image file that cannot be decoded is an error naming it.
Links, in a tree as in an archive, are never followed: one whose target leaves the tree (or archive) is an error
naming it, one that stays inside is skipped and counted (what it points to is read under its own name).
Original index: position of the image in its split after sorting by (class name, path inside the class
folder), counting images only.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np

from pipeline.core.digest import file_digest
from pipeline.core.errors import HydraMixError
from pipeline.core.progress import tqdm
from pipeline.data.download import iter_tar
from pipeline.data.images import load_image
from pipeline.data.imageset import ImageSet
from pipeline.data.sources.source_data import SourceData, SourceFile, SourceOptions

TEST_SPLITS = ("test", "val", "valid", "validation")  # names of the test split, in order of preference
SPLITS = ("train", *TEST_SPLITS)
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar")
# fork: workers start instantly and inherit the loaded modules (spawn would re-import the whole CLI, torch
# included, in every worker); they only run Pillow/numpy code, as PyTorch's DataLoader workers do.
_FORK = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
_DECODE_WORKERS = max(1, min(4, os.cpu_count() or 1))
_BATCH = 1024  # images per worker task; inputs smaller than this are decoded in-process


def _hidden(part: str) -> bool:
    return part.startswith(".") or part == "__MACOSX"


def _iter_tree(root: Path) -> Iterator[tuple[str, bool, Path | None]]:
    """(relative POSIX path, is_dir, file path) for everything under ``root``, in sorted walk order.

    A link (to a file or a folder) comes as (path, False, None), after checking that it points inside the
    tree: like a link in an archive it is never followed (``os.walk`` does not descend into linked folders).
    """
    real_root = os.path.realpath(root)  # the root itself may be a link: the user named it
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        for name, is_dir in [(d, True) for d in dirnames] + [(f, False) for f in sorted(filenames)]:
            rel, full = (name if rel_dir == "." else f"{rel_dir}/{name}"), os.path.join(dirpath, name)
            if os.path.islink(full):
                target = os.path.realpath(full)
                if os.path.commonpath([real_root, target]) != real_root:
                    raise HydraMixError(
                        f"{root}: link '{rel}' -> '{os.readlink(full)}' points outside the tree (links are not "
                        "followed out of a dataset folder, as in archives; copy the file in instead)"
                    )
                yield rel, False, None
            else:
                yield rel, is_dir, None if is_dir else Path(full)


def _decode_batch(batch: list[tuple[str, bytes | str]], resolution: int) -> list[tuple[np.ndarray | None, str]]:
    """Each (display name, bytes or file path) -> (image or None if not an image, sha256 of the bytes)."""
    out = []
    for name, payload in batch:
        data = _read_no_follow(payload, name) if isinstance(payload, str) else payload
        out.append((load_image(data, name, resolution), hashlib.sha256(data).hexdigest()))
    return out


def _read_no_follow(path: str, name: str) -> bytes:
    """The bytes of the regular file ``path``; HydraMixError if it cannot be read, or has become a link since
    the walk checked it (O_NOFOLLOW)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            return f.read()
    except OSError as exc:
        raise HydraMixError(f"{name}: cannot read it ({exc.strerror or exc})") from None


class _Collector:
    """Sorts member paths into split/class slots and decodes the images in batches.

    Decoding tiny images is dominated by Pillow's Python-level header parsing, which holds the GIL, so big
    inputs are decoded in worker processes (started at the first full batch); small ones stay in-process.
    """

    def __init__(self, source: str, resolution: int, bar: tqdm, workers: int | None = None) -> None:
        self.source = source
        self.resolution = resolution
        self.bar = bar
        self.workers = workers or _DECODE_WORKERS
        self.folders: set[str] = set()  # the top two levels of folders seen, for an error naming what was found
        self.pool: ProcessPoolExecutor | None = None
        self.prefixes: set[str] = set()
        self.classes: dict[str, set[str]] = {s: set() for s in SPLITS}
        self.pending: list[tuple[str, bytes | str]] = []
        self.slots: list[tuple[str, str, str]] = []  # (split, class, path inside the class folder)
        self.results: list[Future | list] = []
        self.skipped = 0

    def _locate(self, rel: str) -> tuple[str, list[str]] | None:
        """(split, parts below the split) for a path under train/ or test/, else None."""
        parts = rel.split("/")
        if any(_hidden(p) for p in parts):
            return None
        self.folders.update("/".join(parts[: i + 1]) + "/" for i in range(min(2, len(parts) - 1)))
        for depth in (0, 1):
            if len(parts) > depth and parts[depth] in SPLITS:
                self.prefixes.add("/".join(parts[:depth]))
                return parts[depth], parts[depth + 1 :]
        return None

    def add_dir(self, rel: str) -> None:
        located = self._locate(rel + "/")  # a folder: all its parts are folder names
        if located and len(located[1]) == 2:  # <split>/<class>/ (the trailing "" of the slash)
            self.classes[located[0]].add(located[1][0])

    def add_file(self, rel: str, payload: bytes | Path) -> None:
        located = self._locate(rel)
        if located is None or len(located[1]) < 2:  # hidden, outside the splits, or not inside a class folder
            self.skipped += 1
            return
        split, below = located
        inner = "/".join(below[1:])
        self.classes[split].add(below[0])
        self.slots.append((split, below[0], inner))
        if isinstance(payload, Path):
            self.pending.append((str(payload), str(payload)))
        else:
            self.pending.append((f"{self.source}:{split}/{below[0]}/{inner}", payload))
        if len(self.pending) >= _BATCH:
            self.flush(final=False)

    def flush(self, final: bool) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        if final and self.pool is None:  # small input: decoding here beats starting processes
            self.results.append(_decode_batch(batch, self.resolution))
            self.bar.update(len(batch))
            return
        if self.pool is None:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=_FORK)
        future = self.pool.submit(_decode_batch, batch, self.resolution)
        size = len(batch)
        future.add_done_callback(lambda _: self.bar.update(size))
        self.results.append(future)

    def collect(self) -> list[tuple[np.ndarray | None, str]]:
        """All decoded results, in slot order (raises the first decoding error)."""
        self.flush(final=True)
        return [r for part in self.results for r in (part.result() if isinstance(part, Future) else part)]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def dataset_name(path: Path) -> str:
    """The name a folder dataset goes by in manifests and reports: the folder's or archive's name without its
    archive suffix (``data/cifar10-jpeg.tar.gz`` -> ``cifar10-jpeg``; ``photos/`` -> ``photos``)."""
    name = path.name if path.name not in ("", ".", "..") else path.resolve().name
    for suffix in _ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name or "folder"


def load_folder_path(path: Path, resolution: int, progress: bool = True, workers: int | None = None) -> SourceData:
    """Read the tree or archive at ``path`` into train/test ImageSets at ``resolution`` x ``resolution``.

    workers: decoding processes for a large input (None: up to 4, one per CPU).
    """
    if not path.exists():
        raise HydraMixError(f"dataset path {path} does not exist")
    is_dir = path.is_dir()
    with tqdm(desc=f"decoding {path.name}", unit="img", disable=not progress) as bar:
        collector = _Collector(str(path), resolution, bar, workers)
        try:
            if is_dir:
                for rel, member_is_dir, file in _iter_tree(path):
                    if member_is_dir:
                        collector.add_dir(rel)
                    elif file is not None:
                        collector.add_file(rel, file)
                    else:  # a link that stays inside the tree, skipped as in an archive
                        collector.skipped += 1
            else:
                for member in iter_tar(path):
                    if member.is_dir:
                        collector.add_dir(member.name)
                    elif member.data is not None:
                        collector.add_file(member.name, member.data)
                    else:  # a link: no content of its own
                        collector.skipped += 1
            results = collector.collect()
        finally:
            collector.close()
    if len(collector.prefixes) > 1:
        raise HydraMixError(
            f"{path}: train/ and test/ found under several roots ({', '.join(sorted(collector.prefixes))})"
        )
    test_split = _test_split(path, collector)
    class_names = _check_classes(path, collector.classes, test_split)
    label_of = {name: i for i, name in enumerate(class_names)}

    splits: dict[str, list[tuple[int, str, np.ndarray]]] = {"train": [], test_split: []}
    skipped = collector.skipped
    used = [(slot, result) for slot, result in zip(collector.slots, results, strict=True) if slot[0] in splits]
    skipped += len(collector.slots) - len(used)  # the files of another test-like split
    for (split, cls, inner), (image, _) in used:
        if image is None:
            skipped += 1
        else:
            splits[split].append((label_of[cls], inner, image))
    sets = {}
    for split, rows in splits.items():
        rows.sort(key=lambda r: (r[0], r[1]))
        labels = np.array([r[0] for r in rows], dtype=np.int64)
        empty = [class_names[c] for c in range(len(class_names)) if not np.any(labels == c)]
        if empty:
            raise HydraMixError(f"{path}: class '{empty[0]}' in {split}/ has no images")
        images = np.stack([r[2] for r in rows])
        sets[split] = ImageSet(images, labels, np.arange(len(rows), dtype=np.int64), class_names)

    if is_dir:  # a digest of the whole tree: every used file's path and content
        tree = hashlib.sha256()
        for (split, cls, inner), (_, digest) in sorted(used):
            tree.update(f"{split}/{cls}/{inner}\0{digest}\n".encode())
        sha256 = tree.hexdigest()
    else:
        sha256 = file_digest(path, "sha256")
    files = (SourceFile(str(path), sha256),)
    name = dataset_name(path)
    return SourceData(name, sets["train"], sets[test_split], files, skipped=skipped, test_split=test_split)


def _found(collector: _Collector) -> str:
    """The folders seen at the top two levels, for an error message."""
    folders = sorted(collector.folders)
    if not folders:
        return "no folders"
    return ", ".join(folders[:12]) + (f" and {len(folders) - 12} more" if len(folders) > 12 else "")


def _test_split(path: Path, collector: _Collector) -> str:
    """The first of TEST_SPLITS with class folders; HydraMixError naming what was found if train/ or all of
    them are missing."""
    expected = "train/<class>/<image> and test/ (or val/, valid/, validation/) beside it, in the top folder or one "
    if not collector.classes["train"]:
        raise HydraMixError(f"{path}: no classes in train/ (expected {expected}level below; found {_found(collector)})")
    for split in TEST_SPLITS:
        if collector.classes[split]:
            return split
    raise HydraMixError(
        f"{path}: no test split: no classes in test/, val/, valid/ or validation/ (expected {expected}level "
        f"below; found {_found(collector)})"
    )


def _check_classes(path: Path, classes: dict[str, set[str]], test_split: str = "test") -> tuple[str, ...]:
    """Sorted class names, after checking train/ and the test split have the same non-empty class list."""
    for split in ("train", test_split):
        if not classes[split]:
            raise HydraMixError(
                f"{path}: no classes in {split}/ (expected {split}/<class>/<image>, in the top folder or one "
                "level below)"
            )
    if classes["train"] != classes[test_split]:
        only_train = sorted(classes["train"] - classes[test_split])
        only_test = sorted(classes[test_split] - classes["train"])
        raise HydraMixError(
            f"{path}: train/ and {test_split}/ have different classes (only in train: {only_train or 'none'}; "
            f"only in {test_split}: {only_test or 'none'})"
        )
    return tuple(sorted(classes["train"]))


def load_folder(options: SourceOptions) -> SourceData:
    """The ``folder`` source: ``options.folder_path`` at ``options.resolution``."""
    if options.folder_path is None:
        raise HydraMixError("dataset 'folder' needs a path (prepare.folder_path in params.yaml or --path)")
    return load_folder_path(Path(options.folder_path), options.resolution, options.progress, options.workers)
