"""Sharing a synthetic dataset as a DVC artifact: push from one clone, pull into a fresh one, verify there."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import build_subset_dir

ROOT = Path(__file__).resolve().parents[1]
STAGE = {
    "stages": {
        "synthesize-pixelmix": {
            "cmd": "hydramix synthesize --subset subset --out synthetic --mode pixel --n-per-class 5 --name pixelmix",
            "deps": ["subset"],
            "params": ["synthesize"],
            "outs": ["synthetic"],
        }
    }
}


def run(*argv: str, cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def shard_digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.tar"))}


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("dvc") is None, reason="needs git and dvc")
def test_push_pull_round_trip_gives_identical_verified_shards(tmp_path: Path) -> None:
    origin, clone, remote = tmp_path / "origin", tmp_path / "clone", tmp_path / "remote"
    origin.mkdir()
    run("git", "init", "-q", cwd=origin)
    run("git", "config", "user.email", "test@example.com", cwd=origin)
    run("git", "config", "user.name", "test", cwd=origin)
    run("dvc", "init", "-q", cwd=origin)
    run("dvc", "remote", "add", "-d", "storage", str(remote), cwd=origin)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["synthesize"]["shards"]["shard_size"] = 8  # several shards, one of them short
    (origin / "params.yaml").write_text(yaml.safe_dump(params))
    (origin / "dvc.yaml").write_text(yaml.safe_dump(STAGE))
    build_subset_dir(origin / "subset")
    run("dvc", "add", "subset", cwd=origin)
    run("dvc", "repro", cwd=origin)
    run("git", "add", "-A", cwd=origin)
    run("git", "commit", "-qm", "tiny synthetic dataset", cwd=origin)
    run("dvc", "push", cwd=origin)

    run("git", "clone", "-q", str(origin), str(clone), cwd=tmp_path)
    assert not (clone / "synthetic").exists()
    run("dvc", "pull", cwd=clone)
    out = run(sys.executable, "-m", "stages.cli", "verify", "synthetic", cwd=clone)
    assert "OK" in out
    digests = shard_digests(clone / "synthetic")
    assert len(digests) == 3  # 20 samples in shards of 8
    assert digests == shard_digests(origin / "synthetic")
    # Nothing changed in the fresh clone, so DVC has nothing to re-run there.
    status = run("dvc", "status", cwd=clone)
    assert "up to date" in status.lower()
