"""The scoring loop with the tiny random open_clip model: shards streamed into the per-class statistics and the
sample table, batching-invariant; empty sources and bad labels refused. Plumbing only: no metric value from
random weights is checked or reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import synthetic_dataset, write_lines

from pipeline.core.errors import HydraMixError
from pipeline.metric.image_batches import ScoreSource, batches_from_arrays, batches_from_samples
from pipeline.metric.sample_table import SAMPLE_SCHEMA, SampleTableWriter
from pipeline.metric.scoring_loop import score_source
from pipeline.metric.synsets import imagenet_vocabulary, load_vocabulary, templates
from pipeline.metric.text_embeddings import text_embeddings
from pipeline.synthesis.shards.reader import iter_samples


def test_score_source_streams_shards_into_the_sample_table(tiny_clip, tmp_path):
    dataset = synthetic_dataset(tmp_path / "synth", n_per_class=5)
    vocab = load_vocabulary(str(write_lines(tmp_path / "v.txt", ["n02121808\tdomestic cat", "dog", "car"])))
    template_set = templates("simple")[:2]
    synsets = text_embeddings(tiny_clip, vocab.names, template_set)
    classes = text_embeddings(tiny_clip, ("a", "b"), template_set)

    def run(batch_size: int, out: Path):
        source = ScoreSource("synth", ("a", "b"), batches_from_samples(iter_samples(dataset), batch_size))
        with SampleTableWriter(out) as sink:
            return score_source(tiny_clip, source, vocab, synsets, classes, top_k=5, sink=sink, progress=False)

    m3 = run(3, tmp_path / "s3.parquet")
    m10 = run(10, tmp_path / "s10.parquet")
    assert m3.count.tolist() == [5, 5]
    np.testing.assert_allclose(m3.h_class, m10.h_class, atol=1e-5)  # batching does not change the statistics
    table = pq.read_table(tmp_path / "s3.parquet")
    assert table.schema.equals(SAMPLE_SCHEMA) and table.num_rows == 10
    row = table.slice(0, 1).to_pylist()[0]
    assert row["dataset"] == "synth" and row["key"] == "s0x000" and row["class_name"] == "a"
    assert len(row["top_synset_ids"]) == 3  # top_k capped at |S|
    assert set(row["top_synset_ids"]) == {"n02121808", "dog", "car"}
    assert row["top_probs"] == sorted(row["top_probs"], reverse=True)
    assert sum(row["top_probs"]) == pytest.approx(1.0, abs=1e-5)


def test_score_source_rejects_empty_and_bad_labels(tiny_clip):
    vocab = imagenet_vocabulary()
    synsets = torch.nn.functional.normalize(torch.randn(len(vocab), 16), dim=-1)
    classes = torch.nn.functional.normalize(torch.randn(2, 16), dim=-1)
    empty = ScoreSource("nothing", ("a", "b"), iter([]))
    with pytest.raises(HydraMixError, match="'nothing' has no images"):
        score_source(tiny_clip, empty, vocab, synsets, classes, progress=False)
    images = np.zeros((2, 8, 8, 3), np.uint8)
    bad = ScoreSource("bad", ("a", "b"), batches_from_arrays(["x", "y"], images, np.array([0, 7]), 4))
    with pytest.raises(HydraMixError, match="label 7 outside its 2 classes"):
        score_source(tiny_clip, bad, vocab, synsets, classes, progress=False)
