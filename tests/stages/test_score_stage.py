"""``hydramix score`` end to end: the skipped path (no weights, no number), require_weights, bad input, and a
full run on a tiny random-initialised local checkpoint (plumbing only: outputs exist and line up; the values
from random weights are never asserted or reported)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import TINY_NAME, synthetic_dataset, tiny_checkpoint, write_lines
from typer.testing import CliRunner

from pipeline.metric.sample_table import SAMPLE_SCHEMA
from stages.cli import app

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_params(path: Path, **overrides) -> Path:
    score = {
        "model": "ViT-B-32",
        "pretrained": "laion2b_s34b_b79k",
        "require_weights": False,
        "device": "cpu",
        "precision": "fp32",
        "batch_size": 8,
        "vocabulary": "imagenet",
        "templates": "simple",
        "top_k": 5,
        "connect_timeout_s": 2.0,
    }
    path.write_text(yaml.safe_dump({"score": {**score, **overrides}}))
    return path


def invoke(tmp_path: Path, subset: Path, *extra: str, params: Path | None = None):
    params = params or write_params(tmp_path / "params.yaml")
    args = ["score", "--subset", str(subset), "--params", str(params), "--cache-dir", str(tmp_path / "cache")]
    args += [
        "--out-metrics",
        str(tmp_path / "out/metrics.json"),
        "--out-samples",
        str(tmp_path / "out/s.parquet"),
    ]
    args += ["--out-plot", str(tmp_path / "out/plot.png"), *extra]
    return CliRunner().invoke(app, args)


def test_no_weights_writes_skipped_outputs_and_exits_0(tmp_path, tiny_subset):
    missing = tmp_path / "nowhere" / "open_clip_model.bin"
    result = invoke(tmp_path, tiny_subset, "--pretrained", str(missing))
    assert result.exit_code == 0, result.output
    assert "scoring skipped" in result.stderr and "local checkpoint file" in result.stderr
    metrics = json.loads((tmp_path / "out/metrics.json").read_text())
    assert metrics["status"] == "skipped" and "does not exist" in metrics["reason"]
    assert metrics["model"] == "ViT-B-32" and metrics["pretrained"] == str(missing)
    assert set(metrics) == {"status", "reason", "model", "pretrained"}  # no number at all
    table = pq.read_table(tmp_path / "out/s.parquet")
    assert table.num_rows == 0 and table.schema.equals(SAMPLE_SCHEMA)
    assert (tmp_path / "out/plot.png").read_bytes().startswith(PNG_MAGIC)


def test_require_weights_fails_and_writes_nothing(tmp_path, tiny_subset):
    params = write_params(tmp_path / "params.yaml", pretrained=str(tmp_path / "none.bin"), require_weights=True)
    result = invoke(tmp_path, tiny_subset, params=params)
    assert result.exit_code == 1
    assert "require_weights is true" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    # the flag overrides the file the other way as well
    assert invoke(tmp_path, tiny_subset, "--no-require-weights", params=params).exit_code == 0


@pytest.mark.parametrize(
    ("extra", "overrides", "message"),
    [
        (["--model", "ViT-Q-99"], {}, "unknown open_clip model 'ViT-Q-99'"),
        ([], {"vocabulary": "/no/such/synsets.txt"}, "synset file /no/such/synsets.txt not found"),
        ([], {"top_k": 0}, "top_k must be >= 1"),
        (["--synthetic", "x=/no/such/dir"], {}, "--synthetic /no/such/dir: no such directory"),
    ],
)
def test_bad_input_gives_clear_errors(tmp_path, tiny_subset, extra, overrides, message):
    result = invoke(tmp_path, tiny_subset, *extra, params=write_params(tmp_path / "p.yaml", **overrides))
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.output


def test_missing_subset_is_an_error(tmp_path):
    result = invoke(tmp_path, tmp_path / "no_subset")
    assert result.exit_code == 1 and "error:" in result.stderr


def test_full_run_on_a_tiny_local_checkpoint(tmp_path, tiny_subset):
    checkpoint = tiny_checkpoint(tmp_path / "tiny")
    synth = synthetic_dataset(tmp_path / "synth", n_per_class=3, class_names=("circle", "square", "stripes", "checker"))
    vocab = write_lines(tmp_path / "vocab.txt", ["n02121808\tdomestic cat", "n02084071\tdog", "car", "tree"])
    params = write_params(tmp_path / "params.yaml", model=TINY_NAME, vocabulary=str(vocab))
    extra = ["--pretrained", str(checkpoint), "--synthetic", f"mix={synth}"]
    result = invoke(tmp_path, tiny_subset, *extra, params=params)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out/metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["vocabulary"]["n_synsets"] == 4
    assert set(metrics["datasets"]) == {"real_train", "real_test", "mix"}
    counts = {name: d["n_images"] for name, d in metrics["datasets"].items()}
    assert counts == {"real_train": 32, "real_test": 16, "mix": 12}
    assert set(metrics["datasets"]["mix"]["per_class"]) == {"circle", "square", "stripes", "checker"}
    table = pq.read_table(tmp_path / "out/s.parquet")
    assert table.num_rows == 60
    assert table.column("dataset").to_pylist().count("mix") == 12
    assert (tmp_path / "out/plot.png").read_bytes().startswith(PNG_MAGIC)
    assert list((tmp_path / "cache").glob("text-*.safetensors"))  # vocabulary + class prompts cached


def test_empty_synthetic_dataset_is_an_error(tmp_path, tiny_subset):
    checkpoint = tiny_checkpoint(tmp_path / "tiny")
    empty = synthetic_dataset(tmp_path / "empty", n_per_class=0)
    vocab = write_lines(tmp_path / "vocab.txt", ["car", "tree"])
    params = write_params(tmp_path / "params.yaml", model=TINY_NAME, vocabulary=str(vocab))
    extra = ["--pretrained", str(checkpoint), "--synthetic", str(empty)]
    result = invoke(tmp_path, tiny_subset, *extra, params=params)
    assert result.exit_code == 1 and "'empty' has no images" in result.stderr
    assert not (tmp_path / "out/s.parquet").exists()  # no half-written table under the final name
