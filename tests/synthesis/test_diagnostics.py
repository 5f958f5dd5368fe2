"""Set diagnostics on generated images with known answers: noise, constants, sinusoids, hand-built masks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pipeline.synthesis.diagnostics import (
    HF_CUTOFF,
    high_frequency_share,
    largest_source_share,
    set_diagnostics,
    within_class_diversity,
)


def _noise(m: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(m, size, size, 3), dtype=np.uint8)


def _sinusoid(freq: float, size: int = 40, axis: int = 1) -> np.ndarray:
    """(1, size, size, 3) uint8 cosine of ``freq`` cycles/px along ``axis`` (an integer number of periods)."""
    t = np.arange(size, dtype=np.float64)
    wave = 0.5 + 0.4 * np.cos(2 * np.pi * freq * t)
    plane = np.broadcast_to(wave[None, :] if axis == 1 else wave[:, None], (size, size))
    return np.round(np.repeat(plane[None, :, :, None], 3, axis=-1) * 255).astype(np.uint8)


def _constant(value: int, m: int = 1, size: int = 8) -> np.ndarray:
    return np.full((m, size, size, 3), value, dtype=np.uint8)


def test_white_noise_share_is_the_area_outside_the_cutoff_disc() -> None:
    shares = high_frequency_share(_noise(4, 64))
    assert shares.shape == (4,) and shares.dtype == np.float64
    assert np.all(np.abs(shares - (1 - math.pi * HF_CUTOFF**2)) < 0.02)


def test_constant_image_has_zero_share() -> None:
    assert np.array_equal(
        high_frequency_share(np.concatenate([_constant(0), _constant(77), _constant(255)])), [0, 0, 0]
    )


def test_sinusoids_fall_on_their_side_of_the_cutoff() -> None:
    assert high_frequency_share(_sinusoid(0.05))[0] < 1e-3
    assert high_frequency_share(_sinusoid(0.05, axis=0))[0] < 1e-3
    assert high_frequency_share(_sinusoid(0.4))[0] > 0.999
    # The mean is removed: the same low sinusoid on a brighter background scores the same.
    brighter = np.clip(_sinusoid(0.05).astype(int) + 20, 0, 255).astype(np.uint8)
    assert math.isclose(high_frequency_share(brighter)[0], high_frequency_share(_sinusoid(0.05))[0], abs_tol=1e-6)


def test_cutoff_moves_the_split() -> None:
    images = _noise(2, 32)
    assert np.allclose(high_frequency_share(images, cutoff=0.0), 1.0)  # no DC left: all power is above 0
    assert np.allclose(high_frequency_share(images, cutoff=1.0), 0.0)  # r <= sqrt(0.5) everywhere


def test_uint8_and_float_inputs_agree() -> None:
    images = _noise(3, 16)
    as_float = images.astype(np.float32) / 255.0
    assert np.allclose(high_frequency_share(images), high_frequency_share(as_float), atol=1e-6)
    labels = np.array([0, 0, 0])
    assert math.isclose(within_class_diversity(images, labels), within_class_diversity(as_float, labels), abs_tol=1e-6)


def test_chunked_fft_matches_one_image_at_a_time() -> None:
    images = _noise(5, 8)
    one_by_one = np.concatenate([high_frequency_share(images[i : i + 1]) for i in range(5)])
    assert np.allclose(high_frequency_share(images), one_by_one, atol=1e-12)


def test_bad_image_shapes_and_dtypes_are_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        high_frequency_share(np.zeros((2, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        high_frequency_share(np.zeros((2, 8, 8, 3), dtype=np.int64))


def test_diversity_of_identical_images_is_zero() -> None:
    images = np.repeat(_noise(1, 8), 5, axis=0)
    assert within_class_diversity(images, np.zeros(5, dtype=int)) == pytest.approx(0.0, abs=1e-7)


def test_diversity_of_two_images_differing_by_a_constant() -> None:
    images = np.concatenate([_constant(100), _constant(151)])  # 51 / 255 = 0.2 exactly
    assert within_class_diversity(images, np.array([3, 3])) == pytest.approx(0.2, abs=1e-9)
    as_float = np.stack([np.full((4, 4, 3), 0.1), np.full((4, 4, 3), 0.3)])
    assert within_class_diversity(as_float, np.array([0, 0])) == pytest.approx(0.2, abs=1e-9)


def test_diversity_averages_pairs_then_classes_and_skips_singletons() -> None:
    # Class "a": values 0, 51, 102 -> pair distances 0.2, 0.4, 0.2 -> mean 0.8 / 3.
    # Class "b": values 0, 255 -> 1.0. Class "c": one image -> skipped.
    images = np.concatenate([_constant(0), _constant(0), _constant(51), _constant(255), _constant(102), _constant(9)])
    labels = np.array(["a", "b", "a", "b", "a", "c"])
    assert within_class_diversity(images, labels) == pytest.approx((0.8 / 3 + 1.0) / 2, abs=1e-9)


def test_diversity_uses_the_first_max_per_class_images_of_each_class() -> None:
    images = np.concatenate([_constant(0), _constant(51), _constant(255)])  # the outlier comes last
    labels = np.zeros(3, dtype=int)
    assert within_class_diversity(images, labels, max_per_class=2) == pytest.approx(0.2, abs=1e-9)
    assert within_class_diversity(images, labels, max_per_class=3) == pytest.approx((0.2 + 1.0 + 0.8) / 3, abs=1e-9)


def test_diversity_without_any_pair_is_nan() -> None:
    assert math.isnan(within_class_diversity(_noise(3, 8), np.array([0, 1, 2])))
    with pytest.raises(ValueError, match="labels"):
        within_class_diversity(_noise(3, 8), np.array([0, 1]))


def test_largest_source_share_on_hand_built_masks() -> None:
    half = torch.zeros(1, 2, 4, 4)
    half[0, 0, :, :2] = 1
    half[0, 1, :, 2:] = 1
    quarter = torch.zeros(1, 3, 4, 4)  # 3/4 of the area to source 1, 1/4 to source 2, none to source 0
    quarter[0, 1, :3] = 1
    quarter[0, 2, 3:] = 1
    soft = torch.full((1, 4, 4, 4), 0.25)  # an even soft split over 4 sources
    assert np.allclose(largest_source_share(half), [0.5])
    assert np.allclose(largest_source_share(quarter), [0.75])
    assert np.allclose(largest_source_share(soft.numpy()), [0.25])
    both = largest_source_share(torch.cat([half, quarter[:, 1:]]))  # batch of two 2-source mixes
    assert both.dtype == np.float64 and np.allclose(both, [0.5, 0.75])


def test_set_diagnostics_is_json_able_and_consistent() -> None:
    images = np.concatenate([_noise(4, 16), _noise(2, 16, seed=1)])
    labels = np.array([0, 0, 1, 1, 1, 1])
    masks = torch.zeros(2, 2, 4, 4)
    masks[:, 0, :, :2] = 1
    masks[:, 1, :, 2:] = 1
    d = set_diagnostics(images, labels, largest_share=largest_source_share(masks), max_per_class=3)
    shares = high_frequency_share(images)
    assert d["hf_share"] == pytest.approx(shares.mean()) and d["hf_share_std"] == pytest.approx(shares.std())
    assert d["hf_cutoff"] == HF_CUTOFF
    assert d["diversity"] == pytest.approx(within_class_diversity(images, labels, 3))
    assert d["largest_source_share"] == pytest.approx(0.5)
    assert d["n_images"] == 6 and d["max_per_class"] == 3
    assert json.loads(json.dumps(d)) == d
    assert set_diagnostics(images, labels)["largest_source_share"] is None
