"""Run the CPU-quick protocol (README "Results") as a queue of `hydramix` commands, two one-thread jobs at once.

    python benchmarks/run_protocol.py --root runs/k10 --results docs/results/cpu-quick-k10-5seeds

Every job is a plain `hydramix` command with the default params.yaml; a job runs once its inputs exist and is
skipped when its outputs do, so the same command resumes after a kill or in a later session (train-generator
resumes from its checkpoint; a generator whose weights were committed to ``<results>-inputs/weights/<kind>-s<seed>/``
is copied from there, not retrained). An evaluation whose metrics JSON is already in --results is skipped too, and only
the jobs some missing evaluation needs are run, so a fresh clone resumes from the committed figures. Each finished
evaluation's metrics JSON is copied to --results, named ``<run>-s<seed>.json``, ready to commit as it lands;
generator and synthetic-set figures go to ``<results>-inputs/``. The job list is re-read from this file whenever a
slot frees, so editing it takes effect without a restart. `--list` prints the jobs as JSON; `--dry-run` prints what
would run now. Why one thread per job: contended OpenMP threads made training 8-100x slower on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pipeline.classify.augment import run_name

K = 10
# The shared CIFAR-10 JPEG archive; named "folder" as in the runs made before datasets were named after their
# archive, so that old and new metrics files land in one report panel.
ARCHIVE = "../shared/datasets/cifar10-jpeg.tar.gz"
SEEDS = (0, 1, 2, 3, 4)
CLASSIC = ("baseline", "mixup", "autoaugment", "trivialaugment", "cutmix", "cutout", "random-erasing")
# (method, --augment) of the runs on real + a synthetic set.
SYNTHETIC_RUNS = (
    ("pixelmix", None),
    ("pixelmix-blur", None),
    ("chimeramix", None),
    ("hydramix", None),
    ("hydramix", "mixup"),
    ("hydramix", "autoaugment"),
    ("hydramix", "trivialaugment"),
)
UNTARGETED = {("hydramix", "mixup"), ("hydramix", "trivialaugment")}


def jobs(root: Path, synthetic_only: bool = False) -> list[dict]:
    """Every job of the protocol in priority order: {name, cmd, deps, outs, metrics?, keep?}; without the
    classic rows if ``synthetic_only``."""
    out: list[dict] = []
    prepared = root / "prepared"
    out.append(
        {
            "name": "prepare",
            "cmd": f"hydramix prepare --dataset folder --path {ARCHIVE} --name folder --out {prepared} "
            f"--download-dir {root / 'downloads'}",
            "deps": [],
            "outs": [str(prepared / "manifest.json")],
        }
    )
    for s in SEEDS:
        sub = root / "subsets" / f"k{K}-seed{s}"
        out.append(
            {
                "name": f"subset-s{s}",
                "cmd": f"hydramix subset --prepared {prepared} --out {sub} --k {K} --seed {s}",
                "deps": [str(prepared / "manifest.json")],
                "outs": [str(sub / "manifest.json")],
            }
        )
    for kind, extra in (("hydramix", ""), ("chimeramix", " --kind chimeramix")):
        for s in SEEDS:  # (the chimeramix ones are moved behind the hydramix synthetic sets below)
            sub = root / "subsets" / f"k{K}-seed{s}"
            g = root / "generators" / kind / f"k{K}-seed{s}"
            out.append(
                {
                    "name": f"generator-{kind}-s{s}",
                    "cmd": f"hydramix train-generator --subset {sub} --seed {s} --generator {g}/generator.pt "
                    f"--checkpoint {g}/checkpoint.pt --metrics {g}/metrics.json --loss-curve {g}/loss.csv "
                    f"--grid {g}/grid.png --no-progress --threads 1{extra}",
                    "deps": [str(sub / "manifest.json")],
                    "outs": [str(g / "generator.pt")],
                    "keep": {str(g / "metrics.json"): f"generators/{kind}-s{s}.json"},
                    "restore": f"weights/{kind}-s{s}",
                }
            )
    for s in SEEDS:
        sub = root / "subsets" / f"k{K}-seed{s}"
        syn = root / "synthetic" / f"k{K}-seed{s}"
        gh = root / "generators" / "hydramix" / f"k{K}-seed{s}" / "generator.pt"
        gc = root / "generators" / "chimeramix" / f"k{K}-seed{s}" / "generator.pt"
        common = f"hydramix synthesize --subset {sub} --seed {s}"
        sets = {
            "hydramix": (f"{common} --generator {gh} --out {syn}/hydramix --name hydramix", [gh]),
            "pixelmix": (f"{common} --generator {gh} --out {syn}/pixelmix --mode pixel --name pixelmix", [gh]),
            "pixelmix-blur": (
                f"{common} --generator {gh} --out {syn}/pixelmix-blur --mode blur "
                f"--blur-reference {syn}/hydramix --name pixelmix-blur",
                [gh, syn / "hydramix" / "manifest.json"],
            ),
            "chimeramix": (
                f"{common} --generator {gc} --out {syn}/chimeramix --name chimeramix",
                [gc],
            ),
        }
        for name, (cmd, deps) in sets.items():
            out.append(
                {
                    "name": f"synthesize-{name}-s{s}",
                    "cmd": cmd + f" --metrics {syn}/{name}.metrics.json",
                    "deps": [str(sub / "manifest.json"), *map(str, deps)],
                    "outs": [str(syn / name / "manifest.json")],
                    "keep": {str(syn / f"{name}.metrics.json"): f"sets/{name}-s{s}.json"},
                }
            )
    # Within a seed: the hydramix generator, its sets, then the chimeramix generator (final order: see the end).
    chimeramix = [j for j in out if j["name"].startswith("generator-chimeramix")]
    out = [j for j in out if not j["name"].startswith("generator-chimeramix")]
    out += chimeramix
    cells = [(m, a, True, s) for m, a in SYNTHETIC_RUNS for s in SEEDS]
    classic = [] if synthetic_only else [(m, None, False, s) for m in CLASSIC for s in SEEDS]
    # Within a seed (the final sort below orders by seed): the combinations no target of issue 13 reads last.
    ordered = sorted(cells + classic, key=lambda c: ((c[0], c[1]) in UNTARGETED, c[3]))
    for method, augment, synthetic, s in ordered:
        sub = root / "subsets" / f"k{K}-seed{s}"
        name = run_name(method, augment)
        ckpt = root / "classifiers" / f"k{K}-seed{s}" / f"{name}.pt"
        metrics = root / "metrics" / f"{name}-s{s}.json"
        cmd = f"hydramix train-classifier --method {method} --seed {s} --subset {sub} --out {ckpt}"
        deps = [str(sub / "manifest.json")]
        if augment:
            cmd += f" --augment {augment}"
        if synthetic:
            syn = root / "synthetic" / f"k{K}-seed{s}" / method
            cmd += f" --synthetic {syn}"
            deps.append(str(syn / "manifest.json"))
        cmd += (
            f" && hydramix evaluate --checkpoint {ckpt} --subset {sub} --precision fp32 "
            f"--out-metrics {metrics} --out-plot {metrics.with_suffix('.png')}"
        )
        out.append({"name": f"classify-{name}-s{s}", "cmd": cmd, "deps": deps, "outs": [str(metrics)], "metrics": True})
    # Seed by seed from end to end: one seed's generators, sets and evaluations (its untargeted rows last) before
    # the next seed's generators, so that evaluations land (and can be committed) from the first half hour on, and
    # a run stopped by a session's end leaves one seed open, whose generators a fresh clone must rebuild.
    return sorted(out, key=lambda j: _seed_rank(j["name"]))


def _seed_rank(name: str) -> tuple[int, int, bool]:
    if name == "prepare" or name.startswith("subset-"):
        return (0, 0, False)
    seed = int(name.rsplit("-s", 1)[1])
    untargeted = any(name == f"classify-{run_name(m, a)}-s{seed}" for m, a in UNTARGETED)
    return (1, seed, untargeted)


def _ready(job: dict) -> bool:
    return all(Path(d).exists() for d in job["deps"])


def _done(job: dict) -> bool:
    return all(Path(o).exists() for o in job["outs"])


def _landed(job: dict, results: Path) -> bool:
    # An evaluation whose metrics JSON is already in --results (committed in an earlier session) is not rerun.
    return bool(job.get("metrics")) and (results / Path(job["outs"][0]).name).is_file()


def _needed(jobs_: list[dict], results: Path) -> list[dict]:
    """The jobs still to run: every evaluation not done and not landed, and only the jobs that produce an input
    one of them needs (transitively). On a fresh clone this rebuilds just the generators and sets that the
    missing evaluations read, not every one the landed evaluations once read."""
    by_out = {o: j for j in jobs_ for o in j["outs"]}
    keep: dict[str, dict] = {}
    stack = [j for j in jobs_ if j.get("metrics") and not _done(j) and not _landed(j, results)]
    while stack:
        job = stack.pop()
        if job["name"] in keep or _done(job):
            continue
        keep[job["name"]] = job
        stack += [by_out[d] for d in job["deps"] if d in by_out]
    return [j for j in jobs_ if j["name"] in keep]  # in the list's priority order


def _keep(job: dict, results: Path) -> None:
    """Copy a finished job's figures: evaluation metrics into ``results`` (what `hydramix report` reads), generator
    and synthetic-set JSONs into ``results``-inputs/."""
    files = {src: Path(f"{results}-inputs") / dst for src, dst in job.get("keep", {}).items()}
    if job.get("metrics"):
        files[job["outs"][0]] = results / Path(job["outs"][0]).name
    for src, dst in files.items():
        if Path(src).is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def _restore(job: dict, results: Path) -> bool:
    """Copy a job's committed outputs instead of running it: a generator whose weights an earlier session saved
    in ``results``-inputs/<restore>/ (generator.pt and its figures), so that a seed whose evaluations are split
    across sessions reads one generator, not a retrained one (retraining on another CPU is not bit-identical).
    Returns whether it restored."""
    src = Path(f"{results}-inputs") / job["restore"] if job.get("restore") else None
    if src is None or not (src / "generator.pt").is_file():
        return False
    dst = Path(job["outs"][0]).parent
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and f.name != "README.md":
            shutil.copyfile(f, dst / f.name)
    return _done(job)


def _load_jobs(script: str, list_args: list[str]) -> list[dict]:
    # A fresh interpreter, so that edits to the job list take effect between jobs.
    text = subprocess.run(
        [sys.executable, script, *list_args, "--list"], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(text)


def run_queue(
    script: str, root: Path, results: Path, n_jobs: int, dry_run: bool = False, list_args: list[str] | None = None
) -> None:
    """Run the jobs ``script --root ROOT [list_args] --list`` prints, ``n_jobs`` one-thread jobs at once, until
    none is left; each finished job's figures are copied with ``_keep``. Shared with ``run_sweep.py``."""
    list_args = ["--root", str(root), *(list_args or [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    running: dict[str, tuple[subprocess.Popen, dict, float]] = {}
    failed: set[str] = set()
    listed: list[dict] | None = None
    while True:
        for name, (proc, job, start) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            listed = None  # a slot freed: re-read the job list
            took = time.time() - start
            if proc.returncode != 0 or not _done(job):
                failed.add(name)
                print(f"FAILED {name} (rc {proc.returncode}, {took:.0f} s): see {logs / name}.log", flush=True)
                continue
            print(f"done {name} in {took:.0f} s", flush=True)
            _keep(job, results)
        if listed is None:
            # Only when a slot frees: a listing is an interpreter that imports torch (3.4 s of CPU measured), so
            # listing on every 10 s poll took about a quarter of a core from the two running jobs.
            listed = _load_jobs(script, list_args)
        todo = [j for j in _needed(listed, results) if j["name"] not in failed]
        todo = [j for j in todo if j["name"] not in running]
        ready = [j for j in todo if _ready(j)]
        if dry_run:
            for job in ready:
                print(job["name"], "::", job["cmd"])
            return
        if not todo and not running:
            print(f"all jobs finished; {len(failed)} failed: {sorted(failed)}", flush=True)
            return
        restored = False
        while ready and len(running) < n_jobs:
            job = ready.pop(0)
            if _restore(job, results):
                print(f"restored {job['name']} from {results}-inputs/{job['restore']}", flush=True)
                _keep(job, results)
                listed, restored = None, True  # its outputs exist now: the jobs waiting on them may be ready
                continue
            log = open(logs / f"{job['name']}.log", "w")  # noqa: SIM115 - closed with the process
            print(f"start {job['name']}", flush=True)
            proc = subprocess.Popen(job["cmd"], shell=True, env=env, stdout=log, stderr=subprocess.STDOUT)
            running[job["name"]] = (proc, job, time.time())
        if restored:
            continue  # re-list at once
        if not running and not ready:
            print(f"nothing can run: {len(todo)} jobs wait on inputs that failed", flush=True)
            return
        time.sleep(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("runs/k10"))
    parser.add_argument("--results", type=Path, default=Path("docs/results/cpu-quick-k10-5seeds"))
    parser.add_argument("--jobs", type=int, default=2, help="Jobs at once (one thread each).")
    parser.add_argument("--list", action="store_true", help="Print every job as JSON and exit.")
    parser.add_argument("--dry-run", action="store_true", help="Print the jobs that would start now and exit.")
    parser.add_argument("--sync", action="store_true", help="Copy every finished job's figures to --results, exit.")
    parser.add_argument(
        "--synthetic-only",
        action="store_true",
        help="Leave out the classic rows (real images only): their code and weights are pinned "
        "(tests/stages/test_classifier_resume.py), so a new generator recipe reuses their landed metrics.",
    )
    args = parser.parse_args()
    if args.list:
        print(json.dumps(jobs(args.root, args.synthetic_only)))
        return
    if args.sync:
        for job in jobs(args.root, args.synthetic_only):
            if _done(job):
                _keep(job, args.results)
        return
    extra = ["--synthetic-only"] if args.synthetic_only else []
    run_queue(__file__, args.root, args.results, args.jobs, args.dry_run, extra)


if __name__ == "__main__":
    main()
