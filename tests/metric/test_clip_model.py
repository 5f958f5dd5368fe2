"""The frozen open_clip model with a tiny, randomly initialised architecture: loading, preprocessing shapes and
unit image embeddings. Random weights are used here ONLY for plumbing assertions; no metric value from them is
checked or reported."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_NAME, tiny_checkpoint

from pipeline.core.errors import HydraMixError
from pipeline.metric.clip_model import encode_images, load_clip, preprocess
from pipeline.metric.clip_weights import WeightsUnavailable


def test_load_clip_from_local_file(tiny_clip):
    assert tiny_clip.image_size == (32, 32)
    assert "file:" in tiny_clip.identity and tiny_clip.identity.startswith(TINY_NAME)
    assert not any(p.requires_grad for p in tiny_clip.model.parameters())
    assert not tiny_clip.model.training
    assert 0 < tiny_clip.logit_scale <= 100


def test_preprocess_shapes_and_centre_crop(tiny_clip):
    square = torch.randint(0, 256, (3, 12, 12, 3), dtype=torch.uint8)
    wide = torch.zeros(2, 10, 30, 3, dtype=torch.uint8)
    wide[:, :, 10:20] = 255  # the white middle third survives the centre crop; the black sides do not all
    assert preprocess(tiny_clip, square).shape == (3, 3, 32, 32)
    out = preprocess(tiny_clip, wide)
    assert out.shape == (2, 3, 32, 32)
    mean, std = torch.tensor(tiny_clip.mean), torch.tensor(tiny_clip.std)
    centre = out[0, :, 16, 16] * std + mean
    assert torch.allclose(centre, torch.ones(3), atol=1e-4)


def test_encode_images_unit_vectors_and_batch_invariance(tiny_clip):
    images = torch.randint(0, 256, (5, 12, 12, 3), dtype=torch.uint8)
    whole = encode_images(tiny_clip, preprocess(tiny_clip, images))
    assert whole.shape == (5, 16) and whole.dtype == torch.float32
    assert torch.allclose(whole.norm(dim=-1), torch.ones(5), atol=1e-5)
    split = torch.cat([encode_images(tiny_clip, preprocess(tiny_clip, images[i : i + 2])) for i in (0, 2, 4)])
    assert torch.allclose(whole, split, atol=1e-5)


def test_load_clip_rejects_a_file_of_the_wrong_architecture(tmp_path):
    path = tiny_checkpoint(tmp_path)
    with pytest.raises(HydraMixError, match="cannot load") as info:
        load_clip("RN50", str(path), device="cpu")
    assert not isinstance(info.value, WeightsUnavailable)
