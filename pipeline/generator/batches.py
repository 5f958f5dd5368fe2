"""The generator's data path: the train split on the device once, and batches of same-class mixes drawn from it.

subset -> generator, first step. ``prepare_split`` turns the subset's train split into a ``TrainSplit`` (uint8
images on the device, resized once only if ``resize_subset`` says so; row positions per class; a mask sampler
over superpixels computed once). Per batch, ``draw_batch`` gives every mix its own seed and draws its class and
sources from it (``sources``, the sampler synthesis uses too), and ``make_batch`` turns them into a ``Batch`` of
named tensors: the sources gathered and flipped as tensor ops (airbench style), and their masks. Training,
evaluation and the picture grid each draw from their own random stream (``TRAIN_STREAM``, ``EVAL_STREAM``,
``GRID_STREAM``), keyed by ``(seed, stream, index)``.
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
from pipeline.generator.masks import MaskSampler
from pipeline.generator.networks import to_signed
from pipeline.generator.sources import ClassMembers, SourceDraw, draw_classes, draw_sources, mix_seeds

# Random streams: training step s draws from (seed, TRAIN_STREAM, s); evaluation batch i from
# (seed, EVAL_STREAM, i); the picture grid from (seed, GRID_STREAM, 0).
TRAIN_STREAM, EVAL_STREAM, GRID_STREAM = 1, 2, 3


@dataclass(frozen=True, eq=False)
class TrainSplit:
    """The train split, prepared once for the whole run."""

    images: Tensor  # (M, 3, R, R) uint8 on the device
    classes: ClassMembers  # row positions into ``images`` of each class's images
    sampler: MaskSampler  # over the images' superpixels (grid masks only need the shape)


@dataclass(frozen=True, eq=False)
class Batch:
    """B mixes of N sources, ready for the networks (on the device)."""

    sources: Tensor  # (B, N, 3, H, W) float in [-1, 1]; padding slots are 0
    masks: Tensor  # (B, N, H, W) float32 at image resolution, summing to 1 over N; 0 on padding slots
    valid: Tensor  # (B, N) bool: True for real sources
    # This part's weight in the global batch's mean over sources: its mean N over the whole batch's (1.0 for a
    # whole batch). Under torchrun, where N varies per mix, it makes the ranks' averaged gradients those of one
    # process on the whole batch.
    source_share: float = 1.0


def prepare_split(train: ImageSet, cfg: GeneratorConfig, device: torch.device) -> TrainSplit:
    """``train`` on ``device`` at ``cfg.resolution``, with its rows per class and its mask sampler;
    HydraMixError if a class is too small for a mix or the resolutions disagree."""
    classes = class_members(train, cfg)
    images_np = prepare_images(train, cfg)
    images = torch.from_numpy(images_np).permute(0, 3, 1, 2).contiguous().to(device)  # (M, 3, R, R) uint8
    # Superpixels once, before the loop.
    return TrainSplit(images=images, classes=classes, sampler=MaskSampler.of_images(images_np, cfg.masks))


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


def class_members(train: ImageSet, cfg: GeneratorConfig) -> ClassMembers:
    """Row positions per class; HydraMixError if a class cannot supply the sources one mix needs."""
    n_max = cfg.masks.n_sources[1]
    need = 2 if cfg.cap_sources_to_class_size else n_max
    classes = ClassMembers.of(train.labels, len(train.class_names))
    for name, count in zip(train.class_names, classes.counts.tolist(), strict=True):
        if count < need:
            hint = (
                "a mix needs at least 2 images"
                if cfg.cap_sources_to_class_size
                else "lower generator.masks.n_sources or set generator.cap_sources_to_class_size: true"
            )
            raise HydraMixError(f"class '{name}' has {count} train image(s) but a mix needs {need} sources ({hint})")
    return classes


def draw_batch(
    split: TrainSplit, cfg: GeneratorConfig, stream: int, index: int, size: int
) -> tuple[np.ndarray, SourceDraw]:
    """Batch ``index`` of a random stream: ``size`` mixes, each of a uniformly drawn class, with their per-mix
    seeds (size,) and their sources (``sources.draw_sources``: N per mix, in ``cfg.masks.n_sources``)."""
    seeds = mix_seeds(cfg.seed, stream, index, size)
    labels = draw_classes(seeds, len(split.classes.counts))
    return seeds, draw_sources(seeds, labels, split.classes, cfg.masks.n_sources, cfg.flip)


def make_batch(split: TrainSplit, seeds: np.ndarray, draw: SourceDraw, part: slice = slice(None)) -> Batch:
    """The mixes ``part`` of a drawn batch as a Batch on the split's device. Each mix's masks come from its own
    seed, so a process's part of a global batch gets exactly the masks it has in the whole batch."""
    rows, flips = draw.rows[part], draw.flipped[part]
    masks = split.sampler.sample(rows, seed=seeds[part], flipped=flips).to(split.images.device)
    sources, valid = gather_sources(split.images, rows, flips)
    share = float(draw.n[part].mean() / draw.n.mean())
    return Batch(sources=sources, masks=masks, valid=valid, source_share=share)


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
