"""A subset (+ a trained generator) -> a reproducible WebDataset shard dataset: the work of ``hydramix synthesize``.

``synthesize_dataset`` builds the dataset's identity (subset, generator, synthesis and mask params, resolved
compute, library versions), fits the blur control's sigma, resizes the sources for a generator trained with
``resize_subset``, and writes the shards, the manifest and the dataset card. Under ``torchrun`` (inside
``pipeline.core.distributed.session()``) rank r writes shards r, r + W, ...; rank 0 locks and claims the directory
first and writes the manifest last, so the dataset is byte-identical to a single process's. It reads no params
file: the caller passes the ``synthesize`` section as a ``SynthConfig`` and, for pixel mode without a generator,
the mask params.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch

from pipeline.core import distributed
from pipeline.core.config import from_dict, replace, to_dict
from pipeline.core.devices import resolve_device, resolve_dtype
from pipeline.core.digest import file_digest
from pipeline.core.errors import HydraMixError
from pipeline.data.imageset import ImageSet, read_parquet
from pipeline.generator.batches import resize_images
from pipeline.generator.files import load_generator
from pipeline.generator.masks import PAIR_KINDS, MaskConfig
from pipeline.synthesis.dataset_card import render_card
from pipeline.synthesis.diagnostics import DIAGNOSTIC_PREFIX, describe_dataset
from pipeline.synthesis.engine import SynthConfig, Synthesizer, fit_blur_sigma_to
from pipeline.synthesis.shards.dataset_writer import write_dataset, write_dataset_shards
from pipeline.synthesis.shards.format import n_shards, shards_for_rank
from pipeline.synthesis.shards.lock import lock_directory
from pipeline.synthesis.shards.plan import plan_dataset
from pipeline.synthesis.shards.reader import read_manifest


@dataclass(frozen=True)
class SynthesisRequest:
    """What to synthesise and where.

    cfg: the ``synthesize`` params with any overrides applied. generator: a file from ``hydramix
    train-generator`` (required in generator mode; in pixel and blur modes it gives the masks). masks: the mask
    params when there is no generator (``generator.masks`` of the params file). n_sources_given: whether
    ``cfg.n_sources`` was asked for explicitly; if not, a ChimeraMix (pair-kind) generator mixes pairs. Blur mode
    needs exactly one of blur_reference (a generator set of the same subset, seed and N whose sharpness the blur
    sigma is fitted to) or blur_sigma. force: replace a different dataset already in ``out``.
    """

    subset: Path
    out: Path
    cfg: SynthConfig
    generator: Path | None = None
    masks: MaskConfig | None = None
    n_sources_given: bool = False
    blur_reference: Path | None = None
    blur_sigma: float | None = None
    force: bool = False


@dataclass(frozen=True)
class SynthesisResult:
    """What a run wrote (rank 0 only). metrics: what the dataset is (counts, set diagnostics), the same for the
    same inputs; timings: how this run went (seconds, images/s, memory, shards kept on resume)."""

    manifest: dict[str, Any]
    cfg: SynthConfig
    rendered: int
    kept: int
    repaired: int
    seconds: float
    metrics: dict[str, Any]
    timings: dict[str, Any]


def synthesize_dataset(request: SynthesisRequest) -> SynthesisResult | None:
    """Write (or resume) the dataset ``request`` asks for into ``request.out``; HydraMixError for bad inputs.

    Re-running the same request keeps complete shards and renders only the missing ones. Returns the result on
    rank 0 (or in a single process), None on the other ranks.
    """
    cfg = request.cfg
    blurring = cfg.mode == "blur"
    if blurring and (request.blur_reference is None) == (request.blur_sigma is None):
        raise HydraMixError("blur mode needs exactly one of --blur-reference DIR (fit the sigma) or --blur-sigma S")
    if not blurring and (request.blur_reference is not None or request.blur_sigma is not None):
        raise HydraMixError("--blur-reference and --blur-sigma are for --mode blur only")
    train, subset_manifest = _read_subset_train(request.subset)
    subset_sha256 = file_digest(request.subset / "manifest.json")
    g, g_meta, g_sha256 = None, None, None
    if request.generator is not None:
        g, g_meta = load_generator(request.generator)
        g_sha256 = file_digest(request.generator)
        check_generator_matches_subset(request.generator, g_meta, train.class_names, train.resolution, subset_sha256)
    elif cfg.mode == "generator":
        raise HydraMixError("--generator PATH is required in generator mode (or pass --mode pixel)")
    if g_meta is not None:
        mask_cfg = from_dict(MaskConfig, g_meta["masks"], where="generator file: masks")
    elif request.masks is not None:
        mask_cfg = request.masks
    else:
        raise HydraMixError("pixel mode without a generator needs the mask params (generator.masks)")
    # A generator trained with resize_subset (ChimeraMix trains CIFAR at 64 px) mixes sources resized to its
    # resolution as in its training; the mixes are resized back to the subset's, so the set matches the subset.
    sources = train
    if g_meta is not None and g_meta.get("resolution") != train.resolution:
        sources = ImageSet(
            resize_images(train.images, int(g_meta["resolution"])), train.labels, train.indices, train.class_names
        )
    if mask_cfg.kind in PAIR_KINDS and not request.n_sources_given:
        cfg = replace(cfg, n_sources=(2, 2))  # a ChimeraMix generator's masks mix pairs only

    torch_device = distributed.place(resolve_device(cfg.device))
    dtype = resolve_dtype(torch_device, cfg.precision)
    if blurring:
        blur_sigma = request.blur_sigma
        if request.blur_reference is not None:
            target = blur_target(request.blur_reference, cfg, subset_sha256)
            blur_sigma = fit_blur_sigma_to(
                sources, cfg, mask_cfg, target, DIAGNOSTIC_PREFIX, torch_device, train.resolution
            )
        cfg = replace(cfg, mode="blur", blur_sigma=blur_sigma)
    try:
        generator_module = g if cfg.mode == "generator" else None
        synthesizer = Synthesizer(sources, cfg, mask_cfg, generator_module, torch_device, dtype, train.resolution)
    except ValueError as exc:  # mask params that cannot go together (e.g. a ChimeraMix rule with N > 2)
        raise HydraMixError(f"bad synthesis params: {exc}") from None
    identity = {
        "name": cfg.shards.name,
        "shard_size": cfg.shards.shard_size,
        "generator": None
        if g_meta is None
        else {"sha256": g_sha256, "step": g_meta.get("step"), "model": g_meta.get("model")},
        "subset": {
            "manifest_sha256": subset_sha256,
            **{k: subset_manifest.get(k) for k in ("dataset", "source", "checksum", "k", "seed")},
        },
        # device and precision are recorded as resolved (they can change the decoded bytes), not as asked.
        "synthesis": {k: v for k, v in to_dict(cfg).items() if k not in ("device", "precision", "shards", "threads")},
        "compute": {"device": torch_device.type, "dtype": str(dtype).removeprefix("torch.")},
        "masks": to_dict(synthesizer.mask_cfg),
        "versions": library_versions(),
    }
    if sources is not train:
        identity["render_resolution"] = sources.resolution  # mixed at this side, written at the subset's
    with contextlib.ExitStack() as held:
        # Rank 0 holds the lock from before the claim until the manifest is written; a refusal stops every rank.
        distributed.on_main(lambda: held.enter_context(lock_directory(request.out)))
        return _write(request.out, synthesizer, cfg, identity, train, request.force)


def _write(
    out: Path, synthesizer: Synthesizer, cfg: SynthConfig, identity: dict[str, Any], train: ImageSet, force: bool
) -> SynthesisResult | None:
    """Claim ``out``, write this process's shards and, on rank 0, the manifest and the report."""
    start = time.perf_counter()
    written: dict[int, dict[str, Any]] = {}
    if distributed.active():
        distributed.on_main(lambda: _claim(out, identity, force))  # once, before any process writes into it
        indices = shards_for_rank(
            n_shards(synthesizer.total, cfg.shards.shard_size), distributed.rank(), distributed.world_size()
        )
        written = write_dataset_shards(
            out, synthesizer, cfg.shards, cfg.batch_size, indices, progress=distributed.is_main()
        )
        distributed.barrier()  # every shard is on disk now
    rendered = distributed.sum_over_ranks(sum(e["count"] for e in written.values() if e["rendered"]))
    kept = distributed.sum_over_ranks(sum(1 for e in written.values() if not e["rendered"]))
    repaired = distributed.sum_over_ranks(sum(1 for e in written.values() if e["repaired"]))
    if not distributed.is_main():
        return None
    # Single process: the whole dataset. Rank 0 of several: nothing left to render, only the manifest to write
    # (the plan it claimed carries the same identity, so nothing is replaced).
    manifest, written = write_dataset(
        out,
        synthesizer,
        cfg.shards,
        cfg.batch_size,
        identity=identity,
        class_names=train.class_names,
        resolution=synthesizer.resolution,
        card=render_card,
        force=force and not distributed.active(),
        indices=[] if distributed.active() else None,
        describe=lambda directory, names: describe_dataset(directory, names, train, DIAGNOSTIC_PREFIX),
    )
    if manifest is None:  # a shard of another rank is missing or changed since it was written
        raise HydraMixError(f"{out}: not every shard is in place as recorded; run the same command again")
    seconds = time.perf_counter() - start
    rendered += sum(e["count"] for e in written.values() if e["rendered"])
    kept += sum(1 for e in written.values() if not e["rendered"])
    repaired += sum(1 for e in written.values() if e["repaired"])
    metrics = {
        "images": manifest["total"],
        "shards": len(manifest["shards"]),
        "classes": len(train.class_names),
        "diagnostics": manifest["diagnostics"],
    }
    timings = {
        "images_rendered": rendered,
        "shards_kept": kept,
        "shards_repaired": repaired,
        "seconds": seconds,
        "images_per_s": rendered / seconds if rendered else None,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": synthesizer.device.type,
        "dtype": identity["compute"]["dtype"],
        "world_size": distributed.world_size(),
    }
    return SynthesisResult(manifest, cfg, rendered, kept, repaired, seconds, metrics, timings)


