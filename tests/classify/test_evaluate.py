"""Evaluation counts on a hand-made case, prediction plumbing, the confusion plot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.classify.evaluate import accuracy_metrics, plot_confusion, predict
from pipeline.data.imageset import ImageSet


def test_accuracy_metrics_hand_made_case():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    preds = np.array([0, 0, 0, 1, 1, 2, 2, 2, 0, 0])
    m = accuracy_metrics(labels, preds, ("a", "b", "c"))
    assert m["confusion"] == [[3, 1, 0], [0, 1, 1], [2, 0, 2]]
    assert m["top1"] == pytest.approx(6 / 10)
    assert m["per_class"] == pytest.approx({"a": 0.75, "b": 0.5, "c": 0.5})
    assert m["macro_accuracy"] == pytest.approx((0.75 + 0.5 + 0.5) / 3)
    assert m["n_test"] == 10


def test_class_without_test_images_is_left_out_of_the_macro_average():
    m = accuracy_metrics(np.array([0, 0, 1]), np.array([0, 1, 1]), ("a", "b", "c"))
    assert m["per_class"]["c"] == 0.0
    assert m["macro_accuracy"] == pytest.approx((0.5 + 1.0) / 2)


class MeanColour(torch.nn.Module):
    """Predicts the channel with the largest mean: a model whose answers we know."""

    def __init__(self):
        super().__init__()
        self.unused_scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x.mean((2, 3)) * self.unused_scale


def test_predict_normalises_and_batches():
    images = np.zeros((7, 4, 4, 3), np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2, 1])
    images[np.arange(7), :, :, labels] = 200
    data = ImageSet(images, labels, np.arange(7), ("r", "g", "b"))
    preds = predict(MeanColour(), data, mean=[0.5] * 3, std=[0.25] * 3, batch_size=3)
    assert preds.dtype == np.int64 and preds.tolist() == labels.tolist()


def test_plot_confusion_writes_png(tmp_path):
    path = tmp_path / "plots" / "cm.png"
    plot_confusion([[3, 1], [0, 4]], ("a", "b"), path, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(path.parent.glob("*.tmp*"))
