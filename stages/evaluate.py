"""``hydramix evaluate``: a trained classifier's accuracy on the subset's full test split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer

from pipeline.classify.augment import run_name
from pipeline.classify.evaluate import accuracy_metrics, plot_confusion, predict
from pipeline.classify.train import check_compatible, load_checkpoint
from pipeline.core.atomic import write_json
from pipeline.core.devices import resolve_device, resolve_dtype
from pipeline.core.errors import HydraMixError
from pipeline.core.threads import set_torch_threads
from pipeline.data.subsets import read_subset
from stages.app import ThreadsOption, existing_dir, existing_file, parse_threads, stage


@stage(
    "evaluate",
    help="Measure a classifier checkpoint on its subset's full test split: top-1, macro-average and "
    "per-class accuracy (metrics JSON) and a confusion-matrix PNG.",
)
def evaluate_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Checkpoint from `hydramix train-classifier`.")],
    subset: Annotated[Path, typer.Option("--subset", help="The subset directory the checkpoint was trained on.")],
    out_metrics: Annotated[Path, typer.Option("--out-metrics", help="Metrics JSON to write.")],
    out_plot: Annotated[Path, typer.Option("--out-plot", help="Confusion-matrix PNG to write.")],
    device: Annotated[str, typer.Option(help="auto, cpu, cuda[:N].")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Test images per forward pass.")] = 500,
    precision: Annotated[str, typer.Option(help="auto (bf16 where supported), fp32, bf16, fp16 (CUDA).")] = "auto",
    split: Annotated[
        str,
        typer.Option(
            help="test: the full test split (reported results). val: the subset's validation draw "
            "(`hydramix subset --val-per-class`), for choosing a recipe without touching the test split."
        ),
    ] = "test",
    threads: ThreadsOption = None,
) -> None:
    """Evaluate the last-iterate model (no test-time augmentation) and write metrics + plot."""
    if split not in ("test", "val"):
        raise HydraMixError(f"unknown split '{split}'; valid: test, val")
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise HydraMixError(f"unknown precision '{precision}'; valid: auto, fp32, bf16, fp16")
    existing_file(checkpoint, "--checkpoint", "a classifier checkpoint written by `hydramix train-classifier`")
    existing_dir(subset, "--subset", "a subset directory written by `hydramix subset`")
    set_torch_threads(parse_threads(threads) or "auto")
    model, meta = load_checkpoint(checkpoint)
    data = read_subset(subset)
    check_compatible(meta, data.train, str(subset))
    images = data.test if split == "test" else data.val
    if images is None:
        raise HydraMixError(f"{subset} has no validation split; write one with `hydramix subset --val-per-class N`")
    target = resolve_device(device)
    model = model.to(target, memory_format=torch.channels_last)
    dtype = resolve_dtype(target, precision)
    predictions = predict(model, images, meta["mean"], meta["std"], batch_size, dtype)
    metrics = accuracy_metrics(images.labels, predictions, images.class_names)
    metrics.update(
        split=split,
        method=meta["method"],
        augment=meta.get("augment"),
        arch=meta["arch"]["name"],
        dataset=meta.get("dataset"),
        k=meta.get("k"),
        subset_seed=meta.get("subset_seed"),
        seed=meta["seed"],
        iterations=meta["step"],
        synthetic_share=meta["config"]["synthetic_share"] if meta.get("synthetic") else 0.0,
        checkpoint=str(checkpoint),
    )
    run = run_name(meta["method"], meta.get("augment"))
    title = f"{run} {meta['arch']['name']} {meta.get('dataset')} k={meta.get('k')} seed={meta['seed']}"
    plot_confusion(metrics["confusion"], images.class_names, out_plot, f"{title}: top-1 {100 * metrics['top1']:.1f}%")
    write_json(out_metrics, metrics)
    typer.echo(
        f"{title}: top-1 {100 * metrics['top1']:.2f}%, macro {100 * metrics['macro_accuracy']:.2f}% "
        f"on {metrics['n_test']} {'test' if split == 'test' else 'validation'} images; wrote {out_metrics}"
    )
