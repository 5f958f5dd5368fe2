"""Fault injection: SIGKILL each long command at random moments, resume it, and compare with an uninterrupted run.

For train-generator, synthesize and train-classifier (tiny configs in a temporary folder, made from a fabricated
subset: tests/conftest.py's ``build_subset_dir``) the script runs the command once uninterrupted, then RUNS
times: starts it afresh, kills its whole process group with SIGKILL at a random moment of its work (uniform
between the end of the interpreter's start-up and the end of the uninterrupted run), and runs the same command
again to the end. A kill is survived when that rerun exits 0 and leaves no temporary file behind;
byte-identical when its outputs have the sha256 of the uninterrupted run's (timing figures are not compared:
the generator's metrics JSON, the classifier's --out-metrics).

    python benchmarks/fault_injection.py [--runs 3] [--seed 0] [--keep DIR]

Prints one line per kill and, per command, "kills survived: N of N, byte-identical: N of N"; exits 1 unless
every kill was survived byte-identically. The default run takes about 2-3 minutes on a busy 2-core CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.core.config import to_dict  # noqa: E402
from pipeline.generator.config import DiscriminatorConfig, GeneratorConfig, ModelConfig  # noqa: E402
from pipeline.generator.masks import MaskConfig  # noqa: E402
from tests.conftest import build_subset_dir  # noqa: E402

# Temporaries a command may leave only while it runs (a finished command leaves none).
_TEMPORARY = (".tmp", ".part")


def tiny_params() -> dict:
    """Sections small enough that each command takes seconds, with checkpoints often enough to be hit."""
    generator = GeneratorConfig(
        resolution=16,
        resize_subset=False,
        iterations=120,
        batch_size=4,
        lr=1e-3,
        lr_discriminator=2e-4,
        lr_milestones=(0.5,),
        lr_gamma=0.5,
        flip=True,
        cap_sources_to_class_size=False,
        checkpoint_every=10,
        log_every=5,
        eval_mixes=8,
        grid_mixes=2,
        seed=3,
        device="cpu",
        precision="fp32",
        model=ModelConfig(width=8, encoder_blocks=1, decoder_blocks=1),
        discriminator=DiscriminatorConfig(width=8, n_layers=2),
        masks=MaskConfig(kind="segmentation", n_sources=(2, 3), scale=20.0, min_size=5),
    )
    synthesize = {
        "n_per_class": 400,
        "seed": 0,
        "n_sources": [2, 3],
        "mode": "generator",
        "batch_size": 8,
        "flip_sources": True,
        "mask_kind": None,
        "device": "cpu",
        "precision": "fp32",
        "shards": {"name": "tiny", "shard_size": 40},  # 1600 samples -> 40 shards
    }
    classifier = {
        "arch": "wrn-10-1",
        "dropout": 0.1,
        "iterations": 300,
        "batch_size": 16,
        "synthetic_share": 0.5,
        "lr": 0.05,
        "warmup_iterations": 5,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "label_smoothing": 0.0,
        "val_per_class": 0,
        "eval_batch_size": 64,
        "seed": 0,
        "device": "cpu",
        "precision": "fp32",
        "augment": {
            "pad": 2,
            "cutout_fraction": 0.5,
            "erasing_p": 0.5,
            "mixup_alpha": 1.0,
            "cutmix_alpha": 1.0,
            "autoaugment_policy": "cifar10",
        },
    }
    return {"generator": to_dict(generator), "synthesize": synthesize, "classifier": classifier}


@dataclass(frozen=True)
class Command:
    """One long command: its arguments for an output folder, and the outputs compared (relative to it)."""

    name: str
    args: list[str]  # with {out} for the output folder
    compared: tuple[str, ...]  # files, or folders whose every file is compared
    checkpoint: str | None  # the training checkpoint a kill may leave (None: shards are the progress)

    def argv(self, out: Path) -> list[str]:
        return [a.replace("{out}", str(out)) for a in self.args]


def commands(work: Path) -> list[Command]:
    subset, params = work / "subset", work / "params.yaml"
    common = ["--subset", str(subset), "--params", str(params)]
    generator = work / "reference" / "train-generator"
    synthetic = work / "reference" / "synthesize" / "ds"
    return [
        Command(
            "train-generator",
            ["train-generator", *common, "--generator", "{out}/g.pt", "--metrics", "{out}/metrics.json"]
            + ["--loss-curve", "{out}/loss.csv", "--grid", "{out}/grid.png", "--checkpoint", "{out}/state.pt"]
            + ["--no-progress", "--threads", "1"],
            ("g.pt", "loss.csv", "grid.png"),
            "state.pt",
        ),
        Command(
            "synthesize",
            ["synthesize", *common, "--generator", str(generator / "g.pt"), "--out", "{out}/ds"],
            ("ds",),
            None,
        ),
        Command(
            "train-classifier",
            ["train-classifier", *common, "--method", "hydramix", "--augment", "mixup", "--synthetic", str(synthetic)]
            + ["--out", "{out}/model.pt", "--out-metrics", "{out}/train.json", "--checkpoint-every", "20"],
            ("model.pt",),
            "model.pt.ckpt",
        ),
    ]


def digests(out: Path, compared: tuple[str, ...]) -> dict[str, str]:
    """sha256 of every compared file (folders: each file inside), by path relative to ``out``."""
    found = {}
    for name in compared:
        path = out / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            found[f.relative_to(out).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest() if f.exists() else "-"
    return found


def progress(command: Command, out: Path) -> str:
    """What a kill left to resume from: the checkpoint's step, or the complete shards."""
    if command.checkpoint is None:
        return f"{len(list(out.rglob('*.tar')))} shard(s) written"
    path = out / command.checkpoint
    if not path.exists():
        return "no checkpoint yet"
    return f"checkpoint at step {torch.load(path, map_location='cpu', weights_only=True)['step']}"


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob("*") if p.name.endswith(_TEMPORARY) or ".probe-" in p.name)


