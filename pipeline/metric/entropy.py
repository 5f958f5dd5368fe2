"""CLIP Synset Entropy: the mathematics, as pure functions on probability tensors (see docs/metric.md).

Notation: p(s|x) is an image's zero-shot distribution over the S synsets of the vocabulary. For the images x
of one class c (all entropies in nats, natural log):

- ``h_class``  = H( mean_x p(s|x) )      how many concepts the class covers (generality / diversity)
- ``h_image``  = mean_x H( p(s|x) )      how ambiguous a single image is
- ``mi``       = h_class - h_image       mutual information I(s; x | c) >= 0, Inception-Score-like
- ``consistency`` = zero-shot top-1 with the dataset's own class names as prompts

The dataset level is the unweighted mean over the classes that have images. ``SynsetAccumulator`` collects the
sufficient statistics batch by batch (sum of p, sum of H, counts, hits), so memory is O(classes x synsets)
whatever the dataset size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in nats along ``dim`` of probabilities ``p`` (>= 0, summing to 1); 0 log 0 = 0."""
    return torch.special.entr(p).sum(dim=dim)


def synset_probabilities(
    image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, logit_scale: float
) -> torch.Tensor:
    """p(s|x) = softmax_s(logit_scale * cos(f(x), t_s)).

    image_embeddings: (B, D); text_embeddings: (S, D) (need not be normalised; both are normalised here).
    Returns (B, S) float32 probabilities.
    """
    f = torch.nn.functional.normalize(image_embeddings.float(), dim=-1)
    t = torch.nn.functional.normalize(text_embeddings.float(), dim=-1)
    return torch.softmax(logit_scale * f @ t.T, dim=-1)


@dataclass(frozen=True, eq=False)
class ClassMetrics:
    """Per-class results; every array is (C,) float64, NaN for a class without images.

    count: images per class; n_synsets: S, the vocabulary size (normalised entropies divide by log S).
    """

    count: np.ndarray
    h_class: np.ndarray
    h_image: np.ndarray
    mi: np.ndarray
    consistency: np.ndarray
    n_synsets: int

    def summary(self) -> dict[str, float | int | None]:
        """Dataset level: unweighted means over classes with images, exp(MI) and log|S|-normalised forms."""
        scored = self.count > 0
        if not scored.any():
            raise ValueError("no class has any image; nothing to summarise")
        mean = {name: float(getattr(self, name)[scored].mean()) for name in ("h_class", "h_image", "mi")}
        log_s = math.log(self.n_synsets) if self.n_synsets > 1 else float("nan")
        consistency = self.consistency[scored]
        return {
            **mean,
            "exp_mi": math.exp(mean["mi"]),
            "h_class_norm": mean["h_class"] / log_s,
            "h_image_norm": mean["h_image"] / log_s,
            "consistency": None if np.isnan(consistency).any() else float(consistency.mean()),
            "n_images": int(self.count.sum()),
            "n_classes_scored": int(scored.sum()),
            "n_synsets": int(self.n_synsets),
        }

    def per_class(self, class_names: tuple[str, ...]) -> dict[str, dict[str, float | int | None]]:
        """{class name: {count, h_class, h_image, mi, consistency}} with None for NaN (JSON has no NaN)."""
        out = {}
        for i, name in enumerate(class_names):
            row = {k: float(getattr(self, k)[i]) for k in ("h_class", "h_image", "mi", "consistency")}
            out[name] = {
                "count": int(self.count[i]),
                **{k: (None if math.isnan(v) else v) for k, v in row.items()},
            }
        return out


class SynsetAccumulator:
    """Streams batches of p(s|x) into per-class sufficient statistics (float64, on the batches' device)."""

    def __init__(self, n_classes: int, n_synsets: int, device: torch.device | str = "cpu") -> None:
        if n_classes < 1 or n_synsets < 1:
            raise ValueError(f"need >= 1 class and synset, got {n_classes} classes and {n_synsets} synsets")
        self.n_synsets = n_synsets
        self.sum_p = torch.zeros(n_classes, n_synsets, dtype=torch.float64, device=device)
        self.sum_h = torch.zeros(n_classes, dtype=torch.float64, device=device)
        self.count = torch.zeros(n_classes, dtype=torch.float64, device=device)
        self.hits = torch.zeros(n_classes, dtype=torch.float64, device=device)
        self.judged = torch.zeros(n_classes, dtype=torch.float64, device=device)

    def update(
        self, probs: torch.Tensor, labels: torch.Tensor, class_predictions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Add a batch. probs: (B, S); labels: (B,) int64 class ids; class_predictions: (B,) zero-shot ids.

        Returns the (B,) per-image entropies (nats, float32) for per-sample reporting.
        """
        if probs.ndim != 2 or probs.shape[1] != self.n_synsets or labels.shape != probs.shape[:1]:
            raise ValueError(f"expected probs (B, {self.n_synsets}) and labels (B,), got {probs.shape}, {labels.shape}")
        h = entropy(probs.float())
        labels = labels.to(self.sum_p.device)
        self.sum_p.index_add_(0, labels, probs.to(self.sum_p))
        self.sum_h.index_add_(0, labels, h.to(self.sum_h))
        ones = torch.ones_like(labels, dtype=torch.float64)
        self.count.index_add_(0, labels, ones)
        if class_predictions is not None:
            correct = (class_predictions.to(labels.device) == labels).to(torch.float64)
            self.hits.index_add_(0, labels, correct)
            self.judged.index_add_(0, labels, ones)
        return h

    def result(self) -> ClassMetrics:
        count = self.count.cpu().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_p = self.sum_p / self.count.clamp(min=1)[:, None]
            h_class = np.where(count > 0, entropy(mean_p).cpu().numpy(), np.nan)
            h_image = np.where(count > 0, (self.sum_h / self.count).cpu().numpy(), np.nan)
            judged = self.judged.cpu().numpy()
            consistency = np.where(judged > 0, self.hits.cpu().numpy() / judged, np.nan)
        return ClassMetrics(
            count=count.astype(np.int64),
            h_class=h_class,
            h_image=h_image,
            # Jensen: h_class >= h_image; clip the ~1e-16 rounding below zero of near-identical images.
            mi=np.maximum(h_class - h_image, 0.0),
            consistency=consistency,
            n_synsets=self.n_synsets,
        )


def class_metrics(
    probs: torch.Tensor, labels: torch.Tensor, n_classes: int, class_predictions: torch.Tensor | None = None
) -> ClassMetrics:
    """One-shot form of ``SynsetAccumulator``: probs (N, S), labels (N,) -> ClassMetrics."""
    acc = SynsetAccumulator(n_classes, probs.shape[1], probs.device)
    acc.update(probs, labels, class_predictions)
    return acc.result()
