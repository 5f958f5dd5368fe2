"""Train a classifier from scratch on a real subset, optionally plus a frozen synthetic dataset.

Protocol (after ChimeraMix): SGD with Nesterov momentum, weight decay, cosine learning rate per step after
a short linear warm-up, a fixed iteration budget, optional label smoothing, and the last iterate is the result
(no model selection on the test split). Data path: the images are put on the device once as uint8 tensors;
each step draws indices (epoch-style shuffling per source), gathers, augments as batch ops and normalises on
the device.

Resumable: with a checkpoint path the training state (weights, optimiser, torch's random state, the step) is
written there atomically every ``checkpoint_every`` steps and after the last one; a run given an existing
checkpoint of the same run resumes from it and ends with exactly the weights of an uninterrupted run (on CPU
for a fixed thread count). The numpy index streams are not saved: they are replayed to the step, which costs
no device work.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.classify.architectures import ARCHITECTURES, build_classifier
from pipeline.classify.augment import SYNTHETIC_METHODS, AugmentConfig, BatchAugmenter, resolve_augment, run_name
from pipeline.classify.evaluate import normalise, predict
from pipeline.core import distributed
from pipeline.core.config import recorded_when_set, to_dict
from pipeline.core.devices import Precision, autocast, resolve_device, resolve_dtype
from pipeline.core.errors import HydraMixError, WriteError
from pipeline.core.progress import tqdm
from pipeline.core.threads import Threads, check_threads
from pipeline.core.torch_io import checkpoint_not_written, load_torch, save_torch
from pipeline.data.imageset import ImageSet

CHECKPOINT_FORMAT = "hydramix-classifier-v1"
TRAIN_STATE_FORMAT = "hydramix-classifier-train-state/1"
# Config keys that may change between a run and its resumption without changing what is computed.
_RESUME_FREE_KEYS = ("device", "threads")
# Run statistics that differ between two runs of the same training (wall time, and whether it was resumed): they
# go to the metrics JSON, never into the model file, whose bytes then depend on the training alone.
RUN_ONLY_STATS = ("seconds", "cpu_seconds", "train_images_per_s", "resumed_from_step")


@dataclass(frozen=True)
class ClassifierConfig:
    """The ``classifier`` section of params.yaml (one recipe: CPU-quick or paper-scale)."""

    arch: str = "wrn-16-2"  # a name in pipeline.classify.architectures.ARCHITECTURES
    dropout: float = 0.0  # WRN dropout between the block's convolutions
    iterations: int = 300  # fixed budget of optimiser steps
    batch_size: int = 64  # images per step, real + synthetic
    synthetic_share: float = 0.5  # fraction of each batch drawn from the synthetic set (synthetic methods only)
    lr: float = 0.05  # peak learning rate
    warmup_iterations: int = 20  # linear warm-up before the cosine decay
    momentum: float = 0.9  # Nesterov momentum
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    val_per_class: int = 0  # real images per class held out for validation (0: none; never tune on test)
    eval_batch_size: int = 500
    seed: int = 0  # drives init, sampling, augmentation and dropout
    device: str = "auto"  # auto | cpu | cuda[:N]
    precision: Precision = "auto"  # auto: bf16 autocast where the device supports it
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    threads: Threads = "auto"  # CPU threads, set by the stage (pipeline.core.threads)
    # Added after model files existed (recorded only when set): synthetic methods train their last ``real_tail``
    # fraction of steps on real images only; ``bn_recalibrate`` re-estimates BatchNorm statistics on the real
    # training images (and their mirror images) after the last step, so they are those of real inputs.
    real_tail: float = recorded_when_set(0.0)
    bn_recalibrate: bool = recorded_when_set(False)

    def __post_init__(self) -> None:
        check_threads(self.threads)
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch '{self.arch}' unknown; valid: {', '.join(ARCHITECTURES)}")
        if self.iterations < 1 or self.batch_size < 2 or self.eval_batch_size < 1:
            raise ValueError("iterations must be >= 1, batch_size >= 2, eval_batch_size >= 1")
        if not 0.0 <= self.synthetic_share < 1.0:
            raise ValueError(f"synthetic_share must be in [0, 1), got {self.synthetic_share}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("dropout and label_smoothing must be in [0, 1)")
        if self.lr <= 0 or self.warmup_iterations < 0 or self.val_per_class < 0:
            raise ValueError("lr must be > 0, warmup_iterations and val_per_class >= 0")
        if not 0.0 <= self.real_tail <= 1.0:
            raise ValueError(f"real_tail must be in [0, 1], got {self.real_tail}")

    def tail_start(self) -> int:
        """The first step of the real-only tail (``iterations`` when there is none)."""
        return self.iterations - round(self.iterations * self.real_tail)


@dataclass
class TrainResult:
    """A trained model (eval mode, on the training device) and what describes it."""

    model: nn.Module
    mean: list[float]  # per-channel normalisation, [0, 1] pixel units
    std: list[float]
    stats: dict[str, Any]  # seconds, images/s, final loss, validation accuracy if held out, resumed_from_step


def lr_at(step: int, config: ClassifierConfig) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warm-up, then cosine from lr to 0."""
    warm = min(1.0, (step + 1) / config.warmup_iterations) if config.warmup_iterations else 1.0
    return config.lr * warm * 0.5 * (1.0 + math.cos(math.pi * step / config.iterations))


