"""train-classifier, evaluate and report end to end through the CLI, and their error cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_imageset
from typer.testing import CliRunner

from pipeline.core.digest import file_digest
from pipeline.synthesis.shards.dataset_writer import finish_dataset
from pipeline.synthesis.shards.format import Sample
from pipeline.synthesis.shards.writer import write_shard

runner = CliRunner()

PARAMS = """
classifier:
  arch: wrn-10-1
  dropout: 0.0
  iterations: 2
  batch_size: 8
  synthetic_share: 0.5
  lr: 0.05
  warmup_iterations: 1
  momentum: 0.9
  weight_decay: 0.0005
  label_smoothing: 0.1
  val_per_class: 0
  eval_batch_size: 100
  seed: 0
  device: cpu
  precision: auto
  augment:
    pad: 2
    cutout_fraction: 0.5
    erasing_p: 0.5
    mixup_alpha: 1.0
    cutmix_alpha: 1.0
    autoaugment_policy: cifar10
"""


@pytest.fixture(scope="module")
def app():
    from stages.cli import app

    return app


@pytest.fixture
def params(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS)
    return path


def write_synthetic(directory: Path, n_classes: int = 4, n_per_class: int = 3, subset: Path | None = None) -> Path:
    """A tiny synthetic dataset directory in the shard format of pipeline.synthesis.shards, made from ``subset``."""
    images = make_imageset(n_per_class, resolution=16, n_classes=n_classes, seed=9)
    directory.mkdir(parents=True)
    samples = [
        Sample(key=f"s{i:04d}", image=img, label=int(label), meta={})
        for i, (img, label) in enumerate(zip(images.images, images.labels, strict=True))
    ]
    entry = write_shard(directory / "hydramix-000000.tar", samples)
    finish_dataset(
        directory,
        [entry],
        class_names=images.class_names,
        resolution=16,
        counts=images.counts(),
        identity={
            "method": "test",
            "subset": {"manifest_sha256": file_digest(subset / "manifest.json") if subset else None},
        },
        card="tiny test set\n",
    )
    return directory


def invoke(app, *args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("command", ["train-classifier", "evaluate", "report"])
def test_help(app, command):
    result = invoke(app, command, "--help")
    assert result.exit_code == 0 and "--out" in result.output


def test_train_evaluate_report_end_to_end(app, tmp_path, params, tiny_subset):
    ckpt, train_stats = tmp_path / "m" / "baseline.pt", tmp_path / "m" / "train.json"
    result = invoke(
        app,
        "train-classifier",
        "--method",
        "baseline",
        "--subset",
        tiny_subset,
        "--out",
        ckpt,
        "--out-metrics",
        train_stats,
        "--params",
        params,
        "--seed",
        "3",
    )
    assert result.exit_code == 0, result.output
    assert ckpt.is_file() and json.loads(train_stats.read_text())["method"] == "baseline"

    metrics, plot = tmp_path / "eval" / "baseline.json", tmp_path / "eval" / "baseline.png"
    result = invoke(
        app,
        "evaluate",
        "--checkpoint",
        ckpt,
        "--subset",
        tiny_subset,
        "--out-metrics",
        metrics,
        "--out-plot",
        plot,
    )
    assert result.exit_code == 0, result.output
    record = json.loads(metrics.read_text())
    assert (record["method"], record["dataset"], record["k"], record["seed"]) == ("baseline", "tiny", 8, 3)
    assert record["n_test"] == 16 and sum(map(sum, record["confusion"])) == 16
    assert 0.0 <= record["top1"] <= 1.0 and set(record["per_class"]) == {
        "circle",
        "square",
        "stripes",
        "checker",
    }
    assert plot.read_bytes()[:4] == b"\x89PNG"

    table, summary = tmp_path / "report.md", tmp_path / "report.png"
    result = invoke(app, "report", "--metrics", tmp_path / "eval", "--out-table", table, "--out-plot", summary)
    assert result.exit_code == 0, result.output
    assert "| tiny | 8 | baseline |" in table.read_text() and summary.is_file()


def test_synthetic_method_trains_on_shards(app, tmp_path, params, tiny_subset):
    synthetic = write_synthetic(tmp_path / "syn", subset=tiny_subset)
    result = invoke(
        app,
        "train-classifier",
        "--method",
        "hydramix",
        "--subset",
        tiny_subset,
        "--synthetic",
        synthetic,
        "--out",
        tmp_path / "h.pt",
        "--params",
        params,
    )
    assert result.exit_code == 0, result.output


def test_a_synthetic_method_combined_with_mixup_end_to_end(app, tmp_path, params, tiny_subset):
    synthetic = write_synthetic(tmp_path / "syn", subset=tiny_subset)
    ckpt, metrics = tmp_path / "hydramix+mixup.pt", tmp_path / "eval" / "hydramix+mixup.json"
    result = invoke(
        app, "train-classifier", "--method", "hydramix", "--augment", "mixup", "--subset", tiny_subset,
        "--synthetic", synthetic, "--out", ckpt, "--params", params,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "hydramix+mixup: 2 steps" in result.output
    result = invoke(
        app, "evaluate", "--checkpoint", ckpt, "--subset", tiny_subset, "--out-metrics", metrics,
        "--out-plot", tmp_path / "eval" / "h.png",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(metrics.read_text())
    assert (record["method"], record["augment"]) == ("hydramix", "mixup")


def test_a_synthetic_set_of_another_subset_is_refused(app, tmp_path, params, tiny_subset):
    foreign = write_synthetic(tmp_path / "syn")  # made from no subset we know
    args = ["--method", "hydramix", "--subset", tiny_subset, "--synthetic", foreign, "--params", params]
    _fails(invoke(app, "train-classifier", *args, "--out", tmp_path / "x.pt"), "made from another subset")
    assert not (tmp_path / "x.pt").exists()
    result = invoke(app, "train-classifier", *args, "--out", tmp_path / "y.pt", "--allow-foreign-synthetic")
    assert result.exit_code == 0, result.output


def test_bad_augment_names_and_combinations(app, tmp_path, params, tiny_subset):
    base = ["--subset", tiny_subset, "--out", tmp_path / "x.pt", "--params", params]
    synthetic = write_synthetic(tmp_path / "syn", subset=tiny_subset)
    _fails(
        invoke(app, "train-classifier", "--method", "hydramix", "--augment", "mixmix", "--synthetic", synthetic, *base),
        "unknown augmentation 'mixmix'",
        "trivialaugment",
    )
    _fails(invoke(app, "train-classifier", "--method", "mixup", "--augment", "cutmix", *base), "--method cutmix")
    _fails(invoke(app, "train-classifier", "--method", "hydramix", "--augment", "mixup", *base), "needs --synthetic")
    assert not (tmp_path / "x.pt").exists()


def _fails(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output


def test_bad_method_arch_and_synthetic_rules(app, tmp_path, params, tiny_subset):
    out = tmp_path / "x.pt"
    base = ["--subset", tiny_subset, "--out", out, "--params", params]
    _fails(invoke(app, "train-classifier", "--method", "mixmix", *base), "unknown method 'mixmix'", "hydramix")
    _fails(
        invoke(app, "train-classifier", "--method", "baseline", "--arch", "vgg", *base),
        "unknown architecture 'vgg'",
        "wrn-16-8",
    )
    _fails(invoke(app, "train-classifier", "--method", "chimeramix", *base), "needs --synthetic")
    synthetic = write_synthetic(tmp_path / "syn", subset=tiny_subset)
    _fails(
        invoke(app, "train-classifier", "--method", "cutmix", "--synthetic", synthetic, *base),
        "uses no synthetic data",
    )
    assert not out.exists()


def test_synthetic_class_mismatch_and_corrupt_shard(app, tmp_path, params, tiny_subset):
    base = ["--subset", tiny_subset, "--out", tmp_path / "x.pt", "--params", params]
    three = write_synthetic(tmp_path / "three", n_classes=3, subset=tiny_subset)
    _fails(invoke(app, "train-classifier", "--method", "hydramix", "--synthetic", three, *base), "do not match")
    broken = write_synthetic(tmp_path / "broken", subset=tiny_subset)
    shard = broken / "hydramix-000000.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF
    shard.write_bytes(bytes(data))
    _fails(
        invoke(app, "train-classifier", "--method", "hydramix", "--synthetic", broken, *base),
        "hydramix verify",
    )
    shard.unlink()
    _fails(
        invoke(app, "train-classifier", "--method", "hydramix", "--synthetic", broken, *base),
        "hydramix verify",
    )
    assert not (tmp_path / "x.pt").exists()


def test_evaluate_refuses_another_subset(app, tmp_path, params, tiny_subset, make_subset):
    ckpt = tmp_path / "b.pt"
    assert (
        invoke(
            app,
            "train-classifier",
            "--method",
            "baseline",
            "--subset",
            tiny_subset,
            "--out",
            ckpt,
            "--params",
            params,
        ).exit_code
        == 0
    )
    outs = ["--out-metrics", tmp_path / "m.json", "--out-plot", tmp_path / "m.png"]
    other_seed = make_subset("seed1", seed=1)
    _fails(invoke(app, "evaluate", "--checkpoint", ckpt, "--subset", other_seed, *outs), "another subset")
    other_classes = make_subset("three", n_classes=3)
    _fails(invoke(app, "evaluate", "--checkpoint", ckpt, "--subset", other_classes, *outs), "another dataset")
    other_res = make_subset("res8", resolution=8)
    _fails(invoke(app, "evaluate", "--checkpoint", ckpt, "--subset", other_res, *outs), "resolution")
    _fails(
        invoke(app, "evaluate", "--checkpoint", tmp_path / "none.pt", "--subset", tiny_subset, *outs),
        "--checkpoint",
        "none.pt: no such file",
    )
    _fails(
        invoke(app, "evaluate", "--checkpoint", tmp_path, "--subset", tiny_subset, *outs),
        "is a directory, not a file",
    )
    _fails(
        invoke(app, "evaluate", "--checkpoint", ckpt, "--subset", tiny_subset, "--threads", "x", *outs),
        "--threads must be auto or an integer >= 1",
    )
    assert not (tmp_path / "m.json").exists()


def test_evaluate_on_the_validation_split(app, tmp_path, params, tiny_subset):
    from pipeline.data.subsets import read_subset, write_subset

    ckpt = tmp_path / "b.pt"
    assert (
        invoke(
            app, "train-classifier", "--method", "baseline", "--subset", tiny_subset, "--out", ckpt, "--params", params
        ).exit_code
        == 0
    )
    outs = ["--out-metrics", tmp_path / "v.json", "--out-plot", tmp_path / "v.png"]
    _fails(
        invoke(app, "evaluate", "--checkpoint", ckpt, "--subset", tiny_subset, "--split", "val", *outs),
        "has no validation split; write one with `hydramix subset --val-per-class N`",
    )
    _fails(
        invoke(app, "evaluate", "--checkpoint", ckpt, "--subset", tiny_subset, "--split", "train", *outs),
        "unknown split 'train'",
    )
    assert not (tmp_path / "v.json").exists()

    data = read_subset(tiny_subset)
    val = make_imageset(2, resolution=16, n_classes=4, seed=5)
    with_val = tmp_path / "with_val"
    write_subset(with_val, data.train, data.test, dict(data.manifest), val)
    result = invoke(app, "evaluate", "--checkpoint", ckpt, "--subset", with_val, "--split", "val", *outs)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "v.json").read_text())
    assert record["split"] == "val" and record["n_test"] == 8 and "8 validation images" in result.output


def test_report_without_metrics(app, tmp_path):
    _fails(
        invoke(
            app,
            "report",
            "--metrics",
            tmp_path / "nothing*.json",
            "--out-table",
            tmp_path / "t.md",
            "--out-plot",
            tmp_path / "p.png",
        ),
        "no such file",
    )
