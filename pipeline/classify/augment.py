"""Batched training augmentations, one protocol for every method.

Images stay (B, H, W, 3) uint8 on the training device until the last moment (airbench's short data path):

1. every method: random crop with ``pad`` px reflect padding + horizontal flip, as batch tensor indexing;
2. per-image uint8 policies (``autoaugment``, ``trivialaugment``: torchvision.transforms.v2);
3. conversion to normalised float (B, 3, H, W), channels_last;
4. float batch ops: ``cutout`` (batched square mask), ``random-erasing`` (torchvision v2, per image),
   ``mixup`` / ``cutmix`` (torchvision v2, on the batch, soft targets).

A run is a *method* and a classic *augmentation*. A classic method (``mixup``, say) is its own augmentation on
the real subset. A synthetic method (``hydramix``, ``pixelmix``, ...) assembles each batch from real +
synthetic images (see pipeline.classify.train) and augments the whole batch, real and synthetic rows alike,
with ``baseline`` or any classic augmentation (``hydramix`` + ``mixup``). All randomness comes from torch's
global generator, which the training loop seeds, so a run is reproducible for a seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torchvision.transforms import v2

from pipeline.core.errors import HydraMixError

# Classic augmentations: applied to every image of a batch (real and synthetic alike). "baseline" is the
# crop + flip that every run gets.
CLASSIC_AUGMENTATIONS: tuple[str, ...] = (
    "baseline",
    "cutout",
    "random-erasing",
    "mixup",
    "cutmix",
    "autoaugment",
    "trivialaugment",
)
# Methods that train on real + a frozen synthetic dataset (and so need --synthetic). pixelmix and
# pixelmix-blur are the controls; hydramix-n2 is the HydraMix generator synthesising pairs (not ChimeraMix).
SYNTHETIC_METHODS: tuple[str, ...] = ("pixelmix", "pixelmix-blur", "chimeramix", "hydramix-n2", "hydramix")
METHODS: tuple[str, ...] = CLASSIC_AUGMENTATIONS + SYNTHETIC_METHODS


def run_name(method: str, augment: str | None = None) -> str:
    """The name of a run in reports and file names: ``method``, or ``method+augment`` for a synthetic method
    combined with a classic augmentation (``augment`` None, "baseline" or equal to ``method``: just
    ``method``)."""
    return method if augment in (None, "baseline", method) else f"{method}+{augment}"


@dataclass(frozen=True)
class AugmentConfig:
    """Knobs of the augmentation methods (only the chosen method's keys are used in a run)."""

    pad: int = 4  # reflect padding of the random crop, px (all methods)
    cutout_fraction: float = 0.5  # cutout square side / image side (DeVries & Taylor: 16 px at 32 px)
    erasing_p: float = 0.5  # random-erasing probability per image (Zhong et al. default)
    mixup_alpha: float = 1.0  # Beta(alpha, alpha) for the mixup weight
    cutmix_alpha: float = 1.0  # Beta(alpha, alpha) for the cutmix area
    autoaugment_policy: Literal["cifar10", "imagenet", "svhn"] = "cifar10"

    def __post_init__(self) -> None:
        if self.pad < 0:
            raise ValueError(f"pad must be >= 0, got {self.pad}")
        if not 0.0 < self.cutout_fraction <= 1.0:
            raise ValueError(f"cutout_fraction must be in (0, 1], got {self.cutout_fraction}")
        if not 0.0 <= self.erasing_p <= 1.0:
            raise ValueError(f"erasing_p must be in [0, 1], got {self.erasing_p}")
        if self.mixup_alpha <= 0 or self.cutmix_alpha <= 0:
            raise ValueError("mixup_alpha and cutmix_alpha must be > 0")


def check_method(method: str) -> None:
    """HydraMixError listing the valid methods if ``method`` is not one of them."""
    if method not in METHODS:
        raise HydraMixError(f"unknown method '{method}'; valid: {', '.join(METHODS)}")


def resolve_augment(method: str, augment: str | None) -> str:
    """The classic augmentation a run applies to its whole batch; HydraMixError for an unknown name or an
    unsupported combination.

    A classic method is its own augmentation (``augment`` must be None). A synthetic method takes ``augment``
    (None: ``baseline``, crop + flip only).
    """
    check_method(method)
    if augment is not None and augment not in CLASSIC_AUGMENTATIONS:
        raise HydraMixError(f"unknown augmentation '{augment}'; valid: {', '.join(CLASSIC_AUGMENTATIONS)}")
    if method in CLASSIC_AUGMENTATIONS:
        if augment is not None:
            raise HydraMixError(
                f"--augment combines a classic augmentation with a synthetic method ({', '.join(SYNTHETIC_METHODS)}); "
                f"'{method}' is itself a classic augmentation: drop --augment or use --method {augment}"
            )
        return method
    return augment or "baseline"


def random_crop_flip(images: torch.Tensor, pad: int) -> torch.Tensor:
    """(B, H, W, C) any dtype -> same shape: a random HxW crop of the reflect-padded image, flipped with
    p=0.5.

    Padding is never materialised: the crop's row/column indices are reflected back into the image, so one
    gather does pad + crop for the whole batch.
    """
    b, h, w, _ = images.shape
    device = images.device
    if pad > 0:
        dy = torch.randint(0, 2 * pad + 1, (b, 1), device=device) - pad
        dx = torch.randint(0, 2 * pad + 1, (b, 1), device=device) - pad
        rows = _reflect(dy + torch.arange(h, device=device), h)  # (B, H)
        cols = _reflect(dx + torch.arange(w, device=device), w)  # (B, W)
        batch = torch.arange(b, device=device)[:, None, None]
        images = images[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    flip = torch.rand(b, device=device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(2), images)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Map indices in [-size+1, 2*size-2] into [0, size) by mirror reflection without repeating the edge."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def cutout(images: torch.Tensor, side: int) -> torch.Tensor:
    """(B, C, H, W) float -> same with one side x side square per image set to 0 (the mean, after
    normalisation).

    The square's centre is uniform over the image and the square is clipped at the border (DeVries & Taylor
    2017).
    """
    b, _, h, w = images.shape
    cy = torch.randint(0, h, (b, 1, 1), device=images.device)
    cx = torch.randint(0, w, (b, 1, 1), device=images.device)
    ys = torch.arange(h, device=images.device)[None, :, None]
    xs = torch.arange(w, device=images.device)[None, None, :]
    half = side // 2
    inside = (ys >= cy - half) & (ys < cy - half + side) & (xs >= cx - half) & (xs < cx - half + side)
    return images.masked_fill(inside[:, None], 0.0)


class BatchAugmenter:
    """Turns a uint8 batch into the model's input and soft targets for one classic augmentation.

    ``__call__(images (B, H, W, 3) uint8, labels (B,) int64) -> (x (B, 3, H, W) float32 normalised,
    channels_last; targets (B, num_classes) float32, rows summing to 1)``.
    ``mean``/``std``: per-channel, in [0, 1] pixel units.
    """

    def __init__(
        self, augment: str, config: AugmentConfig, num_classes: int, mean: torch.Tensor, std: torch.Tensor
    ) -> None:
        if augment not in CLASSIC_AUGMENTATIONS:
            raise HydraMixError(f"unknown augmentation '{augment}'; valid: {', '.join(CLASSIC_AUGMENTATIONS)}")
        self.augment = augment
        self.config = config
        self.num_classes = num_classes
        self.mean = mean.view(1, 3, 1, 1)
        self.std = std.view(1, 3, 1, 1)
        self.per_image = _per_image_policy(augment, config)
        self.float_op = _float_batch_op(augment, config, num_classes)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = random_crop_flip(images, self.config.pad)
        chw = images.permute(0, 3, 1, 2)  # (B, 3, H, W) view, memory already channels_last
        if self.per_image is not None:
            chw = torch.stack([self.per_image(img) for img in chw]).contiguous(memory_format=torch.channels_last)
        x = normalise(chw, self.mean, self.std)
        targets = torch.nn.functional.one_hot(labels, self.num_classes).float()
        if self.float_op is not None:
            x, targets = self.float_op(x, labels, targets)
        return x.contiguous(memory_format=torch.channels_last), targets


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> float32 ``(x / 255 - mean) / std``; mean/std broadcastable (1, 3, 1, 1)."""
    return (images.float() / 255.0 - mean) / std


def _per_image_policy(method: str, config: AugmentConfig) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if method == "autoaugment":
        policy = {
            "cifar10": v2.AutoAugmentPolicy.CIFAR10,
            "imagenet": v2.AutoAugmentPolicy.IMAGENET,
            "svhn": v2.AutoAugmentPolicy.SVHN,
        }[config.autoaugment_policy]
        return v2.AutoAugment(policy)
    if method == "trivialaugment":
        return v2.TrivialAugmentWide()
    return None


FloatOp = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _float_batch_op(method: str, config: AugmentConfig, num_classes: int) -> FloatOp | None:
    if method == "cutout":

        def apply_cutout(x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor):
            side = max(1, round(config.cutout_fraction * x.shape[-1]))
            return cutout(x, side), targets

        return apply_cutout
    if method == "random-erasing":
        erase = v2.RandomErasing(p=config.erasing_p, value=0)

        def apply_erasing(x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor):
            # v2.RandomErasing erases one region for a whole 4-D input, so it runs per image.
            return torch.stack([erase(img) for img in x]), targets

        return apply_erasing
    if method in ("mixup", "cutmix"):
        mix = (
            v2.MixUp(alpha=config.mixup_alpha, num_classes=num_classes)
            if method == "mixup"
            else v2.CutMix(alpha=config.cutmix_alpha, num_classes=num_classes)
        )

        def apply_mix(x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor):
            mixed, soft = mix(x, labels)
            return mixed, soft.float()

        return apply_mix
    return None
