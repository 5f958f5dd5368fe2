"""Test-split evaluation: batched predictions, accuracy metrics and a confusion-matrix plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.core.atomic import save_figure
from pipeline.core.devices import autocast
from pipeline.data.imageset import ImageSet


def normalise(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32, (x / 255 - mean) / std per channel, on ``images``' device."""
    mean_t = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2).float() / 255.0 - mean_t) / std_t


def predict(
    model: nn.Module,
    images: ImageSet,
    mean: list[float],
    std: list[float],
    batch_size: int,
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """(N,) int64 predicted labels of ``model`` (eval mode, on its device) for ``images``; no augmentation.

    mean/std: per-channel normalisation in [0, 1] units (the checkpoint's); dtype: autocast dtype (float32:
    none).
    """
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = torch.from_numpy(images.images[start : start + batch_size]).to(device)  # (B, H, W, 3) uint8
            x = normalise(chunk, mean, std)
            with autocast(device, dtype):
                logits = model(x.contiguous(memory_format=torch.channels_last))
            out.append(logits.argmax(1).cpu())
    return torch.cat(out).numpy().astype(np.int64) if out else np.zeros(0, np.int64)


def accuracy_metrics(labels: np.ndarray, predictions: np.ndarray, class_names: tuple[str, ...]) -> dict[str, Any]:
    """Top-1, macro-average and per-class accuracy (fractions in [0, 1]) and the confusion matrix.

    labels, predictions: (N,) int in [0, C). confusion[i][j] counts images of true class i predicted as j.
    Macro accuracy is the unweighted mean over classes that have at least one test image.
    """
    n_classes = len(class_names)
    confusion = np.bincount(labels * n_classes + predictions, minlength=n_classes * n_classes)
    confusion = confusion.reshape(n_classes, n_classes)
    support = confusion.sum(1)
    present = support > 0
    per_class = np.divide(np.diag(confusion), support, out=np.zeros(n_classes), where=present)
    return {
        "top1": float(np.diag(confusion).sum() / max(1, len(labels))),
        "macro_accuracy": float(per_class[present].mean()) if present.any() else 0.0,
        "per_class": {name: float(a) for name, a in zip(class_names, per_class, strict=True)},
        "confusion": confusion.tolist(),
        "n_test": int(len(labels)),
    }


def plot_confusion(confusion: list[list[int]], class_names: tuple[str, ...], path: str | Path, title: str) -> None:
    """Write a row-normalised confusion-matrix heat map (counts written in the cells) as a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(confusion)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    n = len(class_names)
    size = max(4.0, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=90)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:  # numbers stay legible up to ~20 classes
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    fig.tight_layout()
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
