"""``hydramix score``: CLIP Synset Entropy of the real subset, the real test split and synthetic datasets.

The work is ``pipeline.metric.score_dataset.score_dataset``; this command checks the paths, parses the flags,
loads the ``score`` section, calls it, writes --out-metrics and prints one summary line per dataset.

No weights, no number: when the configured CLIP weights cannot be loaded, the stage writes a metrics JSON with
``"status": "skipped"`` and the reason, an empty per-sample table and a placeholder plot (DVC needs its outs),
warns on stderr how to provide weights, and exits 0; with ``score.require_weights: true`` it fails instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.atomic import write_json
from pipeline.core.config import replace
from pipeline.core.errors import HydraMixError
from pipeline.core.threads import set_torch_threads
from pipeline.metric.score_dataset import (
    HOW_TO_PROVIDE_WEIGHTS,
    REAL_DATASETS,
    ScoreConfig,
    ScoreRequest,
    score_dataset,
)
from stages.app import ParamsOption, ThreadsOption, existing_dir, load_section, parse_threads, stage


def parse_synthetic(specs: list[str]) -> list[tuple[str, Path]]:
    """'name=path' or 'path' (named after the directory) -> [(name, path)]; names must be unique."""
    out: list[tuple[str, Path]] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).name, spec
        if not name or not path:
            raise HydraMixError(f"--synthetic '{spec}': expected NAME=DIR or DIR")
        if name in REAL_DATASETS or name in {n for n, _ in out}:
            raise HydraMixError(f"--synthetic '{spec}': dataset name '{name}' is already taken")
        out.append((name, Path(path)))
    return out


@stage(
    "score",
    help="Score real and synthetic datasets with CLIP Synset Entropy (needs CLIP weights).",
)
def score(
    subset: Annotated[Path, typer.Option(help="Subset directory (train.parquet, test.parquet, manifest.json).")],
    out_metrics: Annotated[Path, typer.Option(help="Metrics JSON to write (for `dvc metrics`).")],
    out_samples: Annotated[Path, typer.Option(help="Per-sample Parquet to write (top-k synsets, entropy).")],
    out_plot: Annotated[Path, typer.Option(help="PNG to write: per-class entropies of every dataset.")],
    synthetic: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME=DIR", help="Synthetic dataset dir, as NAME=DIR or DIR (named after the dir); repeatable."
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Where text embeddings are cached [default: $XDG_CACHE_HOME/hydramix/clip-text]."),
    ] = None,
    params: ParamsOption = Path("params.yaml"),
    model: Annotated[str | None, typer.Option(help="open_clip architecture (overrides score.model).")] = None,
    pretrained: Annotated[
        str | None, typer.Option(help="Hub tag or local checkpoint file (overrides score.pretrained).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda[:N] (overrides score.device).")] = None,
    require_weights: Annotated[
        bool | None,
        typer.Option(
            "--require-weights/--no-require-weights",
            help="Fail (exit 1) instead of writing a 'skipped' result when weights are missing.",
        ),
    ] = None,
    threads: ThreadsOption = None,
) -> None:
    """Write the metrics JSON, the per-sample table and the plot; see docs/metric.md for the definitions."""
    existing_dir(subset, "--subset", "a subset directory written by `hydramix subset`")
    try:
        cfg = replace(
            load_section(params, "score", ScoreConfig),
            model=model,
            pretrained=pretrained,
            device=device,
            require_weights=require_weights,
            threads=parse_threads(threads),
        )
    except ValueError as exc:
        raise HydraMixError(f"bad option: {exc}") from None
    set_torch_threads(cfg.threads)
    synthetic_dirs = parse_synthetic(synthetic or [])
    for _, directory in synthetic_dirs:
        existing_dir(directory, "--synthetic", "a dataset directory written by `hydramix synthesize`")
    request = ScoreRequest(
        subset=subset,
        cfg=cfg,
        out_samples=out_samples,
        out_plot=out_plot,
        synthetic=tuple(synthetic_dirs),
        cache_dir=cache_dir or _default_cache_dir(),
    )
    result = score_dataset(request)
    if result.skipped is not None:
        typer.echo(
            f"warning: CLIP weights not available, scoring skipped: {result.skipped}\n{HOW_TO_PROVIDE_WEIGHTS}",
            err=True,
        )
    write_json(out_metrics, result.metrics)
    for name, s in result.metrics.get("datasets", {}).items():
        typer.echo(
            f"{name:>12}: H_class {s['h_class']:.3f}  H_image {s['h_image']:.3f}  MI {s['mi']:.3f} nats  "
            f"consistency {s['consistency']:.3f}  ({s['n_images']} images)"
        )


def _default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/hydramix/clip-text (~/.cache when XDG_CACHE_HOME is unset)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hydramix" / "clip-text"
