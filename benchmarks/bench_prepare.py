"""Prepare + subset speed on the shared CIFAR-10 JPEG archive (60,000 JPEG decodes).

Goal (issue 2): ``prepare`` (stream the .tar.gz, decode 60,000 JPEGs, encode 60,000 PNGs into Parquet) plus
``subset`` k=10 seed=0 (100 train + the 10,000-image test split) in <= 60 s wall on 2 cores. Usage:

    python benchmarks/bench_prepare.py                    # ../shared/datasets/cifar10-jpeg.tar.gz
    python benchmarks/bench_prepare.py --archive PATH --k 10 --seed 0 --rounds 2

It calls the library (``pipeline.data.prepare``) directly, so the figures exclude the CLI's start-up (importing
every stage module); the load average is printed beside them because other work on the machine slows
single rounds, and the CPU seconds used (this process + its workers), which do not depend on that load.
It also checks the subset is byte-identical across rounds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from pipeline.data.prepare import PrepareConfig, SubsetConfig, make_subset, prepare

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def _digest(directory: Path) -> str:
    h = hashlib.sha256()
    for name in ("train.parquet", "test.parquet", "manifest.json"):
        h.update((directory / name).read_bytes())
    return h.hexdigest()


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its (finished) worker processes."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if not args.archive.is_file():
        sys.exit(f"archive {args.archive} not found (pass --archive)")

    print(f"cores: {os.cpu_count()}  archive: {args.archive}")
    digests = set()
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            load_before = os.getloadavg()[0]
            t0, c0 = time.perf_counter(), _cpu_seconds()
            manifest = prepare(PrepareConfig("folder", str(args.archive), 32), tmp, tmp / "prepared", progress=False)
            t1 = time.perf_counter()
            sub = make_subset(tmp / "prepared", tmp / "subset", SubsetConfig(args.k, args.seed))
            t2, c2 = time.perf_counter(), _cpu_seconds()
            digests.add(_digest(tmp / "subset"))
            n_train = sum(manifest["counts"]["train"].values())
            n_test = sum(manifest["counts"]["test"].values())
            sub_train, sub_test = (sum(sub["counts"][s].values()) for s in ("train", "test"))
            print(
                f"round {r + 1}: prepare {t1 - t0:6.1f} s ({n_train + n_test} images, "
                f"{(n_train + n_test) / (t1 - t0):,.0f} img/s)  subset k={args.k} {t2 - t1:5.1f} s "
                f"({sub_train} train + {sub_test} test)  total {t2 - t0:6.1f} s wall, {c2 - c0:6.1f} s CPU  "
                f"[load avg {load_before:.1f} -> {os.getloadavg()[0]:.1f}]"
            )
    if args.rounds > 1:
        print("subset byte-identical across rounds:", len(digests) == 1)
    print("goal: prepare + subset <= 60 s wall on 2 cores")


if __name__ == "__main__":
    main()
