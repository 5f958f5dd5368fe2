"""Training loop: every method trains on tiny data, determinism, the synthetic-set rules, checkpoints."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import make_imageset

from pipeline.classify.augment import CLASSIC_AUGMENTATIONS, METHODS, SYNTHETIC_METHODS, AugmentConfig, BatchAugmenter
from pipeline.classify.train import (
    BatchSource,
    ClassifierConfig,
    channel_stats,
    check_compatible,
    imageset_sha256,
    index_batches,
    load_checkpoint,
    lr_at,
    save_checkpoint,
    split_validation,
    train_classifier,
)
from pipeline.core.config import to_dict
from pipeline.core.errors import HydraMixError
from pipeline.data.imageset import ImageSet

TINY = ClassifierConfig(arch="wrn-10-1", iterations=3, batch_size=8, warmup_iterations=1, device="cpu")


@pytest.fixture(scope="module")
def real():
    return make_imageset(6, resolution=16, n_classes=3)


@pytest.fixture(scope="module")
def synthetic():
    return make_imageset(10, resolution=16, n_classes=3, seed=7)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_a_few_steps(method, real, synthetic):
    result = train_classifier(method, real, TINY, synthetic if method in SYNTHETIC_METHODS else None, progress=False)
    assert np.isfinite(result.stats["final_loss"])
    assert not result.model.training
    assert result.stats["n_synthetic"] == (len(synthetic) if method in SYNTHETIC_METHODS else 0)


def test_same_seed_same_model_other_seed_other_model(real):
    def weights(seed):
        model = train_classifier("trivialaugment", real, dataclasses.replace(TINY, seed=seed), progress=False).model
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    first = weights(0)
    assert torch.equal(first, weights(0))
    assert not torch.equal(first, weights(1))


def test_synthetic_methods_need_a_synthetic_set_and_others_refuse_one(real, synthetic):
    with pytest.raises(HydraMixError, match="pass a synthetic dataset"):
        train_classifier("hydramix", real, TINY, None, progress=False)
    with pytest.raises(HydraMixError, match="uses no synthetic dataset"):
        train_classifier("baseline", real, TINY, synthetic, progress=False)
    with pytest.raises(HydraMixError, match="is itself a classic augmentation"):
        train_classifier("mixup", real, TINY, None, progress=False, augment="cutmix")


def test_synthetic_classes_must_match(real):
    other = make_imageset(4, resolution=16, n_classes=4)
    with pytest.raises(HydraMixError, match="do not match the subset's"):
        train_classifier("chimeramix", real, TINY, other, progress=False)
    small = make_imageset(4, resolution=8, n_classes=3)
    with pytest.raises(HydraMixError, match="8x8 px"):
        train_classifier("chimeramix", real, TINY, small, progress=False)


def test_batch_source_mixes_the_synthetic_share(real, synthetic):
    source = BatchSource(real, synthetic, batch_size=8, synthetic_share=0.25, device=torch.device("cpu"), seed=0)
    assert (source.n_real, source.n_synthetic) == (6, 2)
    images, labels = source.next_batch()
    assert images.shape == (8, 16, 16, 3) and labels.shape == (8,)
    real_rows = {bytes(r) for r in real.images.reshape(len(real), -1)}
    orders = []
    for _ in range(5):
        from_real = [bytes(i) in real_rows for i in images.reshape(8, -1).numpy()]
        assert sum(from_real) == 6
        orders.append(tuple(from_real))
        images, _ = source.next_batch()
    assert len(set(orders)) > 1  # rows in a random order, so that mixup pairs real with synthetic rows


def test_without_a_synthetic_set_the_batch_is_the_real_draw(real):
    source = BatchSource(real, None, batch_size=8, synthetic_share=0.5, device=torch.device("cpu"), seed=0)
    images, labels = source.next_batch()
    order = index_batches(len(real), 8, np.random.default_rng([0, 2]))
    assert torch.equal(images, torch.from_numpy(real.images[next(order)]))


@pytest.mark.parametrize("augment", CLASSIC_AUGMENTATIONS)
def test_a_synthetic_method_trains_with_every_classic_augmentation(augment, real, synthetic):
    result = train_classifier("hydramix", real, TINY, synthetic, progress=False, augment=augment)
    assert np.isfinite(result.stats["final_loss"])
    assert (result.stats["method"], result.stats["augment"]) == ("hydramix", augment)


def test_mixup_reaches_the_synthetic_rows():
    """Real images are all class 0 and synthetic all class 1: a mixup target with mass on both classes mixes a
    real with a synthetic image. With the rows in a random order about half of the rows do."""
    rng = np.random.default_rng(0)
    names = ("real", "synthetic")

    def imageset(n, label):
        images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
        return ImageSet(images, np.full(n, label, dtype=np.int64), np.arange(n), names)

    source = BatchSource(imageset(20, 0), imageset(40, 1), 16, 0.5, torch.device("cpu"), seed=0)
    augmenter = BatchAugmenter("mixup", AugmentConfig(), 2, torch.full((3,), 0.5), torch.full((3,), 0.25))
    torch.manual_seed(0)
    crossed = []
    for _ in range(20):
        _, targets = augmenter(*source.next_batch())
        crossed.append(((targets[:, 0] > 1e-6) & (targets[:, 1] > 1e-6)).float().mean().item())
    # Real first and synthetic last, torchvision's neighbour pairing would cross only 2 of 16 rows (0.125).
    assert np.mean(crossed) > 0.3


def test_index_batches_visit_every_image_each_epoch():
    stream = index_batches(10, 4, np.random.default_rng(0))
    drawn = np.concatenate([next(stream) for _ in range(5)])  # 20 = two epochs
    assert sorted(drawn[:10]) == list(range(10)) and sorted(drawn[10:]) == list(range(10))


def test_lr_schedule_warmup_then_cosine_to_zero():
    config = dataclasses.replace(TINY, iterations=100, warmup_iterations=10, lr=0.1)
    assert lr_at(0, config) == pytest.approx(0.01 * 0.5 * (1 + np.cos(0)))
    assert lr_at(9, config) == pytest.approx(0.1 * 0.5 * (1 + np.cos(np.pi * 9 / 100)))
    assert lr_at(99, config) < 1e-3
    assert all(lr_at(s, config) >= lr_at(s + 1, config) for s in range(10, 99))


def test_validation_holdout_is_per_class_and_disjoint(real):
    fit, val = split_validation(real, 2, seed=0)
    assert val.counts() == {name: 2 for name in real.class_names}
    assert len(fit) + len(val) == len(real)
    assert not set(fit.indices) & set(val.indices)
    with pytest.raises(HydraMixError, match="leaves no training image"):
        split_validation(real, 6, seed=0)
    result = train_classifier("baseline", real, dataclasses.replace(TINY, val_per_class=1), progress=False)
    assert 0.0 <= result.stats["val_top1"] <= 1.0 and result.stats["n_val"] == 3


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="arch"):
        ClassifierConfig(arch="vgg")
    with pytest.raises(ValueError, match="synthetic_share"):
        ClassifierConfig(synthetic_share=1.0)


def test_checkpoint_round_trip_and_compatibility(tmp_path, real):
    result = train_classifier("baseline", real, TINY, progress=False)
    path = tmp_path / "c.pt"
    save_checkpoint(path, result, TINY, real, "baseline", {"dataset": "tiny", "k": 6, "seed": 0})
    model, meta = load_checkpoint(path)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), result.model.cpu()(x))
    assert meta["class_names"] == list(real.class_names) and meta["resolution"] == 16
    assert meta["method"] == "baseline" and meta["k"] == 6 and meta["subset_sha256"] == imageset_sha256(real)
    check_compatible(meta, real, "subset")  # no error
    shuffled = ImageSet(real.images[::-1].copy(), real.labels[::-1].copy(), real.indices, real.class_names)
    with pytest.raises(HydraMixError, match="another subset"):
        check_compatible(meta, shuffled, "subset")
    with pytest.raises(HydraMixError, match="another dataset"):
        check_compatible(meta, make_imageset(2, 16, n_classes=4), "subset")
    with pytest.raises(HydraMixError, match="resolution 16 px"):
        check_compatible(meta, make_imageset(2, 8, n_classes=3), "subset")


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(HydraMixError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(HydraMixError, match="not a readable checkpoint"):
        load_checkpoint(bad)
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(HydraMixError, match="not a hydramix classifier checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_the_real_only_tail_draws_real_batches_and_leaves_the_steps_before_unchanged(real, synthetic):
    cpu = torch.device("cpu")
    plain = BatchSource(real, synthetic, 8, 0.5, cpu, seed=0)
    tailed = BatchSource(real, synthetic, 8, 0.5, cpu, seed=0, tail_start=3)
    real_rows = {bytes(r) for r in real.images.reshape(len(real), -1)}
    for step in range(6):
        a, la = plain.next_batch()
        b, lb = tailed.next_batch()
        if step < 3:
            assert torch.equal(a, b) and torch.equal(la, lb)
        else:
            assert all(bytes(row) in real_rows for row in b.reshape(8, -1).numpy())
    resumed = BatchSource(real, synthetic, 8, 0.5, cpu, seed=0, tail_start=3)
    resumed.skip(6)  # a resumed run continues with the tail batch an uninterrupted one draws next
    assert torch.equal(resumed.next_batch()[0], tailed.next_batch()[0])
    assert ClassifierConfig(iterations=900, real_tail=0.2).tail_start() == 720
    assert ClassifierConfig(iterations=900).tail_start() == 900


def test_levers_at_their_defaults_are_not_recorded_and_bad_values_are_refused():
    assert not {"real_tail", "bn_recalibrate"} & set(to_dict(ClassifierConfig()))  # old model files' bytes
    assert to_dict(ClassifierConfig(real_tail=0.1, bn_recalibrate=True))["real_tail"] == 0.1
    with pytest.raises(ValueError, match="real_tail must be in"):
        ClassifierConfig(real_tail=1.5)


def test_batchnorm_recalibration_gives_the_statistics_of_the_real_images_and_their_mirrors(real, synthetic):
    fp32 = dataclasses.replace(TINY, precision="fp32")  # the recalibration passes run in the training dtype
    config = dataclasses.replace(fp32, bn_recalibrate=True)
    model = train_classifier("hydramix", real, config, synthetic, progress=False).model
    assert not model.training
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.momentum == 0.1 for m in norms)  # restored after the passes
    mean, std = channel_stats(real)
    x = torch.from_numpy(real.images).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    x = torch.cat([x, x.flip(3)])
    # The first BatchNorm to run sees inputs that no other BatchNorm's statistics touch: its own must be theirs.
    seen: list[tuple[torch.nn.Module, torch.Tensor]] = []
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append((m, args[0]))) for m in norms]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    first, inputs = seen[0]
    torch.testing.assert_close(first.running_mean, inputs.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(first.running_var, inputs.var((0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5)
    plain = train_classifier("hydramix", real, fp32, synthetic, progress=False).model
    same = [torch.equal(p, q) for p, q in zip(plain.parameters(), model.parameters(), strict=True)]
    assert all(same)  # only the statistics change, not the weights
