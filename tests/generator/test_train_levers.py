"""The levers for issue 13 in training: the objective's (generator.losses r1, feature_matching, mix_levels) in a
step, each changing what it should, logged, training every parameter, and at its default leaving the step as it
was; the masks' (base_share, kind ranges) through a whole run."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import pipeline.generator.train as tg
from pipeline.core.config import from_dict, to_dict
from pipeline.core.errors import ConfigError
from pipeline.generator.batches import TRAIN_STREAM, draw_batch, make_batch, prepare_split
from pipeline.generator.config import GeneratorConfig, LossConfig
from pipeline.generator.masks import MaskConfig
from pipeline.generator.train import train_generator
from tests.conftest import make_imageset, tiny_generator_config

CPU = torch.device("cpu")
DEFAULT_COLUMNS = ["step", "g_total", "reconstruction", "mix", "adversarial", "d"]


@pytest.fixture(scope="module")
def images():
    return make_imageset(5, resolution=16, n_classes=3)


def _step(images, dtype: torch.dtype = torch.float32, **losses):
    """One train_step from the seed's initial weights on step 0's batch: (losses, G, D) with the step's
    gradients still on the parameters (the D gradients are the D step's, the G gradients the G step's)."""
    cfg = tiny_generator_config(losses=LossConfig(**losses))
    split = prepare_split(images, cfg, CPU)
    seeds, draw = draw_batch(split, cfg, TRAIN_STREAM, 0, cfg.batch_size)
    batch = make_batch(split, seeds, draw)
    g, d = tg.build_models(cfg)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_discriminator, betas=(0.5, 0.999))
    nets = tg.Nets(tg.GeneratorPass(g), d, opt_g, opt_d, torch.amp.GradScaler("cpu", enabled=False))
    out = tg.train_step(nets, batch, cfg.losses, dtype, torch.contiguous_format)
    return out, g, d


def _grads(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_defaults_log_the_columns_of_before(images) -> None:
    losses, _, _ = _step(images)
    assert list(losses) == DEFAULT_COLUMNS[1:]
    history = train_generator(images, tiny_generator_config(iterations=2), subset_sha256="s", progress=False).history
    assert list(history[0]) == DEFAULT_COLUMNS
    assert "mix_levels" not in to_dict(LossConfig()) and "r1" not in to_dict(LossConfig())  # files as before


def test_r1_changes_only_the_discriminator_step_and_is_logged(images) -> None:
    plain, g0, d0 = _step(images)
    penalised, g1, d1 = _step(images, r1=10.0)
    assert _same(_grads(g0), _grads(g1))  # the G step does not see R1
    assert not _same(_grads(d0), _grads(d1))
    assert penalised["r1"] > 0 and "r1" not in plain
    # D starts from the same weights in both, so D's loss grows by exactly gamma/2 * penalty.
    assert torch.isclose(penalised["d"], plain["d"] + 5.0 * penalised["r1"])
    history = train_generator(
        images, tiny_generator_config(iterations=2, losses=LossConfig(r1=1.0)), subset_sha256="s", progress=False
    ).history
    assert list(history[0]) == [*DEFAULT_COLUMNS, "r1"]


def test_r1_penalty_is_computed_in_float32_under_autocast(images) -> None:
    fp32, _, _ = _step(images, r1=10.0)
    bf16, _, d = _step(images, torch.bfloat16, r1=10.0)
    # The G step ran in bf16, but D's real pass (all R1 sees, from the same initial D) ran in float32.
    assert bf16["r1"].dtype == torch.float32 and torch.equal(bf16["r1"], fp32["r1"])
    assert all(torch.isfinite(p.grad).all() for p in d.parameters())


def test_feature_matching_adds_a_logged_term_to_the_generator_loss(images) -> None:
    plain, g0, d0 = _step(images)
    matched, g1, d1 = _step(images, feature_matching=2.0)
    assert matched["feature_matching"] > 0 and "feature_matching" not in plain
    assert torch.isclose(matched["g_total"], plain["g_total"] + 2.0 * matched["feature_matching"])
    assert not _same(_grads(g0), _grads(g1))
    assert list(matched) == ["g_total", "reconstruction", "mix", "adversarial", "feature_matching", "d"]


def test_mix_levels_change_the_mix_term(images) -> None:
    plain, _, _ = _step(images)
    coarse, _, _ = _step(images, mix_levels=2)
    assert torch.equal(coarse["reconstruction"], plain["reconstruction"])
    assert coarse["mix"] != plain["mix"]


def test_every_parameter_gets_a_gradient_with_every_lever_on(images) -> None:
    _, g, d = _step(images, r1=1.0, feature_matching=1.0, mix_levels=1)
    for module in (g, d):
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_lever_config_is_recorded_when_set_and_checked() -> None:
    good = to_dict(tiny_generator_config())
    levers = {**good, "losses": {**good["losses"], "r1": 10, "feature_matching": 1.0, "mix_levels": 2}}
    cfg = from_dict(GeneratorConfig, levers)
    assert (cfg.losses.r1, cfg.losses.feature_matching, cfg.losses.mix_levels) == (10.0, 1.0, 2)
    assert to_dict(cfg)["losses"]["r1"] == 10.0 and from_dict(GeneratorConfig, to_dict(cfg)) == cfg
    for key, value in [("r1", -1.0), ("feature_matching", -0.5), ("mix_levels", -1)]:
        with pytest.raises(ConfigError, match="loss weights, pyramid_levels and mix_levels must be >= 0"):
            from_dict(GeneratorConfig, {**good, "losses": {**good["losses"], key: value}})
    with pytest.raises(ConfigError, match="mix_levels 4 needs resolution >= 32"):
        from_dict(GeneratorConfig, {**good, "losses": {**good["losses"], "mix_levels": 4}})  # 16 px
    assert dataclasses.replace(tiny_generator_config(), losses=LossConfig(mix_levels=3)).losses.mix_levels == 3


@pytest.mark.parametrize("masks", [{"kind": "ranges"}, {"base_share": 0.5}])
def test_a_run_trains_on_the_new_masks(images, masks) -> None:
    cfg = tiny_generator_config(iterations=2, masks=MaskConfig(n_sources=(2, 3), scale=20.0, min_size=5, **masks))
    result = train_generator(images, cfg, subset_sha256="s", progress=False)
    assert result.metrics["step"] == 2 and all(torch.isfinite(torch.tensor(v)) for v in result.history[-1].values())
    assert result.metrics["mask_fidelity"]["pixel_composite"]["gap_db"] > 10  # the masks are hard and followed
