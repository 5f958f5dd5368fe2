"""Start-up time of the ``hydramix`` console script: ``--help``, ``--version`` and one command's ``--help``.

Goal (issue 15): ``hydramix --help`` under 0.5 s. Usage:

    python benchmarks/bench_cli.py                 # 10 rounds of each
    python benchmarks/bench_cli.py --rounds 20

Each round is a fresh process (``python -m stages.cli ...``, what the ``hydramix`` script runs), timed from start
to exit; the median and the fastest are printed with the load average, since other work on the machine slows
single rounds. It also lists the heavy modules ``hydramix --help`` imports (none is the goal): torch, numpy,
pyarrow, PIL, webdataset, open_clip, matplotlib, scipy, dvc.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "pyarrow", "PIL", "webdataset", "open_clip", "matplotlib", "scipy", "dvc")
CASES = {
    "hydramix --help": ["--help"],
    "hydramix --version": ["--version"],
    "hydramix verify --help": ["verify", "--help"],
    "hydramix train-generator --help": ["train-generator", "--help"],
}


def run(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stages.cli", *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def heavy_imports(env: dict[str, str]) -> list[str]:
    """Heavy top-level packages loaded by ``hydramix --help``."""
    code = (
        "import sys; from stages.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY:' + ' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return out.stdout.rsplit("HEAVY:", 1)[1].split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run(["--help"], env)  # warm the page cache and __pycache__
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPU(s); {args.rounds} rounds each")
    for label, argv in CASES.items():
        times = [run(argv, env) for _ in range(args.rounds)]
        print(f"  {label:<34} median {statistics.median(times):.3f} s, fastest {min(times):.3f} s")
    heavy = heavy_imports(env)
    print(f"  heavy modules imported by `hydramix --help`: {', '.join(heavy) if heavy else 'none'}")


if __name__ == "__main__":
    main()
