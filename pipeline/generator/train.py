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
from pipeline.core.torch_io import checkpoint_not_written
from pipeline.data.imageset import ImageSet
from pipeline.generator.batches import TRAIN_STREAM, Batch, draw_batch, make_batch, prepare_split
from pipeline.generator.config import GeneratorConfig, LossConfig
from pipeline.generator.evaluation import evaluate, picture_grid
from pipeline.generator.files import load_train_state, save_train_state
from pipeline.generator.losses import (
    feature_matching_loss,
    image_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    mix_loss,
    r1_penalty,
)
from pipeline.generator.masks import pixel_composite, to_feature_resolution
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


def build_models(cfg: GeneratorConfig) -> tuple[HydraMixGenerator, PatchDiscriminator]:
    """Generator and discriminator initialised from ``cfg.seed`` alone (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        g = HydraMixGenerator(**to_dict(cfg.model))
        d = PatchDiscriminator(cfg.discriminator.width, cfg.discriminator.n_layers)
    return g, d


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
        kept = g.encode(flat[keep])  # (K, C, H/4, W/4): padding slots are not encoded
        feats = kept.new_zeros((flat.shape[0], *kept.shape[1:])).index_copy(0, keep.nonzero()[:, 0], kept)
        mixed = g.mix(feats.unflatten(0, masks_f.shape[:2]), masks_f)  # (B, C, H/4, W/4); 0 mask on padding
        return g.decode(torch.cat([kept, mixed]))


@dataclass(frozen=True, eq=False)
class Nets:
    """What a step trains: G's training forward (a GeneratorPass) and D, each in DistributedDataParallel under
    torchrun, their optimisers and the loss scaler (active for fp16 only)."""

    g: nn.Module
    d: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scaler: torch.amp.GradScaler


def train_step(
    nets: Nets, batch: Batch, weights: LossConfig, dtype: torch.dtype, memory_format: torch.memory_format
) -> dict[str, Tensor]:
    """One G step with D frozen, then one D step on the detached mixes. Returns the losses as detached
    scalars: g_total, reconstruction, mix, adversarial, feature_matching (when its weight is > 0), d (R1
    included) and r1 (the unweighted penalty, when its weight is > 0)."""
    sources, masks, valid = batch.sources, batch.masks, batch.valid
    b = sources.shape[0]
    flat = sources.flatten(0, 1)  # (B*N, 3, H, W)
    keep = valid.flatten()
    masks_f = to_feature_resolution(masks, HydraMixGenerator.downsampling)  # (B, N, H/4, W/4)
    real = sources[:, 0].contiguous(memory_format=memory_format)  # slot 0 is always real

    # G step. D's frozen forward runs outside DDP: it computes no D gradients, so there is nothing to synchronise.
    d_frozen = distributed.unwrap(nets.d)
    d_frozen.requires_grad_(False)
    with autocast(sources.device, dtype):
        out = nets.g(flat.contiguous(memory_format=memory_format), masks_f, keep)  # (K + B, 3, H, W)
        if weights.feature_matching > 0:
            *fake_features, fake_scores = d_frozen.features(out[-b:])
            with torch.no_grad():
                real_features = d_frozen.features(real)[:-1]
        else:
            fake_scores = d_frozen(out[-b:])
    out = out.float()
    recon, mixes = out[:-b], out[-b:]
    l_rec = image_loss(recon, flat[keep], weights.pyramid, weights.pyramid_levels) * batch.source_share
    composite = pixel_composite(sources, masks)
    l_mix = mix_loss(mixes, composite, weights.pyramid, weights.pyramid_levels, weights.mix_levels)
    l_adv = lsgan_generator_loss(fake_scores)
    g_loss = weights.reconstruction * l_rec + weights.mix * l_mix + weights.adversarial * l_adv
    losses = {"reconstruction": l_rec, "mix": l_mix, "adversarial": l_adv}
    if weights.feature_matching > 0:
        losses["feature_matching"] = feature_matching_loss(real_features, fake_features)
        g_loss = g_loss + weights.feature_matching * losses["feature_matching"]
    nets.opt_g.zero_grad(set_to_none=True)
    nets.scaler.scale(g_loss).backward()
    nets.scaler.step(nets.opt_g)

    # D step, on the detached mixes. With R1, D's real pass runs in float32: the penalty differentiates it twice,
    # and under fp16 autocast the gradient with respect to the input (which the loss scale does not reach)
    # would underflow.
    d_frozen.requires_grad_(True)
    if weights.r1 > 0:
        real = real.detach().requires_grad_(True)
    with autocast(sources.device, torch.float32 if weights.r1 > 0 else dtype):
        real_scores = nets.d(real)
    with autocast(sources.device, dtype):
        fake_scores = nets.d(mixes.detach().contiguous(memory_format=memory_format))
    d_loss = lsgan_discriminator_loss(real_scores, fake_scores)
    if weights.r1 > 0:
        l_r1 = r1_penalty(real_scores, real)
        d_loss = d_loss + 0.5 * weights.r1 * l_r1
    nets.opt_d.zero_grad(set_to_none=True)
    nets.scaler.scale(d_loss).backward()
    nets.scaler.step(nets.opt_d)
    nets.scaler.update()
    losses["d"] = d_loss
    if weights.r1 > 0:
        losses["r1"] = l_r1
    # Detached tensors, not floats: converting here would synchronise with the GPU every step.
    return {k: v.detach() for k, v in {"g_total": g_loss, **losses}.items()}


def lr_factor(step: int, cfg: GeneratorConfig) -> float:
    """Step schedule: multiply by ``lr_gamma`` at each milestone fraction of ``iterations`` already passed."""
    passed = sum(step >= round(m * cfg.iterations) for m in cfg.lr_milestones)
    return cfg.lr_gamma**passed


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
    fmt = torch.channels_last if device.type == "cuda" or dtype == torch.bfloat16 else torch.contiguous_format
    split = prepare_split(train, cfg, device)

    g, d = build_models(cfg)
    g.to(device=device, memory_format=fmt)
    d.to(device=device, memory_format=fmt)
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
    nets = Nets(distributed.wrap(GeneratorPass(g), device), distributed.wrap(d, device), opt_g, opt_d, scaler)

    quiet = not progress or not distributed.is_main()
    bar = tqdm(total=cfg.iterations, initial=state["step"], desc="train-generator", unit="step", disable=quiet)
    g.train()
    d.train()
    seconds_before, loop_start = state["train_seconds"], time.perf_counter()
    while state["step"] < cfg.iterations:
        step = state["step"]
        # Every process draws the same global batch and trains on its part (with that part's masks).
        seeds, draw = draw_batch(split, cfg, TRAIN_STREAM, step, cfg.batch_size)
        batch = make_batch(split, seeds, draw, part)
        for opt, base in ((opt_g, cfg.lr), (opt_d, cfg.lr_discriminator)):
            for group in opt.param_groups:
                group["lr"] = base * lr_factor(step, cfg)
        losses = train_step(nets, batch, cfg.losses, dtype, fmt)
        losses = distributed.mean_over_ranks(losses)  # global-batch losses for the log

        state["step"] = step + 1
        state["source_images"] += int(draw.n.sum())  # the global batch
        state["mixes"] += len(seeds)
        if (row := _log_losses(state, losses, cfg)) is not None:
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k != "step"}, refresh=False)
        bar.update(1)
        due = state["step"] % cfg.checkpoint_every == 0 or state["step"] == cfg.iterations
        if checkpoint_path is not None and due and distributed.is_main():
            _synchronize(device)
            state["train_seconds"] = seconds_before + time.perf_counter() - loop_start
            try:
                save_train_state(checkpoint_path, cfg, subset_sha256, g, d, opt_g, opt_d, scaler, state)
            except WriteError as exc:
                raise checkpoint_not_written(exc, state["step"], cfg.iterations, saved_step) from None
            saved_step = state["step"]
    _synchronize(device)
    state["train_seconds"] = seconds_before + time.perf_counter() - loop_start
    bar.close()

    g.eval()
    metrics = evaluate(g, split, cfg, dtype, fmt)
    grid = picture_grid(g, split, cfg, dtype)
    metrics.update(_run_metrics(state, resumed_from, time.perf_counter() - wall_start, device, dtype))
    metrics["parameters"] = {"generator": count_parameters(g), "discriminator": count_parameters(d)}
    g.to(device="cpu", memory_format=torch.contiguous_format)
    return TrainResult(generator=g, history=state["history"], metrics=metrics, grid=grid)


def _log_losses(state: dict[str, Any], losses: dict[str, Tensor], cfg: GeneratorConfig) -> dict[str, float] | None:
    """Add a step's losses to the log window; at the end of a window (every ``log_every`` steps and the last
    step) append the window's means to ``state["history"]`` and return that row."""
    window = state["window"]
    for k, v in losses.items():
        window[k] = window.get(k, 0.0) + v
    window["_n"] = window.get("_n", 0.0) + 1
    if state["step"] % cfg.log_every and state["step"] != cfg.iterations:
        return None
    count = window.pop("_n")
    row = {"step": state["step"], **{k: float(v) / count for k, v in window.items()}}
    state["history"].append(row)
    state["window"] = {}
    return row


def _run_metrics(
    state: dict[str, Any], resumed_from: int, wall_seconds: float, device: torch.device, dtype: torch.dtype
) -> dict[str, Any]:
    """The metrics the loop itself knows: steps, final losses, and how the run went (``RUN_KEYS``)."""
    seconds = max(state["train_seconds"], 1e-9)
    return {
        "step": state["step"],
        "resumed_from_step": resumed_from,
        "final_losses": state["history"][-1] if state["history"] else {},
        "throughput": {
            "source_images_per_s": state["source_images"] / seconds,
            "mixes_per_s": state["mixes"] / seconds,
        },
        "train_seconds": state["train_seconds"],
        "wall_seconds": wall_seconds,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "world_size": distributed.world_size(),
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
