"""The PNG of a scoring run: per-class entropies of every scored dataset, or a placeholder saying why nothing was
scored (DVC needs its plot either way). The last output of the metric flow (shards -> generality score -> plot).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.atomic import save_figure
from pipeline.metric.entropy import ClassMetrics
from pipeline.metric.synsets import Vocabulary


def plot_entropies(
    results: dict[str, tuple[ClassMetrics, tuple[str, ...]]], vocabulary: Vocabulary, path: Path
) -> None:
    """Grouped bars: per class, H_class (top) and H_image (bottom) for every dataset; log|S| dashed."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    class_names = next(iter(results.values()))[1]
    same_classes = all(names == class_names for _, names in results.values())
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.9 * len(class_names) + 2), 7), sharex=True)
    width = 0.8 / len(results)
    x = np.arange(len(class_names))
    for ax, field, title in zip(
        axes, ("h_class", "h_image"), ("H(mean p) per class", "mean H(p) per class"), strict=True
    ):
        for i, (name, (metrics, _)) in enumerate(results.items()):
            ax.bar(x + i * width - 0.4 + width / 2, getattr(metrics, field), width, label=name)
        ax.axhline(math.log(len(vocabulary)), color="grey", ls="--", lw=0.8, label="log |S|")
        ax.set_ylabel("nats")
        ax.set_title(title)
    axes[1].set_xticks(x, class_names if same_classes else [str(i) for i in x], rotation=45, ha="right")
    axes[0].legend(fontsize="small", ncols=min(4, len(results) + 1))
    fig.tight_layout()
    _save_figure(fig, path)


def plot_message(text: str, path: Path) -> None:
    """A placeholder PNG showing ``text`` (centred), for a run that scored nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(6, 2))
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=12)
    _save_figure(fig, path)


def _save_figure(fig: Any, path: Path) -> None:
    """``save_figure`` (atomic, no version stamp), then close the figure: pyplot keeps every open one alive."""
    import matplotlib.pyplot as plt

    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
