"""Issue 13's recipe sweep on validation draws of the development seeds, never the test split.

    python benchmarks/run_sweep.py --root runs/sweep --results docs/results/val-sweep
    python benchmarks/sweep_table.py docs/results/val-sweep        # the table docs/generator.md shows

Each recipe in ``RECIPES`` is a set of overrides of ``params.yaml`` + ``BASE`` (the pre-decision default; written
to ``<root>/params/<recipe>.yaml``); per development seed (100, 101: k = 10 plus 200 validation images per class
from the rest of the train split) it trains a generator, synthesises the set and trains the listed classifier
runs, each read on the validation draw (`hydramix evaluate --split val`). A recipe with ``from`` reuses that
recipe's generator and set and changes only the classifier. The classic augmentations are read on the same draws
once. Plain `hydramix` commands, two one-thread jobs at once, resumable, the job list re-read between jobs
(``run_protocol.run_queue``). Every finished run's figures are copied to --results as
``<recipe>__<run>-s<seed>.json`` (evaluation), ``<recipe>__generator-s<seed>.json`` (metrics + timings) and
``<recipe>__set-s<seed>.json`` (set diagnostics).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import yaml
from run_protocol import run_queue  # this folder is on sys.path when run as a script

from pipeline.classify.augment import run_name

K = 10
VAL_PER_CLASS = 200
DEV_SEEDS = (100, 101)
PREPARED = Path("runs/k10/prepared")  # CIFAR-10 JPEG, as run_protocol.py prepares it
# The best classic augmentation of issue 12 (the baseline on these draws: docs/classifier.md "How the recipe...").
CLASSIC = ("autoaugment",)
DEFAULT_RUNS = (("hydramix", None), ("hydramix", "autoaugment"))

# The sweep's "default": params.yaml as it was before the sweep's decision made ranges+width32+adv02-r1 the default
# (docs/generator.md "Decision"), so every recipe keeps the params file it ran with.
BASE = {
    "generator": {
        "model": {"width": 16},
        "losses": {"adversarial": 0.05, "r1": 0.0},
        "masks": {"kind": "segmentation"},
    }
}

# name -> {"params": overrides of the BASE sections, "runs": [(method, augment)], "from": recipe?}, in the
# order they run; "classic" marks where the classic references (real images only, params.yaml) run.
RECIPES: dict[str, dict] = {
    "default": {"params": {}},
    # Classifier levers on the default generator's sets: a real-only end of the schedule; BatchNorm statistics of
    # real images.
    "default+tail20": {"from": "default", "params": {"classifier": {"real_tail": 0.2}}},
    "default+bnrecal": {"from": "default", "params": {"classifier": {"bn_recalibrate": True}}},
    "classic": {},  # (where the classic references run)
    # ChimeraMix's objective: reconstruction + pyramid + adversarial at weight 1, no mix target.
    "adv1-nomix": {"params": {"generator": {"losses": {"adversarial": 1.0, "mix": 0.0}}}},
    # The mix target only on the 8x8 low-pass (layout and colour), detail left to D; feature matching steadies G.
    "adv05-coarse2-fm1": {
        "params": {"generator": {"losses": {"adversarial": 0.5, "mix_levels": 2, "feature_matching": 1.0}}}
    },
    # Fewer synthetic rows per batch (0.25 instead of 0.5), on the default generator's sets.
    "default+share25": {"from": "default", "params": {"classifier": {"synthetic_share": 0.25}}},
    "base50": {"params": {"generator": {"masks": {"base_share": 0.5}}}},
    "ranges": {"params": {"generator": {"masks": {"kind": "ranges"}}}},
    # The classifier levers that helped the default's combination, on the ranges generator's sets.
    "ranges+share25": {
        "from": "ranges",
        "params": {"classifier": {"synthetic_share": 0.25}},
    },
    "ranges+bnrecal": {
        "from": "ranges",
        "params": {"classifier": {"bn_recalibrate": True}},
    },
    # Generator levers on top of ranges, the leading generator recipe: train on the N synthesis asks for
    # ([3, 4] rather than [2, 4]); coarser superpixels (fewer, larger regions); the generator twice as wide.
    "ranges+n34": {"params": {"generator": {"masks": {"kind": "ranges", "n_sources": [3, 4]}}}},
    "ranges+scale200": {"params": {"generator": {"masks": {"kind": "ranges", "scale": 200.0, "min_size": 40}}}},
    "ranges+width32": {"params": {"generator": {"masks": {"kind": "ranges"}, "model": {"width": 32}}}},
    # Third session, on ranges+width32 (the closest to the rule): a real-only tail of 20 % (the classifier lever
    # that helped the default's combination most); the adversarial term given 4x the weight with R1 on D, which
    # was winning (D loss 0.12 at the end of ranges+width32), so that D's gradients stay informative.
    "ranges+width32+tail20": {"from": "ranges+width32", "params": {"classifier": {"real_tail": 0.2}}},
    "ranges+width32+adv02-r1": {
        "params": {
            "generator": {
                "masks": {"kind": "ranges"},
                "model": {"width": 32},
                "losses": {"adversarial": 0.2, "r1": 1.0},
            }
        }
    },
}


def merged(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` applied key by key (nested dicts merged, anything else replaced)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def params_file(root: Path, recipe: str) -> Path:
    """Write (when changed) and return the recipe's params file: params.yaml with BASE, then the overrides of the
    recipe it takes its sets ``from`` (if any), then its own."""
    path = root / "params" / f"{recipe}.yaml"
    spec = RECIPES[recipe]
    base = merged(yaml.safe_load(Path("params.yaml").read_text()), BASE)
    if "from" in spec:
        base = merged(base, RECIPES[spec["from"]]["params"])
    text = yaml.safe_dump(merged(base, spec["params"]))
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def classify_job(root: Path, recipe: str | None, method: str, augment: str | None, s: int, params: Path) -> dict:
    sub = root / "subsets" / f"k{K}-seed{s}"
    name = run_name(method, augment)
    tag = recipe or "classic"
    ckpt = root / "classifiers" / tag / f"s{s}" / f"{name}.pt"
    metrics = root / "metrics" / f"{tag}__{name}-s{s}.json"
    cmd = f"hydramix train-classifier --params {params} --method {method} --seed {s} --subset {sub} --out {ckpt}"
    deps = [str(sub / "manifest.json")]
    if augment:
        cmd += f" --augment {augment}"
    if recipe is not None:
        source = RECIPES[recipe].get("from", recipe)
        syn = root / "synthetic" / source / f"s{s}"
        cmd += f" --synthetic {syn}"
        deps.append(str(syn / "manifest.json"))
    cmd += (
        f" && hydramix evaluate --checkpoint {ckpt} --subset {sub} --split val --precision fp32 "
        f"--out-metrics {metrics} --out-plot {metrics.with_suffix('.png')} --threads 1"
    )
    return {"name": f"classify-{tag}-{name}-s{s}", "cmd": cmd, "deps": deps, "outs": [str(metrics)], "metrics": True}


def jobs(root: Path) -> list[dict]:
    """Every job of the sweep in priority order: {name, cmd, deps, outs, metrics?, keep?}."""
    out: list[dict] = []
    for s in DEV_SEEDS:
        sub = root / "subsets" / f"k{K}-seed{s}"
        out.append(
            {
                "name": f"subset-s{s}",
                "cmd": f"hydramix subset --prepared {PREPARED} --out {sub} --k {K} --seed {s} "
                f"--val-per-class {VAL_PER_CLASS}",
                "deps": [str(PREPARED / "manifest.json")],
                "outs": [str(sub / "manifest.json")],
            }
        )
    for recipe, spec in RECIPES.items():
        if recipe == "classic":
            out += [classify_job(root, None, m, None, s, Path("params.yaml")) for m in CLASSIC for s in DEV_SEEDS]
            continue
        params = params_file(root, recipe)
        if "from" not in spec:
            for s in DEV_SEEDS:
                sub = root / "subsets" / f"k{K}-seed{s}"
                g = root / "generators" / recipe / f"s{s}"
                out.append(
                    {
                        "name": f"generator-{recipe}-s{s}",
                        "cmd": f"hydramix train-generator --params {params} --subset {sub} --seed {s} "
                        f"--generator {g}/generator.pt --checkpoint {g}/checkpoint.pt --metrics {g}/metrics.json "
                        f"--timings {g}/timings.json --loss-curve {g}/loss.csv --grid {g}/grid.png "
                        "--no-progress --threads 1",
                        "deps": [str(sub / "manifest.json")],
                        "outs": [str(g / "generator.pt")],
                        "keep": {
                            str(g / "metrics.json"): f"{recipe}__generator-s{s}.json",
                            str(g / "timings.json"): f"{recipe}__timings-s{s}.json",
                        },
                    }
                )
            for s in DEV_SEEDS:
                sub = root / "subsets" / f"k{K}-seed{s}"
                g = root / "generators" / recipe / f"s{s}" / "generator.pt"
                syn = root / "synthetic" / recipe / f"s{s}"
                out.append(
                    {
                        "name": f"synthesize-{recipe}-s{s}",
                        "cmd": f"hydramix synthesize --params {params} --subset {sub} --seed {s} --generator {g} "
                        f"--out {syn} --name hydramix --metrics {syn}.metrics.json --threads 1",
                        "deps": [str(sub / "manifest.json"), str(g)],
                        "outs": [str(syn / "manifest.json")],
                        "keep": {f"{syn}.metrics.json": f"{recipe}__set-s{s}.json"},
                    }
                )
        for s in DEV_SEEDS:
            for method, augment in spec.get("runs", DEFAULT_RUNS):
                out.append(classify_job(root, recipe, method, augment, s, params))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--results", type=Path, default=Path("docs/results/val-sweep"))
    parser.add_argument("--jobs", type=int, default=2, help="Jobs at once (one thread each).")
    parser.add_argument("--list", action="store_true", help="Print every job as JSON and exit.")
    parser.add_argument("--dry-run", action="store_true", help="Print the jobs that would start now and exit.")
    args = parser.parse_args()
    if args.list:
        print(json.dumps(jobs(args.root)))
        return
    run_queue(__file__, args.root, args.results, args.jobs, args.dry_run)


if __name__ == "__main__":
    main()
