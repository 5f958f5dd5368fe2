"""The synthesis engine: sample ids -> mixed images, with their provenance.

Sample ``s`` belongs to class ``s % C`` (classes interleaved, so any prefix of ids is class-balanced). Its
per-sample seed is ``derive_seeds(cfg.seed, [s])``; from that seed alone come N (drawn in ``cfg.n_sources``),
its N sources (distinct images of its class), their horizontal flips (``pipeline.generator.sources``, the
sampler the generator was trained with) and its mask. The expensive per-image
work is done once in the constructor: Felzenszwalb superpixels of every subset image and, in generator mode,
the encoder features of every image (and of its mirror image). Rendering a batch is then a feature gather, the
mask-weighted sum at H/4 and one batched decoder forward, so synthesis is decoder-bound.

Modes: ``generator`` decodes mixed features (HydraMix); ``pixel`` ("pixelmix", the no-generator control)
composites the same sources with the same image-resolution masks directly in pixel space; ``blur``
("pixelmix-blur", the blur control) is that composite Gaussian-blurred with ``blur_sigma``, which
``fit_blur_sigma_to`` chooses so that the set's high-frequency power share matches a generator set's: if
HydraMix beat pixelmix only because its images are smoother, this control shows it.

Determinism: a sample's sources, flips and mask depend only on (seed, s). The decoded pixels are computed in
batches, and a batched (bf16) convolution may round differently for other batch shapes, so bytes are
guaranteed equal for equal batch boundaries: ``render`` splits its ids into ``cfg.batch_size`` chunks from the
first id, and callers always render a shard from its first sample id (see ``docs/masks.md``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.core.devices import autocast
from pipeline.core.errors import HydraMixError
from pipeline.core.threads import Threads, check_threads
from pipeline.data.imageset import ImageSet
from pipeline.generator.masks import (
    MaskConfig,
    MaskKind,
    MaskSampler,
    derive_seeds,
    pixel_composite,
    to_feature_resolution,
)
from pipeline.generator.networks import to_signed
from pipeline.generator.sources import ClassMembers, draw_sources
from pipeline.synthesis.blur import fit_blur_sigma, gaussian_blur
from pipeline.synthesis.diagnostics import largest_source_share
from pipeline.synthesis.shards.format import ShardConfig

_ENCODE_BATCH = 256


@dataclass(frozen=True)
class SynthConfig:
    """How a synthetic dataset is made (params section ``synthesize``).

    n_per_class: images per class to synthesise (total = n_per_class * number of classes).
    seed: the dataset seed; every sample's randomness derives from (seed, sample id).
    n_sources: (min, max) images mixed per sample, inclusive, min >= 2; each class needs >= max images.
    mode: "generator" (decode mixed features), "pixel" (composite the sources in pixel space: the control) or
        "blur" (that composite Gaussian-blurred with ``blur_sigma`` px: the blur control).
    blur_sigma: the blur control's Gaussian sigma in px (blur mode only; ``fit_blur_sigma_to`` picks it).
    batch_size: samples per decoder forward; part of what defines the bytes (see the module docstring).
    flip_sources: mirror each source with probability 1/2 (per sample, seeded), as in generator training.
    mask_kind: overrides the generator's ``masks.kind`` when set (e.g. grid masks from a segmentation G).
    device, precision: where and in which autocast dtype to decode ("auto" = cuda if present; bf16 on CPUs
        with native bf16, else fp32).
    shards: shard file name and size (read by the ``synthesize`` stage, not by the engine).
    threads: CPU threads ("auto" or N, see ``pipeline.core.threads``; set by the stage, not part of the dataset).
    """

    n_per_class: int = 5000
    seed: int = 0
    n_sources: tuple[int, int] = (2, 4)
    mode: Literal["generator", "pixel", "blur"] = "generator"
    blur_sigma: float = 0.0
    batch_size: int = 250
    flip_sources: bool = True
    mask_kind: MaskKind | None = None
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    shards: ShardConfig = ShardConfig()
    threads: Threads = "auto"

    def __post_init__(self) -> None:
        check_threads(self.threads)
        if self.n_per_class < 1:
            raise ValueError(f"n_per_class must be >= 1, got {self.n_per_class}")
        if len(self.n_sources) != 2 or not 2 <= self.n_sources[0] <= self.n_sources[1]:
            raise ValueError(f"n_sources must be [min, max] with 2 <= min <= max, got {list(self.n_sources)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.mode not in ("generator", "pixel", "blur"):
            raise ValueError(f"mode must be generator, pixel or blur, got {self.mode!r}")
        if self.blur_sigma < 0 or (self.blur_sigma and self.mode != "blur"):
            raise ValueError(f"blur_sigma must be >= 0 and is for blur mode only, got {self.blur_sigma}")


@dataclass(frozen=True, eq=False)
class Rendered:
    """One synthetic sample. key: the zero-padded sample id (no dots); image: (H, W, 3) uint8 RGB;
    label: class id; meta: provenance (JSON-able), see ``Synthesizer.render``."""

    key: str
    image: np.ndarray
    label: int
    meta: dict[str, Any]


class Synthesizer:
    """Renders synthetic samples from a subset's train images (see the module docstring).

    train: the subset's train images (the sources). cfg: synthesis params. mask_cfg: the generator's mask
    params (Felzenszwalb settings, grid cells, soft); ``cfg.mask_kind`` overrides its kind, ``cfg.n_sources``
    its N. generator: a trained ``HydraMixGenerator`` (required in generator mode, ignored in pixel mode); it
    is put in eval mode with gradients off. device, dtype: where to decode and the autocast dtype (float32:
    none).
    """

    def __init__(
        self,
        train: ImageSet,
        cfg: SynthConfig,
        mask_cfg: MaskConfig,
        generator: nn.Module | None,
        device: torch.device,
        dtype: torch.dtype,
        output_resolution: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.mask_cfg = MaskConfig(
            **{**_fields(mask_cfg), "kind": cfg.mask_kind or mask_cfg.kind, "n_sources": cfg.n_sources}
        )
        self.class_names = train.class_names
        self.device, self.dtype = device, dtype
        self._train = train
        h, w = train.images.shape[1:3]
        # Mixes are made at the sources' resolution (a generator trained with resize_subset gets sources resized
        # to its own) and written at output_resolution (the subset's), resized like the training inputs.
        self.resolution = int(output_resolution or h)
        self._resize = self.resolution != h
        if len(train) == 0:
            raise HydraMixError("the subset has no train images to synthesise from")
        counts = np.bincount(train.labels, minlength=len(self.class_names))
        need = cfg.n_sources[1]
        for c, count in enumerate(counts):
            if count < need:
                raise HydraMixError(
                    f"class '{self.class_names[c]}' has {count} train image(s) but synthesize.n_sources "
                    f"asks for up to {need} distinct sources per mix; lower synthesize.n_sources"
                )
        self._classes = ClassMembers.of(train.labels, len(self.class_names))

        self._sampler = MaskSampler.of_images(train.images, self.mask_cfg)  # superpixels once per image

        self._generator = None
        if cfg.mode == "generator":
            if generator is None:
                raise HydraMixError("synthesize.mode is 'generator' but no generator was given")
            factor = int(generator.downsampling)
            if h % factor or w % factor:
                raise HydraMixError(f"image size {h}x{w} is not divisible by the generator's downsampling {factor}")
            self._factor = factor
            self._generator = generator.to(device).eval().requires_grad_(False)
            self._channels_last = device.type in ("cpu", "cuda")
            if self._channels_last:
                self._generator = self._generator.to(memory_format=torch.channels_last)
            self._features = self._encode_all(train.images)  # (2, M, C, h, w): plain and mirrored
        else:
            pixels = torch.from_numpy(train.images).permute(0, 3, 1, 2).to(device, torch.float32)
            self._pixels = torch.stack([pixels, pixels.flip(-1)])  # (2, M, 3, H, W) in [0, 255]

    @property
    def total(self) -> int:
        """Number of samples in the dataset: n_per_class * number of classes."""
        return self.cfg.n_per_class * len(self.class_names)

    def _encode_all(self, images: np.ndarray) -> Tensor:
        """Encoder features of every image and its mirror image, once: (2, M, C, h, w) float32 on device."""
        out = []
        for flip in (False, True):
            chunks = []
            for start in range(0, len(images), _ENCODE_BATCH):
                x = _to_model_input(images[start : start + _ENCODE_BATCH], self.device, self._channels_last)
                with torch.inference_mode(), autocast(self.device, self.dtype):
                    chunks.append(self._generator.encode(x.flip(-1) if flip else x).float())
            out.append(torch.cat(chunks))
        return torch.stack(out)

    def plan(self, sample_ids: np.ndarray) -> dict[str, np.ndarray]:
        """The random decisions for ``sample_ids`` (B,) (pure numpy, no rendering).

        Returns ``labels`` (B,), ``seeds`` (B,) uint64, ``n`` (B,), ``rows`` (B, N_max) row positions in
        ``train`` (-1 after the first n), ``flipped`` (B, N_max) bool.
        """
        ids = np.asarray(sample_ids, dtype=np.int64).reshape(-1)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.total):
            raise HydraMixError(f"sample ids must lie in [0, {self.total}), got {ids.min()}..{ids.max()}")
        labels = ids % len(self.class_names)
        seeds = derive_seeds(self.cfg.seed, ids)
        draw = draw_sources(seeds, labels, self._classes, self.cfg.n_sources, self.cfg.flip_sources)
        n, rows, flipped = draw.n, draw.rows, draw.flipped
        return {"labels": labels, "seeds": seeds, "n": n, "rows": rows, "flipped": flipped}

    def render(self, sample_ids: np.ndarray) -> list[Rendered]:
        """Render ``sample_ids`` (any length; decoded in ``cfg.batch_size`` chunks from the first id).

        Each ``Rendered.meta`` holds: class (name), label, sources (original dataset indices of the N
        sources, ``train.indices``), source_rows (their row positions in the subset's train split), flipped
        (per source), n_sources, mask_kind, seed (the per-sample seed), sample_id, mode, largest_share (the
        area share of the source that covers most of the mix, in (0, 1]).
        """
        ids = np.asarray(sample_ids, dtype=np.int64).reshape(-1)
        out: list[Rendered] = []
        for start in range(0, len(ids), self.cfg.batch_size):
            out += self._render_batch(ids[start : start + self.cfg.batch_size])
        return out

    def masks(self, plan: dict[str, np.ndarray]) -> Tensor:
        """(B, N_max, H, W) float masks of a ``plan``'s samples, summing to 1 over the valid sources."""
        return self._sampler.sample(plan["rows"], plan["seeds"], flipped=plan["flipped"])

    def _render_batch(self, ids: np.ndarray) -> list[Rendered]:
        plan = self.plan(ids)
        masks = self.masks(plan)  # (B, N, H, W)
        images = self.compose(plan["rows"], plan["flipped"], masks)  # (B, H, W, 3) uint8
        largest = largest_source_share(masks)  # (B,)
        indices = self._train.indices
        out = []
        for i, s in enumerate(ids.tolist()):
            n = int(plan["n"][i])
            rows = plan["rows"][i, :n]
            label = int(plan["labels"][i])
            meta = {
                "class": self.class_names[label],
                "label": label,
                "sources": indices[rows].tolist(),
                "source_rows": rows.tolist(),
                "flipped": plan["flipped"][i, :n].tolist(),
                "n_sources": n,
                "mask_kind": self.mask_cfg.kind,
                "seed": int(plan["seeds"][i]),
                "sample_id": s,
                "mode": self.cfg.mode,
                "largest_share": round(float(largest[i]), 6),
            }
            out.append(Rendered(key=f"{s:09d}", image=images[i], label=label, meta=meta))
        return out

    def compose(self, rows: np.ndarray, flipped: np.ndarray, masks: Tensor) -> np.ndarray:
        """Mixes of the given sources: rows (B, N) (-1 = padding), flipped (B, N) bool, masks (B, N, H, W)
        at image resolution summing to 1. Returns (B, H, W, 3) uint8."""
        b, n = rows.shape
        safe = torch.from_numpy(np.maximum(rows, 0)).reshape(-1)
        flip = torch.from_numpy(np.asarray(flipped, dtype=np.int64)).reshape(-1)
        masks = masks.to(self.device)
        with torch.inference_mode():
            if self._generator is None:
                src = self._pixels[flip, safe].unflatten(0, (b, n))  # (B, N, 3, H, W) in [0, 255]
                return self._finish(pixel_composite(src, masks))
            feats = self._features[flip, safe].unflatten(0, (b, n))  # (B, N, C, h, w) float32
            mixed = self._generator.mix(feats, to_feature_resolution(masks, self._factor))  # (B, C, h, w)
            if self._channels_last:
                mixed = mixed.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.dtype):
                decoded = self._generator.decode(mixed)  # (B, 3, H, W) in [-1, 1]
            return self._finish((decoded.float().clamp(-1, 1) + 1) * 127.5)

    def _finish(self, mixed: Tensor) -> np.ndarray:
        """(B, 3, H, W) float mixes in [0, 255] -> (B, R, R, 3) uint8 at the output resolution R: resized if
        the sources were, then (blur mode) blurred at R, so the blur sigma is in output pixels."""
        if self._resize:
            mixed = resize_float(mixed, self.resolution)
        if self.cfg.mode == "blur":
            mixed = gaussian_blur(mixed, self.cfg.blur_sigma)
        return _to_uint8_hwc(mixed)


