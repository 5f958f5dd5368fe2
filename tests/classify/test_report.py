"""Report aggregation and paired statistics on hand-made metrics files; the ``hydramix report`` command."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

import pipeline.classify.report
from pipeline.classify.report import (
    aggregate,
    best_classic,
    compare,
    load_metrics,
    make_report,
    markdown_table,
    mean_std,
    plot_results,
    results_csv,
    t_interval,
)
from pipeline.core.errors import HydraMixError
from stages.cli import app

runner = CliRunner()

# t_{0.975, 2}. Closed form for 2 degrees of freedom: (2p - 1) / sqrt(2p(1 - p)) at p = 0.975.
T_975_DF2 = 4.302652729749462


def write_run(directory, method, seed, top1, macro=None, dataset="cifar10", k=10, augment=None):
    path = directory / f"{method}-{augment}-{dataset}-{k}-{seed}.json"
    record = {
        "method": method,
        "dataset": dataset,
        "k": k,
        "seed": seed,
        "top1": top1,
        "macro_accuracy": top1 if macro is None else macro,
    }
    if augment is not None:
        record["augment"] = augment
    path.write_text(json.dumps(record))
    return path


def write_runs(directory, method, top1s, augment=None, **kwargs):
    """One metrics file per seed 0, 1, ... with the given top-1s."""
    return [write_run(directory, method, seed, t, augment=augment, **kwargs) for seed, t in enumerate(top1s)]


def report_of(paths, reference="baseline"):
    return compare(aggregate(load_metrics(paths)), reference=reference)


def row(report, run, k=10):
    return next(r for r in report["rows"] if r["run"] == run and r["k"] == k)


def test_mean_std_is_sample_std():
    assert mean_std([0.2, 0.4, 0.6]) == pytest.approx((0.4, 0.2))
    assert mean_std([0.3]) == (0.3, 0.0)


def test_t_quantile_literal_is_the_closed_form():
    assert T_975_DF2 == pytest.approx(0.95 / math.sqrt(2 * 0.975 * 0.025), abs=1e-12)


def test_aggregate_and_table(tmp_path):
    paths = [
        write_run(tmp_path, "hydramix", 0, 0.30),
        write_run(tmp_path, "baseline", 0, 0.20),
        write_run(tmp_path, "baseline", 1, 0.24),
        write_run(tmp_path, "baseline", 2, 0.22, macro=0.10),
        write_run(tmp_path, "hydramix", 1, 0.34),
        write_run(tmp_path, "hydramix", 2, 0.32),
        write_run(tmp_path, "baseline", 0, 0.50, k=50),
    ]
    rows = aggregate(load_metrics(paths))
    assert [(r["k"], r["run"], r["n"]) for r in rows] == [
        (10, "baseline", 3),
        (10, "hydramix", 3),
        (50, "baseline", 1),
    ]
    base = rows[0]
    assert base["top1_mean"] == pytest.approx(0.22) and base["top1_std"] == pytest.approx(0.02)
    assert base["macro_mean"] == pytest.approx((0.20 + 0.24 + 0.10) / 3)
    assert base["seeds"] == [0, 1, 2] and base["top1_values"] == [0.20, 0.24, 0.22]
    table = markdown_table(compare(rows))
    assert (
        "| dataset | k | run | top-1 (%) | macro (%) | n | Δ vs baseline [95% CI] | Δ vs best classic [95% CI] | "
        "Δ vs its parts [95% CI] |" in (table)
    )
    assert "| cifar10 | 10 | baseline | 22.00 ± 2.00 | 18.00 ± 7.21 | 3 | — | — | — | 0, 1, 2 |" in table
    assert "| cifar10 | 10 | hydramix | 32.00 ± 2.00 |" in table and "| +10.00 [+10.00, +10.00] |" in table
    assert "| cifar10 | 50 | baseline | 50.00 | 50.00 | 1 | — | — | — | 0 |" in table  # one seed: no ± shown
    assert "paired by seed" in table and "mean ± t(0.975; n−1 df) · sd / √n" in table
    plot_results(compare(rows), tmp_path / "out" / "plot.png")
    assert (tmp_path / "out" / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_paired_interval_matches_hand_computation(tmp_path):
    # Per-seed differences 0.05, 0.07, 0.03: mean 0.05, sample sd 0.02.
    paths = write_runs(tmp_path, "baseline", [0.20, 0.24, 0.22]) + write_runs(tmp_path, "hydramix", [0.25, 0.31, 0.25])
    diff = row(report_of(paths), "hydramix")["vs_reference"]
    half = T_975_DF2 * 0.02 / math.sqrt(3)
    assert diff["reference"] == "baseline" and diff["n"] == 3
    assert diff["mean"] == pytest.approx(0.05, abs=1e-9)
    assert diff["low"] == pytest.approx(0.05 - half, abs=1e-9)
    assert diff["high"] == pytest.approx(0.05 + half, abs=1e-9)
    assert t_interval([0.05, 0.07, 0.03]) == pytest.approx(
        {"n": 3, "mean": 0.05, "low": 0.05 - half, "high": 0.05 + half}
    )
    # 100 * half = 4.968...: the interval in percentage points is [+0.03, +9.97].
    assert "| 3 | +5.00 [+0.03, +9.97] |" in markdown_table(report_of(paths))


def test_pairing_is_by_seed_not_by_file_order(tmp_path):
    paths = [
        write_run(tmp_path, "baseline", 7, 0.30),
        write_run(tmp_path, "baseline", 3, 0.10),
        write_run(tmp_path, "hydramix", 3, 0.12),
        write_run(tmp_path, "hydramix", 7, 0.36),
    ]
    diff = row(report_of(paths), "hydramix")["vs_reference"]
    # Differences 0.02 and 0.06; t_{0.975, 1} = tan(0.475 pi) (the Cauchy quantile).
    half = math.tan(0.475 * math.pi) * math.sqrt(((0.02 - 0.04) ** 2 + (0.06 - 0.04) ** 2) / 1) / math.sqrt(2)
    assert diff["mean"] == pytest.approx(0.04) and diff["high"] == pytest.approx(0.04 + half)


def test_unpaired_seeds_are_an_error(tmp_path):
    paths = write_runs(tmp_path, "baseline", [0.20, 0.24, 0.22]) + write_runs(tmp_path, "hydramix", [0.25, 0.31])
    with pytest.raises(
        HydraMixError, match=r"hydramix \(seeds 0, 1\) cannot be paired with baseline \(seeds 0, 1, 2\)"
    ):
        report_of(paths)


def test_unpaired_seeds_fail_the_command_cleanly(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    write_runs(metrics, "baseline", [0.20, 0.24, 0.22])
    write_runs(metrics, "hydramix", [0.25, 0.31])
    out = tmp_path / "reports"
    result = runner.invoke(
        app,
        ["report", "--metrics", str(metrics), "--out-table", str(out / "t.md"), "--out-plot", str(out / "p.png")],
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cifar10 k=10: hydramix (seeds 0, 1) cannot be paired with baseline")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert not out.exists()


def test_best_classic_is_the_best_non_baseline_classic_row(tmp_path):
    paths = (
        write_runs(tmp_path, "baseline", [0.60, 0.62])  # above every other classic row: not a candidate
        + write_runs(tmp_path, "cutout", [0.30, 0.32])
        + write_runs(tmp_path, "mixup", [0.40, 0.44])
        + write_runs(tmp_path, "cutmix", [0.38, 0.40])
        + write_runs(tmp_path, "hydramix", [0.70, 0.70])  # synthetic: not a candidate
        + write_runs(tmp_path, "baseline", [0.5, 0.5], k=50)
        + write_runs(tmp_path, "hydramix", [0.6, 0.6], k=50)
    )
    report = report_of(paths)
    assert report["panels"] == [
        {"dataset": "cifar10", "k": 10, "best_classic": "mixup"},
        {"dataset": "cifar10", "k": 50, "best_classic": None},
    ]
    assert best_classic([r for r in report["rows"] if r["k"] == 10])["run"] == "mixup"
    vs = row(report, "hydramix")["vs_best_classic"]
    assert vs["reference"] == "mixup" and vs["mean"] == pytest.approx(0.28)
    assert row(report, "cutout")["vs_best_classic"]["mean"] == pytest.approx(-0.11)
    assert row(report, "mixup")["vs_best_classic"] is None
    assert row(report, "hydramix", k=50)["vs_best_classic"] is None
    table = markdown_table(report)
    assert "cifar10 k=10: mixup; cifar10 k=50: none" in table
    assert "| cifar10 | 10 | hydramix | 70.00 ± 0.00 | 70.00 ± 0.00 | 2 | +9.00 [" in table
    assert "] vs mixup | — | 0, 1 |" in table
    assert "| cifar10 | 10 | mixup | 42.00 ± 2.83 | 42.00 ± 2.83 | 2 | -19.00 [-31.71, -6.29] | — | — | 0, 1 |" in table
    assert (
        "| cifar10 | 50 | hydramix | 60.00 ± 0.00 | 60.00 ± 0.00 | 2 | +10.00 [+10.00, +10.00] | — | — | 0, 1 |"
        in table
    )


def test_best_classic_seeds_must_match_too(tmp_path):
    # No baseline at k=10, so only the best-classic comparison pairs seeds there.
    paths = write_runs(tmp_path, "mixup", [0.4, 0.4, 0.4]) + write_runs(tmp_path, "hydramix", [0.5, 0.5])
    paths += write_runs(tmp_path, "baseline", [0.5], k=50)
    with pytest.raises(
        HydraMixError, match=r"k=10: hydramix \(seeds 0, 1\) cannot be paired with mixup \(seeds 0, 1, 2\)"
    ):
        report_of(paths)


def test_augment_key_names_the_run_and_orders_rows(tmp_path):
    paths = [
        write_run(tmp_path, "zeta", 0, 0.1),
        write_run(tmp_path, "hydramix", 0, 0.5, augment="mixup"),
        write_run(tmp_path, "alpha", 0, 0.1),
        write_run(tmp_path, "hydramix", 0, 0.4),  # an old file: no augment key
        write_run(tmp_path, "hydramix", 1, 0.4, augment="baseline"),  # the same run as no augment
        write_run(tmp_path, "hydramix", 0, 0.45, augment="cutout"),
        write_run(tmp_path, "pixelmix", 0, 0.3),
        write_run(tmp_path, "chimeramix", 0, 0.3, augment="mixup"),
        write_run(tmp_path, "mixup", 0, 0.35),
        write_run(tmp_path, "baseline", 0, 0.2),
    ]
    rows = aggregate(load_metrics(paths))
    assert [r["run"] for r in rows] == [
        "baseline",
        "mixup",
        "pixelmix",
        "chimeramix+mixup",
        "hydramix",
        "hydramix+cutout",
        "hydramix+mixup",
        "alpha",
        "zeta",
    ]
    assert next(r for r in rows if r["run"] == "hydramix")["seeds"] == [0, 1]
    report = compare([r for r in rows if r["run"] != "hydramix"])
    assert row(report, "hydramix+mixup")["vs_reference"]["mean"] == pytest.approx(0.3)
    assert "| cifar10 | 10 | hydramix+mixup | 50.00 |" in markdown_table(report)


def test_single_seed_shows_the_difference_without_interval(tmp_path, monkeypatch):
    from matplotlib.container import ErrorbarContainer

    paths = (
        write_runs(tmp_path, "baseline", [0.20, 0.24, 0.22])
        + write_runs(tmp_path, "hydramix", [0.25, 0.31, 0.25])
        + write_runs(tmp_path, "baseline", [0.30], k=50)
        + write_runs(tmp_path, "mixup", [0.35], k=50)
        + write_runs(tmp_path, "hydramix", [0.40], k=50)
    )
    report = report_of(paths)
    diff = row(report, "hydramix", k=50)["vs_reference"]
    assert diff == pytest.approx({"reference": "baseline", "n": 1, "mean": 0.10, "low": None, "high": None})
    table = markdown_table(report)
    assert "| cifar10 | 50 | hydramix | 40.00 | 40.00 | 1 | +10.00 [—] | +5.00 [—] vs mixup | — | 0 |" in table

    figures = []
    monkeypatch.setattr(pipeline.classify.report, "save_figure", lambda fig, path: figures.append(fig))
    plot_results(report, tmp_path / "plot.png")
    (top10, top50), (bottom10, bottom50) = figures[0].axes[:2], figures[0].axes[2:]

    def error_bars(ax):
        return sum(len(c.lines[2][0].get_segments()) for c in ax.containers if isinstance(c, ErrorbarContainer))

    assert (error_bars(top10), error_bars(top50)) == (2, 0)  # std only where n > 1
    assert (error_bars(bottom10), error_bars(bottom50)) == (1, 0)  # CI for hydramix at k=10 only
    assert len(bottom50.patches) == 2  # mixup and hydramix differences; none for baseline itself


def test_reference_option(tmp_path):
    paths = write_runs(tmp_path, "baseline", [0.2, 0.2]) + write_runs(tmp_path, "hydramix", [0.3, 0.4])
    paths += write_runs(tmp_path, "baseline", [0.5, 0.5], k=50)
    report = report_of(paths, reference="hydramix")
    assert row(report, "baseline")["vs_reference"]["mean"] == pytest.approx(-0.15)
    assert row(report, "baseline", k=50)["vs_reference"] is None  # no hydramix in that panel: not an error
    table = markdown_table(report)
    assert (
        "Δ vs hydramix [95% CI]" in table
        and "| cifar10 | 50 | baseline | 50.00 ± 0.00 | 50.00 ± 0.00 | 2 | — |" in table
    )


def test_unknown_reference_is_an_error(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    paths = write_runs(metrics, "hydramix", [0.3]) + write_runs(metrics, "baseline", [0.2])
    with pytest.raises(HydraMixError, match="reference run 'cutmix' is in no panel; runs present: baseline, hydramix"):
        report_of(paths, reference="cutmix")
    out = tmp_path / "reports"
    args = ["report", "--metrics", str(metrics), "--out-table", str(out / "t.md"), "--out-plot", str(out / "p.png")]
    result = runner.invoke(app, [*args, "--reference", "cutmix"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr == "error: reference run 'cutmix' is in no panel; runs present: baseline, hydramix\n"
    assert not out.exists()


def test_report_command_writes_table_and_plot(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    write_runs(metrics, "baseline", [0.2, 0.22])
    write_runs(metrics, "mixup", [0.25, 0.26])
    write_runs(metrics, "hydramix", [0.3, 0.31], augment="mixup")
    out = tmp_path / "reports"
    args = ["report", "--metrics", str(metrics), "--out-table", str(out / "t.md"), "--out-plot", str(out / "p.png")]
    result = runner.invoke(app, [*args, "--reference", "mixup"])
    assert result.exit_code == 0, result.output
    table = (out / "t.md").read_text()
    assert "| hydramix+mixup |" in table and "Δ vs mixup [95% CI]" in table
    assert (
        result.stdout
        == table + f"6 run(s) in 3 row(s), 1 panel(s), reference mixup; wrote {out / 't.md'} and {out / 'p.png'}\n"
    )
    assert (out / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out.iterdir()) == ["p.png", "t.md"]  # no temporary files left
    help_text = runner.invoke(app, ["report", "--help"]).output
    assert "--reference" in help_text and "paired by seed" in help_text


def test_make_report_writes_what_the_command_writes_and_refuses_an_unknown_reference(tmp_path):
    paths = [*write_runs(tmp_path, "baseline", [0.2, 0.22]), *write_runs(tmp_path, "hydramix", [0.3, 0.31])]
    lib, cli = tmp_path / "lib", tmp_path / "cli"
    report, table = make_report(paths, lib / "t.md", lib / "p.png", out_csv=lib / "r.csv")
    assert (lib / "t.md").read_text() == table and table == markdown_table(report_of(paths))
    assert [r["run"] for r in report["rows"]] == ["baseline", "hydramix"]
    args = ["report", "--out-table", str(cli / "t.md"), "--out-plot", str(cli / "p.png")]
    args += ["--out-csv", str(cli / "r.csv"), *(f"--metrics={p}" for p in paths)]
    assert runner.invoke(app, args).exit_code == 0
    for name in ("t.md", "r.csv"):
        assert (cli / name).read_bytes() == (lib / name).read_bytes(), name
    assert (lib / "p.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(HydraMixError, match="reference run 'mixup' is in no panel"):
        make_report(paths, tmp_path / "x" / "t.md", tmp_path / "x" / "p.png", reference="mixup")
    assert not (tmp_path / "x" / "t.md").exists()


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
    bad = write_run(tmp_path, "hydramix", 0, 0.3)
    bad.write_text(json.dumps({**json.loads(bad.read_text()), "augment": 3}))
    with pytest.raises(HydraMixError, match="'augment' must be a string or null, got 3"):
        load_metrics([bad])


def test_results_csv_is_one_row_per_run_for_dvc_plots(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    write_runs(metrics, "baseline", [0.2, 0.22])
    write_runs(metrics, "hydramix", [0.3, 0.31])
    out = tmp_path / "reports"
    args = ["report", "--metrics", str(metrics), "--out-table", str(out / "t.md"), "--out-plot", str(out / "p.png")]
    result = runner.invoke(app, [*args, "--out-csv", str(out / "r.csv")])
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(f"wrote {out / 't.md'}, {out / 'p.png'} and {out / 'r.csv'}\n")
    lines = (out / "r.csv").read_text().splitlines()
    assert lines[0] == "label,dataset,k,run,n,top1,top1_std,macro"
    assert [line.split(",")[0] for line in lines[1:]] == ["baseline", "hydramix"]
    assert lines[2].split(",")[4:6] == ["2", "30.50"]
    # Several panels: the label says which, so a bar chart never merges two datasets or k.
    write_runs(metrics, "baseline", [0.4, 0.41], k=50)
    assert "k=50: baseline" in results_csv(report_of(sorted(metrics.glob("*.json"))))


def test_a_combination_is_paired_with_each_of_its_parts(tmp_path):
    paths = write_runs(tmp_path, "baseline", [0.20, 0.22, 0.21])
    paths += write_runs(tmp_path, "mixup", [0.30, 0.33, 0.31])
    paths += write_runs(tmp_path, "hydramix", [0.25, 0.26, 0.28])
    paths += write_runs(tmp_path, "hydramix", [0.32, 0.34, 0.35], augment="mixup")
    paths += write_runs(tmp_path, "pixelmix", [0.20, 0.20, 0.20], augment="cutout")  # cutout alone was not run
    report = report_of(paths)
    combo = row(report, "hydramix+mixup")
    assert [d["reference"] for d in combo["vs_parts"]] == ["mixup", "hydramix"]
    assert combo["vs_parts"][0]["mean"] == pytest.approx(0.0233333, abs=1e-6)  # (0.02 + 0.01 + 0.04) / 3
    assert combo["vs_parts"][1]["mean"] == pytest.approx(0.0733333, abs=1e-6)
    assert [d["reference"] for d in row(report, "pixelmix+cutout")["vs_parts"]] == []
    assert row(report, "mixup")["vs_parts"] == []
    table = markdown_table(report)
    assert "+2.33 [" in table and "] vs mixup; +7.33 [" in table and "] vs hydramix |" in table