def imageset_sha256(images: ImageSet) -> str:
    """sha256 over pixels, labels and class names: identifies the exact real training set a model saw."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(images.images).tobytes())
    digest.update(images.labels.astype("<i8").tobytes())
    digest.update("\n".join(images.class_names).encode())
    return digest.hexdigest()


def check_synthetic(real: ImageSet, synthetic: ImageSet, where: str) -> None:
    """HydraMixError unless ``synthetic`` (from ``where``) has the real set's class names and resolution."""
    if synthetic.class_names != real.class_names:
        raise HydraMixError(
            f"{where}: synthetic classes {list(synthetic.class_names)} do not match the subset's "
            f"{list(real.class_names)}; generate the synthetic set from this subset's dataset"
        )
    if synthetic.images.shape[1:3] != real.images.shape[1:3]:
        raise HydraMixError(
            f"{where}: synthetic images are {synthetic.images.shape[1]}x{synthetic.images.shape[2]} px, "
            f"the subset's are {real.images.shape[1]}x{real.images.shape[2]} px"
        )
    if len(synthetic) == 0:
        raise HydraMixError(f"{where}: the synthetic dataset holds no images")


def split_validation(train: ImageSet, per_class: int, seed: int) -> tuple[ImageSet, ImageSet | None]:
    """(train minus held-out, held-out) with ``per_class`` seeded images per class held out; (train, None) if
    0."""
    if per_class == 0:
        return train, None
    rng = np.random.default_rng([seed, 1])
    held = []
    for c in range(len(train.class_names)):
        members = np.flatnonzero(train.labels == c)
        if len(members) <= per_class:
            raise HydraMixError(
                f"val_per_class={per_class} leaves no training image of class '{train.class_names[c]}' "
                f"({len(members)} images)"
            )
        held.append(rng.choice(members, per_class, replace=False))
    held_pos = np.sort(np.concatenate(held))
    keep = np.setdiff1d(np.arange(len(train)), held_pos)
    return train.take(keep), train.take(held_pos)


