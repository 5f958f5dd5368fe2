"""Helpers of ``benchmarks/gpu_check.sh`` (run that script, not this file): the steps that are easier in Python.

    python benchmarks/gpu_check.py missing-deps            # requirements this check needs that are not installed
    python benchmarks/gpu_check.py fabricate DIR --resolution 32 --train 50 --test 100
    python benchmarks/gpu_check.py params SRC DST --mode full|smoke
    python benchmarks/gpu_check.py eval-rate CHECKPOINT SUBSET OUT.json [--threads N]
    python benchmarks/gpu_check.py figures WORK --mode full|smoke [--partial] [--results FILE]
    python benchmarks/gpu_check.py warmup-steps --mode full|smoke

``missing-deps`` uses the standard library only (it runs before anything is installed).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Dependencies of the project that this check's path never imports: DVC (`dvc repro`), CLIP scoring
# (`hydramix score`) and webdataset (named only in the dataset card's loading snippet). The check installs the
# project with --no-deps plus whatever else is missing, so a machine without a package index needs no wheels
# for these large trees.
NOT_ON_THIS_PATH = {"dvc", "open-clip-torch", "webdataset"}

# The paper-scale recipe (README "Running on a GPU", docs/generator.md and docs/classifier.md "Paper scale"),
# with the check's short budgets: 500 generator steps, 2,000 classifier steps. Keep in step with those docs.
FULL = {
    "prepare": {"resolution": 32, "threads": "auto"},
    "subset": {"k": 10, "seed": 0},
    "generator": {
        "resolution": 64,
        "resize_subset": True,
        "iterations": 500,
        "batch_size": 64,
        "lr": 0.0002,
        "lr_discriminator": 0.0002,
        "lr_milestones": [0.5, 0.75],
        "lr_gamma": 0.1,
        "checkpoint_every": 1000,
        "log_every": 50,
        "eval_mixes": 1024,
        "device": "auto",
        "precision": "auto",
        "threads": "auto",
        "model": {"width": 64, "encoder_blocks": 3, "decoder_blocks": 3},
        "discriminator": {"width": 64, "n_layers": 3},
        "masks": {"n_sources": [2, 4], "scale": 200.0, "min_size": 50},
    },
    "synthesize": {"n_per_class": 5000, "device": "auto", "precision": "auto", "threads": "auto"},
    "classifier": {
        "arch": "wrn-16-8",
        "dropout": 0.3,
        "iterations": 2000,
        "batch_size": 128,
        "lr": 0.1,
        "warmup_iterations": 500,
        "device": "auto",
        "precision": "auto",
        "threads": "auto",
    },
}

# The same path on CPU in about a minute: a 16 px subset resized to 32 px for the generator (so resize_subset is
# exercised as at paper scale), tiny widths and budgets, one thread per command.
SMOKE = {
    "prepare": {"resolution": 16, "threads": 1},
    "subset": {"k": 10, "seed": 0},
    "generator": {
        **FULL["generator"],
        "resolution": 32,
        "iterations": 10,
        "batch_size": 4,
        "eval_mixes": 16,
        "grid_mixes": 2,
        "log_every": 5,
        "threads": 1,
        "model": {"width": 8, "encoder_blocks": 1, "decoder_blocks": 1},
        "discriminator": {"width": 8, "n_layers": 2},
        "masks": {"n_sources": [2, 4], "scale": 100.0, "min_size": 20},
    },
    "synthesize": {"n_per_class": 20, "device": "auto", "precision": "auto", "threads": 1},
    "classifier": {
        **FULL["classifier"],
        "arch": "wrn-10-1",
        "dropout": 0.0,
        "iterations": 10,
        "batch_size": 32,
        "warmup_iterations": 2,
        "threads": 1,
    },
}
RECIPES = {"full": FULL, "smoke": SMOKE}
WARMUP_STEPS = {"full": 20, "smoke": 2}  # generator steps of the warm-up run whose time is subtracted


def missing_deps(pyproject: Path) -> list[str]:
    """The project's requirement strings whose distribution is not installed, less ``NOT_ON_THIS_PATH``."""
    import importlib.metadata as md

    text = pyproject.read_text()
    try:
        import tomllib

        deps = tomllib.loads(text)["project"]["dependencies"]
    except ImportError:  # Python 3.10: the one flat list of strings in [project]
        block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.MULTILINE | re.DOTALL)
        deps = re.findall(r'"([^"]+)"', block.group(1)) if block else []
    missing = []
    for req in deps:
        name = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]
        if re.sub(r"[-_.]+", "-", name).lower() in NOT_ON_THIS_PATH:
            continue
        try:
            md.distribution(name)
        except md.PackageNotFoundError:
            missing.append(req)
    return missing


