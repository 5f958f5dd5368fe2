"""Shared fixtures: tiny, structured image sets and subset directories for every test module.

``tiny_subset`` is the one most tests want: a subset directory (train.parquet + test.parquet + manifest.json,
exactly what ``hydramix subset`` writes) with 4 classes, 8 train and 4 test images per class, 16x16 px.
Its signature is stable; other modules rely on it.
"""

from __future__ import annotations

import dataclasses
import json
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.imageset import ImageSet
from pipeline.data.subsets import write_subset
from pipeline.generator.config import DiscriminatorConfig, GeneratorConfig, ModelConfig
from pipeline.generator.masks import MaskConfig

TINY_CLASSES = ("circle", "square", "stripes", "checker")


@pytest.fixture(autouse=True, scope="session")
def ctrl_c_raises_keyboard_interrupt():
    """SIGINT with Python's default handler, as in a terminal: a shell starts background jobs (`pytest &`, nohup)
    with SIGINT ignored, which Python and every child it starts keep, so the Ctrl-C tests would see no interrupt.
    A handled signal is reset to the default at exec, so the children get Python's default too."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test runs torch on one intra-op thread: tensors here are tiny, and on a busy 2-core machine contended
    OpenMP threads made them up to ~100x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_imageset(
    n_per_class: int, resolution: int = 16, n_classes: int = 4, seed: int = 0, index_offset: int = 0
) -> ImageSet:
    """A structured, learnable ImageSet: class c has its own shape/texture and hue, plus per-image noise.

    images: (n_classes * n_per_class, resolution, resolution, 3) uint8, class-major order;
    labels 0..n_classes-1; indices index_offset + 0..N-1; class names from TINY_CLASSES.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:resolution, 0:resolution] / max(resolution - 1, 1)
    patterns = [
        ((yy - 0.5) ** 2 + (xx - 0.5) ** 2) < 0.12,  # disc
        (np.abs(yy - 0.5) < 0.3) & (np.abs(xx - 0.5) < 0.3),  # square
        (np.floor(yy * 4) % 2) == 0,  # horizontal stripes
        ((np.floor(yy * 4) + np.floor(xx * 4)) % 2) == 0,  # checkerboard
    ]
    images, labels = [], []
    for c in range(n_classes):
        mask = patterns[c % len(patterns)]
        colour = np.array([(c * 97) % 256, (c * 53 + 80) % 256, (c * 151 + 160) % 256], dtype=np.float64)
        for _ in range(n_per_class):
            background = rng.uniform(0, 60, size=3)
            img = np.where(mask[..., None], colour, background)
            img = img + rng.normal(0, 12, size=img.shape)
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(c)
    names = tuple(TINY_CLASSES[c] if c < len(TINY_CLASSES) else f"class{c}" for c in range(n_classes))
    n = len(images)
    return ImageSet(
        images=np.stack(images),
        labels=np.asarray(labels, dtype=np.int64),
        indices=np.arange(index_offset, index_offset + n, dtype=np.int64),
        class_names=names,
    )


def build_subset_dir(
    directory: Path,
    n_train_per_class: int = 8,
    n_test_per_class: int = 4,
    resolution: int = 16,
    n_classes: int = 4,
    seed: int = 0,
) -> Path:
    """Write a subset directory like ``hydramix subset`` does; return ``directory``."""
    train = make_imageset(n_train_per_class, resolution, n_classes, seed=seed)
    test = make_imageset(n_test_per_class, resolution, n_classes, seed=seed + 1)
    manifest = {
        "dataset": "tiny",
        "source": "tests/conftest.py (synthetic)",
        "checksum": None,
        "k": n_train_per_class,
        "seed": seed,
    }
    write_subset(directory, train, test, manifest)
    return directory


@pytest.fixture
def tiny_subset(tmp_path: Path) -> Path:
    """Path to a subset dir: 4 classes, 8 train + 4 test images per class, 16 px, manifest k=8 seed=0."""
    return build_subset_dir(tmp_path / "tiny_subset")