def index_batches(n: int, batch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless batches of positions in [0, n): each epoch is a fresh permutation; batches may span epochs."""
    buffer = np.empty(0, dtype=np.int64)
    while True:
        while len(buffer) < batch:
            buffer = np.concatenate([buffer, rng.permutation(n)])
        yield buffer[:batch]
        buffer = buffer[batch:]


class BatchSource:
    """Assembles training batches from the device-resident real (and synthetic) images.

    ``next_batch() -> (images (B, H, W, 3) uint8, labels (B,) int64)``, with ``n_synthetic`` of the B drawn
    from the synthetic set. With a synthetic set the rows are put in a random order, so that a batch-level
    augmentation (mixup and cutmix pair each row with its neighbour) pairs real with synthetic images as often
    as with its own kind; without one the batch is exactly the real draw. From step ``tail_start`` on (if given)
    every batch is B real images, drawn from a stream of its own so the steps before are unchanged.
    """

    def __init__(
        self,
        real: ImageSet,
        synthetic: ImageSet | None,
        batch_size: int,
        synthetic_share: float,
        device: torch.device,
        seed: int,
        tail_start: int | None = None,
    ) -> None:
        # At least one real image per batch, whatever the share rounds to.
        self.n_synthetic = min(round(batch_size * synthetic_share), batch_size - 1) if synthetic is not None else 0
        self.n_real = batch_size - self.n_synthetic
        # The whole dataset lives on the device once; a step only gathers.
        self.real_images = torch.from_numpy(real.images).to(device)
        self.real_labels = torch.from_numpy(real.labels).to(device)
        self.real_order = index_batches(len(real), self.n_real, np.random.default_rng([seed, 2]))
        if self.n_synthetic:
            self.syn_images = torch.from_numpy(synthetic.images).to(device)
            self.syn_labels = torch.from_numpy(synthetic.labels).to(device)
            self.syn_order = index_batches(len(synthetic), self.n_synthetic, np.random.default_rng([seed, 3]))
            self.row_order = np.random.default_rng([seed, 4])
        self.tail_start = tail_start if self.n_synthetic else None
        if self.tail_start is not None:
            self.tail_order = index_batches(len(real), batch_size, np.random.default_rng([seed, 5]))
        self.step = 0
        self.device = device

    def _in_tail(self) -> bool:
        in_tail = self.tail_start is not None and self.step >= self.tail_start
        self.step += 1
        return in_tail

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._in_tail():
            pos = torch.from_numpy(next(self.tail_order)).to(self.device)
            return self.real_images[pos], self.real_labels[pos]
        pos = torch.from_numpy(next(self.real_order)).to(self.device)
        images, labels = self.real_images[pos], self.real_labels[pos]
        if self.n_synthetic:
            syn = torch.from_numpy(next(self.syn_order)).to(self.device)
            order = torch.from_numpy(self.row_order.permutation(self.n_real + self.n_synthetic)).to(self.device)
            images = torch.cat([images, self.syn_images[syn]])[order]
            labels = torch.cat([labels, self.syn_labels[syn]])[order]
        return images, labels

    def skip(self, steps: int) -> None:
        """Advance the index streams past ``steps`` batches, drawing exactly what ``next_batch`` would draw (a
        resumed run continues with the batches of an uninterrupted one), without gathering any images."""
        for _ in range(steps):
            if self._in_tail():
                next(self.tail_order)
                continue
            next(self.real_order)
            if self.n_synthetic:
                next(self.syn_order)
                self.row_order.permutation(self.n_real + self.n_synthetic)


def channel_stats(images: ImageSet) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``images`` in [0, 1] units (std floored to avoid division by ~0)."""
    pixels = images.images.reshape(-1, 3).astype(np.float64) / 255.0
    return pixels.mean(0).tolist(), np.maximum(pixels.std(0), 1e-3).tolist()


def train_classifier(
    method: str,
    train: ImageSet,
    config: ClassifierConfig,
    synthetic: ImageSet | None = None,
    progress: bool = True,
    augment: str | None = None,
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int = 100,
) -> TrainResult:
    """Train ``config.arch`` from scratch with ``method`` on ``train`` (+ ``synthetic`` for the synthetic
    methods), augmenting every batch with ``augment``.

    method: a classic augmentation (real images only; ``augment`` must be None) or a synthetic method (needs
    ``synthetic``; ``augment`` None means ``baseline``), see ``pipeline.classify.augment.resolve_augment``.
    train / synthetic: ImageSets with the same class names and resolution. Returns the last-iterate model in
    eval mode, its normalisation and run statistics (including validation top-1 when ``val_per_class`` > 0).

    checkpoint_path: if given, the training state is written there every ``checkpoint_every`` steps and after
    the last step, and an existing checkpoint of the same run (config, method, augmentation, images, number of
    processes) is resumed from; one of another run, or an unreadable one, is an error and is left untouched. The
    caller deletes it once it has written its outputs. A checkpoint that cannot be written stops training with a
    WriteError that says which checkpoint is kept.
    """
    if checkpoint_every < 1:
        raise HydraMixError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    augment = resolve_augment(method, augment)
    if method in SYNTHETIC_METHODS and synthetic is None:
        raise HydraMixError(f"method '{method}' trains on real + synthetic images: pass a synthetic dataset")
    if method not in SYNTHETIC_METHODS and synthetic is not None:
        raise HydraMixError(f"method '{method}' uses no synthetic dataset; use one of {', '.join(SYNTHETIC_METHODS)}")
    if synthetic is not None:
        check_synthetic(train, synthetic, "synthetic dataset")
    device = distributed.place(resolve_device(config.device))
    dtype = resolve_dtype(device, config.precision)
    part = distributed.batch_part(config.batch_size)  # this process's rows of each global batch
    torch.manual_seed(config.seed)  # init, augmentation and dropout draw from the global generator

    fit, val = split_validation(train, config.val_per_class, config.seed)
    mean, std = channel_stats(fit)  # from real images only: the synthetic set must not shift the input scale
    model = build_classifier(config.arch, len(train.class_names), config.dropout)
    model = model.to(device, memory_format=torch.channels_last)
    # Under torchrun: gradients averaged over the processes; BatchNorm statistics stay per process during
    # training (no buffer broadcast) and are averaged once at the end.
    train_model = distributed.wrap(model, device, broadcast_buffers=False)
    optimiser = torch.optim.SGD(
        model.parameters(),
        lr=lr_at(0, config),
        momentum=config.momentum,
        nesterov=True,
        weight_decay=config.weight_decay,
    )
    augmenter = BatchAugmenter(
        augment,
        config.augment,
        len(train.class_names),
        torch.tensor(mean, device=device),
        torch.tensor(std, device=device),
    )
    tail = config.tail_start() if config.real_tail > 0 else None
    source = BatchSource(fit, synthetic, config.batch_size, config.synthetic_share, device, config.seed, tail)
    # GradScaler only matters for fp16 on CUDA; it is a pass-through otherwise.
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    run = {"step": 0, "losses": [], "seconds": 0.0, "cpu_seconds": 0.0}
    checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
    identity = None
    if checkpoint_path is not None:
        identity = _run_identity(config, method, augment, train, synthetic)
        if checkpoint_path.exists():
            run = _load_train_state(checkpoint_path, identity, model, optimiser, scaler, device)
            source.skip(run["step"])
    resumed_from, saved_step = run["step"], run["step"] or None
    losses = run["losses"]

    model.train()
    start, cpu_start = time.perf_counter(), time.process_time()
    bar = tqdm(
        range(run["step"], config.iterations),
        initial=run["step"],
        total=config.iterations,
        desc=f"train {run_name(method, augment)}",
        disable=not progress or not distributed.is_main(),
        leave=False,
    )
    for step in bar:
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step, config)
        images, labels = source.next_batch()
        # Every process draws and augments the same global batch (mixing partners and augmentation draws as
        # in one process), then trains on its part.
        x, targets = augmenter(images, labels)
        x, targets = x[part], targets[part]
        with autocast(device, dtype):
            logits = train_model(x)
        loss = nn.functional.cross_entropy(logits.float(), targets, label_smoothing=config.label_smoothing)
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        if step % 10 == 0 or step == config.iterations - 1:
            losses.append(distributed.mean_over_ranks({"loss": loss})["loss"].item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        done = step + 1
        if checkpoint_path is not None and (done % checkpoint_every == 0 or done == config.iterations):
            run.update(
                step=done,
                seconds=run["seconds"] + time.perf_counter() - start,
                cpu_seconds=run["cpu_seconds"] + time.process_time() - cpu_start,
            )
            start, cpu_start = time.perf_counter(), time.process_time()
            # Every process takes part (its BatchNorm statistics are its own); rank 0 writes.
            rank_buffers = distributed.all_gather_object(_cpu_buffers(model))
            if distributed.is_main():
                try:
                    _save_train_state(checkpoint_path, identity, model, rank_buffers, optimiser, scaler, device, run)
                except WriteError as exc:
                    raise checkpoint_not_written(exc, done, config.iterations, saved_step) from None
            saved_step = done
    seconds = run["seconds"] + time.perf_counter() - start
    cpu_seconds = run["cpu_seconds"] + time.process_time() - cpu_start  # all threads; robust to other processes
    distributed.average_buffers(model)
    if config.bn_recalibrate:
        recalibrate_batchnorm(model, fit, mean, std, config.eval_batch_size, device, dtype)
    model.eval()

    stats: dict[str, Any] = {
        "method": method,
        "augment": augment,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "train_images_per_s": round(config.iterations * config.batch_size / seconds, 1),
        "final_loss": losses[-1],
        "n_real": len(fit),
        "n_synthetic": len(synthetic) if synthetic is not None else 0,
        "device": str(device),
        "precision": str(dtype).removeprefix("torch."),
        "world_size": distributed.world_size(),
        "resumed_from_step": resumed_from,
    }
    if val is not None:
        predictions = predict(model, val, mean, std, config.eval_batch_size, dtype)
        stats["val_top1"] = float((predictions == val.labels).mean())
        stats["n_val"] = len(val)
    return TrainResult(model=model, mean=mean, std=std, stats=stats)


def recalibrate_batchnorm(
    model: nn.Module,
    images: ImageSet,
    mean: list[float],
    std: list[float],
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
) -> None:
    """Replace every BatchNorm's running statistics by those of ``images`` and their mirror images (uint8
    (N, H, W, 3), normalised with ``mean``/``std``): a cumulative average over the passes, no gradients, other
    layers (dropout) in eval mode. Every process computes the same statistics."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    model.eval()
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average: every batch counts the same
        norm.train()
    x = normalise(torch.from_numpy(images.images).to(device), mean, std)
    x = torch.cat([x, x.flip(3)]).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for chunk in x.split(batch_size):
            with autocast(device, dtype):
                model(chunk)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.eval()


def _run_identity(
    config: ClassifierConfig, method: str, augment: str, train: ImageSet, synthetic: ImageSet | None
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: everything that decides the computation."""
    return {
        "config": {k: v for k, v in to_dict(config).items() if k not in _RESUME_FREE_KEYS},
        "method": method,
        "augment": augment,
        "train_sha256": imageset_sha256(train),
        "synthetic_sha256": imageset_sha256(synthetic) if synthetic is not None else None,
        "world_size": distributed.world_size(),
    }


def _cpu_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.named_buffers()}