def fabricate(root: Path, resolution: int, n_train: int, n_test: int, n_classes: int = 10, seed: int = 0) -> None:
    """A learnable ImageFolder tree ``root/{train,test}/classC/NNNN.png``: class c is a sinusoidal grating
    (frequency, orientation and colour set by c) with a random phase and pixel noise per image."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:resolution, 0:resolution] / max(resolution - 1, 1)
    for c in range(n_classes):
        colour = np.array([(c * 97) % 256, (c * 53 + 80) % 256, (c * 151 + 160) % 256]) / 255.0
        axis = (xx, yy, (xx + yy) / 2)[c % 3]
        for split, count in (("train", n_train), ("test", n_test)):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                wave = np.sin(2 * np.pi * (1 + c % 4) * axis + rng.uniform(0, 2 * np.pi))[..., None]
                image = 0.5 + 0.4 * wave * colour + rng.normal(0, 0.05, (resolution, resolution, 3))
                Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(folder / f"{i:04d}.png")


def merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` applied key by key (nested sections merged); an unknown key is an error, so
    a renamed params.yaml key cannot be overridden silently into nothing."""
    out = dict(base)
    for key, value in overrides.items():
        if key not in base:
            raise SystemExit(f"gpu_check: params.yaml has no key {key!r} to override")
        out[key] = merge(base[key], value) if isinstance(value, dict) else value
    return out


def write_params(src: Path, dst: Path, mode: str) -> None:
    """A copy of ``src`` (params.yaml) with the recipe of ``mode`` applied."""
    import yaml

    params = merge(yaml.safe_load(src.read_text()), RECIPES[mode])
    dst.write_text(yaml.safe_dump(params, sort_keys=False))


def eval_rate(checkpoint: Path, subset: Path, out: Path, batch_size: int, threads: str) -> None:
    """Steady-state test-split inference images/s of ``checkpoint`` (as ``hydramix evaluate`` runs it: same
    device, precision and batch), timed over a second pass after a warm-up pass."""
    sys.path.insert(0, str(ROOT))
    import torch

    from pipeline.classify.evaluate import predict
    from pipeline.classify.train import load_checkpoint
    from pipeline.core.devices import resolve_device, resolve_dtype
    from pipeline.core.threads import set_torch_threads
    from pipeline.data.subsets import read_subset

    set_torch_threads(int(threads) if threads.isdigit() else "auto")
    model, meta = load_checkpoint(checkpoint)
    test = read_subset(subset).test
    device = resolve_device("auto")
    dtype = resolve_dtype(device, "auto")
    model = model.to(device, memory_format=torch.channels_last)
    predict(model, test, meta["mean"], meta["std"], batch_size, dtype)  # warm-up: kernels, allocator
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    predict(model, test, meta["mean"], meta["std"], batch_size, dtype)  # ends with .cpu(): synchronised
    seconds = time.perf_counter() - start
    out.write_text(json.dumps({"images": len(test), "seconds": seconds, "images_per_s": len(test) / seconds}))


def figure_lines(work: Path, mode: str, partial: bool = False) -> tuple[list[str], dict]:
    """The check's figures as ``name: value unit`` lines, and everything they were read from. ``partial``: only
    the figures whose JSON files exist (after a failed step), else every one (a missing file is an error)."""
    read = {}
    for name in FIGURE_SOURCES:
        path = work / f"{name}.json"
        if path.is_file():
            read[name] = json.loads(path.read_text())
        elif not partial:
            raise SystemExit(f"gpu_check: {path} is missing")
    recipe = RECIPES[mode]
    lines = []
    if {"generator-warmup-timings", "generator-timings", "generator-metrics"} <= read.keys():
        lines += generator_lines(read, mode)
    if "synthesize-timings" in read:
        timings = read["synthesize-timings"]
        lines += [
            f"synthesize images/s: {timings['images_per_s']:.1f} images/s",
            f"synthesize wall: {timings['seconds']:.1f} s",
        ]
    if "classifier-metrics" in read:
        stats = read["classifier-metrics"]
        lines += [
            f"classifier images/s: {stats['train_images_per_s']:.1f} images/s",
            f"classifier wall: {stats['seconds']:.1f} s",
        ]
    if "evaluate-rate" in read:
        lines.append(f"evaluate images/s: {read['evaluate-rate']['images_per_s']:.1f} images/s")
    if "evaluate-metrics" in read:
        steps, cls_steps = recipe["generator"]["iterations"], recipe["classifier"]["iterations"]
        lines.append(
            f"evaluate top-1 ({steps}-step generator, {cls_steps}-step classifier; smoke figure, not a result): "
            f"{100 * read['evaluate-metrics']['top1']:.2f} %"
        )
    for line in lines:
        value = float(line.rsplit(": ", 1)[1].split(" ", 1)[0])
        if not math.isfinite(value):
            raise SystemExit(f"gpu_check: a figure is not finite: {line}")
    return lines, read


