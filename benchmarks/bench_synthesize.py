"""Synthesis engine speed: masks/s, raw decoder-forward images/s and ``Synthesizer.render`` images/s.

Goal (issue 4): render >= 0.5x the raw decoder-forward rate measured in the same run, so synthesis is
decoder-bound; with the CPU-quick generator, 50,000 images (plus PNG + tar, done by the shard writer) in
<= 90 s on 2 cores. Usage:

    python benchmarks/bench_synthesize.py                       # CIFAR-10 JPEG k=10 if present, random G
    python benchmarks/bench_synthesize.py --generator data/generators/k10-seed0/hydramix/generator.pt
    python benchmarks/bench_synthesize.py --width 16 --precision fp32 --compare-precision

Without ``--generator`` the generator is randomly initialised: its images are noise, its SPEED is what a
trained one of the same shape has. Figures are wall-clock, the best of ``--rounds`` rounds (other work on the
machine slows single rounds; the load average is printed beside them).
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.core.devices import autocast, resolve_device, resolve_dtype
from pipeline.data.imageset import ImageSet, encode_png
from pipeline.data.subsets import read_subset
from pipeline.generator.masks import MaskConfig, MaskSampler, segment_images, to_feature_resolution
from pipeline.generator.networks import HydraMixGenerator
from pipeline.synthesis.engine import SynthConfig, Synthesizer

CIFAR_TAR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def load_images(subset: Path | None, k: int) -> tuple[ImageSet, str]:
    """The benchmark's source images and a description: a subset directory, else the first ``k`` train images
    per class of the shared CIFAR-10 JPEG archive (archive order), else random 32 px images."""
    if subset is not None:
        return read_subset(subset).train, f"subset {subset}"
    if CIFAR_TAR.is_file():
        per_class: dict[str, list[np.ndarray]] = {}
        with tarfile.open(CIFAR_TAR) as tar:
            for member in tar:
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) < 3 or parts[-3] != "train":
                    continue
                images = per_class.setdefault(parts[-2], [])
                if len(images) < k:
                    images.append(np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")))
                if len(per_class) == 10 and all(len(v) == k for v in per_class.values()):
                    break
        names = tuple(sorted(per_class))
        images = np.stack([im for name in names for im in per_class[name]])
        labels = np.repeat(np.arange(len(names)), k).astype(np.int64)
        desc = f"CIFAR-10 JPEG, first {k} train images per class ({CIFAR_TAR.name})"
        return ImageSet(images, labels, np.arange(len(images), dtype=np.int64), names), desc
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10 * k, 32, 32, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(10), k).astype(np.int64)
    names = tuple(f"class{c}" for c in range(10))
    return ImageSet(images, labels, np.arange(10 * k, dtype=np.int64), names), "random 32 px images (no CIFAR)"


def best_rate(fn, count: int, rounds: int, cpu_rates: list[float] | None = None) -> float:
    """Items per wall second of ``fn()`` (which handles ``count`` items), best of ``rounds`` after a warm-up.

    If ``cpu_rates`` is given, the best items per CPU second of this process is appended to it: less disturbed
    by other jobs on the machine than wall time (it says how much work an item costs, not how long it took).
    """
    fn()
    best, best_cpu = 0.0, 0.0
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        best = max(best, count / (time.perf_counter() - start))
        best_cpu = max(best_cpu, count / max(time.process_time() - start_cpu, 1e-9))
    if cpu_rates is not None:
        cpu_rates.append(best_cpu)
    return best


def decoder_rate(
    generator, batch: torch.Tensor, device, dtype, batches: int, rounds: int, cpu: list[float] | None = None
) -> float:
    """Raw decoder-forward images/s on a (B, C, h, w) feature batch: no masks, gathers or conversion."""

    def run() -> None:
        with torch.inference_mode(), autocast(device, dtype):
            for _ in range(batches):
                generator.decode(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return best_rate(run, batches * len(batch), rounds, cpu)


def bench_engine(train: ImageSet, generator, args: argparse.Namespace) -> dict[str, float]:
    """Measure masks/s, decoder-forward img/s and render img/s (generator and pixel mode) on ``train``."""
    device = resolve_device(args.device)
    dtype = resolve_dtype(device, args.precision)
    cfg = SynthConfig(n_per_class=10**6, seed=0, n_sources=(2, 4), batch_size=args.batch_size, device=args.device)
    mask_cfg = MaskConfig(n_sources=(2, 4))
    figures: dict[str, float] = {}

    start = time.perf_counter()
    segments = segment_images(train.images, mask_cfg)
    figures["segment_s"] = time.perf_counter() - start
    sampler = MaskSampler(segments, mask_cfg)

    start = time.perf_counter()
    synth = Synthesizer(train, cfg, mask_cfg, generator, device, dtype)
    figures["init_s"] = time.perf_counter() - start
    pixel = Synthesizer(train, SynthConfig(**{**vars(cfg), "mode": "pixel"}), mask_cfg, None, device, dtype)

    b = args.batch_size
    ids = np.arange(args.images, dtype=np.int64)
    plan = synth.plan(ids[:b])
    figures["masks_per_s"] = best_rate(lambda: sampler.sample(plan["rows"], plan["seeds"]), b, args.rounds)

    # The decoder's input: real mixed features of the first batch, in the layout render uses.
    masks = sampler.sample(plan["rows"], plan["seeds"])
    safe = torch.from_numpy(np.maximum(plan["rows"], 0)).reshape(-1)
    feats = synth._features[0, safe].unflatten(0, plan["rows"].shape)
    mixed = generator.mix(feats, to_feature_resolution(masks, generator.downsampling).to(device))
    mixed = mixed.contiguous(memory_format=torch.channels_last)
    batches = max(1, args.images // b)
    cpu: list[float] = []
    figures["decoder_per_s"] = decoder_rate(generator, mixed, device, dtype, batches, args.rounds, cpu)
    figures["render_per_s"] = best_rate(lambda: synth.render(ids[: batches * b]), batches * b, args.rounds, cpu)
    figures["decoder_per_cpu_s"], figures["render_per_cpu_s"] = cpu
    figures["pixel_render_per_s"] = best_rate(lambda: pixel.render(ids[: batches * b]), batches * b, args.rounds)
    sample = synth.render(ids[:b])
    figures["png_per_s_1thread"] = best_rate(lambda: [encode_png(r.image) for r in sample], b, args.rounds)
    if args.compare_precision and device.type == "cpu":
        for name, other in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            cpu = []
            figures[f"decoder_per_s_{name}"] = decoder_rate(generator, mixed, device, other, batches, args.rounds, cpu)
            figures[f"decoder_per_cpu_s_{name}"] = cpu[0]
    figures["dtype"] = str(dtype).replace("torch.", "")
    figures["device"] = str(device)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", type=Path, help="a subset directory (default: shared CIFAR-10 JPEG k=10)")
    parser.add_argument("--k", type=int, default=10, help="images per class when reading the CIFAR archive")
    parser.add_argument("--generator", type=Path, help="a trained generator checkpoint (default: random init)")
    parser.add_argument("--width", type=int, default=32, help="random generator width (C = 4 * width)")
    parser.add_argument("--encoder-blocks", type=int, default=2)
    parser.add_argument("--decoder-blocks", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--images", type=int, default=2000, help="images per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare-precision", action="store_true", help="also time the decoder in fp32 and bf16")
    parser.add_argument(
        "--end-to-end",
        default="",
        help="comma-separated --n-per-class values: also run `hydramix synthesize` on --subset/--generator "
        "for each and report wall time, images/s (vs the decoder rate) and peak memory",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params for --end-to-end")
    args = parser.parse_args()
    if args.end_to_end and (args.subset is None or args.generator is None):
        parser.error("--end-to-end needs --subset and --generator")

    train, desc = load_images(args.subset, args.k)
    if args.generator is not None:
        from pipeline.generator.files import load_generator

        generator, _ = load_generator(args.generator)
        gdesc = f"checkpoint {args.generator}"
    else:
        torch.manual_seed(0)
        generator = HydraMixGenerator(args.width, args.encoder_blocks, args.decoder_blocks)
        gdesc = (
            f"RANDOM INIT width={args.width} blocks={args.encoder_blocks}/{args.decoder_blocks} "
            "(speed only: its images are noise)"
        )
    print(f"data: {desc}: {len(train)} images of {train.resolution} px")
    print(f"generator: {gdesc}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    f = bench_engine(train, generator, args)
    ratio = f["render_per_s"] / f["decoder_per_s"]
    print(f"device {f['device']}, autocast dtype {f['dtype']}, batch {args.batch_size}, best of {args.rounds}")
    print(f"segmentation (once): {f['segment_s']:.2f} s; Synthesizer init (segment + encode): {f['init_s']:.2f} s")
    print(f"masks/s:                 {f['masks_per_s']:10.0f}")
    print(f"decoder-forward img/s:   {f['decoder_per_s']:10.0f}")
    print(f"render img/s:            {f['render_per_s']:10.0f}   ({ratio:.2f}x decoder; goal >= 0.5x)")
    cpu_ratio = f["render_per_cpu_s"] / f["decoder_per_cpu_s"]
    print(
        f"per CPU-second:          decoder {f['decoder_per_cpu_s']:.0f}, render {f['render_per_cpu_s']:.0f} "
        f"({cpu_ratio:.2f}x)"
    )
    print(f"pixel-mode render img/s: {f['pixel_render_per_s']:10.0f}")
    print(f"PNG encode img/s (1 thread): {f['png_per_s_1thread']:6.0f}")
    for name in ("fp32", "bf16"):
        if f"decoder_per_s_{name}" in f:
            print(
                f"decoder-forward img/s {name}: {f[f'decoder_per_s_{name}']:8.0f} "
                f"(per CPU-second {f[f'decoder_per_cpu_s_{name}']:.0f})"
            )
    print(f"50,000 images at the render rate: {50000 / f['render_per_s']:.1f} s (before PNG + tar)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MiB; load average now {os.getloadavg()}")
    sys.stdout.flush()
    for n_per_class in (int(v) for v in args.end_to_end.split(",") if v):
        e2e = end_to_end(args, n_per_class)
        print(
            f"hydramix synthesize --n-per-class {n_per_class}: {e2e['images']} images, {e2e['wall_s']:.1f} s wall "
            f"(process start to exit), {e2e['seconds']:.1f} s writing, {e2e['images_per_s']:.0f} img/s "
            f"({e2e['images_per_s'] / f['decoder_per_s']:.2f}x decoder), peak RSS {e2e['peak_rss_mib']:.0f} MiB"
        )
        sys.stdout.flush()


def end_to_end(args: argparse.Namespace, n_per_class: int) -> dict[str, float]:
    """Run the real CLI once into a temporary directory; its own metrics plus the process wall time."""
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out, metrics = Path(tmp) / "synthetic", Path(tmp) / "metrics.json"
        argv = [sys.executable, "-m", "stages.cli", "synthesize", "--params", str(args.params)]
        argv += ["--subset", str(args.subset), "--generator", str(args.generator), "--out", str(out)]
        argv += ["--n-per-class", str(n_per_class), "--device", args.device, "--metrics", str(metrics)]
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        figures = json.loads(metrics.read_text())
        figures["wall_s"] = time.perf_counter() - start
        return figures


if __name__ == "__main__":
    main()
