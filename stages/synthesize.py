"""``hydramix synthesize``: a trained generator + its subset -> a reproducible WebDataset shard dataset.

Under ``torchrun`` rank r writes shards r, r + W, ...; rank 0 locks and claims the directory first and writes the
manifest last, so the dataset is byte-identical to a single process's. One ``synthesize`` at a time writes into
a directory: the lock refuses a second one.

--metrics gets what the dataset is (counts, set diagnostics): the same for the same inputs, so a forced re-run
changes no metric. --timings gets how this run went (seconds, images/s, memory, shards kept on resume).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import resource
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import PIL
import torch
import typer
import yaml

from pipeline import distributed
from pipeline.atomic import write_json
from pipeline.config import from_dict, replace, to_dict
from pipeline.dataset_card import render_card
from pipeline.devices import resolve_device, resolve_dtype
from pipeline.diagnostics import DIAGNOSTIC_PREFIX, describe_dataset
from pipeline.digest import file_digest
from pipeline.errors import HydraMixError
from pipeline.imageset import ImageSet, read_parquet
from pipeline.masks import PAIR_KINDS, MaskConfig
from pipeline.shards import (
    lock_directory,
    n_shards,
    plan_dataset,
    read_manifest,
    shards_for_rank,
    write_dataset,
    write_dataset_shards,
)
from pipeline.synthesis import SynthConfig, Synthesizer, fit_blur_sigma_to
from pipeline.threads import set_torch_threads
from pipeline.train_generator import load_generator, resize_images
from stages.app import (
    ParamsOption,
    ThreadsOption,
    existing_dir,
    existing_file,
    load_section,
    parse_n_sources,
    parse_threads,
    stage,
)

# A loader with more workers than shards hands some workers nothing (webdataset: "No samples found").
MIN_SHARDS = 4


@stage(
    "synthesize",
    help="Write --n-per-class images per class as reproducible WebDataset shards (re-run to resume).",
)
def synthesize(
    subset: Annotated[Path, typer.Option("--subset", help="Subset directory the generator was trained on.")],
    out: Annotated[Path, typer.Option("--out", help="Output dataset directory (shards, manifest.json, README.md).")],
    generator: Annotated[
        Path | None,
        typer.Option(
            "--generator",
            help="Generator file (.pt) from `hydramix train-generator`; optional in pixel mode.",
        ),
    ] = None,
    params: ParamsOption = Path("params.yaml"),
    n_per_class: Annotated[
        int | None, typer.Option(help="Images per class (overrides synthesize.n_per_class).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Dataset seed (overrides synthesize.seed).")] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            help="generator (HydraMix), pixel (mask-composite control, no generator) or blur (that composite "
            "Gaussian-blurred: the blur control; needs --blur-reference or --blur-sigma)."
        ),
    ] = None,
    blur_reference: Annotated[
        Path | None,
        typer.Option(
            "--blur-reference",
            help="Blur mode: a generator set of the same subset, seed and N (its manifest's diagnostics); the "
            "blur sigma is fitted so that this set's high-frequency power share matches it.",
        ),
    ] = None,
    blur_sigma: Annotated[
        float | None, typer.Option("--blur-sigma", min=0.0, help="Blur mode: the Gaussian sigma in px, given.")
    ] = None,
    n_sources: Annotated[
        str | None,
        typer.Option(
            metavar="N|MIN,MAX", help="Images mixed per sample: N or MIN,MAX (overrides synthesize.n_sources)."
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N (overrides synthesize.device).")] = None,
    name: Annotated[
        str | None, typer.Option(help="Shard file prefix, <name>-NNNNNN.tar (overrides synthesize.shards.name).")
    ] = None,
    shard_size: Annotated[
        int | None,
        typer.Option(
            help=f"Samples per shard (overrides synthesize.shards.shard_size). Keep at least {MIN_SHARDS} shards "
            "per dataset, and as many as the DataLoader workers that will read it."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a different dataset already in --out.")] = False,
    metrics: Annotated[
        Path | None,
        typer.Option(help="Also write the dataset's figures (counts, set diagnostics) to this JSON file."),
    ] = None,
    timings: Annotated[
        Path | None,
        typer.Option(help="Also write this run's timings (seconds, images/s, peak memory) to this JSON file."),
    ] = None,
    threads: ThreadsOption = None,
) -> None:
    """Resumable: re-running the same command keeps complete shards and renders only the missing ones."""
    with distributed.session():  # a no-op without torchrun
        _synthesize(
            subset, out, generator, params, n_per_class, seed, mode, n_sources, device, name, force, metrics,
            blur_reference, blur_sigma, shard_size, timings, threads,
        )  # fmt: skip


def _synthesize(
    subset: Path,
    out: Path,
    generator: Path | None,
    params: Path,
    n_per_class: int | None,
    seed: int | None,
    mode: str | None,
    n_sources: str | None,
    device: str | None,
    name: str | None,
    force: bool,
    metrics: Path | None,
    blur_reference: Path | None,
    blur_sigma: float | None,
    shard_size: int | None = None,
    timings: Path | None = None,
    threads: str | None = None,
) -> None:
    cfg = load_section(params, "synthesize", SynthConfig)
    existing_dir(subset, "--subset", "the subset directory the generator was trained on")
    if generator is not None:
        existing_file(generator, "--generator", "a generator file written by `hydramix train-generator`")
    if n_per_class is not None and n_per_class < 1:
        raise HydraMixError(f"--n-per-class must be >= 1, got {n_per_class}")
    if mode is not None and mode not in ("generator", "pixel", "blur"):
        raise HydraMixError(f"--mode must be generator, pixel or blur, got {mode!r}")
    blurring = (mode or cfg.mode) == "blur"
    if blurring and (blur_reference is None) == (blur_sigma is None):
        raise HydraMixError("blur mode needs exactly one of --blur-reference DIR (fit the sigma) or --blur-sigma S")
    if not blurring and (blur_reference is not None or blur_sigma is not None):
        raise HydraMixError("--blur-reference and --blur-sigma are for --mode blur only")
    try:
        cfg = replace(
            cfg,
            n_per_class=n_per_class,
            seed=seed,
            mode=mode,
            n_sources=parse_n_sources(n_sources, "--n-sources"),
            device=device,
            shards=replace(cfg.shards, name=name, shard_size=shard_size),
            threads=parse_threads(threads),
        )
    except ValueError as exc:  # __post_init__ range checks on the flag values
        raise HydraMixError(f"bad option: {exc}") from None
    set_torch_threads(cfg.threads)

    train, subset_manifest = _read_subset_train(subset)
    subset_sha256 = file_digest(subset / "manifest.json")
    g, g_meta, g_sha256 = None, None, None
    if generator is not None:
        g, g_meta = load_generator(generator)
        g_sha256 = file_digest(generator)
        check_generator_matches_subset(generator, g_meta, train.class_names, train.resolution, subset_sha256)
    elif cfg.mode == "generator":
        raise HydraMixError("--generator PATH is required in generator mode (or pass --mode pixel)")
    mask_cfg = _mask_config(g_meta, params)
    # A generator trained with resize_subset (ChimeraMix trains CIFAR at 64 px) mixes sources resized to its
    # resolution as in its training; the mixes are resized back to the subset's, so the set matches the subset.
    sources = train
    if g_meta is not None and g_meta.get("resolution") != train.resolution:
        sources = ImageSet(
            resize_images(train.images, int(g_meta["resolution"])), train.labels, train.indices, train.class_names
        )
    if mask_cfg.kind in PAIR_KINDS and n_sources is None:
        cfg = replace(cfg, n_sources=(2, 2))  # a ChimeraMix generator's masks mix pairs only

    torch_device = distributed.place(resolve_device(cfg.device))
    dtype = resolve_dtype(torch_device, cfg.precision)
    if blurring:
        if blur_reference is not None:
            target = blur_target(blur_reference, cfg, subset_sha256)
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
        distributed.on_main(lambda: held.enter_context(lock_directory(out)))
        _write(out, synthesizer, cfg, identity, train, force, metrics, timings)


def _write(
    out: Path,
    synthesizer: Synthesizer,
    cfg: SynthConfig,
    identity: dict[str, Any],
    train: ImageSet,
    force: bool,
    metrics: Path | None,
    timings: Path | None,
) -> None:
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
        return
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
    diag = manifest["diagnostics"]
    if metrics is not None:
        write_json(
            metrics,
            {"images": manifest["total"], "shards": len(manifest["shards"]), "classes": len(train.class_names),
             "diagnostics": diag},
        )  # fmt: skip
    if timings is not None:
        write_json(
            timings,
            {
                "images_rendered": rendered,
                "shards_kept": kept,
                "shards_repaired": repaired,
                "seconds": seconds,
                "images_per_s": rendered / seconds if rendered else None,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "device": synthesizer.device.type,
                "dtype": identity["compute"]["dtype"],
                "world_size": distributed.world_size(),
            },
        )
    if len(manifest["shards"]) < MIN_SHARDS:
        typer.echo(
            f"warning: {out} has {len(manifest['shards'])} shard(s); a DataLoader with more workers than shards "
            f"finds no samples in some workers. Use a smaller --shard-size (at least {MIN_SHARDS} shards, "
            "ideally one per worker or more).",
            err=True,
        )
    blur = f", blur sigma {cfg.blur_sigma} px" if cfg.mode == "blur" else ""
    if repaired:
        typer.echo(f"{out}: {repaired} shard(s) differed from their recorded sha256 and were rendered again", err=True)
    typer.echo(
        f"{out}: {manifest['total']} images in {len(manifest['shards'])} shard(s) "
        f"({rendered} rendered, {kept} shard(s) kept) in {seconds:.1f} s; high-frequency share "
        f"{diag['synthetic']['hf_share']:.3f} (real {diag['real']['hf_share']:.3f}), within-class diversity "
        f"{diag['synthetic']['diversity']:.3f} (real {diag['real']['diversity']:.3f}){blur}"
    )


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


def _mask_config(g_meta: dict[str, Any] | None, params: Path) -> MaskConfig:
    """The generator's mask params; without a generator (pixel mode) those of params' ``generator.masks``."""
    if g_meta is not None:
        return from_dict(MaskConfig, g_meta["masks"], where="generator file: masks")
    section = (yaml.safe_load(params.read_text()) or {}).get("generator") or {}
    if "masks" not in section:
        raise HydraMixError(
            f"pixel mode without --generator takes its mask params from generator.masks in {params}, which has none"
        )
    return from_dict(MaskConfig, section["masks"], where=f"{params}:generator.masks")


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour determines the bytes of a dataset."""
    return {
        "hydramix": importlib.metadata.version("hydramix"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
    }
