"""The generator stage's typed config (params section ``generator``): network shapes, loss weights and the
training run's settings, each checked when built.

It sits at the bottom of subset -> generator: ``batches``, ``train``, ``evaluation`` and ``files`` all read a
``GeneratorConfig``, so it has a module of its own that imports none of them (the masks' ``MaskConfig`` stays
beside the masks in ``masks.py``). See docs/generator.md for what each key means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipeline.core.config import recorded_when_set
from pipeline.core.threads import Threads, check_threads
from pipeline.generator.masks import MaskConfig
from pipeline.generator.networks import HydraMixGenerator


@dataclass(frozen=True)
class ModelConfig:
    """Generator shape: C = 4 * width feature channels at H/4; residual blocks in encoder and decoder."""

    width: int = 32
    encoder_blocks: int = 2
    decoder_blocks: int = 2

    def __post_init__(self) -> None:
        if self.width < 1 or self.encoder_blocks < 0 or self.decoder_blocks < 0:
            raise ValueError(f"model needs width >= 1 and block counts >= 0, got {self}")


@dataclass(frozen=True)
class DiscriminatorConfig:
    """PatchGAN shape: first-layer width and number of stride-2 layers."""

    width: int = 32
    n_layers: int = 2

    def __post_init__(self) -> None:
        if self.width < 1 or self.n_layers < 1:
            raise ValueError(f"discriminator needs width >= 1 and n_layers >= 1, got {self}")


@dataclass(frozen=True)
class LossConfig:
    """Loss weights. Each image loss is L1 + ``pyramid`` * Laplacian-pyramid L1 over ``pyramid_levels``
    bands. ``mix_levels`` > 0 applies the mix term only to the pyramid's low-pass residual after that many steps;
    ``feature_matching`` weighs D's feature matching in G's loss; ``r1`` is R1's gamma in D's (gamma/2 * penalty).
    The last three were added after generator files existed and are recorded in files only when set."""

    reconstruction: float = 1.0
    mix: float = 1.0
    adversarial: float = 0.05
    pyramid: float = 1.0
    pyramid_levels: int = 3
    mix_levels: int = recorded_when_set(0)
    feature_matching: float = recorded_when_set(0.0)
    r1: float = recorded_when_set(0.0)

    def __post_init__(self) -> None:
        weights = (self.reconstruction, self.mix, self.adversarial, self.pyramid, self.feature_matching, self.r1)
        if min(weights) < 0 or self.pyramid_levels < 0 or self.mix_levels < 0:
            raise ValueError(f"loss weights, pyramid_levels and mix_levels must be >= 0, got {self}")


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything ``train_generator`` needs (params section ``generator``); see docs/generator.md."""

    resolution: int
    resize_subset: bool
    iterations: int
    batch_size: int
    lr: float
    lr_discriminator: float
    lr_milestones: tuple[float, ...]
    lr_gamma: float
    flip: bool
    cap_sources_to_class_size: bool
    checkpoint_every: int
    log_every: int
    eval_mixes: int
    grid_mixes: int
    seed: int
    device: str
    precision: Literal["auto", "fp32", "bf16", "fp16"]
    model: ModelConfig = field(default_factory=ModelConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    threads: Threads = "auto"  # CPU threads, set by the stage (pipeline.core.threads)

    def __post_init__(self) -> None:
        check_threads(self.threads)
        if self.resolution < 8 or self.resolution % HydraMixGenerator.downsampling:
            raise ValueError(f"resolution must be >= 8 and divisible by 4, got {self.resolution}")
        for name in ("iterations", "batch_size", "checkpoint_every", "log_every", "eval_mixes", "grid_mixes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.lr_discriminator > 0 and 0 < self.lr_gamma <= 1):
            raise ValueError("lr and lr_discriminator must be > 0 and lr_gamma in (0, 1]")
        if any(not 0 < m < 1 for m in self.lr_milestones) or list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ValueError(f"lr_milestones must be increasing fractions in (0, 1), got {list(self.lr_milestones)}")
        if self.resolution < 2 ** (self.losses.mix_levels + 1):
            raise ValueError(
                f"losses.mix_levels {self.losses.mix_levels} needs resolution >= {2 ** (self.losses.mix_levels + 1)} "
                f"(each level halves the side, down to >= 2 px), got {self.resolution}"
            )
