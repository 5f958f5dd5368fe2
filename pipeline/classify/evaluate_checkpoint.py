"""A classifier file + its subset -> accuracy metrics and a confusion plot: the work of ``hydramix evaluate``.

``evaluate_checkpoint`` loads the model file, checks it was trained on this subset's train split, predicts the
test split (or the validation draw) with the last-iterate model and no test-time augmentation, and writes the
metrics JSON and the confusion-matrix PNG. Apart from ``evaluate.py`` because it needs the checkpoint reader of
``train.py``, which itself imports ``evaluate.predict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.classify.augment import run_name
from pipeline.classify.evaluate import accuracy_metrics, plot_confusion, predict
from pipeline.classify.train import check_compatible, load_checkpoint
from pipeline.core.atomic import write_json
from pipeline.core.devices import Precision, resolve_device, resolve_dtype
from pipeline.core.errors import HydraMixError
from pipeline.data.subsets import read_subset


@dataclass(frozen=True)
class EvaluationRequest:
    """What to evaluate and where to write it.

    checkpoint: a model file from ``hydramix train-classifier``; subset: the subset directory it was trained on.
    split: "test" (the full test split: reported results) or "val" (the subset's validation draw, for choosing a
    recipe). device: auto, cpu or cuda[:N]; precision: auto, fp32, bf16 or fp16 (the autocast dtype);
    batch_size: images per forward pass.
    """

    checkpoint: Path
    subset: Path
    out_metrics: Path
    out_plot: Path
    split: str = "test"
    device: str = "auto"
    precision: Precision = "auto"
    batch_size: int = 500


@dataclass(frozen=True)
class Evaluation:
    """What was written: the metrics (top-1, macro and per-class accuracy, confusion, the run's description) and
    the title of the plot (run, architecture, dataset, k, seed)."""

    metrics: dict[str, Any]
    title: str


def evaluate_checkpoint(request: EvaluationRequest) -> Evaluation:
    """Evaluate ``request.checkpoint`` on its subset's split and write the metrics JSON and the confusion PNG.

    HydraMixError for an unreadable checkpoint, one trained on another subset, or ``split="val"`` on a subset
    without a validation draw.
    """
    model, meta = load_checkpoint(request.checkpoint)
    data = read_subset(request.subset)
    check_compatible(meta, data.train, str(request.subset))
    images = data.test if request.split == "test" else data.val
    if images is None:
        raise HydraMixError(
            f"{request.subset} has no validation split; write one with `hydramix subset --val-per-class N`"
        )
    target = resolve_device(request.device)
    model = model.to(target, memory_format=torch.channels_last)
    dtype = resolve_dtype(target, request.precision)
    predictions = predict(model, images, meta["mean"], meta["std"], request.batch_size, dtype)
    metrics = accuracy_metrics(images.labels, predictions, images.class_names)
    metrics.update(
        split=request.split,
        method=meta["method"],
        augment=meta.get("augment"),
        arch=meta["arch"]["name"],
        dataset=meta.get("dataset"),
        k=meta.get("k"),
        subset_seed=meta.get("subset_seed"),
        seed=meta["seed"],
        iterations=meta["step"],
        synthetic_share=meta["config"]["synthetic_share"] if meta.get("synthetic") else 0.0,
        checkpoint=str(request.checkpoint),
    )
    run = run_name(meta["method"], meta.get("augment"))
    title = f"{run} {meta['arch']['name']} {meta.get('dataset')} k={meta.get('k')} seed={meta['seed']}"
    plot_confusion(
        metrics["confusion"], images.class_names, request.out_plot, f"{title}: top-1 {100 * metrics['top1']:.1f}%"
    )
    write_json(request.out_metrics, metrics)
    return Evaluation(metrics, title)
