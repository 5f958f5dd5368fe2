"""Image streams: samples grouped into batches (split where the image size changes) and the prefetch thread."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import HydraMixError
from pipeline.metric.image_batches import batches_from_samples, prefetch
from pipeline.synthesis.shards.format import Sample


def test_batches_from_samples_groups_and_splits_on_size_change():
    img = lambda n: np.zeros((n, n, 3), np.uint8)  # noqa: E731
    samples = [Sample(f"k{i}", img(4 if i < 5 else 6), i % 2, {}) for i in range(8)]
    batches = list(batches_from_samples(samples, batch_size=3))
    assert [len(b.keys) for b in batches] == [3, 2, 3]
    assert batches[1].images.shape == (2, 4, 4, 3) and batches[2].images.shape == (3, 6, 6, 3)
    assert [k for b in batches for k in b.keys] == [s.key for s in samples]


def test_prefetch_preserves_order_and_raises_producer_errors():
    assert list(prefetch(iter(range(10)))) == list(range(10))

    def broken():
        yield 1
        raise HydraMixError("bad shard")

    with pytest.raises(HydraMixError, match="bad shard"):
        list(prefetch(broken()))
