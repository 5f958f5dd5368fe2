"""Generator training throughput with 1 vs several torchrun processes (DistributedDataParallel).

CPU: 1 and 2 processes (gloo), one intra-op thread each, so 2 processes use 2 cores. Two scalings: strong (the
same global batch split over the processes: the recipe people run) and weak (each process keeps the batch of
one process, so the global batch grows). CUDA (when available): one GPU, and every visible GPU (NCCL).
Each configuration is launched as ``python -m torch.distributed.run --standalone --nproc-per-node P`` on this
file; the figures are the global source images/s and mixes/s of the training loop on rank 0 (start-up,
segmentation-free grid masks, evaluation and the warm-up run are not counted).

    python benchmarks/bench_distributed.py [--iterations 30] [--width 16] [--batch-size 8] [--resolution 32]

Timings on a shared machine are noisy: quote the machine and what else was running.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_generator import benchmark_config  # noqa: E402
from pipeline.core import distributed  # noqa: E402
from pipeline.generator.train import train_generator  # noqa: E402
from tests.conftest import make_imageset  # noqa: E402


def worker(args: argparse.Namespace) -> None:
    """One torchrun process: a 2-step warm-up, then the measured run; rank 0 writes the figures."""
    torch.set_num_threads(1)
    images = make_imageset(10, resolution=args.resolution, n_classes=10)
    cfg = benchmark_config(args.resolution, args.iterations, args.batch_size, args.width, args.device, args.precision)
    with distributed.session():
        train_generator(images, dataclasses.replace(cfg, iterations=2), subset_sha256="bench", progress=False)
        cpu_start = time.process_time()
        metrics = train_generator(images, cfg, subset_sha256="bench", progress=False).metrics
        cpu_seconds = distributed.sum_over_ranks(round(1000 * (time.process_time() - cpu_start))) / 1000
        if distributed.is_main():
            figures = {
                **metrics["throughput"],
                "train_seconds": metrics["train_seconds"],
                "cpu_seconds_all_processes": cpu_seconds,
                # robust to other load on a shared machine: work per CPU-second spent by all processes
                "mixes_per_cpu_s": cfg.iterations * cfg.batch_size / max(cpu_seconds, 1e-9),
                "world_size": metrics["world_size"],
                "device": metrics["device"],
                "dtype": metrics["dtype"],
            }
            Path(args.worker_out).write_text(json.dumps(figures))


def launch(processes: int, batch_size: int, device: str, precision: str, args: argparse.Namespace) -> dict:
    """Run ``worker`` under torchrun with ``processes`` processes; return rank 0's figures."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
        cmd += [__file__, "--worker-out", str(out), "--iterations", str(args.iterations)]
        cmd += ["--width", str(args.width), "--batch-size", str(batch_size), "--resolution", str(args.resolution)]
        cmd += ["--device", device, "--precision", precision]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"torchrun failed ({processes} processes):\n{proc.stderr[-3000:]}")
        return json.loads(out.read_text())


def report(label: str, figures: dict, base: dict | None) -> None:
    speedup = f"  x{figures['mixes_per_s'] / base['mixes_per_s']:.2f}" if base else ""
    print(
        f"  {label:<34} {figures['source_images_per_s']:8.1f} source img/s {figures['mixes_per_s']:7.1f} mixes/s"
        f"  {figures['mixes_per_cpu_s']:5.1f} mixes/CPU-s ({figures['train_seconds']:.1f} s, "
        f"{figures['cpu_seconds_all_processes']:.1f} CPU-s){speedup}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8, help="global batch (mixes) of the 1-process run")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_out:
        worker(args)
        return

    print(
        f"generator training, {args.resolution} px, width {args.width}, N=3 grid masks, {args.iterations} steps; "
        f"CPU: {os.cpu_count()} cores visible, load average {os.getloadavg()[0]:.1f}"
    )
    print("CPU, fp32, gloo, 1 thread per process:")
    one = launch(1, args.batch_size, "cpu", "fp32", args)
    report(f"1 process, batch {args.batch_size}", one, None)
    report(f"2 processes, global batch {args.batch_size}", launch(2, args.batch_size, "cpu", "fp32", args), one)
    weak = launch(2, 2 * args.batch_size, "cpu", "fp32", args)
    report(f"2 processes, global batch {2 * args.batch_size}", weak, one)
    if not torch.cuda.is_available():
        print("CUDA: no GPU on this machine; the one-GPU and multi-GPU figures need one.")
        return
    gpus = torch.cuda.device_count()
    print(f"CUDA ({torch.cuda.get_device_name(0)}), AMP (precision auto), NCCL:")
    one_gpu = launch(1, args.batch_size, "cuda", "auto", args)
    report(f"1 GPU, batch {args.batch_size}", one_gpu, None)
    if gpus > 1:
        batch = gpus * args.batch_size
        report(f"{gpus} GPUs, global batch {batch}", launch(gpus, batch, "cuda", "auto", args), one_gpu)


if __name__ == "__main__":
    main()
