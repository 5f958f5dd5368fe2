"""The Gaussian-blur control: the blur itself on generated images, and the sigma fit against known shares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.synthesis.blur import blur_uint8, fit_blur_sigma, gaussian_blur
from pipeline.synthesis.diagnostics import high_frequency_share


def _noise_uint8(m: int = 6, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(m, size, size, 3), dtype=np.uint8)


def _noise_tensor(m: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(m, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _share(x: torch.Tensor) -> float:
    return float(high_frequency_share(x.permute(0, 2, 3, 1).numpy()).mean())


def test_sigma_zero_is_the_identity() -> None:
    x = _noise_tensor()
    assert gaussian_blur(x, 0.0) is x
    assert np.array_equal(blur_uint8(_noise_uint8(2, 8), 0.0), _noise_uint8(2, 8))


def test_blur_keeps_shape_dtype_constants_and_the_mean() -> None:
    const = torch.full((2, 3, 8, 8), 0.37)
    out = gaussian_blur(const, 1.5)
    assert out.shape == const.shape and out.dtype == torch.float32
    assert torch.allclose(out, const, atol=1e-6)
    x = _noise_tensor(size=32)
    blurred = gaussian_blur(x, 1.0)
    assert torch.allclose(blurred.mean((2, 3)), x.mean((2, 3)), atol=5e-3)  # reflect padding: not exactly
    assert blurred.min() >= x.min() and blurred.max() <= x.max()  # convex weights


def test_blur_lowers_the_high_frequency_share_monotonically() -> None:
    x = _noise_tensor(size=32)
    shares = [_share(gaussian_blur(x, s)) for s in (0.0, 0.3, 0.6, 1.0, 2.0, 3.0)]
    assert all(a > b for a, b in zip(shares, shares[1:], strict=False))
    assert shares[0] > 0.75 and shares[-1] < 0.01


def test_blur_is_deterministic_and_separable_per_channel() -> None:
    x = _noise_tensor()
    assert torch.equal(gaussian_blur(x, 0.8), gaussian_blur(x, 0.8))
    x[:, 1] = 0.5  # one flat channel stays flat: channels do not mix
    assert torch.allclose(gaussian_blur(x, 0.8)[:, 1], torch.full_like(x[:, 1], 0.5))


def test_radius_past_the_image_side_falls_back_to_replicate() -> None:
    x = _noise_tensor(size=4)
    out = gaussian_blur(x, 2.0)  # radius 6 >= 4: reflect is impossible
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.allclose(gaussian_blur(torch.full((1, 3, 4, 4), 0.2), 2.0), torch.full((1, 3, 4, 4), 0.2))


def test_bad_sigma_and_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(_noise_tensor(), -1.0)
    with pytest.raises(ValueError, match="float"):
        gaussian_blur(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), 1.0)
    with pytest.raises(ValueError, match="uint8"):
        blur_uint8(np.zeros((1, 4, 4, 3), dtype=np.float32), 1.0)


@pytest.mark.parametrize("target", [0.6, 0.3, 0.05])
def test_fit_blur_sigma_recovers_the_target_share(target: float) -> None:
    images = _noise_uint8()
    sigma = fit_blur_sigma(images, target)
    assert 0.0 < sigma < 4.0 and sigma == round(sigma, 4)
    assert abs(high_frequency_share(blur_uint8(images, sigma)).mean() - target) < 0.005
    assert fit_blur_sigma(images, target) == sigma  # deterministic: stable in a manifest


def test_fit_blur_sigma_clamps_at_the_ends() -> None:
    images = _noise_uint8(3, 16)
    assert fit_blur_sigma(images, 0.99) == 0.0  # sharper than the images themselves
    assert fit_blur_sigma(images, 0.0) == 4.0  # blurrier than sigma 4 gets
    assert fit_blur_sigma(images, 0.0, high=2.5) == 2.5
