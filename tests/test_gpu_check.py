"""``benchmarks/gpu_check.sh --smoke``: the GPU check's whole path on CPU, and the figure lines it prints."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGURE = re.compile(r"^(?P<name>[^#:][^:]*): (?P<value>\S+) (?P<unit>\S.*)$")
GENERATOR_FIGURES = (
    "generator steps/s",
    "generator mixes/s",
    "generator source images/s",
    "generator reconstruction PSNR",
    "generator mask-fidelity gap",
)
FIGURES = (
    *GENERATOR_FIGURES,
    "synthesize images/s",
    "synthesize wall",
    "classifier images/s",
    "classifier wall",
    "evaluate images/s",
    "evaluate top-1 (10-step generator, 10-step classifier; smoke figure, not a result)",
    "wall time",
)


def figures(text: str) -> dict[str, float]:
    """``name: value unit`` lines of ``text`` as {name: value}; every other line is ignored."""
    found = {}
    for line in text.splitlines():
        match = FIGURE.match(line)
        if match:
            found[match["name"]] = float(match["value"])
    return found


@pytest.mark.slow
def test_gpu_check_smoke(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--smoke", "--work", str(tmp_path / "work")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    printed = figures(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert set(printed) == set(FIGURES), proc.stdout
    assert all(math.isfinite(v) for v in printed.values()), printed
    assert all(printed[name] > 0 for name in FIGURES if "/s" in name)
    assert 0 <= printed[FIGURES[-2]] <= 100
    # The report files come to $OUT, figures.txt holding exactly the printed figures.
    assert figures((out / "figures.txt").read_text()) == printed
    assert {"log.txt", "results.json", "params.yaml", "generator-grid.png"} <= {p.name for p in out.iterdir()}
