"""Report aggregation on hand-made metrics files."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import HydraMixError
from pipeline.report import aggregate, load_metrics, markdown_table, mean_std, plot_results


def write_run(directory, method, seed, top1, macro=None, dataset="cifar10", k=10):
    path = directory / f"{method}-{dataset}-{k}-{seed}.json"
    record = {
        "method": method,
        "dataset": dataset,
        "k": k,
        "seed": seed,
        "top1": top1,
        "macro_accuracy": top1 if macro is None else macro,
    }
    path.write_text(json.dumps(record))
    return path


def test_mean_std_is_sample_std():
    assert mean_std([0.2, 0.4, 0.6]) == pytest.approx((0.4, 0.2))
    assert mean_std([0.3]) == (0.3, 0.0)


def test_aggregate_and_table(tmp_path):
    paths = [
        write_run(tmp_path, "hydramix", 0, 0.30),
        write_run(tmp_path, "baseline", 0, 0.20),
        write_run(tmp_path, "baseline", 1, 0.24),
        write_run(tmp_path, "baseline", 2, 0.22, macro=0.10),
        write_run(tmp_path, "hydramix", 1, 0.34),
        write_run(tmp_path, "baseline", 0, 0.50, k=50),
    ]
    rows = aggregate(load_metrics(paths))
    assert [(r["k"], r["method"], r["n"]) for r in rows] == [
        (10, "baseline", 3),
        (10, "hydramix", 2),
        (50, "baseline", 1),
    ]
    base = rows[0]
    assert base["top1_mean"] == pytest.approx(0.22) and base["top1_std"] == pytest.approx(0.02)
    assert base["macro_mean"] == pytest.approx((0.20 + 0.24 + 0.10) / 3)
    assert base["seeds"] == [0, 1, 2]
    table = markdown_table(rows)
    assert "| cifar10 | 10 | baseline | 22.00 ± 2.00 |" in table
    assert "| cifar10 | 10 | hydramix | 32.00 ± 2.83 |" in table and "| +10.00 |" in table
    assert "| cifar10 | 50 | baseline | 50.00 |" in table  # one seed: no ± shown
    plot_results(rows, tmp_path / "out" / "plot.png")
    assert (tmp_path / "out" / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_duplicate_seed_is_an_error(tmp_path):
    a = write_run(tmp_path, "baseline", 0, 0.2)
    b = tmp_path / "copy.json"
    b.write_text(a.read_text())
    with pytest.raises(HydraMixError, match="seed listed twice"):
        aggregate(load_metrics([a, b]))


def test_bad_metrics_file(tmp_path):
    (tmp_path / "x.json").write_text('{"top1": 0.5}')
    with pytest.raises(HydraMixError, match="missing method"):
        load_metrics([tmp_path / "x.json"])
    val = write_run(tmp_path, "baseline", 0, 0.3)
    val.write_text(json.dumps({**json.loads(val.read_text()), "split": "val"}))
    with pytest.raises(HydraMixError, match="a 'val' evaluation; the results table holds test runs only"):
        load_metrics([val])
    (tmp_path / "y.json").write_text("{")
    with pytest.raises(HydraMixError, match="not a readable metrics JSON"):
        load_metrics([tmp_path / "y.json"])
