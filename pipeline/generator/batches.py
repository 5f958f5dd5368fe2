"""The generator's data path: the train split on the device once, and batches of same-class mixes drawn from it.

subset -> generator, first step. ``prepare_split`` turns the subset's train split into a ``TrainSplit`` (uint8
images on the device, resized once only if ``resize_subset`` says so; row positions per class; a mask sampler
over superpixels computed once). Per batch, ``draw_mixes`` picks the source rows and flips from a NumPy generator
and ``make_batch`` turns them into a ``Batch`` of named tensors: the sources gathered and flipped as tensor ops
(airbench style), and their masks. Training, evaluation and the picture grid each draw from their own random
stream (``TRAIN_STREAM``, ``EVAL_STREAM``, ``GRID_STREAM``), keyed by ``(seed, stream, index)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.core.errors import HydraMixError
from pipeline.data.imageset import ImageSet
from pipeline.generator.config import GeneratorConfig
from pipeline.generator.masks import SEGMENT_KINDS, MaskSampler, derive_seeds, segment_images
from pipeline.generator.networks import to_signed

# Random streams: training step s draws from (seed, TRAIN_STREAM, s); evaluation batch i from
# (seed, EVAL_STREAM, i); the picture grid from (seed, GRID_STREAM).
TRAIN_STREAM, EVAL_STREAM, GRID_STREAM = 1, 2, 3


@dataclass(frozen=True, eq=False)
class TrainSplit:
    """The train split, prepared once for the whole run."""

    images: Tensor  # (M, 3, R, R) uint8 on the device
    rows_per_class: list[np.ndarray]  # row positions into ``images`` of each class
    sampler: MaskSampler  # over the images' superpixels (grid masks only need the shape)


@dataclass(frozen=True, eq=False)
class Batch:
    """B mixes of N sources, ready for the networks (on the device)."""

    sources: Tensor  # (B, N, 3, H, W) float in [-1, 1]; padding slots are 0
    masks: Tensor  # (B, N, H, W) float32 at image resolution, summing to 1 over N; 0 on padding slots
    valid: Tensor  # (B, N) bool: True for real sources


def prepare_split(train: ImageSet, cfg: GeneratorConfig, device: torch.device) -> TrainSplit:
    """``train`` on ``device`` at ``cfg.resolution``, with its rows per class and its mask sampler;
    HydraMixError if a class is too small for a mix or the resolutions disagree."""
    rows_per_class = class_rows(train, cfg)
    images_np = prepare_images(train, cfg)
    images = torch.from_numpy(images_np).permute(0, 3, 1, 2).contiguous().to(device)  # (M, 3, R, R) uint8
    # Superpixels once, before the loop (grid masks only need the shape).
    if cfg.masks.kind in SEGMENT_KINDS:
        segments = segment_images(images_np, cfg.masks)
    else:
        segments = np.zeros(images_np.shape[:3], dtype=np.int32)
    return TrainSplit(images=images, rows_per_class=rows_per_class, sampler=MaskSampler(segments, cfg.masks))


def prepare_images(train: ImageSet, cfg: GeneratorConfig) -> np.ndarray:
    """(M, R, R, 3) uint8 train images at ``cfg.resolution``; resized once only if ``resize_subset`` says
    so."""
    if train.resolution == cfg.resolution:
        return train.images
    if not cfg.resize_subset:
        raise HydraMixError(
            f"the subset is {train.resolution} px but generator.resolution is {cfg.resolution}; "
            "use a subset at that resolution or set generator.resize_subset: true"
        )
    return resize_images(train.images, cfg.resolution)


def resize_images(images: np.ndarray, resolution: int) -> np.ndarray:
    """(M, H, W, 3) uint8 -> (M, R, R, 3) uint8: antialiased bicubic, rounded (how a subset meets a generator
    trained with ``resize_subset``, in training and in synthesis alike)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(resolution, resolution), mode="bicubic", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def class_rows(train: ImageSet, cfg: GeneratorConfig) -> list[np.ndarray]:
    """Row positions per class; HydraMixError if a class cannot supply the sources one mix needs."""
    n_max = cfg.masks.n_sources[1]
    need = 2 if cfg.cap_sources_to_class_size else n_max
    rows = [np.flatnonzero(train.labels == c) for c in range(len(train.class_names))]
    for name, members in zip(train.class_names, rows, strict=True):
        if len(members) < need:
            hint = (
                "a mix needs at least 2 images"
                if cfg.cap_sources_to_class_size
                else "lower generator.masks.n_sources or set generator.cap_sources_to_class_size: true"
            )
            raise HydraMixError(
                f"class '{name}' has {len(members)} train image(s) but a mix needs {need} sources ({hint})"
            )
    return rows


def draw_mixes(
    rng: np.random.Generator, rows_per_class: list[np.ndarray], batch: int, cfg: GeneratorConfig
) -> tuple[np.ndarray, np.ndarray]:
    """One batch of mixes: (B, N) int64 source rows (-1 = padding after the real sources) and (B, N) bool
    flips.

    N is drawn once per batch from ``masks.n_sources``; each mix takes N distinct images of one random class
    (fewer, padded, only where ``cap_sources_to_class_size`` allows a small class).
    """
    lo, hi = cfg.masks.n_sources
    n = int(rng.integers(lo, hi + 1))
    classes = rng.integers(len(rows_per_class), size=batch)
    rows = np.full((batch, n), -1, dtype=np.int64)
    for b, c in enumerate(classes):
        members = rows_per_class[c]
        k = min(n, len(members))
        rows[b, :k] = rng.choice(members, size=k, replace=False)
    flips = (rng.random((batch, n)) < 0.5) & (rows >= 0) if cfg.flip else np.zeros((batch, n), dtype=bool)
    return rows, flips


def seed_of(rng: np.random.Generator) -> int:
    """One batch seed for the masks, drawn after ``draw_mixes`` from the same generator."""
    return int(rng.integers(0, 2**62))


def make_batch(split: TrainSplit, rows: np.ndarray, flips: np.ndarray, seed: int, part: slice = slice(None)) -> Batch:
    """The mixes ``rows[part]`` (of a (B, N) batch from ``draw_mixes``) as a Batch on the split's device.

    Row b's masks come from ``derive_seeds(seed, [b])``, as ``MaskSampler.sample`` derives them from one batch
    seed, so a process's part of a global batch gets exactly the masks it has in the whole batch."""
    mask_seeds = derive_seeds(seed, np.arange(len(rows)))
    masks = split.sampler.sample(rows[part], seed=mask_seeds[part], flipped=flips[part]).to(split.images.device)
    sources, valid = gather_sources(split.images, rows[part], flips[part])
    return Batch(sources=sources, masks=masks, valid=valid)


def gather_sources(images: Tensor, rows: np.ndarray, flips: np.ndarray) -> tuple[Tensor, Tensor]:
    """images (M, 3, H, W) uint8 on the device -> (B, N, 3, H, W) float in [-1, 1] (padding = 0) and (B, N)
    valid."""
    device = images.device
    rows_t = torch.from_numpy(rows).to(device)
    valid = rows_t >= 0
    x = to_signed(images[rows_t.clamp_min(0)])  # (B, N, 3, H, W)
    flip = torch.from_numpy(flips).to(device)[..., None, None, None]
    x = torch.where(flip, x.flip(-1), x)
    return x * valid[..., None, None, None], valid
