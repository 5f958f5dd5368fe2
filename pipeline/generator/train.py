"""Training the HydraMix generator on a subset's train split, its checkpoints, and its quality report.

Data path (airbench style): the whole train split goes to the device once as a uint8 tensor; each step gathers
a batch of mixes (B mixes of N same-class sources), flips sources as a tensor op and draws masks from
superpixels computed once at start. Every step's randomness is derived from ``(seed, step)``, so a run resumed
from a checkpoint needs no RNG state and ends with exactly the weights of an uninterrupted run (on CPU; CUDA
kernels may differ in the last bit between runs).

Public API: ``GeneratorConfig`` (params section ``generator``), ``train_generator``, ``save_generator``,
``load_generator``, ``write_loss_curve``, ``write_png``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from pipeline.core import distributed
from pipeline.core.atomic import write_file
from pipeline.core.config import to_dict
from pipeline.core.devices import autocast, resolve_device, resolve_dtype
from pipeline.core.errors import HydraMixError, WriteError
from pipeline.core.progress import note, tqdm
from pipeline.core.threads import Threads, check_threads
from pipeline.core.torch_io import load_torch, save_torch
from pipeline.data.imageset import ImageSet
from pipeline.generator.losses import image_loss, lsgan_discriminator_loss, lsgan_generator_loss
from pipeline.generator.masks import (
    SEGMENT_KINDS,
    MaskConfig,
    MaskSampler,
    colorize,
    derive_seeds,
    pixel_composite,
    segment_images,
    to_feature_resolution,
)
from pipeline.generator.networks import HydraMixGenerator, PatchDiscriminator, count_parameters, to_signed
from pipeline.generator.quality import fidelity_report, psnr

GENERATOR_FORMAT = "hydramix-generator/1"
TRAIN_STATE_FORMAT = "hydramix-generator-train-state/1"
# Random streams: training step s draws from (seed, _TRAIN, s); evaluation batch i from (seed, _EVAL, i).
_TRAIN, _EVAL, _GRID = 1, 2, 3
# Keys of TrainResult.metrics that describe the run (time, speed, hardware) rather than the generator: a stage
# writes them apart from the results, so a re-run elsewhere changes no metric.
RUN_KEYS = ("throughput", "train_seconds", "wall_seconds", "device", "dtype", "world_size")
# Config keys that may change between a run and its resumption without changing what is being computed.
_RESUME_FREE_KEYS = ("device", "precision", "checkpoint_every", "log_every", "threads")


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
    bands."""

    reconstruction: float = 1.0
    mix: float = 1.0
    adversarial: float = 0.05
    pyramid: float = 1.0
    pyramid_levels: int = 3

    def __post_init__(self) -> None:
        if min(self.reconstruction, self.mix, self.adversarial, self.pyramid) < 0 or self.pyramid_levels < 0:
            raise ValueError(f"loss weights and pyramid_levels must be >= 0, got {self}")


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


@dataclass(frozen=True, eq=False)
class TrainResult:
    """What a finished run hands to its stage: the trained generator (eval mode, CPU), the loss-curve rows,
    the metrics dict and the picture grid ((H, W, 3) uint8)."""

    generator: HydraMixGenerator
    history: list[dict[str, float]]
    metrics: dict[str, Any]
    grid: np.ndarray


# ------------------------------------------------------------------------------------------------------------
# Data: the split on the device once, batches of same-class mixes as tensor ops.


def prepare_images(train: ImageSet, cfg: GeneratorConfig) -> np.ndarray:
    """(M, R, R, 3) uint8 train images at ``cfg.resolution``; resized once only if ``resize_subset`` says
    so."""
    if train.resolution == cfg.resolution:
        return train.images
    if not cfg.resize_subset:
        raise HydraMixError(
            f"the subset is {train.resolution} px but generator.resolution is {cfg.resolution}; "
            "use a subset at that resolution or set generator.resize_subset: true"
        )
    return resize_images(train.images, cfg.resolution)


