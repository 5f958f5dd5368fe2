"""A subset -> a trained generator file and its figures: the work of ``hydramix train-generator``.

``make_generator`` checks that every output can be written, reads the subset, trains (``train.train_generator``,
resuming from the checkpoint when one is there) and writes the self-describing generator file and whichever of
the loss curve, picture grid, metrics and timings are asked for; the training checkpoint is deleted only once
they are all written. Under ``torchrun`` (inside ``pipeline.core.distributed.session()``) every rank trains its
part of each batch and rank 0 writes the files. It reads no params file: the caller passes the ``generator``
section, with any overrides applied, as a ``GeneratorConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.core import distributed
from pipeline.core.atomic import check_writable, write_json
from pipeline.core.digest import file_digest
from pipeline.core.errors import WriteError
from pipeline.core.torch_io import outputs_not_written
from pipeline.data.subsets import read_subset
from pipeline.generator.config import GeneratorConfig
from pipeline.generator.files import save_generator, write_loss_curve, write_png
from pipeline.generator.train import RUN_KEYS, TrainResult, train_generator


@dataclass(frozen=True)
class GeneratorRequest:
    """What to train and where to write it.

    subset: a subset directory (``hydramix subset``); its train split is trained on. generator: the generator
    file to write. cfg: the ``generator`` params with any overrides applied. metrics: JSON of what the generator
    is (PSNR, mask fidelity, final losses); timings: JSON of how the run went (``RUN_KEYS``: throughput, seconds,
    device), kept apart so that a re-run on other hardware changes no metric; loss_curve: CSV for ``dvc plots``;
    grid: PNG of example mixes. checkpoint: the training state, written every ``cfg.checkpoint_every`` steps and
    resumed from if present (None: a killed run starts over). progress: show training progress.
    """

    subset: Path
    generator: Path
    cfg: GeneratorConfig
    metrics: Path | None = None
    timings: Path | None = None
    loss_curve: Path | None = None
    grid: Path | None = None
    checkpoint: Path | None = None
    progress: bool = True


def make_generator(request: GeneratorRequest) -> TrainResult | None:
    """Train (or resume) the generator ``request`` asks for and write its files; returns the run on rank 0 (or
    in a single process: its ``metrics`` hold everything the metrics and timings files got), None on the others.

    WriteError before any training if an output cannot be written; WriteError after training if a write fails,
    saying whether the checkpoint of the finished run is kept (then the same request writes the outputs without
    training again). HydraMixError for a subset that cannot be read or a checkpoint of another run.
    """
    cfg, checkpoint = request.cfg, request.checkpoint
    outputs = (request.generator, request.metrics, request.timings, request.loss_curve, request.grid, checkpoint)
    check_writable(files=tuple(p for p in outputs if p is not None))  # before any training
    data = read_subset(request.subset)
    subset_sha256 = file_digest(request.subset / "manifest.json")
    result = train_generator(
        data.train, cfg, subset_sha256=subset_sha256, checkpoint_path=checkpoint, progress=request.progress
    )
    if not distributed.is_main():
        return None  # rank 0 writes the outputs; the session's barrier holds the others until it has
    try:
        save_generator(
            request.generator, result.generator, cfg, data.train.class_names, subset_sha256, result.metrics["step"]
        )
        if request.loss_curve is not None:
            write_loss_curve(request.loss_curve, result.history)
        if request.grid is not None:
            write_png(request.grid, result.grid)
        if request.metrics is not None:
            write_json(request.metrics, {k: v for k, v in result.metrics.items() if k not in RUN_KEYS})
        if request.timings is not None:
            write_json(request.timings, {k: v for k, v in result.metrics.items() if k in RUN_KEYS})
    except WriteError as exc:
        raise outputs_not_written(exc, checkpoint, cfg.iterations) from None
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)  # only now: a kill before this point still resumes
    return result