def start(argv: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cli = "import sys; from stages.cli import main; sys.argv[0] = 'hydramix'; sys.exit(main())"
    with open(log, "ab") as sink:
        # Own session: the kill reaches the command and any worker process it started.
        return subprocess.Popen(
            [sys.executable, "-c", cli, *argv], cwd=REPO, env=env, stdout=sink, stderr=sink, start_new_session=True
        )


def run_to_end(argv: list[str], log: Path) -> tuple[int, float]:
    began = time.perf_counter()
    proc = start(argv, log)
    return proc.wait(), time.perf_counter() - began


def kill_at(argv: list[str], log: Path, delay: float) -> bool:
    """Start the command and SIGKILL it after ``delay`` seconds; False if it had finished by then."""
    proc = start(argv, log)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def start_up_seconds() -> float:
    """How long the interpreter takes to import the command line (no kill before that hits any work)."""
    began = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", "import stages.cli"], cwd=REPO, env=env, check=True)
    return time.perf_counter() - began


def inject(command: Command, work: Path, runs: int, rng: random.Random, start_up: float) -> tuple[int, int]:
    """Reference run, then ``runs`` kill-and-resume trials; returns (survived, byte-identical)."""
    reference = work / "reference" / command.name
    reference.mkdir(parents=True, exist_ok=True)
    code, seconds = run_to_end(command.argv(reference), reference / "log.txt")
    if code != 0:
        raise SystemExit(f"{command.name}: the uninterrupted run failed (exit {code}); see {reference / 'log.txt'}")
    expected = digests(reference, command.compared)
    print(f"{command.name}: uninterrupted run {seconds:.1f} s, {len(expected)} output file(s)", flush=True)
    survived = identical = 0
    for trial in range(1, runs + 1):
        out = work / "trials" / command.name / str(trial)
        out.mkdir(parents=True)
        log = out.parent / f"{trial}.log"
        # A random moment of the work; a run that beat the kill is tried again with an earlier one.
        for attempt in range(5):
            delay = rng.uniform(min(start_up, 0.6 * seconds), 0.97 * seconds) * (0.8**attempt)
            if kill_at(command.argv(out), log, delay):
                break
            shutil.rmtree(out)
            out.mkdir()
        else:
            raise SystemExit(f"{command.name}: could not kill a run before it finished")
        killed_leftovers, killed_at = leftovers(out), progress(command, out)
        code, resume_seconds = run_to_end(command.argv(out), log)
        left = leftovers(out)
        same = code == 0 and digests(out, command.compared) == expected
        ok = code == 0 and not left
        survived += ok
        identical += same
        detail = f"{killed_at}, {len(killed_leftovers)} temporary file(s)"
        print(
            f"  kill {trial} at {delay:.1f} s ({detail}): resumed exit {code} in {resume_seconds:.1f} s, "
            f"{'byte-identical' if same else 'DIFFERENT'}" + (f"; left behind: {', '.join(left)}" if left else ""),
            flush=True,
        )
    return survived, identical


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="kills per command (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (default: a temp)")
    parser.add_argument("--only", choices=["train-generator", "synthesize", "train-classifier"], action="append")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    rng = random.Random(args.seed)
    work = args.keep or Path(tempfile.mkdtemp(prefix="hydramix-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        build_subset_dir(work / "subset", n_train_per_class=8, n_test_per_class=4, resolution=16, n_classes=4)
        (work / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
        start_up = start_up_seconds()
        print(f"interpreter start-up: {start_up:.1f} s (kills come after it)", flush=True)
        results = {}
        chosen = [c for c in commands(work) if not args.only or c.name in args.only]
        for command in commands(work)[: commands(work).index(chosen[-1]) + 1]:  # pipeline order: each feeds the next
            if command not in chosen:  # only its reference output is needed, by a later command
                run_to_end(command.argv(work / "reference" / command.name), work / f"{command.name}.log")
                continue
            results[command.name] = inject(command, work, args.runs, rng, start_up)
        print()
        for name, (survived, identical) in results.items():
            print(f"{name}: kills survived: {survived} of {args.runs}, byte-identical: {identical} of {args.runs}")
        return 0 if all(s == i == args.runs for s, i in results.values()) else 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