def resize_images(images: np.ndarray, resolution: int) -> np.ndarray:
    """(M, H, W, 3) uint8 -> (M, R, R, 3) uint8: antialiased bicubic, rounded (how a subset meets a generator
    trained with ``resize_subset``, in training and in synthesis alike)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(resolution, resolution), mode="bicubic", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def class_rows(train: ImageSet, cfg: GeneratorConfig) -> list[np.ndarray]:
    """Row positions per class; HydraMixError if a class cannot supply the sources one mix needs."""
    n_max = cfg.masks.n_sources[1]
    need = 2 if cfg.cap_sources_to_class_size else n_max
    rows = [np.flatnonzero(train.labels == c) for c in range(len(train.class_names))]
    for name, members in zip(train.class_names, rows, strict=True):
        if len(members) < need:
            hint = (
                "a mix needs at least 2 images"
                if cfg.cap_sources_to_class_size
                else "lower generator.masks.n_sources or set generator.cap_sources_to_class_size: true"
            )
            raise HydraMixError(
                f"class '{name}' has {len(members)} train image(s) but a mix needs {need} sources ({hint})"
            )
    return rows


def draw_mixes(
    rng: np.random.Generator, rows_per_class: list[np.ndarray], batch: int, cfg: GeneratorConfig
) -> tuple[np.ndarray, np.ndarray]:
    """One batch of mixes: (B, N) int64 source rows (-1 = padding after the real sources) and (B, N) bool
    flips.

    N is drawn once per batch from ``masks.n_sources``; each mix takes N distinct images of one random class
    (fewer, padded, only where ``cap_sources_to_class_size`` allows a small class).
    """
    lo, hi = cfg.masks.n_sources
    n = int(rng.integers(lo, hi + 1))
    classes = rng.integers(len(rows_per_class), size=batch)
    rows = np.full((batch, n), -1, dtype=np.int64)
    for b, c in enumerate(classes):
        members = rows_per_class[c]
        k = min(n, len(members))
        rows[b, :k] = rng.choice(members, size=k, replace=False)
    flips = (rng.random((batch, n)) < 0.5) & (rows >= 0) if cfg.flip else np.zeros((batch, n), dtype=bool)
    return rows, flips


def gather_sources(images: Tensor, rows: np.ndarray, flips: np.ndarray) -> tuple[Tensor, Tensor]:
    """images (M, 3, H, W) uint8 on the device -> (B, N, 3, H, W) float in [-1, 1] (padding = 0) and (B, N)
    valid."""
    device = images.device
    rows_t = torch.from_numpy(rows).to(device)
    valid = rows_t >= 0
    x = to_signed(images[rows_t.clamp_min(0)])  # (B, N, 3, H, W)
    flip = torch.from_numpy(flips).to(device)[..., None, None, None]
    x = torch.where(flip, x.flip(-1), x)
    return x * valid[..., None, None, None], valid


def _seed_of(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**62))


# ------------------------------------------------------------------------------------------------------------
# One training step: G with D frozen, then D on detached mixes.


class GeneratorPass(nn.Module):
    """The generator's training forward as one module call, so that DistributedDataParallel (which hooks
    ``forward``) can wrap it: encode the B*N sources, mix them, and decode the real sources' reconstructions
    and the B mixes in one decoder pass."""

    def __init__(self, generator: HydraMixGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, flat: Tensor, masks_f: Tensor, keep: Tensor) -> Tensor:
        """flat (B*N, 3, H, W) sources, masks_f (B, N, H/4, W/4), keep (B*N,) bool (real sources) ->
        (K + B, 3, H, W): the K kept sources' reconstructions, then the B mixes."""
        g = self.generator
        feats = g.encode(flat)  # (B*N, C, H/4, W/4)
        mixed = g.mix(feats.unflatten(0, masks_f.shape[:2]), masks_f)  # (B, C, H/4, W/4)
        return g.decode(torch.cat([feats[keep], mixed]))


