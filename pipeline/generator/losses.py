"""Generator and discriminator losses: L1, a multi-scale Laplacian-pyramid L1 (the perceptual term, no
pretrained network) and least-squares GAN losses. A mix's target, the pixel composite, is
``pipeline.generator.masks.pixel_composite``.

All image tensors are (B, 3, H, W) floats in [-1, 1]; losses are scalar float32 tensors. Losses are computed
in float32 even when the networks ran under autocast (callers pass ``.float()`` outputs), so bf16 rounding
never reaches the loss values that are logged or compared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# The 5-tap binomial filter of Burt & Adelson's Laplacian pyramid.
_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)


def _blur(x: Tensor) -> Tensor:
    """Separable 5x5 binomial blur per channel with reflect padding; (B, C, H, W) -> same shape."""
    k = torch.tensor(_BINOMIAL, dtype=x.dtype, device=x.device) / 16.0
    c = x.shape[1]
    x = F.pad(x, (2, 2, 2, 2), mode="reflect" if min(x.shape[-2:]) > 2 else "replicate")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def laplacian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """Band-pass images of ``x`` (B, C, H, W): ``levels`` detail bands (finest first) and the low-pass
    residual.

    Each band is ``x_l - up(down(x_l))``; the pyramid stops early when a side would drop below 2 pixels.
    """
    bands = []
    current = x
    for _ in range(levels):
        if min(current.shape[-2:]) < 4:
            break
        down = _blur(current)[..., ::2, ::2]
        up = F.interpolate(down, size=current.shape[-2:], mode="bilinear", align_corners=False)
        bands.append(current - up)
        current = down
    bands.append(current)
    return bands


def pyramid_l1(x: Tensor, target: Tensor, levels: int) -> Tensor:
    """Multi-scale L1 between Laplacian pyramids of ``x`` and ``target`` (B, C, H, W): mean over bands of the
    per-band mean absolute difference, each band weighted 2**l (l = 0 finest) so coarse structure counts as
    much as fine detail even though coarse bands have smaller amplitudes per pixel."""
    px, pt = laplacian_pyramid(x, levels), laplacian_pyramid(target, levels)
    terms = [(2.0**i) * (a - b).abs().mean() for i, (a, b) in enumerate(zip(px, pt, strict=True))]
    return torch.stack(terms).sum() / len(terms)


def image_loss(x: Tensor, target: Tensor, pyramid_weight: float, levels: int) -> Tensor:
    """L1 + ``pyramid_weight`` * Laplacian-pyramid L1 between (B, 3, H, W) images."""
    return (x - target).abs().mean() + pyramid_weight * pyramid_l1(x, target, levels)


def lsgan_generator_loss(fake_scores: Tensor) -> Tensor:
    """Least-squares GAN, generator side: mean (D(fake) - 1)^2."""
    return (fake_scores.float() - 1.0).pow(2).mean()


def lsgan_discriminator_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Least-squares GAN, discriminator side: 0.5 * (mean (D(real) - 1)^2 + mean D(fake)^2)."""
    return 0.5 * ((real_scores.float() - 1.0).pow(2).mean() + fake_scores.float().pow(2).mean())
