"""Mixing masks: sums, padding, determinism, coverage of sources, grid shifts, soft masks, the base-share floor,
contiguous id ranges, bad config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core.config import from_dict
from pipeline.core.errors import ConfigError
from pipeline.generator.masks import (
    STREAM_BASE,
    MaskConfig,
    MaskSampler,
    colorize,
    derive_seeds,
    row_randint,
    segment_images,
    to_feature_resolution,
)


def _blocky_images(m: int = 8, size: int = 32, seed: int = 0) -> np.ndarray:
    """Images made of flat 8x8 colour blocks: Felzenszwalb finds many clear segments in them."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (m, size // 8, size // 8, 3), dtype=np.uint8)
    return blocks.repeat(8, axis=1).repeat(8, axis=2)


@pytest.fixture(scope="module")
def segments() -> np.ndarray:
    return segment_images(_blocky_images(), MaskConfig(scale=10.0, sigma=0.0, min_size=4))


def _rows(n: int, b: int = 16, m: int = 8, pad_to: int | None = None, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.stack([rng.choice(m, n, replace=False) for _ in range(b)])
    if pad_to:
        rows = np.concatenate([rows, -np.ones((b, pad_to - n), dtype=np.int64)], axis=1)
    return rows


def test_segment_images_gives_contiguous_labels(segments):
    assert segments.shape == (8, 32, 32) and segments.dtype == np.int32
    for labels in segments:
        assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
    assert segments.max() >= 5  # the 16 colour blocks are found as separate regions


# (kind, base_share): every rule, and the segmentation rule with a base-share floor.
RULES = [("segmentation", 0.0), ("grid", 0.0), ("ranges", 0.0), ("segmentation", 0.5)]


@pytest.mark.parametrize("kind, base_share", RULES)
@pytest.mark.parametrize("n", [2, 3, 5])
def test_masks_sum_to_one_and_padding_is_zero(segments, kind, base_share, n):
    sampler = MaskSampler(segments, MaskConfig(kind=kind, n_sources=(2, 5), base_share=base_share))
    masks = sampler.sample(_rows(n, pad_to=6), seed=3)
    assert masks.shape == (16, 6, 32, 32) and masks.dtype == torch.float32
    assert torch.equal(masks.sum(1), torch.ones(16, 32, 32))
    assert torch.all(masks[:, n:] == 0)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}  # hard by default


@pytest.mark.parametrize("kind, base_share", RULES)
def test_every_source_gets_a_region(segments, kind, base_share):
    # 16 colour blocks and grids of >= 3x3 cells: always at least 5 regions for 5 sources (and with a floor of
    # one half, the 8 blocks left to the others are enough for 4 sources).
    cfg = MaskConfig(kind=kind, n_sources=(2, 5), grid_cells=(3, 4), base_share=base_share)
    masks = MaskSampler(segments, cfg).sample(_rows(5, b=64), seed=11)
    assert torch.all(masks.amax(dim=(2, 3)) == 1)


def test_masks_are_deterministic_and_depend_on_seed(segments):
    sampler = MaskSampler(segments, MaskConfig())
    rows = _rows(3)
    assert torch.equal(sampler.sample(rows, 5), sampler.sample(rows, 5))
    assert not torch.equal(sampler.sample(rows, 5), sampler.sample(rows, 6))


@pytest.mark.parametrize("kind, base_share", RULES)
def test_per_row_seeds_make_rows_independent_of_the_batch(segments, kind, base_share):
    sampler = MaskSampler(segments, MaskConfig(kind=kind, base_share=base_share))
    rows = _rows(3, b=10)
    seeds = derive_seeds(42, np.arange(10))
    whole = sampler.sample(rows, seeds)
    part = sampler.sample(rows[[7, 2]], seeds[[7, 2]])
    assert torch.equal(part, whole[[7, 2]])


def test_grid_is_randomly_shifted(segments):
    sampler = MaskSampler(segments, MaskConfig(kind="grid", grid_cells=(4, 4)))
    masks = sampler.sample(_rows(2, b=64), seed=0)
    owner = masks.argmax(1)  # (B, H, W)
    # Columns where the owner changes from x to x+1 are cell edges; an unshifted grid has them only at 8k-1.
    edges = (owner[:, :, 1:] != owner[:, :, :-1]).any(1)  # (B, W-1)
    edge_cols = {int(c) for c in torch.nonzero(edges)[:, 1]}
    assert edge_cols - {7, 15, 23}, "grid lines never moved"
    for b in range(8):  # within one mix, edges are at most one cell apart: the grid is regular
        cols = torch.nonzero(edges[b]).flatten()
        assert torch.all(cols[1:] - cols[:-1] >= 7) if len(cols) > 1 else True