def train_step(
    g: GeneratorPass | nn.Module,
    d: PatchDiscriminator | nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    sources: Tensor,
    masks: Tensor,
    valid: Tensor,
    weights: LossConfig,
    dtype: torch.dtype,
    channels_last: bool,
) -> dict[str, Tensor]:
    """One G step and one D step on a batch. sources (B, N, 3, H, W) in [-1, 1]; masks (B, N, H, W) at image
    resolution summing to 1 over N; valid (B, N) bool. ``g`` is a GeneratorPass and ``d`` the discriminator,
    either possibly in DistributedDataParallel. Returns the step's losses as detached scalars."""
    b = sources.shape[0]
    device = sources.device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    flat = sources.flatten(0, 1)  # (B*N, 3, H, W)
    keep = valid.flatten()
    masks_f = to_feature_resolution(masks, HydraMixGenerator.downsampling)  # (B, N, H/4, W/4)

    # D's frozen forward runs outside DDP: it computes no D gradients, so there is nothing to synchronise.
    d_frozen = distributed.unwrap(d)
    d_frozen.requires_grad_(False)
    with autocast(device, dtype):
        out = g(flat.contiguous(memory_format=fmt), masks_f, keep)  # (K + B, 3, H, W)
        fake_scores = d_frozen(out[-b:])
    out = out.float()
    recon, mixes = out[:-b], out[-b:]
    l_rec = image_loss(recon, flat[keep], weights.pyramid, weights.pyramid_levels)
    l_mix = image_loss(mixes, pixel_composite(sources, masks), weights.pyramid, weights.pyramid_levels)
    l_adv = lsgan_generator_loss(fake_scores)
    g_loss = weights.reconstruction * l_rec + weights.mix * l_mix + weights.adversarial * l_adv
    opt_g.zero_grad(set_to_none=True)
    scaler.scale(g_loss).backward()
    scaler.step(opt_g)

    d_frozen.requires_grad_(True)
    with autocast(device, dtype):
        real_scores = d(sources[:, 0].contiguous(memory_format=fmt))  # slot 0 is always a real source
        fake_scores = d(mixes.detach().contiguous(memory_format=fmt))
    d_loss = lsgan_discriminator_loss(real_scores, fake_scores)
    opt_d.zero_grad(set_to_none=True)
    scaler.scale(d_loss).backward()
    scaler.step(opt_d)
    scaler.update()
    # Detached tensors, not floats: converting here would synchronise with the GPU every step.
    losses = {"g_total": g_loss, "reconstruction": l_rec, "mix": l_mix, "adversarial": l_adv, "d": d_loss}
    return {k: v.detach() for k, v in losses.items()}


def lr_factor(step: int, cfg: GeneratorConfig) -> float:
    """Step schedule: multiply by ``lr_gamma`` at each milestone fraction of ``iterations`` already passed."""
    passed = sum(step >= round(m * cfg.iterations) for m in cfg.lr_milestones)
    return cfg.lr_gamma**passed


# ------------------------------------------------------------------------------------------------------------
# The loop.


