"""The per-sample table writer: in place on success, nothing under the final name after an error."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from pipeline.metric.sample_table import SAMPLE_SCHEMA, SampleTableWriter

ROW = {
    "dataset": ["d"],
    "key": ["k0"],
    "label": [0],
    "class_name": ["a"],
    "top_synset_ids": [["n02121808"]],
    "top_synset_names": [["domestic cat"]],
    "top_probs": [[1.0]],
    "entropy": [0.0],
    "zero_shot_class": ["a"],
}


def test_rows_land_under_the_final_name_only_on_success(tmp_path):
    with SampleTableWriter(tmp_path / "out/s.parquet") as sink:
        sink.write(ROW)
        sink.write(ROW)
        assert not (tmp_path / "out/s.parquet").exists()
    table = pq.read_table(tmp_path / "out/s.parquet")
    assert table.schema.equals(SAMPLE_SCHEMA) and table.num_rows == 2

    with pytest.raises(RuntimeError), SampleTableWriter(tmp_path / "failed.parquet") as sink:
        sink.write(ROW)
        raise RuntimeError("scoring failed")
    assert list(tmp_path.glob("failed.parquet*")) == []
