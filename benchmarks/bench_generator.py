"""Generator training throughput: source images/s and mixes/s of the real training loop.

CPU: fp32 vs bf16 autocast + channels_last; CUDA (when available): fp32 vs AMP (bf16, channels_last).
Synthetic 32 px images (structured, 10 classes x 10) and grid masks, so no dataset or segmentation is needed;
the figure covers everything the loop does per step (batch gather, flips, masks, G step, D step).

    python benchmarks/bench_generator.py [--iterations 20] [--width 16] [--batch-size 8] [--threads 1]

Timings on a shared machine are noisy: run it when nothing else is running, and quote the device.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.generator.config import DiscriminatorConfig, GeneratorConfig, ModelConfig  # noqa: E402
from pipeline.generator.masks import MaskConfig  # noqa: E402
from pipeline.generator.train import train_generator  # noqa: E402
from tests.conftest import make_imageset  # noqa: E402


def benchmark_config(
    resolution: int, iterations: int, batch_size: int, width: int, device: str, precision: str
) -> GeneratorConfig:
    """The CPU-quick network shape with fixed N = 3 grid masks, so every step does the same work; no
    checkpoints, minimal evaluation."""
    return GeneratorConfig(
        resolution=resolution,
        resize_subset=False,
        iterations=iterations,
        batch_size=batch_size,
        lr=1e-3,
        lr_discriminator=2e-4,
        lr_milestones=(),
        lr_gamma=1.0,
        flip=True,
        cap_sources_to_class_size=False,
        checkpoint_every=10**9,
        log_every=10,
        eval_mixes=1,
        grid_mixes=1,
        seed=0,
        device=device,
        precision=precision,
        model=ModelConfig(width=width, encoder_blocks=2, decoder_blocks=2),
        discriminator=DiscriminatorConfig(width=width, n_layers=2),
        masks=MaskConfig(kind="grid", n_sources=(3, 3)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    images = make_imageset(10, resolution=args.resolution, n_classes=10)
    base = benchmark_config(args.resolution, args.iterations, args.batch_size, args.width, "cpu", "fp32")
    runs = [("cpu", "fp32"), ("cpu", "bf16")]
    if torch.cuda.is_available():
        runs += [("cuda", "fp32"), ("cuda", "auto")]
    print(
        f"generator training, {args.resolution} px, width {args.width}, batch {args.batch_size} mixes x N=3, "
        f"{args.iterations} steps, torch threads {torch.get_num_threads()}"
    )
    for device, precision in runs:
        cfg = dataclasses.replace(base, device=device, precision=precision)
        # One short warm-up run so one-off kernel selection/JIT is not counted.
        train_generator(images, dataclasses.replace(cfg, iterations=2), subset_sha256="bench", progress=False)
        m = train_generator(images, cfg, subset_sha256="bench", progress=False).metrics
        tp = m["throughput"]
        print(
            f"{device:5s} {precision:5s} (autocast {m['dtype']:8s}): "
            f"{tp['source_images_per_s']:8.1f} source img/s "
            f"{tp['mixes_per_s']:7.1f} mixes/s  {m['train_seconds'] / args.iterations * 1000:7.1f} ms/step"
        )


if __name__ == "__main__":
    main()
