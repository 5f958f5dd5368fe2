"""HydraMix networks: shapes, mask-weighted mixing, every parameter trained, identity masks reconstruct."""

from __future__ import annotations

import pytest
import torch

from pipeline.generator.networks import HydraMixGenerator, PatchDiscriminator


def _grid_masks(b: int, n: int, h: int, w: int) -> torch.Tensor:
    """(B, N, h, w) hard masks: column stripes, stripe i owned by source i (sums to 1 over N)."""
    owner = (torch.arange(w) * n // w).expand(b, h, w)
    return torch.nn.functional.one_hot(owner, n).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("n", [2, 3, 5])
def test_shapes_and_mask_sums(n: int) -> None:
    torch.manual_seed(0)
    g = HydraMixGenerator(width=8, encoder_blocks=1, decoder_blocks=1)
    sources = torch.rand(2, n, 3, 16, 16) * 2 - 1
    masks = _grid_masks(2, n, 4, 4)
    assert torch.allclose(masks.sum(1), torch.ones(2, 4, 4))
    feats = g.encode(sources.flatten(0, 1))
    assert feats.shape == (2 * n, 32, 4, 4)
    mixed = g.mix(feats.unflatten(0, (2, n)), masks)
    assert mixed.shape == (2, 32, 4, 4)
    out = g(sources, masks)
    assert out.shape == (2, 3, 16, 16)
    assert out.abs().max() <= 1 and torch.isfinite(out).all()


def test_mix_is_the_mask_weighted_sum() -> None:
    feats = torch.randn(1, 3, 4, 2, 2)
    masks = torch.zeros(1, 3, 2, 2)
    masks[0, 0, 0, :] = 1
    masks[0, 1, 1, 0] = 1
    masks[0, 2, 1, 1] = 0.5
    masks[0, 0, 1, 1] = 0.5
    mixed = HydraMixGenerator.mix(feats, masks)
    assert torch.equal(mixed[0, :, 0, 0], feats[0, 0, :, 0, 0])
    assert torch.equal(mixed[0, :, 1, 0], feats[0, 1, :, 1, 0])
    assert torch.allclose(mixed[0, :, 1, 1], 0.5 * feats[0, 0, :, 1, 1] + 0.5 * feats[0, 2, :, 1, 1])


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    g = HydraMixGenerator(width=8, encoder_blocks=2, decoder_blocks=2)
    d = PatchDiscriminator(width=8, n_layers=2)
    sources = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    out = g(sources, _grid_masks(2, 3, 4, 4))
    d(out).square().mean().backward()
    for module in (g, d):
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("n_layers, side", [(2, 16), (3, 32)])
def test_patch_discriminator_output(n_layers: int, side: int) -> None:
    d = PatchDiscriminator(width=8, n_layers=n_layers)
    scores = d(torch.rand(2, 3, side, side))
    assert scores.shape[:2] == (2, 1) and scores.shape[-1] >= 1


def test_discriminator_features_end_in_its_scores_and_leave_its_parameters_as_they_were() -> None:
    torch.manual_seed(0)
    d = PatchDiscriminator(width=8, n_layers=2)
    x = torch.rand(2, 3, 16, 16)
    *features, scores = d.features(x)
    assert torch.equal(scores, d(x))
    assert [f.shape[1] for f in features] == [8, 16, 32]  # after each LeakyReLU: n_layers + 1 maps
    # The state_dict keys of the training checkpoints written before features() existed.
    assert list(d.state_dict()) == [
        "layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.3.weight", "layers.3.bias",
        "layers.5.weight", "layers.6.weight", "layers.6.bias", "layers.8.weight", "layers.8.bias",
    ]  # fmt: skip


def test_identity_masks_reconstruct_after_overfit() -> None:
    """A few images, each through its own identity mask, come back after a short overfit (autoencoder
    path)."""
    torch.manual_seed(0)
    g = HydraMixGenerator(width=8, encoder_blocks=1, decoder_blocks=1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    images = torch.stack([torch.stack([yy, xx, yy * xx]), torch.stack([xx, -yy, xx.abs()])]) * 0.8  # (2, 3, 16, 16)
    sources = images.unsqueeze(1)  # (2, 1, 3, 16, 16): N = 1 and the mask is all ones
    masks = torch.ones(2, 1, 4, 4)
    opt = torch.optim.Adam(g.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = (g(sources, masks) - images).abs().mean()
        first = first if first is not None else float(loss.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        err = (g(sources, masks) - images).abs().mean()
    assert err < 0.2 * first and err < 0.05
