"""``hydramix score``: CLIP Synset Entropy of the real subset, the real test split and synthetic datasets.

No weights, no number: when the configured CLIP weights cannot be loaded, the stage writes a metrics JSON with
``"status": "skipped"`` and the reason, an empty per-sample table and a placeholder plot (DVC needs its outs),
warns on stderr how to provide weights, and exits 0; with ``score.require_weights: true`` it fails instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.core.atomic import write_json
from pipeline.core.config import replace, to_dict
from pipeline.core.errors import HydraMixError
from pipeline.core.threads import set_torch_threads
from pipeline.data.imageset import ImageSet
from pipeline.data.subsets import read_subset
from pipeline.metric.clip_scorer import (
    LoadedClip,
    SampleTableWriter,
    ScoreConfig,
    ScoreSource,
    WeightsUnavailable,
    batches_from_arrays,
    batches_from_samples,
    check_model_name,
    load_clip,
    score_source,
    text_embeddings,
)
from pipeline.metric.entropy import ClassMetrics
from pipeline.metric.synsets import Vocabulary, load_vocabulary, templates
from pipeline.synthesis.shards import iter_samples, read_manifest
from stages.app import ParamsOption, ThreadsOption, existing_dir, load_section, parse_threads, stage

HOW_TO_PROVIDE_WEIGHTS = (
    "To score, provide open_clip weights: with network access the hub tag in score.pretrained "
    "(e.g. laion2b_s34b_b79k) is downloaded once into the Hugging Face cache; offline, set "
    "score.pretrained to a local checkpoint file (e.g. /path/to/open_clip_pytorch_model.bin) for "
    "score.model, or pass --pretrained PATH."
)


def parse_synthetic(specs: list[str]) -> list[tuple[str, Path]]:
    """'name=path' or 'path' (named after the directory) -> [(name, path)]; names must be unique."""
    out: list[tuple[str, Path]] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).name, spec
        if not name or not path:
            raise HydraMixError(f"--synthetic '{spec}': expected NAME=DIR or DIR")
        if name in {"real_train", "real_test"} or name in {n for n, _ in out}:
            raise HydraMixError(f"--synthetic '{spec}': dataset name '{name}' is already taken")
        out.append((name, Path(path)))
    return out


def subset_source(name: str, split: ImageSet, batch_size: int) -> ScoreSource:
    keys = [f"{name}-{i}" for i in split.indices]
    batches = batches_from_arrays(keys, split.images, split.labels, batch_size)
    return ScoreSource(name, split.class_names, batches, total=len(split))


def shard_source(name: str, directory: Path, batch_size: int) -> ScoreSource:
    manifest = read_manifest(directory)
    batches = batches_from_samples(iter_samples(directory), batch_size)
    return ScoreSource(name, tuple(manifest["class_names"]), batches, total=int(manifest["total"]))


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
    # Validate every input before touching weights, so a typo fails the same way with or without them.
    check_model_name(cfg.model)
    synthetic_dirs = parse_synthetic(synthetic or [])
    for _, directory in synthetic_dirs:
        existing_dir(directory, "--synthetic", "a dataset directory written by `hydramix synthesize`")
        read_manifest(directory)
    real = read_subset(subset)
    vocabulary = load_vocabulary(cfg.vocabulary)
    template_set = templates(cfg.templates)
    try:
        clip = load_clip(cfg.model, cfg.pretrained, cfg.device, cfg.precision, cfg.connect_timeout_s)
    except WeightsUnavailable as exc:
        if cfg.require_weights:
            raise HydraMixError(f"{exc}. score.require_weights is true. {HOW_TO_PROVIDE_WEIGHTS}") from None
        typer.echo(f"warning: CLIP weights not available, scoring skipped: {exc}\n{HOW_TO_PROVIDE_WEIGHTS}", err=True)
        write_skipped(cfg, str(exc), out_metrics, out_samples, out_plot)
        return

    cache = cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hydramix" / "clip-text"
    sources = [
        subset_source("real_train", real.train, cfg.batch_size),
        subset_source("real_test", real.test, cfg.batch_size),
        *(shard_source(name, directory, cfg.batch_size) for name, directory in synthetic_dirs),
    ]
    results = score_all(clip, cfg, vocabulary, template_set, sources, cache, out_samples)
    write_json(out_metrics, metrics_payload(cfg, clip, vocabulary, results))
    plot_entropies(results, vocabulary, out_plot)
    for name, (metrics, _) in results.items():
        s = metrics.summary()
        typer.echo(
            f"{name:>12}: H_class {s['h_class']:.3f}  H_image {s['h_image']:.3f}  MI {s['mi']:.3f} nats  "
            f"consistency {s['consistency']:.3f}  ({s['n_images']} images)"
        )


def score_all(
    clip: LoadedClip,
    cfg: ScoreConfig,
    vocabulary: Vocabulary,
    template_set: tuple[str, ...],
    sources: list[ScoreSource],
    cache: Path,
    out_samples: Path,
) -> dict[str, tuple[ClassMetrics, tuple[str, ...]]]:
    synset_embeddings = text_embeddings(clip, vocabulary.names, template_set, cache, progress=True)
    results = {}
    with SampleTableWriter(out_samples) as sink:
        for source in sources:
            class_embeddings = text_embeddings(clip, source.class_names, template_set, cache)
            metrics = score_source(clip, source, vocabulary, synset_embeddings, class_embeddings, cfg.top_k, sink)
            results[source.name] = (metrics, source.class_names)
    return results


def metrics_payload(
    cfg: ScoreConfig,
    clip: LoadedClip,
    vocabulary: Vocabulary,
    results: dict[str, tuple[ClassMetrics, tuple[str, ...]]],
) -> dict[str, Any]:
    return {
        "status": "ok",
        "metric": "clip_synset_entropy",
        "units": "nats (natural log); *_norm = divided by log(n_synsets)",
        "model": cfg.model,
        "pretrained": cfg.pretrained,
        "logit_scale": clip.logit_scale,
        "vocabulary": {
            "source": vocabulary.source,
            "n_synsets": len(vocabulary),
            "sha256": vocabulary.digest(),
        },
        "templates": cfg.templates,
        "params": {k: v for k, v in to_dict(cfg).items() if k != "threads"},  # how many threads ran it: no result
        "datasets": {
            name: {**metrics.summary(), "per_class": metrics.per_class(class_names)}
            for name, (metrics, class_names) in results.items()
        },
    }


def write_skipped(cfg: ScoreConfig, reason: str, out_metrics: Path, out_samples: Path, out_plot: Path) -> None:
    """The outputs of a run without weights: 'skipped' metrics JSON, empty table, placeholder plot."""
    SampleTableWriter(out_samples).close()
    _save_figure(_message_figure(f"skipped: no CLIP weights\n{cfg.model} / {cfg.pretrained}"), out_plot)
    write_json(out_metrics, {"status": "skipped", "reason": reason, "model": cfg.model, "pretrained": cfg.pretrained})


def plot_entropies(
    results: dict[str, tuple[ClassMetrics, tuple[str, ...]]], vocabulary: Vocabulary, path: Path
) -> None:
    """Grouped bars: per class, H_class (top) and H_image (bottom) for every dataset; log|S| dashed."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    class_names = next(iter(results.values()))[1]
    same_classes = all(names == class_names for _, names in results.values())
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.9 * len(class_names) + 2), 7), sharex=True)
    width = 0.8 / len(results)
    x = np.arange(len(class_names))
    for ax, field, title in zip(
        axes, ("h_class", "h_image"), ("H(mean p) per class", "mean H(p) per class"), strict=True
    ):
        for i, (name, (metrics, _)) in enumerate(results.items()):
            ax.bar(x + i * width - 0.4 + width / 2, getattr(metrics, field), width, label=name)
        ax.axhline(math.log(len(vocabulary)), color="grey", ls="--", lw=0.8, label="log |S|")
        ax.set_ylabel("nats")
        ax.set_title(title)
    axes[1].set_xticks(x, class_names if same_classes else [str(i) for i in x], rotation=45, ha="right")
    axes[0].legend(fontsize="small", ncols=min(4, len(results) + 1))
    fig.tight_layout()
    _save_figure(fig, path)


def _message_figure(text: str):  # noqa: ANN202 (matplotlib Figure)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(6, 2))
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=12)
    return fig


def _save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    try:
        fig.savefig(tmp, dpi=100, metadata={"Software": None})  # no version stamp: same plot, same bytes
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