def _save_train_state(path, identity, model, rank_buffers, optimiser, scaler, device, run) -> None:
    save_torch(
        path,
        {
            "format": TRAIN_STATE_FORMAT,
            "identity": identity,
            "model": {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()},
            "rank_buffers": rank_buffers if len(rank_buffers) > 1 else None,
            "optimiser": optimiser.state_dict(),
            "scaler": scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            **run,
        },
    )


def _load_train_state(path, identity, model, optimiser, scaler, device) -> dict[str, Any]:
    """Restore weights, optimiser and random state from ``path``; return the loop state. HydraMixError if the
    file is unreadable or belongs to another run (it is left untouched either way)."""
    try:
        ckpt = load_torch(path, "classifier training checkpoint")
    except HydraMixError as exc:
        raise HydraMixError(
            f"{exc}; the unreadable checkpoint was left untouched: delete it to start training from scratch"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != TRAIN_STATE_FORMAT:
        raise HydraMixError(f"{path} is not a hydramix classifier training checkpoint; it was left untouched")
    theirs = ckpt.get("identity") or {}
    if theirs != identity:
        differ = sorted(k for k in identity if theirs.get(k) != identity[k])
        if "config" in differ:
            ours, old = identity["config"], theirs.get("config") or {}
            differ = [k for k in differ if k != "config"] + [f"classifier.{k}" for k in ours if old.get(k) != ours[k]]
        raise HydraMixError(
            f"checkpoint {path} belongs to another training run (it differs in {', '.join(differ)}); delete it to "
            "start over, or pass another --checkpoint"
        )
    model.load_state_dict(ckpt["model"])
    optimiser.load_state_dict(ckpt["optimiser"])
    scaler.load_state_dict(ckpt["scaler"])
    if ckpt["rank_buffers"] is not None:  # after DistributedDataParallel's start-up broadcast of rank 0's buffers
        mine = ckpt["rank_buffers"][distributed.rank()]
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(mine[name])
    torch.set_rng_state(ckpt["torch_rng"])
    if ckpt["cuda_rng"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
    return {k: ckpt[k] for k in ("step", "losses", "seconds", "cpu_seconds")}


def save_checkpoint(
    path: str | Path,
    result: TrainResult,
    config: ClassifierConfig,
    train: ImageSet,
    method: str,
    manifest: dict[str, Any],
    synthetic_manifest: dict[str, Any] | None = None,
) -> None:
    """Write a self-describing checkpoint atomically (temporary sibling + rename).

    Holds the state_dict (CPU tensors), the builder arguments, class names, resolution, normalisation, the
    sha256 of the real training subset, the method, the config, the subset's dataset/k/seed from ``manifest``
    and the run statistics except ``RUN_ONLY_STATS`` (timings): two identical runs write identical bytes.
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
        "arch": {"name": config.arch, "num_classes": len(train.class_names), "dropout": config.dropout},
        "class_names": list(train.class_names),
        "resolution": train.resolution,
        "mean": result.mean,
        "std": result.std,
        "subset_sha256": imageset_sha256(train),
        "method": method,
        "augment": result.stats["augment"],
        "seed": config.seed,
        "step": config.iterations,
        "config": to_dict(config),
        "dataset": manifest.get("dataset"),
        "k": manifest.get("k"),
        "subset_seed": manifest.get("seed"),
        "synthetic": synthetic_manifest,
        "stats": {k: v for k, v in result.stats.items() if k not in RUN_ONLY_STATS},
    }
    save_torch(path, payload)


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode on CPU, the checkpoint's metadata without the state_dict); HydraMixError if
    unreadable."""
    path = Path(path)
    if not path.is_file():
        raise HydraMixError(f"{path}: no such checkpoint; run `hydramix train-classifier`")
    payload = load_torch(path, "checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise HydraMixError(f"{path}: not a hydramix classifier checkpoint")
    try:
        arch = payload["arch"]
        model = build_classifier(arch["name"], arch["num_classes"], arch["dropout"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise HydraMixError(f"{path}: damaged classifier checkpoint ({type(exc).__name__}: {first})") from None
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta


def check_compatible(meta: dict[str, Any], train: ImageSet, where: str) -> None:
    """HydraMixError unless the checkpoint ``meta`` was trained on exactly this subset's train split
    (``where``)."""
    if tuple(meta["class_names"]) != train.class_names:
        raise HydraMixError(
            f"checkpoint classes {meta['class_names']} do not match {where}'s {list(train.class_names)}: "
            "it was trained for another dataset"
        )
    if meta["resolution"] != train.resolution:
        raise HydraMixError(
            f"checkpoint resolution {meta['resolution']} px does not match {where}'s {train.resolution} px"
        )
    if meta["subset_sha256"] != imageset_sha256(train):
        raise HydraMixError(
            f"checkpoint was trained on another subset (dataset={meta.get('dataset')}, k={meta.get('k')}, "
            f"seed={meta.get('subset_seed')}) than {where}; evaluate it with the subset it was trained on"
        )
