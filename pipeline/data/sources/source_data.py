"""What every data source returns, and the options a source may read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.data.imageset import ImageSet


@dataclass(frozen=True)
class SourceFile:
    """One input the data came from: ``location`` (URL or local path) and checksums (lowercase hex).

    ``sha256`` is always computed from the bytes read; ``md5`` is the published checksum it was verified
    against, where one exists. For a folder tree, ``sha256`` is a digest of all file paths and contents.
    """

    location: str
    sha256: str
    md5: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"location": self.location, "sha256": self.sha256, "md5": self.md5}


@dataclass(frozen=True, eq=False)
class SourceData:
    """A dataset as loaded: train and test ImageSets (same class names), where they came from, files skipped.

    train/test: uint8 RGB at the dataset's resolution, int64 labels, int64 original indices (the stable
    position of each image in its source split, see docs/data.md). ``skipped`` counts non-image files passed
    over (always 0 for the official archives). ``dataset`` is the name manifests and reports use (a folder
    dataset's is the folder's or archive's name); ``test_split`` the folder the test images came from.
    """

    dataset: str
    train: ImageSet
    test: ImageSet
    files: tuple[SourceFile, ...]
    skipped: int = 0
    test_split: str = "test"


@dataclass(frozen=True)
class SourceOptions:
    """What a source may need: where official archives are downloaded to, the user's folder/archive (only the
    ``folder`` source reads it) and the output resolution for ``folder`` (official sources keep their native
    32 or 96 px). ``progress`` shows progress on stderr (``pipeline.core.progress``); ``workers`` is the number of
    image-decoding processes (None: up to 4, one per CPU)."""

    download_dir: Path
    folder_path: Path | None = None
    resolution: int = 32
    progress: bool = True
    workers: int | None = None
