"""The Gaussian-blur control: blur real images until their high-frequency share matches a synthetic set's.

Mixing N images through a generator tends to soften them. The blur control separates "the synthetic set helps
because it is new content" from "it helps because it is smoother": ``fit_blur_sigma`` finds the Gaussian sigma
at which blurred real images have the same mean high-frequency share (``pipeline.synthesis.diagnostics``) as the
synthetic set, measured on what would be stored (blurred in [0, 255] and rounded to uint8: ``blur_uint8``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.synthesis.diagnostics import HF_CUTOFF, high_frequency_share

_CHUNK_IMAGES = 1024  # images per blur batch in blur_uint8: bounds memory on large sets


def _gaussian_kernel(sigma: float, radius: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) float images; returns the same shape and dtype.

    Kernel radius ceil(3 sigma), taps normalised to sum 1, reflect padding. Reflect padding needs the radius
    below the side it pads, so an axis shorter than or equal to the radius is padded by replicating its edge
    instead (the kernel is never truncated; on 32x32 images only from sigma > 31/3). ``sigma == 0``
    returns ``images`` itself, unchanged.
    """
    if sigma < 0 or not math.isfinite(sigma):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma}")
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a (B, C, H, W) float tensor, got {tuple(images.shape)} {images.dtype}")
    if sigma == 0:
        return images
    radius = math.ceil(3 * sigma)
    c, h, w = images.shape[1:]
    k = _gaussian_kernel(sigma, radius, images.dtype, images.device)
    size = 2 * radius + 1
    x = F.pad(images, (radius, radius, 0, 0), mode="reflect" if radius < w else "replicate")
    x = F.conv2d(x, k.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)  # along W
    x = F.pad(x, (0, 0, radius, radius), mode="reflect" if radius < h else "replicate")
    return F.conv2d(x, k.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)  # along H


def blur_uint8(images: np.ndarray, sigma: float) -> np.ndarray:
    """(M, H, W, 3) uint8 -> (M, H, W, 3) uint8: ``gaussian_blur`` in float [0, 255] on the CPU, rounded to
    the nearest integer (half to even) like a stored image. Processed in chunks of images to bound memory."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (M, H, W, 3) uint8, got {images.shape} {images.dtype}")
    out = np.empty_like(images)
    for start in range(0, images.shape[0], _CHUNK_IMAGES):
        part = torch.from_numpy(images[start : start + _CHUNK_IMAGES]).permute(0, 3, 1, 2).to(torch.float64)
        blurred = gaussian_blur(part, sigma).round().clamp(0, 255).to(torch.uint8)
        out[start : start + _CHUNK_IMAGES] = blurred.permute(0, 2, 3, 1).numpy()
    return out


def fit_blur_sigma(
    images: np.ndarray,
    target_share: float,
    low: float = 0.0,
    high: float = 4.0,
    iterations: int = 30,
) -> float:
    """The sigma in [low, high] at which the mean high-frequency share of ``blur_uint8(images, sigma)`` equals
    ``target_share``, by bisection (the share falls as sigma grows).

    images: (M, H, W, 3) uint8. A target at or above the share at ``low`` (0: the images as they are) returns
    ``low``; one at or below the share at ``high`` returns ``high``. Rounded to 4 decimals, so the value written
    to a manifest is stable.
    """
    if not 0 <= low < high:
        raise ValueError(f"need 0 <= low < high, got low={low}, high={high}")

    def share(sigma: float) -> float:
        return float(high_frequency_share(blur_uint8(images, sigma), HF_CUTOFF).mean())

    if target_share >= share(low):
        return round(low, 4)
    if target_share <= share(high):
        return round(high, 4)
    lo, hi = low, high
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if share(mid) > target_share:
            lo = mid  # still too sharp: blur more
        else:
            hi = mid
    return round(0.5 * (lo + hi), 4)
