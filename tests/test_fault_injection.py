"""benchmarks/fault_injection.py end to end: two random SIGKILLs per long command, each resumed to the bytes of an
uninterrupted run (about two minutes: marked slow, deselect with -m "not slow")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_kill_is_survived_byte_identical(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "fault_injection.py"), "--runs", "2", "--keep", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    for command in ("train-generator", "synthesize", "train-classifier"):
        assert f"{command}: kills survived: 2 of 2, byte-identical: 2 of 2" in result.stdout, result.stdout
    assert result.stdout.count("resumed exit 0") == 6