def resize_float(images: Tensor, resolution: int) -> Tensor:
    """(B, C, H, W) float -> (B, C, R, R): the antialiased bicubic resize the generator's training applies to
    its sources (``pipeline.generator.batches.resize_images``), without rounding."""
    return F.interpolate(images, size=(resolution, resolution), mode="bicubic", antialias=True, align_corners=False)


def _fields(cfg: MaskConfig) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}


def _to_model_input(images: np.ndarray, device: torch.device, channels_last: bool) -> Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [-1, 1] on ``device``."""
    x = to_signed(torch.from_numpy(images).to(device).permute(0, 3, 1, 2))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def _to_uint8_hwc(x: Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 255] -> (B, H, W, 3) uint8 (rounded) on the CPU."""
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def fit_blur_sigma_to(
    train: ImageSet,
    cfg: SynthConfig,
    mask_cfg: MaskConfig,
    target_share: float,
    per_class: int,
    device: torch.device,
    output_resolution: int | None = None,
) -> float:
    """The blur control's sigma (px): the Gaussian blur at which the pixel composites of this set's first
    ``per_class`` samples per class (the same sources and masks as a generator set of the same seed) reach
    ``target_share``, the generator set's mean high-frequency power share (pipeline.synthesis.diagnostics)."""
    pixel_cfg = dataclasses.replace(cfg, mode="pixel", blur_sigma=0.0)
    pixel = Synthesizer(train, pixel_cfg, mask_cfg, None, device, torch.float32, output_resolution)
    n = min(pixel.total, per_class * len(train.class_names))  # classes interleave: a class-balanced prefix
    composites = np.stack([r.image for r in pixel.render(np.arange(n))])
    return fit_blur_sigma(composites, target_share)
