"""Classifier architectures trained from scratch, in a name -> builder registry.

CIFAR-style Wide ResNets (Zagoruyko & Komodakis 2016; WRN-d-k with dropout between the two convolutions
of a block) for 32 px ciFAIR/CIFAR, and torchvision's ResNet-50 without pretraining for 96 px STL-10. Every
builder takes the same two arguments, ``(num_classes, dropout)``, so a checkpoint stores
``{"arch", "num_classes", "dropout"}`` and a consumer rebuilds the model from the file alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn

from pipeline.core.errors import HydraMixError


class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-dropout-BN-ReLU-conv3x3, plus a 1x1 projection when the shape
    changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        # The projection sees the pre-activated input, as in the reference WRN code.
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.dropout(torch.relu(self.bn2(out))))
        return out + skip


class WideResNet(nn.Module):
    """WRN-depth-width for small images: (B, 3, H, W) float -> (B, num_classes) logits.

    depth = 6n + 4 (n blocks per stage, three stages of 16k, 32k, 64k channels; strides 1, 2, 2).
    """

    def __init__(self, depth: int, width: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WRN depth must be 6n+4 >= 10, got {depth}")
        n = (depth - 4) // 6
        channels = [16, 16 * width, 32 * width, 64 * width]
        self.stem = nn.Conv2d(3, channels[0], 3, padding=1, bias=False)
        stages = []
        for i, stride in enumerate((1, 2, 2)):
            blocks = [WideBasicBlock(channels[i], channels[i + 1], stride, dropout)]
            blocks += [WideBasicBlock(channels[i + 1], channels[i + 1], 1, dropout) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(channels[3])
        self.fc = nn.Linear(channels[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        x = torch.relu(self.bn(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))  # (B, num_classes)


def _wrn(depth: int, width: int) -> Callable[[int, float], nn.Module]:
    def build(num_classes: int, dropout: float) -> nn.Module:
        return WideResNet(depth, width, num_classes, dropout)

    return build


def _resnet50(num_classes: int, dropout: float) -> nn.Module:
    """torchvision ResNet-50, random init (no pretrained weights, by the protocol), dropout before the
    classifier."""
    model = torchvision.models.resnet50(weights=None)
    model.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(model.fc.in_features, num_classes))
    return model


ARCHITECTURES: dict[str, Callable[[int, float], nn.Module]] = {
    "wrn-16-8": _wrn(16, 8),  # paper scale, ciFAIR-10/100 at 32 px (ChimeraMix's classifier)
    "wrn-16-2": _wrn(16, 2),  # CPU-quick recipe
    "wrn-10-1": _wrn(10, 1),  # smoke tests only: the smallest WRN
    "resnet50": _resnet50,  # STL-10 at 96 px
}


def build_classifier(arch: str, num_classes: int, dropout: float) -> nn.Module:
    """A freshly initialised classifier from the registry; HydraMixError listing the valid names if
    unknown."""
    if arch not in ARCHITECTURES:
        raise HydraMixError(f"unknown architecture '{arch}'; valid: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](num_classes, dropout)
