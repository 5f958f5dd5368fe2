"""Losses: Laplacian pyramid structure, pyramid L1, the low-pass mix term, pixel composite, LSGAN values,
feature matching, R1."""

from __future__ import annotations

import torch

from pipeline.generator.losses import (
    feature_matching_loss,
    image_loss,
    laplacian_pyramid,
    lowpass,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    mix_loss,
    pyramid_l1,
    r1_penalty,
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


def test_lowpass_is_the_pyramid_residual():
    x = torch.rand(2, 3, 32, 32)
    for levels in (0, 1, 2, 10):
        assert torch.equal(lowpass(x, levels), laplacian_pyramid(x, levels)[-1])
    assert lowpass(x, 2).shape == (2, 3, 8, 8)


def _checkerboard(side: int) -> torch.Tensor:
    """(1, 1, side, side) +-1 at the Nyquist frequency: the binomial filter's zero, so one blur removes it."""
    idx = torch.arange(side)
    return (1.0 - 2.0 * ((idx[:, None] + idx[None, :]) % 2)).float()[None, None]


def test_mix_levels_leave_the_loss_invariant_to_fine_detail_the_full_image_loss_sees():
    torch.manual_seed(0)
    composite = torch.rand(2, 3, 16, 16) * 2 - 1
    mixes = composite + 0.1 * torch.rand(2, 3, 1, 1)  # the composite's layout in slightly other colours
    detailed = mixes + 0.2 * _checkerboard(16)
    full = mix_loss(mixes, composite, 1.0, 3, 0)
    assert full == image_loss(mixes, composite, 1.0, 3)  # mix_levels 0: today's term
    assert mix_loss(detailed, composite, 1.0, 3, 0) > full + 0.1
    for levels in (1, 2):
        coarse = mix_loss(mixes, composite, 1.0, 3, levels)
        assert torch.allclose(mix_loss(detailed, composite, 1.0, 3, levels), coarse, atol=1e-6)
        assert coarse == image_loss(lowpass(mixes, levels), lowpass(composite, levels), 1.0, 3)
    shifted = mixes + 0.3  # a change in the layout / colours is still seen
    assert mix_loss(shifted, composite, 1.0, 3, 2) != mix_loss(mixes, composite, 1.0, 3, 2)


def test_feature_matching_compares_batch_means_over_layers():
    torch.manual_seed(0)
    real = [torch.rand(4, 8, 6, 6), torch.rand(4, 16, 3, 3)]
    assert feature_matching_loss(real, real) == 0
    assert feature_matching_loss(real, [f[[2, 0, 3, 1]] for f in real]) < 1e-6  # batch statistics, not pairs
    fake = [real[0] + 1.0, real[1]]
    assert torch.isclose(feature_matching_loss(real, fake), torch.tensor(0.5))  # layer means: (1 + 0) / 2


def test_r1_is_the_squared_input_gradient_of_the_mean_patch_score():
    torch.manual_seed(0)
    w = torch.randn(1, 3, 4, 4)
    real = torch.rand(2, 3, 4, 4, requires_grad=True)
    scores = (real * w).sum((1, 2, 3)).view(2, 1, 1, 1)  # a linear D: grad_x D(x) = w for every image
    assert torch.isclose(r1_penalty(scores, real), w.pow(2).sum())
    patches = (real * w).sum(1, keepdim=True)  # (2, 1, 4, 4): one patch per pixel, D(x) = their mean
    assert torch.isclose(r1_penalty(patches, real), w.pow(2).sum() / 16**2)
    penalty = r1_penalty((real * w).sum((1, 2, 3)).pow(2).view(2, 1, 1, 1), real)
    penalty.backward()  # create_graph: the penalty itself has a gradient
    assert real.grad is not None and real.grad.abs().sum() > 0
