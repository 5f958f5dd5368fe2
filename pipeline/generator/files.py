"""The files of the generator stage: the training checkpoint, the generator file, the loss curve and the PNG grid.

subset -> generator -> shards: ``train.train_generator`` writes and resumes from the training checkpoint (G, D,
both optimisers, the scaler and the loop's counters, tied to the config and the subset); the stage writes the
generator file with ``save_generator``, and synthesis rebuilds the generator from that file alone with
``load_generator`` (weights only, constructor arguments beside them). Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pipeline.core.atomic import write_file
from pipeline.core.config import to_dict
from pipeline.core.errors import HydraMixError
from pipeline.core.torch_io import load_torch, save_torch
from pipeline.generator.config import GeneratorConfig
from pipeline.generator.networks import HydraMixGenerator

GENERATOR_FORMAT = "hydramix-generator/1"
TRAIN_STATE_FORMAT = "hydramix-generator-train-state/1"
# Config keys that may change between a run and its resumption without changing what is being computed.
_RESUME_FREE_KEYS = ("device", "precision", "checkpoint_every", "log_every", "threads")


def _cpu_state(module: torch.nn.Module) -> dict[str, Tensor]:
    # Contiguous CPU copies: the file does not depend on the device or memory format it was trained with.
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}


def _resume_key(cfg: GeneratorConfig) -> dict[str, Any]:
    return {k: v for k, v in to_dict(cfg).items() if k not in _RESUME_FREE_KEYS}


def save_train_state(path, cfg, subset_sha256, g, d, opt_g, opt_d, scaler, state) -> None:
    """Write the training checkpoint atomically: plain (unwrapped) G and D, optimisers, scaler and the loop's
    ``state`` dict, with the config and subset they belong to."""
    save_torch(
        path,
        {
            "format": TRAIN_STATE_FORMAT,
            "config": _resume_key(cfg),
            "subset_sha256": subset_sha256,
            "generator": _cpu_state(g),
            "discriminator": _cpu_state(d),
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "scaler": scaler.state_dict(),
            **state,
            "window": {k: float(v) for k, v in state["window"].items()},
        },
    )


def load_train_state(path, cfg, subset_sha256, g, d, opt_g, opt_d, scaler, device) -> dict[str, Any]:
    """Restore models and optimisers from ``path``; return the loop state. HydraMixError if unusable."""
    try:
        ckpt = load_torch(path, "generator training checkpoint", map_location=device)
    except HydraMixError as exc:
        raise HydraMixError(
            f"{exc}; the unreadable checkpoint was left untouched: delete it to start training from scratch"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != TRAIN_STATE_FORMAT:
        raise HydraMixError(f"{path} is not a hydramix generator training checkpoint; it was left untouched")
    if ckpt["config"] != _resume_key(cfg) or ckpt["subset_sha256"] != subset_sha256:
        raise HydraMixError(f"checkpoint {path} belongs to a different config or subset; delete it to start over")
    g.load_state_dict(ckpt["generator"])
    d.load_state_dict(ckpt["discriminator"])
    opt_g.load_state_dict(ckpt["opt_g"])
    opt_d.load_state_dict(ckpt["opt_d"])
    scaler.load_state_dict(ckpt["scaler"])
    keys = ("step", "history", "window", "train_seconds", "source_images", "mixes")
    return {k: ckpt[k] for k in keys}


def save_generator(
    path: str | Path,
    generator: HydraMixGenerator,
    cfg: GeneratorConfig,
    class_names: tuple[str, ...],
    subset_sha256: str,
    step: int,
) -> None:
    """Write the self-describing generator file atomically: state_dict + everything synthesis needs."""
    save_torch(
        path,
        {
            "format": GENERATOR_FORMAT,
            "state_dict": _cpu_state(generator),
            "model": to_dict(cfg.model),
            "masks": to_dict(cfg.masks),
            "class_names": list(class_names),
            "resolution": cfg.resolution,
            "subset_sha256": subset_sha256,
            "step": step,
            "config": to_dict(cfg),
        },
    )


def load_generator(path: str | Path) -> tuple[HydraMixGenerator, dict[str, Any]]:
    """Rebuild the generator from a file written by ``save_generator``; returns (generator in eval mode on the
    CPU, metadata dict with "model", "masks", "class_names", "resolution", "subset_sha256", "step", "config").
    HydraMixError if the file is missing, not a hydramix generator, or corrupt."""
    path = Path(path)
    if path.is_dir():
        raise HydraMixError(f"generator file {path} is a directory; pass the generator .pt file inside it")
    if not path.is_file():
        raise HydraMixError(f"generator file {path} not found; run `hydramix train-generator` first")
    ckpt = load_torch(path, "generator file")
    if not isinstance(ckpt, dict) or ckpt.get("format") != GENERATOR_FORMAT:
        raise HydraMixError(f"{path}: not a hydramix generator file (format {GENERATOR_FORMAT} expected)")
    meta = {k: v for k, v in ckpt.items() if k not in ("state_dict", "format")}
    try:
        generator = HydraMixGenerator(**meta["model"])
        generator.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise HydraMixError(f"{path}: generator weights do not match their stored shape ({first})") from None
    return generator.eval(), meta


def write_loss_curve(path: str | Path, history: list[dict[str, float]]) -> None:
    """CSV with a header (step, losses...), one row per logged step, for ``dvc plots``; written atomically."""
    buf = io.StringIO()
    fields = list(history[0]) if history else ["step"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (v if k == "step" else f"{v:.6g}") for k, v in row.items()})
    write_file(path, lambda tmp: tmp.write_text(buf.getvalue()))


def write_png(path: str | Path, picture: np.ndarray) -> None:
    """(H, W, 3) uint8 -> PNG file, atomically."""
    write_file(path, lambda tmp: Image.fromarray(picture, mode="RGB").save(tmp, format="PNG"))
