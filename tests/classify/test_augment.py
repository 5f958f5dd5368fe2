"""Batched augmentations: crop/flip is a true reflect-padded crop, masks and soft targets are right."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.classify.augment import (
    CLASSIC_AUGMENTATIONS,
    SYNTHETIC_METHODS,
    AugmentConfig,
    BatchAugmenter,
    check_method,
    cutout,
    random_crop_flip,
    resolve_augment,
    run_name,
)
from pipeline.core.errors import HydraMixError


def _candidates(image: np.ndarray, pad: int) -> list[np.ndarray]:
    """Every crop (and its mirror) of the reflect-padded image."""
    h, w, _ = image.shape
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    crops = [padded[y : y + h, x : x + w] for y in range(2 * pad + 1) for x in range(2 * pad + 1)]
    return crops + [c[:, ::-1] for c in crops]


def test_random_crop_flip_is_a_reflect_padded_crop():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (16, 8, 8, 3), dtype=torch.uint8)
    out = random_crop_flip(images, pad=2)
    assert out.shape == images.shape and out.dtype == torch.uint8
    for src, got in zip(images.numpy(), out.numpy(), strict=True):
        assert any(np.array_equal(got, c) for c in _candidates(src, 2))
    assert not torch.equal(out, images)  # something moved


def test_crop_without_padding_only_flips():
    torch.manual_seed(1)
    images = torch.randint(0, 256, (32, 5, 5, 3), dtype=torch.uint8)
    out = random_crop_flip(images, pad=0)
    same = [torch.equal(o, i) for o, i in zip(out, images, strict=True)]
    flipped = [torch.equal(o, i.flip(1)) for o, i in zip(out, images, strict=True)]
    assert all(s or f for s, f in zip(same, flipped, strict=True))
    assert 0 < sum(flipped) < 32


def test_cutout_square_inside_the_image():
    torch.manual_seed(0)
    x = torch.ones(64, 3, 16, 16)
    out = cutout(x, side=4)
    zeros = (out[:, 0] == 0).sum((1, 2))
    assert (zeros <= 16).all() and (zeros >= 4).all()  # clipped at most to a 2x2 corner
    assert (zeros == 16).any()
    assert torch.equal(out[:, 0] == 0, out[:, 2] == 0)  # same mask on every channel


@pytest.mark.parametrize("method", CLASSIC_AUGMENTATIONS)
def test_every_augmentation_gives_normalised_input_and_soft_targets(method):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (8, 16, 16, 3), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    augment = BatchAugmenter(method, AugmentConfig(), 3, torch.full((3,), 0.5), torch.full((3,), 0.25))
    x, targets = augment(images, labels)
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert x.abs().max() <= 2.0 + 1e-6  # (v - 0.5) / 0.25 for v in [0, 1]
    assert targets.shape == (8, 3)
    torch.testing.assert_close(targets.sum(1), torch.ones(8))
    if method in ("mixup", "cutmix"):
        assert not torch.equal(targets, torch.nn.functional.one_hot(labels, 3).float())
    else:
        assert torch.equal(targets, torch.nn.functional.one_hot(labels, 3).float())


def test_unknown_method_lists_valid_ones():
    with pytest.raises(HydraMixError, match="unknown method 'mixmix'.*baseline.*hydramix"):
        check_method("mixmix")


def test_augment_config_validation():
    with pytest.raises(ValueError, match="cutout_fraction"):
        AugmentConfig(cutout_fraction=0.0)


def test_a_synthetic_method_takes_any_classic_augmentation():
    for method in SYNTHETIC_METHODS:
        assert resolve_augment(method, None) == "baseline"
        for augment in CLASSIC_AUGMENTATIONS:
            assert resolve_augment(method, augment) == augment
    assert resolve_augment("mixup", None) == "mixup"  # a classic method is its own augmentation


def test_unsupported_combinations_are_refused_with_the_valid_names():
    with pytest.raises(HydraMixError, match="unknown augmentation 'mixmix'.*baseline, cutout"):
        resolve_augment("hydramix", "mixmix")
    with pytest.raises(HydraMixError, match="'mixup' is itself a classic augmentation"):
        resolve_augment("mixup", "cutmix")
    with pytest.raises(HydraMixError, match="unknown augmentation 'hydramix'"):
        resolve_augment("pixelmix", "hydramix")
    with pytest.raises(HydraMixError, match="unknown method"):
        resolve_augment("mixmix", None)
    with pytest.raises(HydraMixError, match="unknown augmentation 'pixelmix'"):
        BatchAugmenter("pixelmix", AugmentConfig(), 3, torch.zeros(3), torch.ones(3))


def test_run_names():
    assert run_name("hydramix", "mixup") == "hydramix+mixup"
    assert run_name("hydramix", "baseline") == run_name("hydramix", None) == "hydramix"
    assert run_name("mixup", "mixup") == "mixup"