def generator_lines(read: dict, mode: str) -> list[str]:
    """Steady-state training speed and the end-of-training quality figures of the generator run."""
    warm, gen, metrics = read["generator-warmup-timings"], read["generator-timings"], read["generator-metrics"]
    steps, warm_steps = RECIPES[mode]["generator"]["iterations"], WARMUP_STEPS[mode]
    batch = RECIPES[mode]["generator"]["batch_size"]

    def sources(t: dict) -> float:  # source images the run encoded (N varies per mix)
        return t["throughput"]["source_images_per_s"] * t["train_seconds"]

    # The warm-up run pays the same one-off start (CUDA context, kernel selection, first allocations) as the
    # timed one; subtracting its time leaves the steady state of the other steps.
    seconds, timed, images = gen["train_seconds"] - warm["train_seconds"], steps - warm_steps, None
    if seconds > 0:
        images = sources(gen) - sources(warm)
    else:  # timer noise on a tiny CPU run: the whole run instead
        seconds, timed, images = gen["train_seconds"], steps, sources(gen)
    return [
        f"generator steps/s: {timed / seconds:.2f} steps/s",
        f"generator mixes/s: {timed * batch / seconds:.1f} mixes/s",
        f"generator source images/s: {images / seconds:.1f} images/s",
        f"generator reconstruction PSNR: {metrics['reconstruction_psnr_db']:.2f} dB",
        f"generator mask-fidelity gap: {metrics['mask_fidelity']['generator']['gap_db']:.2f} dB",
    ]


FIGURE_SOURCES = (
    "generator-warmup-timings",
    "generator-timings",
    "generator-metrics",
    "synthesize-timings",
    "classifier-metrics",
    "evaluate-metrics",
    "evaluate-rate",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("missing-deps")
    p = commands.add_parser("fabricate")
    p.add_argument("root", type=Path)
    p.add_argument("--resolution", type=int, required=True)
    p.add_argument("--train", type=int, required=True, help="train images per class")
    p.add_argument("--test", type=int, required=True, help="test images per class")
    p = commands.add_parser("params")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--mode", choices=RECIPES, required=True)
    p = commands.add_parser("warmup-steps")
    p.add_argument("--mode", choices=RECIPES, required=True)
    p = commands.add_parser("eval-rate")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("subset", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--threads", default="auto")
    p = commands.add_parser("figures")
    p.add_argument("work", type=Path, help="the folder holding the check's JSON files")
    p.add_argument("--mode", choices=RECIPES, required=True)
    p.add_argument("--results", type=Path, help="also write every figure's source JSON here, in one file")
    p.add_argument("--partial", action="store_true", help="only the figures whose JSON files exist")
    args = parser.parse_args()

    if args.command == "missing-deps":
        print(" ".join(missing_deps(ROOT / "pyproject.toml")))
    elif args.command == "fabricate":
        fabricate(args.root, args.resolution, args.train, args.test)
    elif args.command == "params":
        write_params(args.src, args.dst, args.mode)
    elif args.command == "warmup-steps":
        print(WARMUP_STEPS[args.mode])
    elif args.command == "eval-rate":
        eval_rate(args.checkpoint, args.subset, args.out, args.batch_size, args.threads)
    else:
        lines, read = figure_lines(args.work, args.mode, args.partial)
        print("\n".join(lines))
        if args.results is not None:
            args.results.write_text(json.dumps({"figures": lines, **read}, indent=1) + "\n")


if __name__ == "__main__":
    main()