@pytest.fixture
def make_subset(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_subset(name="s", n_train_per_class=8, n_test_per_class=4, resolution=16, n_classes=4,
    seed=0)`` writes a subset dir under tmp_path and returns its path."""

    def make(name: str = "subset", **kwargs) -> Path:
        return build_subset_dir(tmp_path / name, **kwargs)

    return make


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout (real data); skip the test with a reason if it is absent."""
    shared = Path(__file__).resolve().parents[2] / "shared"
    if not (shared / "datasets").is_dir():
        pytest.skip(f"real data not available: {shared / 'datasets'} is absent")
    return shared


def tiny_generator_config(**changes) -> GeneratorConfig:
    """A generator config small enough for a CPU test (16 px, width 8, 4 steps); ``changes`` replace fields."""
    cfg = GeneratorConfig(
        resolution=16,
        resize_subset=False,
        iterations=4,
        batch_size=2,
        lr=1e-3,
        lr_discriminator=2e-4,
        lr_milestones=(0.5,),
        lr_gamma=0.5,
        flip=True,
        cap_sources_to_class_size=False,
        checkpoint_every=2,
        log_every=1,
        eval_mixes=4,
        grid_mixes=2,
        seed=3,
        device="cpu",
        precision="fp32",
        model=ModelConfig(width=8, encoder_blocks=1, decoder_blocks=1),
        discriminator=DiscriminatorConfig(width=8, n_layers=2),
        masks=MaskConfig(kind="segmentation", n_sources=(2, 3), scale=20.0, min_size=5),
    )
    return dataclasses.replace(cfg, **changes)


# The synthesize and generator.masks params sections of the tiny CLI tests (16 px subset, 6 images per class).
TINY_MASKS = {"kind": "segmentation", "n_sources": [2, 3], "scale": 50.0, "sigma": 0.5, "min_size": 4}
TINY_SYNTH = {
    "n_per_class": 6,
    "seed": 0,
    "n_sources": [2, 3],
    "mode": "generator",
    "batch_size": 4,
    "flip_sources": True,
    "mask_kind": None,
    "device": "cpu",
    "precision": "fp32",
    "shards": {"name": "tiny", "shard_size": 10},
}


# A tiny open_clip architecture, randomly initialised by the tests that use it: plumbing only, never a score.
TINY_NAME = "hydramix-test-tiny"
TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def register_tiny_model(directory: Path) -> str:
    """Add the tiny architecture to open_clip's registry (its documented extension point); return its name."""
    import open_clip  # only the metric tests need it

    if TINY_NAME not in open_clip.list_models():
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{TINY_NAME}.json").write_text(json.dumps(TINY_CFG))
        open_clip.add_model_config(directory / f"{TINY_NAME}.json")
    return TINY_NAME


def tiny_checkpoint(directory: Path) -> Path:
    """A randomly initialised tiny open_clip model saved as a local checkpoint file (plumbing only)."""
    import open_clip

    directory.mkdir(parents=True, exist_ok=True)
    name = register_tiny_model(directory)
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained_text=False)
    path = directory / "tiny_open_clip.bin"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """The tiny checkpoint loaded as a frozen ``LoadedClip`` on the CPU, in fp32."""
    from pipeline.metric.clip_model import load_clip

    path = tiny_checkpoint(tmp_path_factory.mktemp("tiny"))
    return load_clip(TINY_NAME, str(path), device="cpu", precision="fp32")


def synthetic_dataset(directory: Path, n_per_class: int, class_names=("a", "b"), size: int = 12) -> Path:
    """A shard dataset directory of random images (one shard, ``n_per_class`` per class), as synthesize writes."""
    from pipeline.synthesis.shards.dataset_writer import finish_dataset
    from pipeline.synthesis.shards.format import Sample
    from pipeline.synthesis.shards.writer import write_shard

    rng = np.random.default_rng(1)
    samples = [
        Sample(f"s{c}x{i:03d}", rng.integers(0, 256, (size, size, 3), dtype=np.uint8), c, {})
        for c in range(len(class_names))
        for i in range(n_per_class)
    ]
    directory.mkdir(parents=True, exist_ok=True)
    entries = [write_shard(directory / "toy-000000.tar", samples)] if samples else []
    finish_dataset(
        directory,
        entries,
        class_names=class_names,
        resolution=size,
        counts={name: n_per_class for name in class_names},
        identity={},
        card="toy",
    )
    return directory


def write_lines(path: Path, lines: list[str]) -> Path:
    """Write ``lines`` as a UTF-8 text file (a synset vocabulary file, say); return ``path``."""
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
