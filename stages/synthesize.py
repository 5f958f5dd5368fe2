"""``hydramix synthesize``: a trained generator + its subset -> a reproducible WebDataset shard dataset.

The work is ``pipeline.synthesis.synthesize_dataset.synthesize_dataset`` (identity, ranks, resume, writing); this
command parses the flags, loads the ``synthesize`` section (and, in pixel mode without a generator,
``generator.masks``), calls it, writes --metrics / --timings and prints a one-line summary.

--metrics gets what the dataset is (counts, set diagnostics): the same for the same inputs, so a forced re-run
changes no metric. --timings gets how this run went (seconds, images/s, memory, shards kept on resume).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from pipeline.core import distributed
from pipeline.core.atomic import write_json
from pipeline.core.config import from_dict, replace
from pipeline.core.errors import HydraMixError
from pipeline.core.threads import set_torch_threads
from pipeline.generator.masks import MaskConfig
from pipeline.synthesis.engine import SynthConfig
from pipeline.synthesis.synthesize_dataset import SynthesisRequest, synthesize_dataset
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
    cfg = load_section(params, "synthesize", SynthConfig)
    existing_dir(subset, "--subset", "the subset directory the generator was trained on")
    if generator is not None:
        existing_file(generator, "--generator", "a generator file written by `hydramix train-generator`")
    if n_per_class is not None and n_per_class < 1:
        raise HydraMixError(f"--n-per-class must be >= 1, got {n_per_class}")
    if mode is not None and mode not in ("generator", "pixel", "blur"):
        raise HydraMixError(f"--mode must be generator, pixel or blur, got {mode!r}")
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
    request = SynthesisRequest(
        subset=subset,
        out=out,
        cfg=cfg,
        generator=generator,
        masks=None if generator is not None or cfg.mode == "generator" else _params_masks(params),
        n_sources_given=n_sources is not None,
        blur_reference=blur_reference,
        blur_sigma=blur_sigma,
        force=force,
    )
    with distributed.session():  # a no-op without torchrun
        result = synthesize_dataset(request)
    if result is None:  # not rank 0: it wrote its shards, rank 0 reports
        return
    manifest = result.manifest
    if metrics is not None:
        write_json(metrics, result.metrics)
    if timings is not None:
        write_json(timings, result.timings)
    if len(manifest["shards"]) < MIN_SHARDS:
        typer.echo(
            f"warning: {out} has {len(manifest['shards'])} shard(s); a DataLoader with more workers than shards "
            f"finds no samples in some workers. Use a smaller --shard-size (at least {MIN_SHARDS} shards, "
            "ideally one per worker or more).",
            err=True,
        )
    blur = f", blur sigma {result.cfg.blur_sigma} px" if result.cfg.mode == "blur" else ""
    if result.repaired:
        typer.echo(
            f"{out}: {result.repaired} shard(s) differed from their recorded sha256 and were rendered again", err=True
        )
    diag = manifest["diagnostics"]
    typer.echo(
        f"{out}: {manifest['total']} images in {len(manifest['shards'])} shard(s) "
        f"({result.rendered} rendered, {result.kept} shard(s) kept) in {result.seconds:.1f} s; high-frequency share "
        f"{diag['synthetic']['hf_share']:.3f} (real {diag['real']['hf_share']:.3f}), within-class diversity "
        f"{diag['synthetic']['diversity']:.3f} (real {diag['real']['diversity']:.3f}){blur}"
    )


def _params_masks(params: Path) -> MaskConfig:
    """Pixel mode without a generator: the mask params of ``generator.masks`` in the params file."""
    section = (yaml.safe_load(params.read_text()) or {}).get("generator") or {}
    if "masks" not in section:
        raise HydraMixError(
            f"pixel mode without --generator takes its mask params from generator.masks in {params}, which has none"
        )
    return from_dict(MaskConfig, section["masks"], where=f"{params}:generator.masks")
