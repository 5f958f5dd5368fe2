"""Quality figures for a trained generator: reconstruction PSNR and mask fidelity.

Mask fidelity asks whether the mix follows its masks: inside the region a mask gives to source i, the mix
should resemble source i (the *assigned* PSNR) more than the other sources of the mix (the *non-assigned*
PSNR). A
generator that ignores its masks, or copies one source, shows a gap near 0 dB. Two references bracket the
figure: the pixel composite (the same masks applied to the pixels: the upper reference) and the plain mean of
the N sources (about 0 dB gap: the lower one).

Images here are float tensors in [0, 1]; PSNR is in dB and capped at ``MAX_PSNR_DB`` (identical 8-bit pixels
would otherwise give infinity, e.g. the pixel composite's assigned PSNR with hard masks).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pipeline.generator.masks import pixel_composite

MAX_PSNR_DB = 60.0  # above the ~59 dB of 8-bit quantisation noise: "identical at 8 bits"


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Per-image PSNR in dB of (B, C, H, W) images in [0, 1]; returns (B,) float32, capped at MAX_PSNR_DB."""
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1)
    return _mse_to_db(mse)


def _mse_to_db(mse: Tensor) -> Tensor:
    floor = 10.0 ** (-MAX_PSNR_DB / 10.0)
    return -10.0 * torch.log10(mse.clamp_min(floor))


def mask_fidelity(mix: Tensor, sources: Tensor, masks: Tensor, valid: Tensor | None = None) -> dict[str, float]:
    """Region-wise PSNR of each mix to the source that owns the region and to the other sources.

    mix: (B, 3, H, W) in [0, 1]; sources: (B, N, 3, H, W) in [0, 1]; masks: (B, N, H, W) at image resolution
    (soft masks are hardened: a pixel belongs to the slot with the largest weight); valid: (B, N) bool, False
    for padding slots (default: all valid). Regions with no pixels are skipped.
    Returns {"assigned_db", "non_assigned_db", "gap_db", "regions"}: means over all (mix, region) pairs, where
    a region's non-assigned PSNR is the mean over the other valid sources of that mix.
    """
    b, n = masks.shape[:2]
    if valid is None:
        valid = torch.ones(b, n, dtype=torch.bool, device=masks.device)
    owner = masks.argmax(dim=1)  # (B, H, W)
    # (B, Nsrc, Nregion): squared error of source s inside the region owned by slot r.
    sq = (mix.float().unsqueeze(1) - sources.float()).pow(2).sum(2)  # (B, N, H, W)
    region = torch.nn.functional.one_hot(owner, n).permute(0, 3, 1, 2).float()  # (B, N, H, W)
    pixels = region.flatten(2).sum(-1)  # (B, N) region sizes
    err = torch.einsum("bshw,brhw->bsr", sq, region) / (3.0 * pixels.clamp_min(1.0)).unsqueeze(1)
    db = _mse_to_db(err)  # (B, Nsrc, Nregion)
    eye = torch.eye(n, dtype=torch.bool, device=masks.device)
    present = (pixels > 0) & valid  # regions to score, (B, N)
    # Other valid sources of the mix for each region.
    others = (~eye).unsqueeze(0) & valid.unsqueeze(2)  # (B, Nsrc, Nregion)
    n_others = others.sum(1)  # (B, Nregion)
    non_assigned = (db * others).sum(1) / n_others.clamp_min(1)
    keep = present & (n_others > 0)
    if not bool(keep.any()):
        return {"assigned_db": math.nan, "non_assigned_db": math.nan, "gap_db": math.nan, "regions": 0}
    a = float(db.diagonal(dim1=1, dim2=2)[keep].mean())
    na = float(non_assigned[keep].mean())
    return {"assigned_db": a, "non_assigned_db": na, "gap_db": a - na, "regions": int(keep.sum())}


def plain_mean(sources: Tensor, valid: Tensor | None = None) -> Tensor:
    """(B, N, 3, H, W) -> (B, 3, H, W) unweighted mean of each mix's valid sources (the lower reference)."""
    if valid is None:
        return sources.mean(1)
    w = valid.to(sources.dtype)[:, :, None, None, None]
    return (sources * w).sum(1) / w.sum(1)


def fidelity_report(mix: Tensor, sources: Tensor, masks: Tensor, valid: Tensor | None = None) -> dict[str, dict]:
    """``mask_fidelity`` of the generator's mixes and of the two references, same masks and sources.

    Returns {"generator": ..., "pixel_composite": ..., "plain_mean": ...}, each a ``mask_fidelity`` dict.
    """
    composite = pixel_composite(sources, masks)
    return {
        "generator": mask_fidelity(mix, sources, masks, valid),
        "pixel_composite": mask_fidelity(composite, sources, masks, valid),
        "plain_mean": mask_fidelity(plain_mean(sources, valid), sources, masks, valid),
    }