def test_soft_masks_sum_to_one_and_are_smooth(segments):
    cfg = MaskConfig(soft=True, soft_sigma=1.5, n_sources=(2, 3))
    masks = MaskSampler(segments, cfg).sample(_rows(2, pad_to=3), seed=1)
    assert torch.allclose(masks.sum(1), torch.ones(16, 32, 32), atol=1e-5)
    assert torch.all(masks[:, 2] == 0) and torch.all(masks >= 0)
    assert ((masks > 0.05) & (masks < 0.95)).any()  # transitions are blended, not hard
    hard = MaskSampler(segments, MaskConfig(n_sources=(2, 3))).sample(_rows(2, pad_to=3), seed=1)
    assert torch.all((masks - hard).abs() < 1)  # the same layout, only smoothed


def test_single_source_gives_identity_mask(segments):
    masks = MaskSampler(segments, MaskConfig()).sample(np.array([[3, -1, -1]]), seed=0)
    assert torch.equal(masks[0, 0], torch.ones(32, 32)) and torch.all(masks[0, 1:] == 0)


def test_flipped_base_flips_its_segments():
    images = _blocky_images(m=1)
    segs = segment_images(images, MaskConfig(scale=10.0, sigma=0.0, min_size=4))
    sampler = MaskSampler(segs, MaskConfig())
    rows = np.array([[0, 0]])  # both slots the same image, so the base is image 0 either way
    plain = sampler.sample(rows, 9)
    flipped = sampler.sample(rows, 9, flipped=np.array([[True, True]]))
    assert torch.equal(flipped, plain.flip(-1))


def test_to_feature_resolution_keeps_sums(segments):
    masks = MaskSampler(segments, MaskConfig(n_sources=(2, 4))).sample(_rows(3, pad_to=4), seed=2)
    small = to_feature_resolution(masks, 4)
    assert small.shape == (16, 4, 8, 8)
    assert torch.allclose(small.sum(1), torch.ones(16, 8, 8), atol=1e-6)
    assert torch.all(small[:, 3] == 0)
    assert torch.allclose(small.mean(dim=(2, 3)), masks.mean(dim=(2, 3)), atol=1e-6)  # area preserved
    with pytest.raises(ValueError, match="divisible"):
        to_feature_resolution(masks, 5)


def test_colorize_gives_one_colour_per_source(segments):
    masks = MaskSampler(segments, MaskConfig()).sample(_rows(2, b=2), seed=0)
    pic = colorize(masks)
    assert pic.shape == (2, 3, 32, 32) and pic.dtype == torch.uint8
    colours = {tuple(c) for c in pic.permute(0, 2, 3, 1).reshape(-1, 3).tolist()}
    assert len(colours) == 2


def test_bad_rows_are_rejected(segments):
    sampler = MaskSampler(segments, MaskConfig())
    with pytest.raises(ValueError, match="padding"):
        sampler.sample(np.array([[-1, 2]]), 0)
    with pytest.raises(ValueError, match="out of range"):
        sampler.sample(np.array([[0, 99]]), 0)
    with pytest.raises(ValueError, match="exceeds"):
        MaskSampler(segments, MaskConfig(kind="grid", grid_cells=(2, 40)))


def test_mask_config_loads_from_params_and_rejects_bad_values():
    cfg = from_dict(MaskConfig, {"kind": "grid", "n_sources": [2, 5], "grid_cells": [3, 3]}, "generator.masks")
    assert cfg.n_sources == (2, 5) and cfg.kind == "grid"
    bad = [
        ({"n_sources": [1, 3]}, "n_sources"),
        ({"n_sources": [4, 3]}, "n_sources"),
        ({"n_sources": [2, 3, 4]}, "n_sources"),
        ({"grid_cells": [0, 2]}, "grid_cells"),
        ({"scale": 0}, "scale"),
        ({"min_size": 0}, "min_size"),
        ({"soft_sigma": -1.0}, "soft_sigma"),
        ({"base_share": -0.1}, "base_share"),
        ({"base_share": 1.0}, "base_share"),
        ({"kind": "ranges", "n_sources": [1, 3]}, "n_sources"),
        ({"kind": "voronoi"}, "kind"),
        ({"scael": 1.0}, "unknown"),
    ]
    for values, word in bad:
        with pytest.raises(ConfigError, match=word):
            from_dict(MaskConfig, values, "generator.masks")


def test_chimeramix_takes_a_contiguous_range_of_the_base_segments_from_the_other_source(segments):
    cfg = MaskConfig(kind="chimeramix", n_sources=(2, 2), scale=10.0, sigma=0.0, min_size=4)
    rows = _rows(2, b=64)
    masks = MaskSampler(segments, cfg).sample(rows, seed=5)
    assert masks.shape == (64, 2, 32, 32) and torch.equal(masks.sum(1), torch.ones(64, 32, 32))
    both = 0
    for b in range(64):
        # The base is the source whose segmentation the mask follows: exactly one of the two explains it.
        fits = []
        for base_slot in (0, 1):
            labels = segments[rows[b, base_slot]]
            other = masks[b, 1 - base_slot].numpy() > 0.5
            taken = np.unique(labels[other])
            whole = np.array_equal(other, np.isin(labels, taken))  # whole segments only
            contiguous = len(taken) == 0 or np.array_equal(taken, np.arange(taken.min(), taken.max() + 1))
            leaves_base = len(taken) < labels.max() + 1
            fits.append(whole and contiguous and leaves_base)
        assert any(fits), b
        both += bool(masks[b, 0].any() and masks[b, 1].any())
    assert both == 64  # every base here has >= 2 segments, so both sources always appear


