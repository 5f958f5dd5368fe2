"""A subset (+ a synthetic set) -> a trained classifier file: the work of ``hydramix train-classifier``.

``make_classifier`` checks that every output can be written, reads the subset and, for a synthetic method, the
synthetic set (same classes, made from this subset unless foreign sets are allowed, same resolution), trains
(``train.train_classifier``, resuming from the checkpoint when one is there) and writes the self-describing model
file and the training statistics; the training checkpoint is deleted only once they are written. Under
``torchrun`` (inside ``pipeline.core.distributed.session()``) every rank trains its part of each batch and rank
0 writes the files. It reads no params file: the caller passes the ``classifier`` section, with any overrides
applied, as a ``ClassifierConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.classify.train import ClassifierConfig, TrainResult, check_synthetic, save_checkpoint, train_classifier
from pipeline.core import distributed
from pipeline.core.atomic import check_writable, write_json
from pipeline.core.digest import file_digest
from pipeline.core.errors import HydraMixError, WriteError
from pipeline.core.torch_io import outputs_not_written
from pipeline.data.subsets import read_subset
from pipeline.synthesis.shards.reader import load_images, read_manifest


@dataclass(frozen=True)
class ClassifierRequest:
    """What to train and where to write it.

    method: a classic augmentation or a synthetic method (``pipeline.classify.augment.METHODS``); augment: the
    classic augmentation a synthetic method's batches get (None: baseline). subset: a subset directory
    (``hydramix subset``); its train split is trained on. out: the model file to write. checkpoint: the training
    state, written every ``checkpoint_every`` steps and after the last one, resumed from if present. cfg: the
    ``classifier`` params with any overrides applied. synthetic: a dataset directory (``hydramix synthesize``),
    for the synthetic methods only; allow_foreign_synthetic: accept one made from another subset. out_metrics:
    JSON of the training statistics (time, images/s, validation top-1).
    """

    method: str
    subset: Path
    out: Path
    checkpoint: Path
    cfg: ClassifierConfig
    synthetic: Path | None = None
    augment: str | None = None
    allow_foreign_synthetic: bool = False
    out_metrics: Path | None = None
    checkpoint_every: int = 100


def make_classifier(request: ClassifierRequest) -> TrainResult | None:
    """Train (or resume) the classifier ``request`` asks for and write its files; returns the run on rank 0 (or
    in a single process: its ``stats`` are what the statistics file got), None on the others.

    WriteError before loading anything if an output cannot be written; WriteError after training if a write
    fails, naming the kept checkpoint of the finished run (the same request then writes the outputs without
    training again). HydraMixError for a synthetic set of other classes, one made from another subset (unless
    ``allow_foreign_synthetic``), a subset that cannot be read or a checkpoint of another run.
    """
    cfg, checkpoint, synthetic = request.cfg, request.checkpoint, request.synthetic
    outputs = tuple(p for p in (request.out, request.out_metrics, checkpoint) if p is not None)
    check_writable(files=outputs)  # before loading or training anything
    data = read_subset(request.subset)
    synthetic_set, summary = None, None
    if synthetic is not None:
        synthetic_manifest = read_manifest(synthetic)
        if list(synthetic_manifest.get("class_names", [])) != list(data.train.class_names):
            raise HydraMixError(
                f"{synthetic}: synthetic classes {synthetic_manifest.get('class_names')} do not match "
                f"{request.subset}'s {list(data.train.class_names)}"
            )
        made_from = (synthetic_manifest.get("subset") or {}).get("manifest_sha256")
        if made_from != file_digest(request.subset / "manifest.json") and not request.allow_foreign_synthetic:
            raise HydraMixError(
                f"{synthetic} was made from another subset than {request.subset} (subset manifest sha256 "
                f"{made_from}); pass the subset it was made from, or --allow-foreign-synthetic to train on both anyway"
            )
        synthetic_set = load_images(synthetic)
        check_synthetic(data.train, synthetic_set, str(synthetic))
        summary = {  # what the model file records of the synthetic set
            "dir": str(synthetic),
            "total": synthetic_manifest.get("total"),
            "name": synthetic_manifest.get("name"),
            "subset_manifest_sha256": made_from,
        }
    result = train_classifier(
        request.method,
        data.train,
        cfg,
        synthetic=synthetic_set,
        augment=request.augment,
        checkpoint_path=checkpoint,
        checkpoint_every=request.checkpoint_every,
    )
    if not distributed.is_main():
        return None  # rank 0 writes the outputs; the session's barrier holds the others until it has
    try:
        save_checkpoint(request.out, result, cfg, data.train, request.method, data.manifest, summary)
        if request.out_metrics is not None:
            write_json(request.out_metrics, result.stats)
    except WriteError as exc:
        raise outputs_not_written(exc, checkpoint, cfg.iterations) from None
    checkpoint.unlink(missing_ok=True)  # only now: a kill before this point still resumes
    return result
