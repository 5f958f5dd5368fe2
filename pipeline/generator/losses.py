"""Generator and discriminator losses: L1, a multi-scale Laplacian-pyramid L1 (the perceptual term, no
pretrained network), the mix term (optionally on the pyramid's low-pass residual only), least-squares GAN losses,
discriminator feature matching and the R1 penalty. A mix's target, the pixel composite, is
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


def _halve(x: Tensor) -> Tensor | None:
    """One pyramid step: binomial blur, then every second pixel; None when a side would drop below 2 pixels."""
    return None if min(x.shape[-2:]) < 4 else _blur(x)[..., ::2, ::2]


def laplacian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """Band-pass images of ``x`` (B, C, H, W): ``levels`` detail bands (finest first) and the low-pass
    residual.

    Each band is ``x_l - up(down(x_l))``; the pyramid stops early when a side would drop below 2 pixels.
    """
    bands = []
    current = x
    for _ in range(levels):
        if (down := _halve(current)) is None:
            break
        up = F.interpolate(down, size=current.shape[-2:], mode="bilinear", align_corners=False)
        bands.append(current - up)
        current = down
    bands.append(current)
    return bands


def lowpass(x: Tensor, levels: int) -> Tensor:
    """The low-pass residual of ``laplacian_pyramid(x, levels)`` (without computing the bands): ``x`` after
    ``levels`` blur + 2x downsample steps, fewer when a side would drop below 2 pixels."""
    for _ in range(levels):
        if (down := _halve(x)) is None:
            break
        x = down
    return x


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


def mix_loss(mixes: Tensor, composite: Tensor, pyramid_weight: float, levels: int, mix_levels: int) -> Tensor:
    """The mix term between (B, 3, H, W) mixes and their pixel composite: ``image_loss`` of the images, or with
    ``mix_levels`` = L > 0 ``image_loss`` of their low-pass residuals after L pyramid steps (H/2^L), so the
    composite's layout and colours are the target and its detail (hard seams included) is not."""
    if mix_levels > 0:
        mixes, composite = lowpass(mixes, mix_levels), lowpass(composite, mix_levels)
    return image_loss(mixes, composite, pyramid_weight, levels)


def lsgan_generator_loss(fake_scores: Tensor) -> Tensor:
    """Least-squares GAN, generator side: mean (D(fake) - 1)^2."""
    return (fake_scores.float() - 1.0).pow(2).mean()


def lsgan_discriminator_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Least-squares GAN, discriminator side: 0.5 * (mean (D(real) - 1)^2 + mean D(fake)^2)."""
    return 0.5 * ((real_scores.float() - 1.0).pow(2).mean() + fake_scores.float().pow(2).mean())


def feature_matching_loss(real_features: list[Tensor], fake_features: list[Tensor]) -> Tensor:
    """Discriminator feature matching (Salimans et al. 2016) with L1: per layer, the mean absolute difference
    between the batch means of D's activations (C, h, w) on real images and on mixes; averaged over layers.
    Batch statistics, not pairs: a mix has no real image it should equal. Pass the real features detached."""
    terms = [
        (r.float().mean(0) - f.float().mean(0)).abs().mean() for r, f in zip(real_features, fake_features, strict=True)
    ]
    return torch.stack(terms).mean()


def r1_penalty(real_scores: Tensor, real: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): mean over images of ||grad_x D(x)||^2 at the real images, in float32.

    real: (B, 3, H, W) with ``requires_grad``; real_scores: D(real), (B, 1, h', w') patch scores. A PatchGAN's
    D(x) is taken as the mean of x's patch scores (what the LSGAN loss averages), so the weight does not depend
    on the number of patches. The gradient keeps its graph (``create_graph``), so the penalty trains D.
    """
    per_image = real_scores.float().flatten(1).mean(1)  # (B,): images are independent (InstanceNorm, no BatchNorm)
    (grad,) = torch.autograd.grad(per_image.sum(), real, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()
