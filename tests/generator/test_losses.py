"""Losses: Laplacian pyramid structure, pyramid L1, pixel composite, LSGAN values."""

from __future__ import annotations

import torch

from pipeline.generator.losses import (
    image_loss,
    laplacian_pyramid,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    pyramid_l1,
)
from pipeline.generator.masks import pixel_composite


def test_pyramid_shapes_and_constant_image() -> None:
    x = torch.full((2, 3, 32, 32), 0.3)
    bands = laplacian_pyramid(x, levels=3)
    assert [b.shape[-1] for b in bands] == [32, 16, 8, 4]
    for band in bands[:-1]:  # a constant image has no detail at any scale
        assert band.abs().max() < 1e-5
    assert torch.allclose(bands[-1], torch.full_like(bands[-1], 0.3), atol=1e-5)


def test_pyramid_stops_before_tiny_sides() -> None:
    assert len(laplacian_pyramid(torch.rand(1, 3, 8, 8), levels=10)) == 3  # 8 -> 4 -> 2, then only low-pass


def test_pyramid_l1_zero_for_equal_and_sensitive_to_structure() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    assert pyramid_l1(x, x, 3) == 0
    shifted = x + 0.1  # a brightness shift lives only in the low-pass band
    noisy = x + 0.1 * torch.randn_like(x)
    assert pyramid_l1(x, shifted, 3) > 0 and pyramid_l1(x, noisy, 3) > 0
    assert image_loss(x, shifted, 0.0, 3) == (x - shifted).abs().mean()


def test_pixel_composite_follows_hard_masks() -> None:
    sources = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)]).unsqueeze(0)  # (1, 2, 3, 4, 4)
    masks = torch.zeros(1, 2, 4, 4)
    masks[0, 0, :, :2] = 1
    masks[0, 1, :, 2:] = 1
    out = pixel_composite(sources, masks)
    assert torch.equal(out[0, :, :, :2], torch.zeros(3, 4, 2))
    assert torch.equal(out[0, :, :, 2:], torch.ones(3, 4, 2))


def test_lsgan_values() -> None:
    ones, zeros = torch.ones(2, 1, 3, 3), torch.zeros(2, 1, 3, 3)
    assert lsgan_generator_loss(ones) == 0 and lsgan_generator_loss(zeros) == 1
    assert lsgan_discriminator_loss(ones, zeros) == 0
    assert lsgan_discriminator_loss(zeros, ones) == 1
