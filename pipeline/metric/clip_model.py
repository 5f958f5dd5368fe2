"""The frozen open_clip model that scores, and its image side: weights -> **model** -> shards -> generality score.

``load_clip`` builds a ``LoadedClip`` (the frozen model plus what scoring needs: tokenizer, input size,
normalisation, autocast dtype, the learned temperature) from the file ``pipeline.metric.clip_weights`` found;
``clip_from_model`` does the same for a model already in memory (tests, benchmarks). ``preprocess`` is open_clip's
eval transform as batch tensor ops on the device and ``encode_images`` the image tower under inference mode and
autocast. The text side is ``pipeline.metric.text_embeddings``.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.core.devices import autocast, resolve_device, resolve_dtype
from pipeline.core.errors import HydraMixError
from pipeline.core.torch_io import load_error
from pipeline.metric.clip_weights import WeightsUnavailable, resolve_checkpoint

# A trained CLIP's temperature is clamped to 100 in training; a larger value would be a broken checkpoint.
_MAX_LOGIT_SCALE = 100.0


@dataclass(frozen=True, eq=False)
class LoadedClip:
    """A frozen open_clip model ready to score.

    image_size: (h, w) the image tower expects; mean/std: per-channel normalisation of [0, 1] pixels;
    resize_mode: 'shortest' (resize shorter side, centre crop) or 'squash'; identity: what the weights
    are (the text-cache key); dtype: the autocast dtype (float32 = none);
    logit_scale: the model's learned temperature.
    """

    model: torch.nn.Module
    tokenizer: Callable[[list[str]], torch.Tensor]
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str
    identity: str
    device: torch.device
    dtype: torch.dtype
    logit_scale: float


def score_dtype(device: torch.device, precision: str) -> torch.dtype:
    """'auto' is fp16 autocast on CUDA and fp32 on CPU (bf16's 8-bit mantissa visibly moves logits scaled by
    100, so it is opt-in on CPU); the other values are ``pipeline.core.devices.resolve_dtype``'s."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return resolve_dtype(device, precision)  # type: ignore[arg-type]


def load_clip(
    model_name: str,
    pretrained: str,
    device: str = "auto",
    precision: str = "auto",
    connect_timeout_s: float = 5.0,
) -> LoadedClip:
    """Load a frozen, pretrained open_clip model; WeightsUnavailable if the weights cannot be had."""
    import open_clip

    checkpoint, tag_cfg = resolve_checkpoint(model_name, pretrained, connect_timeout_s)
    torch_device = resolve_device(device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol warnings: the error below says it all
            model = open_clip.create_model(
                model_name,
                pretrained=checkpoint,
                pretrained_text=False,  # never fetch a separate text tower: the checkpoint holds both
                force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
            )
    except pickle.UnpicklingError as exc:  # open_clip loads with weights_only=True; never pass torch's advice on
        raise load_error(checkpoint, "CLIP checkpoint", exc) from None
    except Exception as exc:  # a file that exists but does not load is the user's to fix, not a skip
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise HydraMixError(f"cannot load {checkpoint} into open_clip model {model_name}: {first}") from None
    try:
        tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as exc:
        raise WeightsUnavailable(f"the tokenizer of {model_name} cannot be loaded: {exc}") from None
    cfg = {
        **model.visual.preprocess_cfg,
        **{k: tag_cfg[k] for k in ("mean", "std", "resize_mode") if k in tag_cfg},
    }
    identity = f"{model_name}|tag:{pretrained}" if tag_cfg else _file_identity(model_name, checkpoint)
    return clip_from_model(
        model,
        tokenizer,
        identity=identity,
        image_size=_pair(cfg["size"]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        resize_mode=cfg.get("resize_mode", "shortest"),
        device=torch_device,
        dtype=score_dtype(torch_device, precision),
    )


def clip_from_model(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    *,
    identity: str,
    image_size: tuple[int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    resize_mode: str,
    device: torch.device,
    dtype: torch.dtype,
) -> LoadedClip:
    """Freeze ``model`` (an open_clip CLIP) on ``device`` and bundle it with what scoring needs."""
    if resize_mode not in ("shortest", "squash"):
        raise HydraMixError(f"resize_mode '{resize_mode}' is not supported (use shortest or squash)")
    model = model.to(device).eval().requires_grad_(False)
    scale = min(float(model.logit_scale.exp()), _MAX_LOGIT_SCALE)
    return LoadedClip(
        model, tokenizer, image_size, tuple(mean), tuple(std), resize_mode, identity, device, dtype, scale
    )  # type: ignore[arg-type]


def _pair(size: Any) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _file_identity(model_name: str, path: str) -> str:
    st = os.stat(path)  # path + size + mtime: cheap, and changes whenever the file is replaced
    return f"{model_name}|file:{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"


def preprocess(clip: LoadedClip, images: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 on the device -> (B, 3, h, w) float32 normalised pixels for the image tower.

    Same steps as open_clip's eval transform (bicubic resize of the shorter side, centre crop, normalise),
    done as batch tensor ops; bicubic here is torch's, which differs from PIL's by rounding-level amounts.
    """
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    h, w = x.shape[-2:]
    th, tw = clip.image_size
    if clip.resize_mode == "squash":
        size = (th, tw)
    else:
        scale = max(th / h, tw / w)
        size = (max(th, round(h * scale)), max(tw, round(w * scale)))
    if (h, w) != size:
        x = torch.nn.functional.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    top, left = (size[0] - th) // 2, (size[1] - tw) // 2
    x = x[..., top : top + th, left : left + tw].clamp_(0.0, 1.0)  # bicubic overshoots; PIL clamps to uint8
    mean = torch.tensor(clip.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(clip.std, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def encode_images(clip: LoadedClip, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, h, w) preprocessed pixels -> (B, D) float32 unit image embeddings (inference mode, autocast)."""
    with torch.inference_mode(), autocast(clip.device, clip.dtype):
        features = clip.model.encode_image(pixels)
    return torch.nn.functional.normalize(features.float(), dim=-1)
