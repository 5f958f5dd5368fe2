"""The real subset and synthetic shard sets -> CLIP Synset Entropy: the work of ``hydramix score``.

The whole metric flow in one call (weights -> model -> shards -> generality score). ``score_dataset`` checks
every input before it touches weights (model name, shard manifests, subset, vocabulary), loads the frozen CLIP,
embeds the synset and class prompts (cached on disk), scores the subset's train split as ``real_train``, its test
split as ``real_test`` and each synthetic set under its name, streams the per-sample table and draws the per-class
plot. It returns the metrics for the caller to write. No weights, no number: when the configured weights cannot be
had it writes an empty table and a placeholder plot and returns a "skipped" result (with ``require_weights`` it
raises instead). It reads no params file: the caller passes the ``score`` section as a ``ScoreConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.core.config import to_dict
from pipeline.core.errors import HydraMixError
from pipeline.core.threads import Threads, check_threads
from pipeline.data.imageset import ImageSet
from pipeline.data.subsets import read_subset
from pipeline.metric.clip_model import LoadedClip, load_clip
from pipeline.metric.clip_weights import WeightsUnavailable, check_model_name
from pipeline.metric.entropy import ClassMetrics
from pipeline.metric.image_batches import ScoreSource, batches_from_arrays, batches_from_samples
from pipeline.metric.sample_table import SampleTableWriter
from pipeline.metric.score_plot import plot_entropies, plot_message
from pipeline.metric.scoring_loop import score_source
from pipeline.metric.synsets import Vocabulary, load_vocabulary, templates
from pipeline.metric.text_embeddings import text_embeddings
from pipeline.synthesis.shards.reader import iter_samples, read_manifest

# The datasets every run scores, named in the outputs; a synthetic set cannot take these names.
REAL_DATASETS = ("real_train", "real_test")

HOW_TO_PROVIDE_WEIGHTS = (
    "To score, provide open_clip weights: with network access the hub tag in score.pretrained "
    "(e.g. laion2b_s34b_b79k) is downloaded once into the Hugging Face cache; offline, set "
    "score.pretrained to a local checkpoint file (e.g. /path/to/open_clip_pytorch_model.bin) for "
    "score.model, or pass --pretrained PATH."
)

Results = dict[str, tuple[ClassMetrics, tuple[str, ...]]]  # dataset name -> (its metrics, its class names)


@dataclass(frozen=True)
class ScoreConfig:
    """Params section ``score`` (see params.yaml for what each key means)."""

    model: str = "ViT-B-32"
    pretrained: str = "laion2b_s34b_b79k"
    require_weights: bool = False
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    batch_size: int = 128
    vocabulary: str = "imagenet"
    templates: Literal["openai", "simple"] = "openai"
    top_k: int = 5
    connect_timeout_s: float = 5.0
    threads: Threads = "auto"  # CPU threads, see pipeline.core.threads

    def __post_init__(self) -> None:
        check_threads(self.threads)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.connect_timeout_s <= 0:
            raise ValueError(f"connect_timeout_s must be > 0, got {self.connect_timeout_s}")


@dataclass(frozen=True)
class ScoreRequest:
    """What to score and where to write it.

    subset: a subset directory from ``hydramix subset`` (its train and test splits are ``REAL_DATASETS``).
    cfg: the ``score`` params with any overrides applied. out_samples: the per-sample Parquet table; out_plot:
    the PNG. synthetic: (name, shard dataset directory) pairs, in report order; the names must be unique and none
    of ``REAL_DATASETS``. cache_dir: where text embeddings are cached (None: computed and not kept).
    """

    subset: Path
    cfg: ScoreConfig
    out_samples: Path
    out_plot: Path
    synthetic: tuple[tuple[str, Path], ...] = ()
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        names = [name for name, _ in self.synthetic]
        if len(set(names)) != len(names) or set(names) & set(REAL_DATASETS):
            raise ValueError(f"synthetic dataset names must be unique and none of {REAL_DATASETS}, got {names}")


@dataclass(frozen=True)
class ScoreResult:
    """What a run produced. metrics: the metrics JSON payload, ``"status"`` ``"ok"`` (with ``"datasets"``: per
    dataset, in scoring order, its summary and per-class figures) or ``"skipped"``; skipped: why nothing was scored
    (None when it was)."""

    metrics: dict[str, Any]
    skipped: str | None = None


def score_dataset(request: ScoreRequest) -> ScoreResult:
    """Score ``request``'s datasets, writing ``request.out_samples`` and ``request.out_plot``; see docs/metric.md
    for what is computed.

    HydraMixError for a bad input (unknown model, unreadable manifest or subset, bad vocabulary, an empty dataset)
    and, with ``cfg.require_weights``, for missing weights; without it, missing weights give a "skipped" result.
    """
    cfg = request.cfg
    # Check every input before touching weights, so a typo fails the same way with or without them.
    check_model_name(cfg.model)
    for _, directory in request.synthetic:
        read_manifest(directory)
    real = read_subset(request.subset)
    vocabulary = load_vocabulary(cfg.vocabulary)
    template_set = templates(cfg.templates)
    try:
        clip = load_clip(cfg.model, cfg.pretrained, cfg.device, cfg.precision, cfg.connect_timeout_s)
    except WeightsUnavailable as exc:
        if cfg.require_weights:
            raise HydraMixError(f"{exc}. score.require_weights is true. {HOW_TO_PROVIDE_WEIGHTS}") from None
        return write_skipped(cfg, str(exc), request.out_samples, request.out_plot)

    sources = [
        subset_source(REAL_DATASETS[0], real.train, cfg.batch_size),
        subset_source(REAL_DATASETS[1], real.test, cfg.batch_size),
        *(shard_source(name, directory, cfg.batch_size) for name, directory in request.synthetic),
    ]
    results = score_all(clip, cfg, vocabulary, template_set, sources, request.cache_dir, request.out_samples)
    plot_entropies(results, vocabulary, request.out_plot)
    return ScoreResult(metrics_payload(cfg, clip, vocabulary, results))


def subset_source(name: str, split: ImageSet, batch_size: int) -> ScoreSource:
    """A subset split as a ScoreSource; sample keys are ``<name>-<index in the source dataset>``."""
    keys = [f"{name}-{i}" for i in split.indices]
    batches = batches_from_arrays(keys, split.images, split.labels, batch_size)
    return ScoreSource(name, split.class_names, batches, total=len(split))


def shard_source(name: str, directory: Path, batch_size: int) -> ScoreSource:
    """A shard dataset directory as a ScoreSource, streamed (its samples keep their shard keys)."""
    manifest = read_manifest(directory)
    batches = batches_from_samples(iter_samples(directory), batch_size)
    return ScoreSource(name, tuple(manifest["class_names"]), batches, total=int(manifest["total"]))


def score_all(
    clip: LoadedClip,
    cfg: ScoreConfig,
    vocabulary: Vocabulary,
    template_set: tuple[str, ...],
    sources: list[ScoreSource],
    cache: Path | None,
    out_samples: Path,
) -> Results:
    """Score every source in turn into one per-sample table; the synset prompts are embedded once for all."""
    synset_embeddings = text_embeddings(clip, vocabulary.names, template_set, cache, progress=True)
    results = {}
    with SampleTableWriter(out_samples) as sink:
        for source in sources:
            class_embeddings = text_embeddings(clip, source.class_names, template_set, cache)
            metrics = score_source(clip, source, vocabulary, synset_embeddings, class_embeddings, cfg.top_k, sink)
            results[source.name] = (metrics, source.class_names)
    return results


def metrics_payload(cfg: ScoreConfig, clip: LoadedClip, vocabulary: Vocabulary, results: Results) -> dict[str, Any]:
    """The metrics JSON of a scored run: what scored it (model, temperature, vocabulary, templates, params) and,
    per dataset, its summary and per-class figures."""
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


def write_skipped(cfg: ScoreConfig, reason: str, out_samples: Path, out_plot: Path) -> ScoreResult:
    """The outputs of a run without weights: an empty table and a placeholder plot, and a 'skipped' result."""
    SampleTableWriter(out_samples).close()
    plot_message(f"skipped: no CLIP weights\n{cfg.model} / {cfg.pretrained}", out_plot)
    metrics = {"status": "skipped", "reason": reason, "model": cfg.model, "pretrained": cfg.pretrained}
    return ScoreResult(metrics, skipped=reason)