def blur_target(reference: Path, cfg: SynthConfig, subset_sha256: str) -> float:
    """The high-frequency share the blur control must match: the reference generator set's, which must be
    made from the same subset with the same seed and N (so that both sets mix the same sources and masks)."""
    manifest = read_manifest(reference)
    synthesis = manifest.get("synthesis") or {}
    if (manifest.get("subset") or {}).get("manifest_sha256") != subset_sha256:
        raise HydraMixError(f"--blur-reference {reference} was made from another subset")
    if synthesis.get("seed") != cfg.seed or tuple(synthesis.get("n_sources") or ()) != tuple(cfg.n_sources):
        raise HydraMixError(
            f"--blur-reference {reference} has seed {synthesis.get('seed')} and n_sources "
            f"{synthesis.get('n_sources')}; this set has seed {cfg.seed} and n_sources {list(cfg.n_sources)}: "
            "the blur control must mix the very sources and masks of its reference"
        )
    try:
        return float(manifest["diagnostics"]["synthetic"]["hf_share"])
    except (KeyError, TypeError):
        raise HydraMixError(
            f"--blur-reference {reference} has no diagnostics in its manifest; re-run its synthesize command"
        ) from None


def _claim(out: Path, identity: dict[str, Any], force: bool) -> None:
    """Claim ``out`` for this dataset (``plan_dataset``), turning an OS error into a clean one."""
    try:
        plan_dataset(out, identity, force)
    except OSError as exc:
        raise HydraMixError(f"{out}: cannot write ({exc})") from None


