"""The per-sample table of a scoring run: one Parquet row per image (dataset, key, label, top-k synsets and their
probabilities, entropy, zero-shot class), streamed while scoring (weights -> model -> shards -> **rows** + generality
score).

``SAMPLE_SCHEMA`` is the table's layout; ``SampleTableWriter`` appends batches of rows under a temporary name and
puts the file in place only when the run completes, so a failed run leaves no half-written table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SAMPLE_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("key", pa.string()),
        ("label", pa.int64()),
        ("class_name", pa.string()),
        ("top_synset_ids", pa.list_(pa.string())),
        ("top_synset_names", pa.list_(pa.string())),
        ("top_probs", pa.list_(pa.float32())),
        ("entropy", pa.float32()),
        ("zero_shot_class", pa.string()),
    ]
)


class SampleTableWriter:
    """Streams per-sample rows into a Parquet file (SAMPLE_SCHEMA) under a temporary name; ``close()`` renames
    it into place, ``abort()`` (or leaving a ``with`` block by an exception) removes it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._writer = pq.ParquetWriter(self._tmp, SAMPLE_SCHEMA, compression="zstd")

    def write(self, columns: dict[str, list[Any]]) -> None:
        self._writer.write_table(pa.table(columns, schema=SAMPLE_SCHEMA))

    def close(self) -> None:
        self._writer.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> SampleTableWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.abort() if exc_type else self.close()
