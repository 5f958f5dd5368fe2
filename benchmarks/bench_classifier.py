"""Classifier data path vs training: images/s the loader delivers and images/s training consumes.

Loader = a real+synthetic batch assembled on the device (index draw, gather, crop+flip, per-method
augmentation, normalisation), exactly what each training step calls. Training = train_classifier's measured
img/s over a short run of the same config (forward, backward, optimiser; it includes the loader).
Target: loader >= 5x training. With --synthetic DIR also times the one-off load of a shard directory into
memory (pipeline.synthesis.shards.load_images).

    python benchmarks/bench_classifier.py [--params params.yaml] [--iterations 30] [--synthetic DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from pipeline.classify.augment import BatchAugmenter
from pipeline.classify.train import BatchSource, ClassifierConfig, channel_stats, train_classifier
from pipeline.core.config import from_dict, replace
from pipeline.core.devices import resolve_device
from pipeline.data.imageset import ImageSet


def random_imageset(n: int, resolution: int, n_classes: int, seed: int) -> ImageSet:
    rng = np.random.default_rng(seed)
    return ImageSet(
        images=rng.integers(0, 256, (n, resolution, resolution, 3), dtype=np.uint8),
        labels=np.arange(n, dtype=np.int64) % n_classes,
        indices=np.arange(n, dtype=np.int64),
        class_names=tuple(f"c{i}" for i in range(n_classes)),
    )


def loader_rate(method: str, real: ImageSet, syn: ImageSet | None, config: ClassifierConfig, steps: int) -> float:
    device = resolve_device(config.device)
    mean, std = channel_stats(real)
    source = BatchSource(real, syn, config.batch_size, config.synthetic_share, device, config.seed)
    augment = BatchAugmenter(
        method,
        config.augment,
        len(real.class_names),
        torch.tensor(mean, device=device),
        torch.tensor(std, device=device),
    )
    for _ in range(3):
        augment(*source.next_batch())
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        x, _ = augment(*source.next_batch())
    if device.type == "cuda":
        torch.cuda.synchronize()
    images = steps * config.batch_size
    return images / (time.perf_counter() - start), images / (time.process_time() - cpu_start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--iterations", type=int, default=30, help="training steps timed")
    parser.add_argument("--loader-steps", type=int, default=100)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--synthetic", type=Path, default=None, help="optional shard dir to time loading")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = ClassifierConfig()
    if args.params.is_file():
        config = from_dict(ClassifierConfig, yaml.safe_load(args.params.read_text())["classifier"], "classifier")
    config = replace(config, iterations=args.iterations, warmup_iterations=1)
    print(
        f"config: arch={config.arch} batch={config.batch_size} share={config.synthetic_share} "
        f"res={args.resolution} device={config.device} precision={config.precision}; torch threads "
        f"{torch.get_num_threads()}"
    )
    real = random_imageset(100, args.resolution, 10, 0)  # CIFAR-10 k=10
    syn = random_imageset(10_000, args.resolution, 10, 1)
    if args.synthetic is not None:
        from pipeline.synthesis.shards.reader import load_images

        start = time.perf_counter()
        loaded = load_images(args.synthetic)
        seconds = time.perf_counter() - start
        rate = len(loaded) / seconds
        print(f"shard load (one-off): {len(loaded)} images in {seconds:.2f} s = {rate:.0f} img/s")

    result = train_classifier("hydramix", real, config, synthetic=syn, progress=False)
    stats = result.stats
    train_rate = stats["train_images_per_s"]
    train_cpu_rate = config.iterations * config.batch_size / stats["cpu_seconds"]
    print(
        f"training (hydramix, {config.iterations} steps incl. loader, {stats['precision']}): "
        f"{train_rate:.0f} img/s wall, {train_cpu_rate:.0f} img per CPU-s"
    )
    methods = ["hydramix", "baseline", "autoaugment", "trivialaugment", "random-erasing", "cutmix"]
    for method in methods:
        use_syn = method == "hydramix"
        rate, cpu_rate = loader_rate(method, real, syn if use_syn else None, config, args.loader_steps)
        print(
            f"loader {method:>14}: {rate:7.0f} img/s wall ({rate / train_rate:5.1f}x training), "
            f"{cpu_rate:7.0f} img per CPU-s ({cpu_rate / train_cpu_rate:5.1f}x training)"
        )


if __name__ == "__main__":
    main()