def check_generator_matches_subset(
    path: Path, meta: dict[str, Any], class_names: tuple[str, ...], resolution: int, subset_sha256: str
) -> None:
    """HydraMixError if the generator in ``path`` was trained for other classes, resolution or subset."""
    if list(meta.get("class_names", [])) != list(class_names):
        raise HydraMixError(
            f"{path} was trained for classes {meta.get('class_names')}, but the subset has classes {list(class_names)}"
        )
    if meta.get("resolution") != resolution and not (meta.get("config") or {}).get("resize_subset"):
        raise HydraMixError(
            f"{path} was trained at {meta.get('resolution')} px, but the subset's images are {resolution} px"
        )
    if meta.get("subset_sha256") != subset_sha256:
        raise HydraMixError(
            f"{path} was trained on another subset (subset manifest sha256 {meta.get('subset_sha256')}, "
            f"this subset's is {subset_sha256}); pass the --subset it was trained on"
        )


def _read_subset_train(directory: Path) -> tuple[ImageSet, dict[str, Any]]:
    """The subset's train split and manifest (not its test split: synthesis never needs it)."""
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise HydraMixError(f"{directory}: not a subset directory (no manifest.json); run `hydramix subset`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as exc:
        raise HydraMixError(f"{manifest_path}: not valid JSON ({exc})") from None
    return read_parquet(directory / "train.parquet"), manifest


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour determines the bytes of a dataset."""
    return {
        "hydramix": importlib.metadata.version("hydramix"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
    }
