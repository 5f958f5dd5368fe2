"""``hydramix train-generator``: train the HydraMix generator on a subset's train split.

Writes the self-describing generator file and, where asked for, the loss curve (CSV for ``dvc plots``), the
metrics JSON (reconstruction PSNR, mask fidelity with its references), the timings JSON (throughput, seconds,
device: kept apart so that a re-run on other hardware changes no metric) and a PNG grid of example mixes.
A killed run restarted with the same command resumes from its --checkpoint. Under ``torchrun`` the same command
trains with DistributedDataParallel (generator.batch_size is the global batch); rank 0 writes every file.

The work is ``pipeline.generator.make_generator.make_generator``; this command parses the flags, loads the
``generator`` section, applies the overrides (``--kind chimeramix`` fixes N and the mask rule), calls it and prints
a one-line summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.core import distributed
from pipeline.core.config import replace
from pipeline.core.errors import HydraMixError
from pipeline.core.threads import set_torch_threads
from pipeline.generator.config import GeneratorConfig
from pipeline.generator.make_generator import GeneratorRequest, make_generator
from pipeline.generator.masks import MASK_KINDS
from stages.app import (
    ParamsOption,
    ThreadsOption,
    existing_dir,
    load_section,
    parse_n_sources,
    parse_threads,
    stage,
)

# What a generator is trained to do: HydraMix's N-image mixes, or ChimeraMix's pairs with its own mask rule.
GENERATOR_KINDS = ("hydramix", "chimeramix")


@stage(
    "train-generator",
    help="Train the HydraMix generator (encoder, N-image feature mixing, decoder, PatchGAN) on a subset; "
    "resumes from its checkpoint when restarted.",
)
def train_generator_command(
    subset: Annotated[Path, typer.Option("--subset", help="Subset directory from `hydramix subset`.")],
    generator: Annotated[
        Path,
        typer.Option("--generator", help="Generator file to write (weights + everything synthesis needs)."),
    ],
    metrics: Annotated[
        Path | None, typer.Option("--metrics", help="Metrics JSON to write (PSNR, mask fidelity, final losses).")
    ] = None,
    timings: Annotated[
        Path | None,
        typer.Option("--timings", help="JSON to write with the run's timings (throughput, seconds, device)."),
    ] = None,
    loss_curve: Annotated[
        Path | None, typer.Option("--loss-curve", help="Loss-curve CSV to write (dvc plots).")
    ] = None,
    grid: Annotated[Path | None, typer.Option("--grid", help="PNG grid of example mixes to write.")] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Training-state checkpoint: written every checkpoint_every steps, resumed from if present, "
            "deleted when the run completes (without it a killed run starts over).",
        ),
    ] = None,
    params: ParamsOption = Path("params.yaml"),
    iterations: Annotated[
        int | None, typer.Option("--iterations", help="Training steps (overrides generator.iterations).")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N (overrides generator.device).")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option("--precision", help="auto, fp32, bf16 or fp16 (overrides generator.precision)."),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Training seed (overrides generator.seed).")] = None,
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="hydramix: N-image mixes with generator.masks as in params. chimeramix: the ChimeraMix baseline, "
            "N = 2 with ChimeraMix's mask rule (a contiguous range of segment ids; chimeramix-grid when "
            "generator.masks.kind is grid).",
        ),
    ] = "hydramix",
    n_sources: Annotated[
        str | None,
        typer.Option(
            "--n-sources",
            metavar="N|MIN,MAX",
            help="Images per mix: N or MIN,MAX (overrides generator.masks.n_sources; ChimeraMix: 2).",
        ),
    ] = None,
    mask_kind: Annotated[
        str | None,
        typer.Option(
            "--mask-kind",
            help=f"Mask rule ({', '.join(MASK_KINDS)}; overrides generator.masks.kind). The true ChimeraMix "
            "baseline is --n-sources 2 --mask-kind chimeramix.",
        ),
    ] = None,
    progress: Annotated[
        bool,
        typer.Option(
            "--progress/--no-progress",
            help="Show progress: a bar on a terminal, a line every 5% of the steps otherwise (logs, dvc repro).",
        ),
    ] = True,
    threads: ThreadsOption = None,
) -> None:
    """Train, then write GENERATOR and whichever of METRICS, TIMINGS, LOSS_CURVE and GRID are given."""
    existing_dir(subset, "--subset", "a subset directory written by `hydramix subset`")
    config = load_section(params, "generator", GeneratorConfig)
    if precision is not None and precision not in ("auto", "fp32", "bf16", "fp16"):
        raise HydraMixError(f"--precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if kind not in GENERATOR_KINDS:
        raise HydraMixError(f"--kind must be one of {', '.join(GENERATOR_KINDS)}, got {kind!r}")
    if kind == "chimeramix":
        if mask_kind is not None or n_sources is not None:
            raise HydraMixError("--kind chimeramix fixes N = 2 and the mask rule: drop --n-sources and --mask-kind")
        mask_kind = "chimeramix-grid" if config.masks.kind == "grid" else "chimeramix"
        n_sources = "2"
    if mask_kind is not None and mask_kind not in MASK_KINDS:
        raise HydraMixError(f"--mask-kind must be one of {', '.join(MASK_KINDS)}, got {mask_kind!r}")
    try:
        masks = replace(config.masks, kind=mask_kind, n_sources=parse_n_sources(n_sources, "--n-sources"))
        config = replace(
            config,
            iterations=iterations,
            device=device,
            precision=precision,
            seed=seed,
            masks=masks,
            threads=parse_threads(threads),
        )
    except ValueError as exc:
        raise HydraMixError(f"bad option: {exc}") from None
    set_torch_threads(config.threads)
    request = GeneratorRequest(
        subset=subset,
        generator=generator,
        cfg=config,
        metrics=metrics,
        timings=timings,
        loss_curve=loss_curve,
        grid=grid,
        checkpoint=checkpoint,
        progress=progress,
    )
    with distributed.session():  # a no-op without torchrun
        result = make_generator(request)
    if result is None:  # not rank 0: rank 0 wrote the outputs
        return
    fid = result.metrics["mask_fidelity"]
    typer.echo(
        f"generator -> {generator}: reconstruction {result.metrics['reconstruction_psnr_db']:.2f} dB, "
        f"mask fidelity gap {fid['generator']['gap_db']:.2f} dB (pixel composite "
        f"{fid['pixel_composite']['gap_db']:.2f}, plain mean {fid['plain_mean']['gap_db']:.2f})"
    )
