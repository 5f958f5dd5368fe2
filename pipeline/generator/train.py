"""Training the HydraMix generator on a subset's train split: the loop and its step.

subset -> generator. ``train_generator`` is the whole run: the split goes to the device once (``batches``), the
networks are built from ``cfg.seed``, each step draws a batch of same-class mixes and runs ``train_step`` (G with
D frozen, then D on the detached mixes), a checkpoint is written every ``checkpoint_every`` steps (``files``),
and the trained generator is evaluated and pictured at the end (``evaluation``). Every step's randomness is
derived from ``(seed, step)``, so a run resumed from a checkpoint needs no RNG state and ends with exactly the
weights of an uninterrupted run (on CPU; CUDA kernels may differ in the last bit between runs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.core import distributed
from pipeline.core.config import to_dict
from pipeline.core.devices import autocast, resolve_device, resolve_dtype
from pipeline.core.errors import WriteError
from pipeline.core.progress import note, tqdm
from pipeline.data.imageset import ImageSet
from pipeline.generator.batches import TRAIN_STREAM, class_rows, draw_mixes, gather_sources, prepare_images, seed_of
from pipeline.generator.config import GeneratorConfig, LossConfig
from pipeline.generator.evaluation import evaluate, picture_grid
from pipeline.generator.files import load_train_state, save_train_state
from pipeline.generator.losses import image_loss, lsgan_discriminator_loss, lsgan_generator_loss
from pipeline.generator.masks import (
    SEGMENT_KINDS,
    MaskSampler,
    derive_seeds,
    pixel_composite,
    segment_images,
    to_feature_resolution,
)
from pipeline.generator.networks import HydraMixGenerator, PatchDiscriminator, count_parameters

# Keys of TrainResult.metrics that describe the run (time, speed, hardware) rather than the generator: a stage
# writes them apart from the results, so a re-run elsewhere changes no metric.
RUN_KEYS = ("throughput", "train_seconds", "wall_seconds", "device", "dtype", "world_size")


@dataclass(frozen=True, eq=False)
class TrainResult:
    """What a finished run hands to its stage: the trained generator (eval mode, CPU), the loss-curve rows,
    the metrics dict and the picture grid ((H, W, 3) uint8)."""

    generator: HydraMixGenerator
    history: list[dict[str, float]]
    metrics: dict[str, Any]
    grid: np.ndarray


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
        state = load_train_state(checkpoint_path, cfg, subset_sha256, g, d, opt_g, opt_d, scaler, device)
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
        rng = np.random.default_rng([cfg.seed, TRAIN_STREAM, step])
        # Every process draws the same global batch and trains on its part; per-row mask seeds (as
        # sampler.sample derives them from one batch seed) make a part's masks those of the global batch.
        rows, flips = draw_mixes(rng, rows_per_class, cfg.batch_size, cfg)
        mask_seeds = derive_seeds(seed_of(rng), np.arange(len(rows)))
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
                save_train_state(checkpoint_path, cfg, subset_sha256, g, d, opt_g, opt_d, scaler, state)
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
