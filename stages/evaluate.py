"""``hydramix evaluate``: a trained classifier's accuracy on the subset's full test split.

The work is ``pipeline.classify.evaluate_checkpoint.evaluate_checkpoint``; this command checks the flags, calls it
and prints a one-line summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.classify.evaluate_checkpoint import EvaluationRequest, evaluate_checkpoint
from pipeline.core.errors import HydraMixError
from pipeline.core.threads import set_torch_threads
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
    request = EvaluationRequest(
        checkpoint=checkpoint,
        subset=subset,
        out_metrics=out_metrics,
        out_plot=out_plot,
        split=split,
        device=device,
        precision=precision,
        batch_size=batch_size,
    )
    evaluation = evaluate_checkpoint(request)
    metrics = evaluation.metrics
    typer.echo(
        f"{evaluation.title}: top-1 {100 * metrics['top1']:.2f}%, macro {100 * metrics['macro_accuracy']:.2f}% "
        f"on {metrics['n_test']} {'test' if split == 'test' else 'validation'} images; wrote {out_metrics}"
    )
