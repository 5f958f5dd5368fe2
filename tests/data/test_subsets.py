"""draw_subset (balanced, seeded, nested) and the subset directory format."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import HydraMixError
from pipeline.data.subsets import draw_subset, read_subset, write_subset
from tests.conftest import make_imageset

LABELS = np.repeat(np.arange(3), [10, 12, 7])
NAMES = ("a", "b", "c")


def test_balanced_sorted_and_deterministic():
    pos, _ = draw_subset(LABELS, NAMES, 5, seed=3)
    assert np.bincount(LABELS[pos]).tolist() == [5, 5, 5]
    for c in range(3):
        chosen = pos[LABELS[pos] == c]
        assert (np.diff(chosen) > 0).all()
    np.testing.assert_array_equal(pos, draw_subset(LABELS, NAMES, 5, seed=3)[0])
    assert not np.array_equal(pos, draw_subset(LABELS, NAMES, 5, seed=4)[0])


def test_nested_across_k():
    previous: set[int] = set()
    for k in (1, 2, 5, 7):
        chosen = set(draw_subset(LABELS, NAMES, k, seed=0)[0].tolist())
        assert previous <= chosen
        previous = chosen


def test_bad_k():
    with pytest.raises(HydraMixError, match="k must be >= 1"):
        draw_subset(LABELS, NAMES, 0, seed=0)
    with pytest.raises(HydraMixError, match="k=8 is larger than class 'c', which has only 7 images"):
        draw_subset(LABELS, NAMES, 8, seed=0)
    with pytest.raises(HydraMixError, match="k=5 plus val_per_class=3 is larger than class 'c'"):
        draw_subset(LABELS, NAMES, 5, seed=0, val_per_class=3)
    with pytest.raises(HydraMixError, match="val_per_class must be >= 0"):
        draw_subset(LABELS, NAMES, 5, seed=0, val_per_class=-1)


def test_validation_draw_is_balanced_disjoint_and_independent_of_k():
    _, val = draw_subset(LABELS, NAMES, 1, seed=2, val_per_class=2)
    assert np.bincount(LABELS[val]).tolist() == [2, 2, 2]
    for k in (1, 3, 5):
        train, val_k = draw_subset(LABELS, NAMES, k, seed=2, val_per_class=2)
        np.testing.assert_array_equal(val_k, val)  # the same validation images whatever k
        assert not set(train.tolist()) & set(val.tolist())
    # Asking for a validation draw never moves the subset itself.
    np.testing.assert_array_equal(draw_subset(LABELS, NAMES, 5, seed=2)[0], draw_subset(LABELS, NAMES, 5, 2, 2)[0])
    assert draw_subset(LABELS, NAMES, 5, seed=2)[1].size == 0


def test_write_and_read_subset(tmp_path, tiny_subset):
    subset = read_subset(tiny_subset)
    assert subset.manifest["counts"]["train"] == {"circle": 8, "square": 8, "stripes": 8, "checker": 8}
    assert subset.manifest["resolution"] == 16 and len(subset.manifest["indices"]) == 32
    with pytest.raises(HydraMixError, match="not a subset directory"):
        read_subset(tmp_path / "nowhere")
    other = make_imageset(2, n_classes=2)
    with pytest.raises(HydraMixError, match="different class names"):
        write_subset(tmp_path / "bad", subset.train, other, {})
    assert not (tmp_path / "bad").exists()
