"""What a trained generator is judged by: reconstruction PSNR and mask fidelity (with the pixel-composite and
plain-mean references) for the metrics, and the picture grid of example mixes.

subset -> generator, last step: ``train.train_generator`` calls ``evaluate`` and ``picture_grid`` once after
the loop, with the generator in eval mode. Both draw their mixes from fixed streams of ``batches`` (no flips),
so the same weights give the same figures and the same picture. The figures themselves are in ``quality``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from pipeline.core.devices import autocast
from pipeline.generator.batches import EVAL_STREAM, GRID_STREAM, TrainSplit, draw_batch, make_batch
from pipeline.generator.config import GeneratorConfig
from pipeline.generator.masks import colorize, pixel_composite, to_feature_resolution
from pipeline.generator.networks import HydraMixGenerator, to_signed
from pipeline.generator.quality import fidelity_report, psnr


@torch.inference_mode()
def evaluate(
    g: HydraMixGenerator,
    split: TrainSplit,
    cfg: GeneratorConfig,
    dtype: torch.dtype,
    memory_format: torch.memory_format,
) -> dict[str, Any]:
    """Reconstruction PSNR over every train image and mask fidelity (with references) over ``eval_mixes``
    mixes drawn from a fixed evaluation stream (no flips)."""
    images = split.images
    device = images.device
    psnrs = []
    for start in range(0, len(images), 64):
        x = to_signed(images[start : start + 64])
        with autocast(device, dtype):
            y = g.decode(g.encode(x.contiguous(memory_format=memory_format))).float()
        psnrs.append(psnr((y + 1) / 2, (x + 1) / 2).cpu())
    eval_cfg = _without_flips(cfg)
    reports = []
    for i, start in enumerate(range(0, cfg.eval_mixes, cfg.batch_size)):
        seeds, draw = draw_batch(split, eval_cfg, EVAL_STREAM, i, min(cfg.batch_size, cfg.eval_mixes - start))
        batch = make_batch(split, seeds, draw)
        with autocast(device, dtype):
            masks_f = to_feature_resolution(batch.masks, HydraMixGenerator.downsampling)
            mix = g(batch.sources.contiguous(), masks_f).float()
        fidelity = fidelity_report((mix + 1) / 2, (batch.sources + 1) / 2, batch.masks, batch.valid)
        reports.append((len(seeds), fidelity))
    return {
        "reconstruction_psnr_db": float(torch.cat(psnrs).mean()),
        "mask_fidelity": _weighted_fidelity(reports),
        "eval_mixes": cfg.eval_mixes,
    }


def _without_flips(cfg: GeneratorConfig) -> GeneratorConfig:
    return dataclasses.replace(cfg, flip=False)


def _weighted_fidelity(reports: list[tuple[int, dict[str, dict]]]) -> dict[str, dict[str, float]]:
    """Region-count-weighted means over evaluation batches, per method (generator / references)."""
    out: dict[str, dict[str, float]] = {}
    for method in reports[0][1]:
        total = sum(r[method]["regions"] for _, r in reports)
        entry = {
            key: sum(r[method][key] * r[method]["regions"] for _, r in reports if r[method]["regions"]) / max(total, 1)
            for key in ("assigned_db", "non_assigned_db", "gap_db")
        }
        entry["regions"] = total
        out[method] = entry
    return out


@torch.inference_mode()
def picture_grid(g: HydraMixGenerator, split: TrainSplit, cfg: GeneratorConfig, dtype: torch.dtype) -> np.ndarray:
    """(H, W, 3) uint8 picture: one row per mix (``grid_mixes`` rows, N = the largest N), columns = the N
    sources, the mask coloured by source, the pixel composite, the generator's mix."""
    images = split.images
    device = images.device
    hi = cfg.masks.n_sources[1]
    seeds, draw = draw_batch(split, replace_n(_without_flips(cfg), hi), GRID_STREAM, 0, cfg.grid_mixes)
    batch = make_batch(split, seeds, draw)
    sources, masks = batch.sources, batch.masks
    with autocast(device, dtype):
        mix = g(sources, to_feature_resolution(masks, HydraMixGenerator.downsampling)).float()
    to_u8 = lambda x: ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu()  # noqa: E731
    tiles = [to_u8(sources[:, i]) for i in range(sources.shape[1])]
    tiles += [colorize(masks.cpu()), to_u8(pixel_composite(sources, masks)), to_u8(mix)]
    b, res = len(seeds), images.shape[-1]
    scale = max(1, 64 // res)  # tiny images are scaled up (nearest) so a person can see them
    gap = 2
    side = res * scale
    canvas = np.full((b * (side + gap) + gap, len(tiles) * (side + gap) + gap, 3), 255, dtype=np.uint8)
    for col, tile in enumerate(tiles):
        big = tile.repeat_interleave(scale, -1).repeat_interleave(scale, -2).permute(0, 2, 3, 1).numpy()
        for row in range(b):
            y, x = gap + row * (side + gap), gap + col * (side + gap)
            canvas[y : y + side, x : x + side] = big[row]
    return canvas


def replace_n(cfg: GeneratorConfig, n: int) -> GeneratorConfig:
    """``cfg`` with ``masks.n_sources`` fixed to ``n``."""
    return dataclasses.replace(cfg, masks=dataclasses.replace(cfg.masks, n_sources=(n, n)))
