"""``hydramix train-classifier``: train a classifier from scratch with one method (+ a classic augmentation).

A killed run restarted with the same command resumes from its training checkpoint (``--checkpoint``, by default
OUT.ckpt next to the model file, deleted once the model is written). Under ``torchrun`` the same command trains
with DistributedDataParallel (classifier.batch_size is the global batch); rank 0 writes the model file, the
checkpoint and the statistics.

The work is ``pipeline.classify.make_classifier.make_classifier``; this command checks the flags (the method,
its augmentation and --synthetic go together), loads the ``classifier`` section, applies the overrides, calls it
and prints a one-line summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.classify.architectures import ARCHITECTURES
from pipeline.classify.augment import CLASSIC_AUGMENTATIONS, METHODS, SYNTHETIC_METHODS, resolve_augment, run_name
from pipeline.classify.make_classifier import ClassifierRequest, make_classifier
from pipeline.classify.train import ClassifierConfig
from pipeline.core import distributed
from pipeline.core.config import replace
from pipeline.core.errors import HydraMixError
from pipeline.core.threads import set_torch_threads
from stages.app import ParamsOption, ThreadsOption, existing_dir, load_section, parse_threads, stage


@stage(
    "train-classifier",
    help="Train a classifier from scratch on a real subset with one method: a classic augmentation "
    f"({', '.join(CLASSIC_AUGMENTATIONS)}) on the real images, or a synthetic method "
    f"({', '.join(SYNTHETIC_METHODS)}) that also draws part of each batch from --synthetic DIR and can be "
    "combined with a classic augmentation applied to the whole batch (--method hydramix --augment mixup).",
)
def train_classifier_command(
    method: Annotated[str, typer.Option("--method", help=f"Method: {', '.join(METHODS)}.")],
    subset: Annotated[Path, typer.Option("--subset", help="Subset directory written by `hydramix subset`.")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint file to write (.pt).")],
    synthetic: Annotated[
        Path | None,
        typer.Option("--synthetic", help="Synthetic dataset directory (shards); required by the synthetic methods."),
    ] = None,
    augment: Annotated[
        str | None,
        typer.Option(
            "--augment",
            help="Classic augmentation applied to every batch, real and synthetic rows alike, of a synthetic "
            f"method ({', '.join(CLASSIC_AUGMENTATIONS)}; default baseline: crop + flip). The run is reported as "
            "METHOD+AUGMENT.",
        ),
    ] = None,
    allow_foreign_synthetic: Annotated[
        bool,
        typer.Option(
            "--allow-foreign-synthetic",
            help="Accept a synthetic set made from another subset than --subset (off: that is an error).",
        ),
    ] = False,
    out_metrics: Annotated[
        Path | None,
        typer.Option("--out-metrics", help="Optional JSON with training statistics (time, img/s, val top-1)."),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Training-state checkpoint: written every --checkpoint-every steps and after the last one, resumed "
            "from if present (same command, same config), deleted once the model file is written. Default: OUT.ckpt.",
        ),
    ] = None,
    checkpoint_every: Annotated[
        int,
        typer.Option(
            "--checkpoint-every",
            min=1,
            help="Steps between training checkpoints (saving never changes the result; raise it for large models "
            "on fast devices).",
        ),
    ] = 100,
    params: ParamsOption = Path("params.yaml"),
    iterations: Annotated[int | None, typer.Option(help="Override classifier.iterations.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override classifier.seed.")] = None,
    arch: Annotated[str | None, typer.Option(help=f"Override classifier.arch: {', '.join(ARCHITECTURES)}.")] = None,
    device: Annotated[str | None, typer.Option(help="Override classifier.device: auto, cpu, cuda[:N].")] = None,
    synthetic_share: Annotated[float | None, typer.Option(help="Override classifier.synthetic_share.")] = None,
    threads: ThreadsOption = None,
) -> None:
    """Load the subset (and synthetic set), train, write the checkpoint (and training statistics)."""
    name = run_name(method, resolve_augment(method, augment))  # validates the combination first
    if arch is not None and arch not in ARCHITECTURES:
        raise HydraMixError(f"unknown architecture '{arch}'; valid: {', '.join(ARCHITECTURES)}")
    if method in SYNTHETIC_METHODS and synthetic is None:
        raise HydraMixError(f"method '{method}' needs --synthetic DIR (a dataset written by `hydramix synthesize`)")
    if method not in SYNTHETIC_METHODS and synthetic is not None:
        raise HydraMixError(
            f"method '{method}' uses no synthetic data; drop --synthetic or use one of {', '.join(SYNTHETIC_METHODS)}"
        )
    existing_dir(subset, "--subset", "a subset directory written by `hydramix subset`")
    if synthetic is not None:
        existing_dir(synthetic, "--synthetic", "a dataset directory written by `hydramix synthesize`")
    config = load_section(params, "classifier", ClassifierConfig)
    try:
        config = replace(
            config,
            iterations=iterations,
            seed=seed,
            arch=arch,
            device=device,
            synthetic_share=synthetic_share,
            threads=parse_threads(threads),
        )
    except ValueError as exc:
        raise HydraMixError(f"bad flag value: {exc}") from None
    set_torch_threads(config.threads)
    request = ClassifierRequest(
        method=method,
        subset=subset,
        out=out,
        checkpoint=checkpoint if checkpoint is not None else out.with_name(out.name + ".ckpt"),
        cfg=config,
        synthetic=synthetic,
        augment=augment,
        allow_foreign_synthetic=allow_foreign_synthetic,
        out_metrics=out_metrics,
        checkpoint_every=checkpoint_every,
    )
    with distributed.session():  # a no-op without torchrun
        result = make_classifier(request)
    if result is None:  # not rank 0: rank 0 wrote the outputs
        return
    stats = result.stats
    line = f"{name}: {config.iterations} steps in {stats['seconds']} s ({stats['train_images_per_s']} img/s)"
    if "val_top1" in stats:
        line += f", val top-1 {100 * stats['val_top1']:.2f}%"
    typer.echo(f"{line}; wrote {out}")