def train_generator(
    train: ImageSet,
    cfg: GeneratorConfig,
    *,
    subset_sha256: str,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train generator and discriminator on ``train`` (the subset's train split) for ``cfg.iterations`` steps.

    If ``checkpoint_path`` is given, the full training state is written there atomically every
    ``cfg.checkpoint_every`` steps and after the last step and, if a compatible checkpoint already exists,
    training resumes from it (an unreadable or incompatible one is an error and is left untouched; one written
    after the last step resumes straight to the evaluation). The caller deletes the checkpoint once it has
    written its outputs. A checkpoint that cannot be written stops training with a WriteError that says which
    checkpoint is kept. ``subset_sha256`` identifies the subset (checked on resume, stored in the generator
    file).
    """
    wall_start = time.perf_counter()
    device = distributed.place(resolve_device(cfg.device))
    part = distributed.batch_part(cfg.batch_size)  # this process's mixes of each global batch
    dtype = resolve_dtype(device, cfg.precision)
    channels_last = device.type == "cuda" or dtype == torch.bfloat16
    rows_per_class = class_rows(train, cfg)
    images_np = prepare_images(train, cfg)
    images = torch.from_numpy(images_np).permute(0, 3, 1, 2).contiguous().to(device)  # (M, 3, R, R) uint8

    # Superpixels once, before the loop (grid masks only need the shape).
    if cfg.masks.kind in SEGMENT_KINDS:
        segments = segment_images(images_np, cfg.masks)
    else:
        segments = np.zeros(images_np.shape[:3], dtype=np.int32)
    sampler = MaskSampler(segments, cfg.masks)

    g, d = build_models(cfg)
    g.to(device=device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    d.to(device=device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_discriminator, betas=(0.5, 0.999))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    state = {"step": 0, "history": [], "window": {}, "train_seconds": 0.0, "source_images": 0, "mixes": 0}
    checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
    if checkpoint_path is not None and checkpoint_path.exists():
        state = _load_train_state(checkpoint_path, cfg, subset_sha256, g, d, opt_g, opt_d, scaler, device)
        if progress and distributed.is_main():
            note(f"train-generator: resuming from step {state['step']} of {cfg.iterations} ({checkpoint_path})")
    resumed_from, saved_step = state["step"], state["step"] or None

    # Under torchrun: gradients averaged over the processes (identical initial weights come from cfg.seed
    # or the shared checkpoint); without it these are g's training forward and d themselves.
    g_train = distributed.wrap(GeneratorPass(g), device)
    d_train = distributed.wrap(d, device)
    bar = tqdm(
        total=cfg.iterations,
        initial=state["step"],
        desc="train-generator",
        unit="step",
        disable=not progress or not distributed.is_main(),
    )
    g.train()
    d.train()
    seconds_before, loop_start = state["train_seconds"], time.perf_counter()
    while state["step"] < cfg.iterations:
        step = state["step"]
        rng = np.random.default_rng([cfg.seed, _TRAIN, step])
        # Every process draws the same global batch and trains on its part; per-row mask seeds (as
        # sampler.sample derives them from one batch seed) make a part's masks those of the global batch.
        rows, flips = draw_mixes(rng, rows_per_class, cfg.batch_size, cfg)
        mask_seeds = derive_seeds(_seed_of(rng), np.arange(len(rows)))
        masks = sampler.sample(rows[part], seed=mask_seeds[part], flipped=flips[part]).to(device)
        sources, valid = gather_sources(images, rows[part], flips[part])
        for opt, base in ((opt_g, cfg.lr), (opt_d, cfg.lr_discriminator)):
            for group in opt.param_groups:
                group["lr"] = base * lr_factor(step, cfg)
        losses = train_step(
            g_train, d_train, opt_g, opt_d, scaler, sources, masks, valid, cfg.losses, dtype, channels_last
        )
        losses = distributed.mean_over_ranks(losses)  # global-batch losses for the log

        state["step"] = step + 1
        state["source_images"] += int((rows >= 0).sum())  # the global batch
        state["mixes"] += len(rows)
        window = state["window"]
        for k, v in losses.items():
            window[k] = window.get(k, 0.0) + v
        window["_n"] = window.get("_n", 0.0) + 1
        if state["step"] % cfg.log_every == 0 or state["step"] == cfg.iterations:
            count = window.pop("_n")
            row = {"step": state["step"], **{k: float(v) / count for k, v in window.items()}}
            state["history"].append(row)
            state["window"] = {}
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k != "step"}, refresh=False)
        bar.update(1)
        due = state["step"] % cfg.checkpoint_every == 0 or state["step"] == cfg.iterations
        if checkpoint_path is not None and due and distributed.is_main():
            _synchronize(device)
            state["train_seconds"] = seconds_before + time.perf_counter() - loop_start
            try:
                _save_train_state(checkpoint_path, cfg, subset_sha256, g, d, opt_g, opt_d, scaler, state)
            except WriteError as exc:
                kept = f"the checkpoint of step {saved_step} is kept" if saved_step else "no checkpoint was kept"
                raise WriteError(
                    f"{exc}; training stopped at step {state['step']} of {cfg.iterations} and {kept}; "
                    "free space and rerun the same command to resume"
                ) from None
            saved_step = state["step"]
    _synchronize(device)
    state["train_seconds"] = seconds_before + time.perf_counter() - loop_start
    bar.close()

    g.eval()
    metrics = evaluate(g, images, rows_per_class, sampler, cfg, dtype, channels_last)
    grid = picture_grid(g, images, rows_per_class, sampler, cfg, dtype, channels_last)
    metrics.update(
        {
            "step": state["step"],
            "resumed_from_step": resumed_from,
            "final_losses": state["history"][-1] if state["history"] else {},
            "throughput": {
                "source_images_per_s": state["source_images"] / max(state["train_seconds"], 1e-9),
                "mixes_per_s": state["mixes"] / max(state["train_seconds"], 1e-9),
            },
            "train_seconds": state["train_seconds"],
            "wall_seconds": time.perf_counter() - wall_start,
            "device": str(device),
            "dtype": str(dtype).removeprefix("torch."),
            "world_size": distributed.world_size(),
            "parameters": {"generator": count_parameters(g), "discriminator": count_parameters(d)},
        }
    )
    g.to(device="cpu", memory_format=torch.contiguous_format)
    return TrainResult(generator=g, history=state["history"], metrics=metrics, grid=grid)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_models(cfg: GeneratorConfig) -> tuple[HydraMixGenerator, PatchDiscriminator]:
    """Generator and discriminator initialised from ``cfg.seed`` alone (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        g = HydraMixGenerator(**to_dict(cfg.model))
        d = PatchDiscriminator(cfg.discriminator.width, cfg.discriminator.n_layers)
    return g, d


# ------------------------------------------------------------------------------------------------------------
# Evaluation and the picture grid.


@torch.inference_mode()
def evaluate(
    g: HydraMixGenerator,
    images: Tensor,
    rows_per_class: list[np.ndarray],
    sampler: MaskSampler,
    cfg: GeneratorConfig,
    dtype: torch.dtype,
    channels_last: bool,
) -> dict[str, Any]:
    """Reconstruction PSNR over every train image and mask fidelity (with references) over ``eval_mixes``
    mixes drawn from a fixed evaluation stream (no flips)."""
    device = images.device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    psnrs = []
    for start in range(0, len(images), 64):
        x = to_signed(images[start : start + 64])
        with autocast(device, dtype):
            y = g.decode(g.encode(x.contiguous(memory_format=fmt))).float()
        psnrs.append(psnr((y + 1) / 2, (x + 1) / 2).cpu())
    eval_cfg = _without_flips(cfg)
    reports = []
    for i, start in enumerate(range(0, cfg.eval_mixes, cfg.batch_size)):
        rng = np.random.default_rng([cfg.seed, _EVAL, i])
        rows, flips = draw_mixes(rng, rows_per_class, min(cfg.batch_size, cfg.eval_mixes - start), eval_cfg)
        masks = sampler.sample(rows, seed=_seed_of(rng), flipped=flips).to(device)
        sources, valid = gather_sources(images, rows, flips)
        with autocast(device, dtype):
            mix = g(sources.contiguous(), to_feature_resolution(masks, HydraMixGenerator.downsampling)).float()
        reports.append((len(rows), fidelity_report((mix + 1) / 2, (sources + 1) / 2, masks, valid)))
    return {
        "reconstruction_psnr_db": float(torch.cat(psnrs).mean()),
        "mask_fidelity": _weighted_fidelity(reports),
        "eval_mixes": cfg.eval_mixes,
    }


def _without_flips(cfg: GeneratorConfig) -> GeneratorConfig:
    return dataclasses.replace(cfg, flip=False)


def _weighted_fidelity(reports: list[tuple[int, dict[str, dict]]]) -> dict[str, dict[str, float]]:
    """Region-count-weighted means over evaluation batches, per method (generator / references)."""
    out: dict[str, dict[str, float]] = {}
    for method in reports[0][1]:
        total = sum(r[method]["regions"] for _, r in reports)
        entry = {
            key: sum(r[method][key] * r[method]["regions"] for _, r in reports if r[method]["regions"]) / max(total, 1)
            for key in ("assigned_db", "non_assigned_db", "gap_db")
        }
        entry["regions"] = total
        out[method] = entry
    return out


@torch.inference_mode()
def picture_grid(
    g: HydraMixGenerator,
    images: Tensor,
    rows_per_class: list[np.ndarray],
    sampler: MaskSampler,
    cfg: GeneratorConfig,
    dtype: torch.dtype,
    channels_last: bool,
) -> np.ndarray:
    """(H, W, 3) uint8 picture: one row per mix (``grid_mixes`` rows, N = the largest N), columns = the N
    sources, the mask coloured by source, the pixel composite, the generator's mix."""
    device = images.device
    rng = np.random.default_rng([cfg.seed, _GRID])
    hi = cfg.masks.n_sources[1]
    grid_cfg = replace_n(_without_flips(cfg), hi)
    rows, flips = draw_mixes(rng, rows_per_class, cfg.grid_mixes, grid_cfg)
    masks = sampler.sample(rows, seed=_seed_of(rng), flipped=flips).to(device)
    sources, valid = gather_sources(images, rows, flips)
    with autocast(device, dtype):
        mix = g(sources, to_feature_resolution(masks, HydraMixGenerator.downsampling)).float()
    to_u8 = lambda x: ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu()  # noqa: E731
    tiles = [to_u8(sources[:, i]) for i in range(sources.shape[1])]
    tiles += [colorize(masks.cpu()), to_u8(pixel_composite(sources, masks)), to_u8(mix)]
    b, res = len(rows), images.shape[-1]
    scale = max(1, 64 // res)  # tiny images are scaled up (nearest) so a person can see them
    gap = 2
    side = res * scale
    canvas = np.full((b * (side + gap) + gap, len(tiles) * (side + gap) + gap, 3), 255, dtype=np.uint8)
    for col, tile in enumerate(tiles):
        big = tile.repeat_interleave(scale, -1).repeat_interleave(scale, -2).permute(0, 2, 3, 1).numpy()
        for row in range(b):
            y, x = gap + row * (side + gap), gap + col * (side + gap)
            canvas[y : y + side, x : x + side] = big[row]
    return canvas


def replace_n(cfg: GeneratorConfig, n: int) -> GeneratorConfig:
    """``cfg`` with ``masks.n_sources`` fixed to ``n``."""
    return dataclasses.replace(cfg, masks=dataclasses.replace(cfg.masks, n_sources=(n, n)))


# ------------------------------------------------------------------------------------------------------------
# Files: checkpoints (training state), the generator file, the loss curve, the PNG grid.


def _cpu_state(module: torch.nn.Module) -> dict[str, Tensor]:
    # Contiguous CPU copies: the file does not depend on the device or memory format it was trained with.
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}


def _resume_key(cfg: GeneratorConfig) -> dict[str, Any]:
    return {k: v for k, v in to_dict(cfg).items() if k not in _RESUME_FREE_KEYS}


def _save_train_state(path, cfg, subset_sha256, g, d, opt_g, opt_d, scaler, state) -> None:
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


def _load_train_state(path, cfg, subset_sha256, g, d, opt_g, opt_d, scaler, device) -> dict[str, Any]:
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
