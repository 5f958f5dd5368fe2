"""ImageSet invariants and the Parquet format: round trip, determinism, row selection, errors."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import HydraMixError
from pipeline.data.imageset import ImageSet, decode_png, encode_png, read_parquet, write_parquet
from tests.conftest import make_imageset


def test_round_trip_is_lossless_and_deterministic(tmp_path):
    images = make_imageset(5, resolution=16)
    write_parquet(images, tmp_path / "a.parquet")
    write_parquet(images, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    back = read_parquet(tmp_path / "a.parquet")
    np.testing.assert_array_equal(back.images, images.images)
    np.testing.assert_array_equal(back.labels, images.labels)
    np.testing.assert_array_equal(back.indices, images.indices)
    assert back.class_names == images.class_names and back.resolution == 16
    assert not list(tmp_path.glob("*.tmp"))


def test_read_selected_rows(tmp_path):
    images = make_imageset(3)
    write_parquet(images, tmp_path / "a.parquet")
    some = read_parquet(tmp_path / "a.parquet", rows=[7, 0, 4])
    np.testing.assert_array_equal(some.images, images.images[[7, 0, 4]])
    assert some.indices.tolist() == [7, 0, 4]


def test_large_table_through_worker_processes(tmp_path):
    n = 4200  # above the in-process threshold
    rng = np.random.default_rng(0)
    images = ImageSet(
        rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8),
        np.arange(n, dtype=np.int64) % 3,
        np.arange(n, dtype=np.int64),
        ("a", "b", "c"),
    )
    write_parquet(images, tmp_path / "big.parquet")
    back = read_parquet(tmp_path / "big.parquet")
    np.testing.assert_array_equal(back.images, images.images)
    assert decode_png(encode_png(images.images[5])).tolist() == images.images[5].tolist()


def test_take_counts_and_validation():
    images = make_imageset(2, n_classes=3)
    assert images.counts() == {"circle": 2, "square": 2, "stripes": 2}
    sub = images.take([5, 0])
    assert sub.labels.tolist() == [2, 0] and sub.indices.tolist() == [5, 0]
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(np.zeros((1, 2, 2, 3), np.float32), np.zeros(1, np.int64), np.zeros(1, np.int64), ("a",))
    with pytest.raises(ValueError, match="outside the range"):
        ImageSet(np.zeros((1, 2, 2, 3), np.uint8), np.ones(1, np.int64), np.zeros(1, np.int64), ("a",))


def test_read_errors(tmp_path):
    with pytest.raises(HydraMixError, match="no such file"):
        read_parquet(tmp_path / "missing.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(HydraMixError, match="not a readable Parquet file"):
        read_parquet(tmp_path / "junk.parquet")
