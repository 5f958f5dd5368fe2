"""The HydraMix networks: encoder, mixing, decoder (together ``HydraMixGenerator``) and a PatchGAN
discriminator.

Images are (B, 3, H, W) floats in [-1, 1]. The encoder maps an image to a feature map of C = 4 * width
channels at H/4 x W/4; N feature maps of N same-class images are fused by mask-weighted summation; the decoder
renders the fused map back to an image. With N = 2 this is ChimeraMix's pairwise mixing; N > 2 is HydraMix.
"""

from __future__ import annotations

from torch import Tensor, nn


def to_signed(pixels: Tensor) -> Tensor:
    """uint8 pixels in [0, 255] -> float32 in [-1, 1], the networks' image range (elementwise: any layout;
    callers permute (B, H, W, 3) to (B, 3, H, W) before or after)."""
    return pixels.float().div(127.5).sub_(1.0)


def _conv_norm_relu(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    """Reflect-padded conv -> InstanceNorm -> ReLU; no conv bias because the norm's affine shift replaces
    it."""
    return [
        nn.ReflectionPad2d(kernel // 2),
        nn.Conv2d(c_in, c_out, kernel, stride=stride, bias=False),
        nn.InstanceNorm2d(c_out, affine=True),
        nn.ReLU(inplace=True),
    ]


class ResidualBlock(nn.Module):
    """CycleGAN residual block: x + IN(conv(ReLU(IN(conv(x))))), shape-preserving (B, C, h, w)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_norm_relu(channels, channels, 3),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=False),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Encoder(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> (B, 4*width, H/4, W/4): 7x7 stem, two stride-2 convs, ``blocks`` residual
    blocks."""

    def __init__(self, width: int, blocks: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *_conv_norm_relu(3, width, 7),
            *_conv_norm_relu(width, 2 * width, 3, stride=2),
            *_conv_norm_relu(2 * width, 4 * width, 3, stride=2),
            *(ResidualBlock(4 * width) for _ in range(blocks)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class Decoder(nn.Module):
    """(B, 4*width, h, w) -> (B, 3, 4h, 4w) in [-1, 1]: residual blocks, two (nearest x2 + 3x3 conv)
    upsamplings (no transposed convs, so no checkerboard artefacts), a 7x7 output conv and tanh."""

    def __init__(self, width: int, blocks: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *(ResidualBlock(4 * width) for _ in range(blocks)),
            nn.Upsample(scale_factor=2, mode="nearest"),
            *_conv_norm_relu(4 * width, 2 * width, 3),
            nn.Upsample(scale_factor=2, mode="nearest"),
            *_conv_norm_relu(2 * width, width, 3),
            nn.ReflectionPad2d(3),
            nn.Conv2d(width, 3, 7, bias=True),
            nn.Tanh(),
        )

    def forward(self, f: Tensor) -> Tensor:
        return self.layers(f)


class HydraMixGenerator(nn.Module):
    """Encoder + mask-weighted feature mixing + decoder.

    Constructor arguments are exactly the ``model`` dict stored in a generator checkpoint.
    """

    downsampling = 4  # feature maps are at H/4 x W/4; masks must be given at that resolution

    def __init__(self, width: int, encoder_blocks: int, decoder_blocks: int) -> None:
        super().__init__()
        self.channels = 4 * width
        self.encoder = Encoder(width, encoder_blocks)
        self.decoder = Decoder(width, decoder_blocks)

    def encode(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) float in [-1, 1] -> (B, C, H/4, W/4)."""
        return self.encoder(x)

    @staticmethod
    def mix(feats: Tensor, masks: Tensor) -> Tensor:
        """(B, N, C, h, w) features and (B, N, h, w) masks summing to 1 over N -> (B, C, h, w) weighted
        sum."""
        return (feats * masks.unsqueeze(2).to(feats.dtype)).sum(dim=1)

    def decode(self, f: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, 3, 4h, 4w) in [-1, 1]."""
        return self.decoder(f)

    def forward(self, sources: Tensor, masks: Tensor) -> Tensor:
        """(B, N, 3, H, W) sources in [-1, 1], (B, N, H/4, W/4) masks -> (B, 3, H, W) mixes in [-1, 1]."""
        b, n = sources.shape[:2]
        feats = self.encode(sources.flatten(0, 1)).unflatten(0, (b, n))  # (B, N, C, H/4, W/4)
        return self.decode(self.mix(feats, masks))


class PatchDiscriminator(nn.Module):
    """CycleGAN/pix2pix PatchGAN: (B, 3, H, W) -> (B, 1, h', w') realness scores (raw, for the least-squares
    loss).

    ``n_layers`` stride-2 4x4 convs (LeakyReLU 0.2, InstanceNorm from the second on), then a stride-1 conv and
    the 1-channel stride-1 output conv; channels double per layer up to 8 * width. Receptive field: 34 px for
    n_layers=2, 70 px for n_layers=3 (CycleGAN's default).
    """

    def __init__(self, width: int, n_layers: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        channels = width
        for i in range(1, n_layers + 1):
            out = width * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(channels, out, 4, stride=stride, padding=1, bias=False),
                nn.InstanceNorm2d(out, affine=True),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def features(self, x: Tensor) -> list[Tensor]:
        """The same computation as ``forward``, keeping what feature matching compares: the activation after each
        LeakyReLU (n_layers + 1 maps, finest first), then the (B, 1, h', w') scores."""
        out = []
        for layer in self.layers:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                out.append(x)
        return [*out, x]


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = [
    "Decoder",
    "Encoder",
    "HydraMixGenerator",
    "PatchDiscriminator",
    "ResidualBlock",
    "count_parameters",
]
