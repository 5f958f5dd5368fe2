"""``benchmarks/seed_tables.py``: the per-seed top-1 and set-diagnostics tables of a multi-seed run."""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmark_scripts import load_benchmark


def load_script():
    return load_benchmark("seed_tables")


def write_metrics(path: Path, method: str, augment: str, seed: int, top1: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"method": method, "augment": augment, "seed": seed, "top1": top1}))


def write_set(path: Path, hf: float, div: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    diag = {"real": {"hf_share": 0.1, "diversity": 0.4}, "synthetic": {"hf_share": hf, "diversity": div}}
    path.write_text(json.dumps({"diagnostics": diag}))


def test_top1_table_orders_rows_names_combinations_and_lets_a_rerun_replace(tmp_path, capsys):
    old, new = tmp_path / "old", tmp_path / "new"
    write_metrics(old / "hydramix-s0.json", "hydramix", "baseline", 0, 0.30)
    write_metrics(old / "baseline-s0.json", "baseline", "baseline", 0, 0.25)
    write_metrics(old / "baseline-s1.json", "baseline", "baseline", 1, 0.27)
    write_metrics(new / "hydramix-s0.json", "hydramix", "baseline", 0, 0.32)  # the rerun replaces 30.00
    write_metrics(new / "combo-s1.json", "hydramix", "autoaugment", 1, 0.40)
    assert load_script().main(["--metrics", str(old), "--metrics", str(new)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| run | seed 0 | seed 1 | mean |"
    assert lines[2:] == [
        "| baseline | 25.00 | 27.00 | 26.00 |",
        "| hydramix | 32.00 | — | 32.00 |",
        "| hydramix+autoaugment | — | 40.00 | 40.00 |",
    ]


def test_ratio_table_divides_by_the_real_subset_and_means_over_seeds(tmp_path, capsys):
    sets = tmp_path / "sets"
    write_set(sets / "hydramix-s0.json", hf=0.09, div=0.36)
    write_set(sets / "hydramix-s1.json", hf=0.11, div=0.32)
    write_set(sets / "pixelmix-s0.json", hf=0.2, div=0.4)
    assert load_script().main(["--sets", str(sets)]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert rows == [
        "| pixelmix | 2.00 | 2.00x | 1.00 | 1.00x |",
        "| hydramix | 0.90 / 1.10 | 1.00x | 0.90 / 0.80 | 0.85x |",
    ]


def test_missing_inputs_are_one_line_errors(tmp_path, capsys):
    script = load_script()
    assert script.main(["--metrics", str(tmp_path / "absent")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert script.main(["--metrics", str(tmp_path / "empty")]) == 2
    assert "no metrics JSON" in capsys.readouterr().err
    assert script.main(["--sets", str(tmp_path / "empty")]) == 2
    assert "no <set>-s<seed>.json" in capsys.readouterr().err