def test_chimeramix_grid_gives_whole_cells_to_either_source(segments):
    cfg = MaskConfig(kind="chimeramix-grid", n_sources=(2, 2), grid_cells=(4, 4))
    masks = MaskSampler(segments, cfg).sample(_rows(2, b=32), seed=1)
    first = masks[:, 0].numpy()
    cells = first.reshape(32, 4, 8, 4, 8)
    assert np.all(cells.min((2, 4)) == cells.max((2, 4)))  # unshifted 8x8 cells, each from one source
    share = first.mean()
    assert 0.35 < share < 0.65 and 0 < first.reshape(32, -1).mean(1).min() <= first.reshape(32, -1).mean(1).max() < 1


def test_chimeramix_kinds_mix_exactly_two_images(segments):
    with pytest.raises(ValueError, match=r"n_sources must be \[2, 2\]"):
        MaskConfig(kind="chimeramix", n_sources=(2, 4))
    sampler = MaskSampler(segments, MaskConfig(kind="chimeramix", n_sources=(2, 2)))
    with pytest.raises(ValueError, match="exactly two sources"):
        sampler.sample(_rows(1, pad_to=2), seed=0)


def _base_slots(rows: np.ndarray, seed: int) -> np.ndarray:
    """(B,) the base slot the sampler draws for each row (its stream of the per-row seed)."""
    return row_randint(derive_seeds(seed, np.arange(len(rows))), (rows >= 0).sum(1), 1, STREAM_BASE)[:, 0]


@pytest.mark.parametrize("share", [0.3, 0.5, 0.8])
def test_base_share_floor_holds_on_every_mix_and_only_gives_superpixels_back_to_the_base(segments, share):
    rows = _rows(4, b=64, pad_to=5)
    free = MaskSampler(segments, MaskConfig(n_sources=(2, 5))).sample(rows, seed=7)
    floored = MaskSampler(segments, MaskConfig(n_sources=(2, 5), base_share=share)).sample(rows, seed=7)
    base = _base_slots(rows, 7)
    base_area = floored[np.arange(64), base].mean(dim=(1, 2))
    assert torch.all(base_area >= share)
    assert (free[np.arange(64), base].mean(dim=(1, 2)) < share).any()  # the floor did something
    owner_free, owner_floored = free.argmax(1), floored.argmax(1)
    changed = owner_free != owner_floored
    assert torch.all(owner_floored[changed] == torch.from_numpy(base)[:, None, None].expand_as(changed)[changed])
    for b in range(64):  # whole superpixels move: each of the base's segments keeps one owner
        labels = segments[rows[b, base[b]]]
        for label in np.unique(labels):
            assert len(torch.unique(owner_floored[b][torch.from_numpy(labels == label)])) == 1


def test_ranges_are_contiguous_in_segment_id_one_per_source(segments):
    rows = _rows(4, b=64, pad_to=5)
    rows[:16, 3] = -1  # some mixes of three
    masks = MaskSampler(segments, MaskConfig(kind="ranges", n_sources=(2, 5))).sample(rows, seed=2)
    base = _base_slots(rows, 2)
    base_first = []
    for b in range(64):
        labels = segments[rows[b, base[b]]]
        n = int((rows[b] >= 0).sum())
        starts = []
        for slot in range(n):
            mine = masks[b, slot].numpy() > 0.5
            ids = np.unique(labels[mine])
            assert len(ids) >= 1 and np.array_equal(mine, np.isin(labels, ids)), (b, slot)  # whole segments
            assert np.array_equal(ids, np.arange(ids.min(), ids.max() + 1)), (b, slot)  # one contiguous range
            starts.append(ids.min())
        assert sorted(starts)[0] == 0  # the ranges tile 0..S-1 (disjoint: masks sum to 1)
        base_first.append(starts[base[b]] == 0)
    assert any(base_first) and not all(base_first)  # the base's range is drawn, not always the first


def test_ranges_with_fewer_segments_than_sources_leave_sources_out():
    halves = np.zeros((3, 16, 16), dtype=np.int32)
    halves[:, 8:] = 1  # two segments per image
    masks = MaskSampler(halves, MaskConfig(kind="ranges", n_sources=(2, 4))).sample(np.array([[0, 1, 2, -1]]), 1)
    assert torch.equal(masks.sum(1), torch.ones(1, 16, 16)) and torch.all(masks[:, 3] == 0)
    assert int((masks.amax(dim=(2, 3)) == 1).sum()) == 2  # two ranges for three sources
