"""Byte identity of the pipeline's artifacts, for a behaviour-preserving refactor: hash them before, hash after.

On a small fabricated image folder (4 classes, 12 train + 4 test images per class, 32 px; nothing downloaded) it
runs the real commands, each as its own process with one thread:

    prepare -> subset (k=10) -> train-generator (--iterations 20) and a resize_subset one (64 px, 5 iterations)
    -> synthesize --n-per-class 30 in generator, pixel (no generator), blur (--blur-reference) and resize modes

and prints the sha256 of the subset's Parquet files and manifest, each generator file, and every shard, the
manifest.json, README.md and --metrics JSON of every synthesized set, as one JSON object. Usage:

    python benchmarks/byte_identity.py > before.json              # on the old code
    python benchmarks/byte_identity.py --compare before.json      # on the new code: exit 1 on any difference

The params are the repository's params.yaml with the few overrides below (a folder dataset, smaller evaluation,
shards of 25), so the run takes about half a minute on one CPU core. The subset manifest records the archive's
path, so both runs must use the same ``--work`` directory (the default is fixed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("disc", "square", "stripes", "checker")


def make_folder_archive(path: Path, n_train: int = 12, n_test: int = 4, side: int = 32) -> Path:
    """An uncompressed .tar of train/<class>/NNN.png and test/<class>/NNN.png: a shape and hue per class, seeded
    noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side] / (side - 1)
    patterns = [
        ((yy - 0.5) ** 2 + (xx - 0.5) ** 2) < 0.12,
        (np.abs(yy - 0.5) < 0.3) & (np.abs(xx - 0.5) < 0.3),
        (np.floor(yy * 4) % 2) == 0,
        ((np.floor(yy * 4) + np.floor(xx * 4)) % 2) == 0,
    ]
    with tarfile.open(path, "w") as tar:  # no gzip: its header holds a timestamp
        for split, n in (("train", n_train), ("test", n_test)):
            for c, name in enumerate(CLASSES):
                colour = np.array([(c * 97) % 256, (c * 53 + 80) % 256, (c * 151 + 160) % 256], dtype=np.float64)
                for i in range(n):
                    img = np.where(patterns[c][..., None], colour, rng.uniform(0, 60, size=3))
                    img = np.clip(img + rng.normal(0, 12, size=img.shape), 0, 255).astype(np.uint8)
                    buf = BytesIO()
                    Image.fromarray(img).save(buf, format="PNG")
                    info = tarfile.TarInfo(f"{split}/{name}/{i:03d}.png")
                    info.size = buf.tell()
                    info.mtime = 0
                    tar.addfile(info, BytesIO(buf.getvalue()))
    return path


def write_params(path: Path, archive: Path) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"].update(dataset="folder", folder_path=str(archive), resolution=32, name="fabricated")
    params["subset"].update(k=10, seed=0)
    params["generator"].update(eval_mixes=16, grid_mixes=2, checkpoint_every=10, log_every=5)
    params["synthesize"].update(batch_size=50)
    params["synthesize"]["shards"].update(shard_size=25)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def hydramix(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", "from stages.cli import main; main()", *args]
    result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"hydramix {' '.join(args)} failed:\n{result.stdout}{result.stderr}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(work: Path) -> dict[str, str]:
    """Run the commands under ``work``; return {artifact: sha256}."""
    archive = make_folder_archive(work / "fabricated.tar")
    params = str(write_params(work / "params.yaml", archive))
    hydramix("prepare", "--out", str(work / "prepared"), "--params", params, "--threads", "1")
    subset = work / "subset"
    hydramix("subset", "--prepared", str(work / "prepared"), "--out", str(subset), "--params", params)
    gen = work / "generator.pt"
    common = ["--subset", str(subset), "--params", params, "--threads", "1", "--no-progress", "--device", "cpu"]
    hydramix("train-generator", *common, "--generator", str(gen), "--iterations", "20")
    # A resize_subset generator (the paper-scale recipe's shape): 64 px, trained on the subset resized once.
    resized_params = work / "params-resize.yaml"
    p = yaml.safe_load(Path(params).read_text())
    p["generator"].update(resolution=64, resize_subset=True)
    resized_params.write_text(yaml.safe_dump(p, sort_keys=False))
    gen64 = work / "generator-64.pt"
    hydramix(
        "train-generator", "--subset", str(subset), "--params", str(resized_params), "--threads", "1",
        "--no-progress", "--device", "cpu", "--generator", str(gen64), "--iterations", "5",
    )  # fmt: skip
    sets = {
        "generator": ["--generator", str(gen)],
        "pixel": ["--mode", "pixel"],
        "blur": ["--generator", str(gen), "--mode", "blur", "--blur-reference", str(work / "sets" / "generator")],
        "blur-sigma": ["--mode", "blur", "--blur-sigma", "0.7"],
        "resize": ["--generator", str(gen64)],
    }
    for name, extra in sets.items():
        out = work / "sets" / name
        hydramix(
            "synthesize", "--subset", str(subset), "--out", str(out), "--params", params, "--n-per-class", "30",
            "--threads", "1", "--device", "cpu", "--metrics", str(work / "sets" / f"{name}-metrics.json"), *extra,
        )  # fmt: skip
    hashes = {f"subset/{n}": sha256(subset / n) for n in ("train.parquet", "test.parquet", "manifest.json")}
    hashes["generator.pt"] = sha256(gen)
    hashes["generator-64.pt"] = sha256(gen64)
    for name in sets:
        out = work / "sets" / name
        for f in sorted(out.glob("*.tar")) + [out / "manifest.json", out / "README.md"]:
            hashes[f"sets/{name}/{f.name}"] = sha256(f)
        hashes[f"sets/{name}-metrics.json"] = sha256(work / "sets" / f"{name}-metrics.json")
    return hashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", type=Path, help="A JSON file printed by an earlier run: check against it.")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "hydramix-byte-identity",
        help="Work directory, emptied first and kept (manifests record the fabricated archive's path, so "
        "compare runs made in the same directory). Default: %(default)s",
    )
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    hashes = run(args.work)
    print(json.dumps(hashes, indent=1))
    if args.compare is not None:
        expected = json.loads(args.compare.read_text())
        differ = sorted(k for k in expected.keys() | hashes.keys() if expected.get(k) != hashes.get(k))
        if differ:
            sys.exit(f"{len(differ)} of {len(expected)} artifacts differ: {', '.join(differ)}")
        print(f"all {len(expected)} artifacts identical to {args.compare}", file=sys.stderr)


if __name__ == "__main__":
    main()
