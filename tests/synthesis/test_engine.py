"""The synthesis engine: determinism, class interleaving, provenance, pixel composites, caching, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pipeline.generator.masks as masks_module
from pipeline.core.config import from_dict, to_dict
from pipeline.core.errors import ConfigError, HydraMixError
from pipeline.data.imageset import ImageSet
from pipeline.generator.masks import MaskConfig
from pipeline.generator.networks import HydraMixGenerator
from pipeline.synthesis.engine import SynthConfig, Synthesizer

CPU = torch.device("cpu")
MASKS = MaskConfig(scale=10.0, sigma=0.0, min_size=4)


def _train(per_class: int = 5, classes: int = 3, size: int = 16) -> ImageSet:
    """Blocky random images (clear superpixels), classes in blocks, original indices 100 + 3 * row."""
    rng = np.random.default_rng(0)
    m = per_class * classes
    blocks = rng.integers(0, 256, (m, size // 4, size // 4, 3), dtype=np.uint8)
    images = blocks.repeat(4, axis=1).repeat(4, axis=2)
    labels = np.repeat(np.arange(classes), per_class).astype(np.int64)
    indices = 100 + 3 * np.arange(m, dtype=np.int64)
    return ImageSet(images, labels, indices, tuple(f"class{c}" for c in range(classes)))


def _generator() -> HydraMixGenerator:
    torch.manual_seed(0)
    return HydraMixGenerator(width=4, encoder_blocks=1, decoder_blocks=1)


def _synth(mode: str = "generator", dtype: torch.dtype = torch.float32, **cfg) -> Synthesizer:
    cfg = SynthConfig(**{"n_per_class": 8, "seed": 7, "n_sources": (2, 4), "batch_size": 4, "mode": mode, **cfg})
    return Synthesizer(_train(), cfg, MASKS, _generator() if mode == "generator" else None, CPU, dtype)


@pytest.fixture(scope="module")
def gen_synth() -> Synthesizer:
    return _synth()


def test_render_shapes_keys_and_class_interleaving(gen_synth):
    assert gen_synth.total == 24
    out = gen_synth.render(np.arange(24))
    assert [r.key for r in out] == [f"{s:09d}" for s in range(24)]
    assert [r.label for r in out] == [s % 3 for s in range(24)]
    assert all(r.image.shape == (16, 16, 3) and r.image.dtype == np.uint8 for r in out)
    assert all(r.meta["class"] == f"class{r.label}" and r.meta["label"] == r.label for r in out)
    assert len({r.image.tobytes() for r in out}) == 24  # every sample is a different mix


def test_provenance_names_sources_of_the_right_class(gen_synth):
    train = _train()
    for r in gen_synth.render(np.arange(24)):
        meta = r.meta
        n = meta["n_sources"]
        assert 2 <= n <= 4 and len(meta["sources"]) == len(meta["source_rows"]) == len(meta["flipped"]) == n
        assert len(set(meta["source_rows"])) == n  # distinct sources
        assert all(train.labels[row] == r.label for row in meta["source_rows"])
        assert meta["sources"] == [int(train.indices[row]) for row in meta["source_rows"]]
        assert meta["mode"] == "generator" and meta["mask_kind"] == "segmentation"
        assert meta["sample_id"] == int(r.key) and 0 <= meta["seed"] < 2**53
    ns = {r.meta["n_sources"] for r in gen_synth.render(np.arange(24))}
    assert ns == {2, 3, 4}


def test_same_ids_give_same_bytes_across_instances_and_call_splits(gen_synth):
    ids = np.arange(4, 16)
    first = [r.image.tobytes() for r in gen_synth.render(ids)]
    again = _synth().render(ids)  # a fresh engine: caches rebuilt, same bytes
    assert first == [r.image.tobytes() for r in again]
    # Same batch boundaries (chunks of 4 from id 4), rendered in separate calls: same bytes.
    split = gen_synth.render(ids[:4]) + gen_synth.render(ids[4:8]) + gen_synth.render(ids[8:])
    assert first == [r.image.tobytes() for r in split]
    assert [r.meta for r in again] == [r.meta for r in split]


def test_random_decisions_do_not_depend_on_the_batch(gen_synth):
    whole = gen_synth.plan(np.arange(24))
    part = gen_synth.plan(np.array([17, 5]))
    for key in ("labels", "seeds", "n", "rows", "flipped"):
        assert np.array_equal(part[key], whole[key][[17, 5]])
    other_seed = _synth(seed=8).plan(np.arange(24))
    assert not np.array_equal(other_seed["rows"], whole["rows"])


def test_bf16_renders_close_to_fp32():
    ids = np.arange(8)
    fp32 = np.stack([r.image for r in _synth().render(ids)]).astype(int)
    bf16 = np.stack([r.image for r in _synth(dtype=torch.bfloat16).render(ids)]).astype(int)
    assert np.abs(fp32 - bf16).mean() < 2.0


def test_pixel_mode_equals_manual_composite():
    synth = _synth("pixel", flip_sources=True)
    train = _train()
    ids = np.arange(12)
    out = synth.render(ids)
    plan = synth.plan(ids)
    masks = synth._sampler.sample(plan["rows"], plan["seeds"], flipped=plan["flipped"]).numpy()
    for i, r in enumerate(out):
        expected = np.zeros((16, 16, 3))
        for slot, row in enumerate(r.meta["source_rows"]):
            image = train.images[row][:, ::-1] if r.meta["flipped"][slot] else train.images[row]
            expected += masks[i, slot][:, :, None] * image
        assert np.array_equal(r.image, np.round(expected).astype(np.uint8))
        assert r.meta["mode"] == "pixel"
    assert any(any(r.meta["flipped"]) for r in out)


def test_compose_on_a_hand_made_case():
    synth = _synth("pixel")
    train = _train()
    masks = torch.zeros(1, 3, 16, 16)
    masks[0, 0, :, :8] = 1  # left half from row 0
    masks[0, 1, :, 8:] = 1  # right half from row 6, mirrored
    out = synth.compose(np.array([[0, 6, -1]]), np.array([[False, True, False]]), masks)[0]
    assert np.array_equal(out[:, :8], train.images[0][:, :8])
    assert np.array_equal(out[:, 8:], train.images[6][:, ::-1][:, 8:])


def test_segmentation_and_encoding_run_once(monkeypatch):
    calls = []
    real = masks_module.segment_images
    counted = lambda images, cfg: calls.append(len(images)) or real(images, cfg)  # noqa: E731
    monkeypatch.setattr(masks_module, "segment_images", counted)
    g = _generator()
    encoded = []
    real_encode = g.encode
    g.encode = lambda x: encoded.append(len(x)) or real_encode(x)
    cfg = SynthConfig(n_per_class=8, seed=0, n_sources=(2, 3), batch_size=4)
    synth = Synthesizer(_train(), cfg, MASKS, g, CPU, torch.float32)
    assert calls == [15] and sum(encoded) == 30  # every image once, plus its mirror image once
    synth.render(np.arange(24))
    assert calls == [15] and sum(encoded) == 30
    assert not g.training and not any(p.requires_grad for p in g.parameters())


def test_grid_override_skips_segmentation(monkeypatch):
    monkeypatch.setattr(masks_module, "segment_images", lambda *a: pytest.fail("segmented for grid masks"))
    synth = _synth(mask_kind="grid")
    assert {r.meta["mask_kind"] for r in synth.render(np.arange(6))} == {"grid"}


def test_synthesis_honours_the_base_share_floor_and_draws_ranges_masks():
    cfg = SynthConfig(n_per_class=8, seed=7, n_sources=(2, 4), batch_size=4, mode="pixel")
    floored = Synthesizer(
        _train(), cfg, MaskConfig(scale=10.0, sigma=0.0, min_size=4, base_share=0.6), None, CPU, torch.float32
    )
    assert floored.mask_cfg.base_share == 0.6
    assert all(r.meta["largest_share"] >= 0.6 for r in floored.render(np.arange(24)))
    ranges = _synth(mask_kind="ranges")
    out = ranges.render(np.arange(12))
    assert {r.meta["mask_kind"] for r in out} == {"ranges"} and len({r.image.tobytes() for r in out}) == 12
    assert [r.image.tobytes() for r in out] == [
        r.image.tobytes() for r in _synth(mask_kind="ranges").render(np.arange(12))
    ]


def test_bad_input_is_reported():
    with pytest.raises(HydraMixError, match="class0.*5 train image"):
        _synth(n_sources=(2, 6))
    with pytest.raises(HydraMixError, match="no generator"):
        Synthesizer(_train(), SynthConfig(n_sources=(2, 3)), MASKS, None, CPU, torch.float32)
    with pytest.raises(HydraMixError, match=r"\[0, 24\)"):
        _synth("pixel").render(np.array([24]))


def test_synth_config_loads_strictly():
    cfg = from_dict(SynthConfig, to_dict(SynthConfig()), "synthesize")
    assert cfg == SynthConfig()
    loaded = from_dict(SynthConfig, {"n_per_class": 10, "mask_kind": "grid", "shards": {"shard_size": 5}})
    assert loaded.mask_kind == "grid" and loaded.shards.shard_size == 5
    for values, word in [
        ({"n_per_class": 0}, "n_per_class"),
        ({"n_sources": [1, 2]}, "n_sources"),
        ({"batch_size": 0}, "batch_size"),
        ({"mode": "diffusion"}, "mode"),
        ({"mask_kind": "voronoi"}, "mask_kind"),
        ({"n_per_clas": 5}, "unknown"),
    ]:
        with pytest.raises(ConfigError, match=word):
            from_dict(SynthConfig, values, "synthesize")
