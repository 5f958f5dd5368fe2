"""Mask fidelity and PSNR on hand-made examples with known answers."""

from __future__ import annotations

import math

import torch

from pipeline.generator.quality import MAX_PSNR_DB, fidelity_report, mask_fidelity, plain_mean, psnr


def test_psnr_known_values() -> None:
    x = torch.zeros(1, 3, 4, 4)
    assert math.isclose(float(psnr(x, x + 0.1)[0]), 20.0, abs_tol=1e-4)  # mse 0.01 -> 20 dB
    assert float(psnr(x, x)[0]) == MAX_PSNR_DB


def _two_sources() -> tuple[torch.Tensor, torch.Tensor]:
    """Source 0 is 0.2 everywhere, source 1 is 0.8; the left half belongs to 0, the right half to 1."""
    sources = torch.stack([torch.full((3, 4, 4), 0.2), torch.full((3, 4, 4), 0.8)]).unsqueeze(0)
    masks = torch.zeros(1, 2, 4, 4)
    masks[0, 0, :, :2] = 1
    masks[0, 1, :, 2:] = 1
    return sources, masks


def test_fidelity_of_a_mix_that_follows_its_mask() -> None:
    sources, masks = _two_sources()
    mix = (sources * masks.unsqueeze(2)).sum(1) + 0.1  # composite, off by 0.1 everywhere
    f = mask_fidelity(mix, sources, masks)
    # Assigned error 0.1 (20 dB); non-assigned error 0.6-0.1=0.5 on the left, 0.6+0.1=0.7 on the right.
    expected_na = (-10 * math.log10(0.25) - 10 * math.log10(0.49)) / 2
    assert math.isclose(f["assigned_db"], 20.0, abs_tol=1e-3)
    assert math.isclose(f["non_assigned_db"], expected_na, abs_tol=1e-3)
    assert math.isclose(f["gap_db"], 20.0 - expected_na, abs_tol=1e-3)
    assert f["regions"] == 2


def test_fidelity_of_a_copy_of_one_source_is_zero_gap_on_average() -> None:
    sources, masks = _two_sources()
    f = mask_fidelity(sources[:, 0], sources, masks)  # copies source 0 everywhere
    # Left region: assigned = 60 (identical), non-assigned = 20*log10(1/0.6); right region: the reverse.
    assert math.isclose(f["gap_db"], 0.0, abs_tol=1e-4)


def test_references_bracket_the_gap_and_padding_is_ignored() -> None:
    sources, masks = _two_sources()
    # A third, padding slot: zero mask, garbage image, marked invalid.
    sources = torch.cat([sources, torch.full((1, 1, 3, 4, 4), 0.5)], dim=1)
    masks = torch.cat([masks, torch.zeros(1, 1, 4, 4)], dim=1)
    valid = torch.tensor([[True, True, False]])
    rep = fidelity_report(plain_mean(sources, valid), sources, masks, valid)
    assert rep["pixel_composite"]["assigned_db"] == MAX_PSNR_DB
    assert rep["pixel_composite"]["gap_db"] > 30
    assert math.isclose(rep["plain_mean"]["gap_db"], 0.0, abs_tol=1e-4)
    assert torch.allclose(plain_mean(sources, valid), torch.full((1, 3, 4, 4), 0.5))
    assert rep["generator"]["regions"] == 2
