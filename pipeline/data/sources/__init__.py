"""Data sources by name: each turns its raw input into a ``SourceData`` (train + test ImageSets + provenance).

``SOURCES`` is the registry (name -> loader taking ``SourceOptions``); ``load_source`` looks a name up and
gives a clear error for an unknown one.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.core.errors import HydraMixError
from pipeline.data.sources.cifar import load_cifair10, load_cifair100
from pipeline.data.sources.folder import load_folder
from pipeline.data.sources.source_data import SourceData, SourceFile, SourceOptions
from pipeline.data.sources.stl10 import load_stl10

SOURCES: dict[str, Callable[[SourceOptions], SourceData]] = {
    "cifair10": load_cifair10,
    "cifair100": load_cifair100,
    "stl10": load_stl10,
    "folder": load_folder,
}

__all__ = ["SOURCES", "SourceData", "SourceFile", "SourceOptions", "load_source"]


def load_source(name: str, options: SourceOptions) -> SourceData:
    """Run the source registered as ``name``; HydraMixError listing the known names if there is none."""
    if name not in SOURCES:
        raise HydraMixError(f"unknown dataset '{name}'; choose one of: {', '.join(SOURCES)}")
    return SOURCES[name](options)
