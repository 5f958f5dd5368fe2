"""``score_dataset`` called directly (no Typer): a full run on a tiny random-initialised local checkpoint, the
skipped result without weights, require_weights, and inputs checked before weights. Plumbing only: the values
from random weights are never asserted or reported."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import TINY_CLASSES, TINY_NAME, synthetic_dataset, tiny_checkpoint, write_lines

from pipeline.core.errors import HydraMixError
from pipeline.metric.sample_table import SAMPLE_SCHEMA
from pipeline.metric.score_dataset import REAL_DATASETS, ScoreConfig, ScoreRequest, score_dataset

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def request(tmp_path: Path, subset: Path, cfg: ScoreConfig, **changes) -> ScoreRequest:
    fields = {"out_samples": tmp_path / "out/s.parquet", "out_plot": tmp_path / "out/plot.png", **changes}
    return ScoreRequest(subset=subset, cfg=cfg, **fields)


@pytest.fixture
def tiny_cfg(tmp_path) -> ScoreConfig:
    vocab = write_lines(tmp_path / "vocab.txt", ["n02121808\tdomestic cat", "n02084071\tdog", "car"])
    checkpoint = tiny_checkpoint(tmp_path / "tiny")
    return ScoreConfig(
        model=TINY_NAME,
        pretrained=str(checkpoint),
        device="cpu",
        precision="fp32",
        batch_size=8,
        vocabulary=str(vocab),
        templates="simple",
        top_k=2,
        threads=1,
    )


def test_scores_every_dataset_and_writes_table_and_plot(tmp_path, tiny_subset, tiny_cfg):
    synth = synthetic_dataset(tmp_path / "synth", n_per_class=2, class_names=TINY_CLASSES)
    cache = tmp_path / "cache"
    result = score_dataset(request(tmp_path, tiny_subset, tiny_cfg, synthetic=(("mix", synth),), cache_dir=cache))
    assert result.skipped is None
    metrics = result.metrics
    assert metrics["status"] == "ok" and metrics["model"] == TINY_NAME
    assert list(metrics["datasets"]) == [*REAL_DATASETS, "mix"]  # scoring order, the order the stage prints
    assert {name: d["n_images"] for name, d in metrics["datasets"].items()} == {
        "real_train": 32,
        "real_test": 16,
        "mix": 8,
    }
    assert "threads" not in metrics["params"] and metrics["params"]["top_k"] == 2
    table = pq.read_table(tmp_path / "out/s.parquet")
    assert table.schema.equals(SAMPLE_SCHEMA) and table.num_rows == 56
    assert table.slice(0, 1).to_pylist()[0]["key"].startswith("real_train-")
    assert all(len(ids) == 2 for ids in table.column("top_synset_ids").to_pylist())
    assert (tmp_path / "out/plot.png").read_bytes().startswith(PNG_MAGIC)
    assert list(cache.glob("text-*.safetensors"))


def test_without_a_cache_dir_nothing_is_cached(tmp_path, tiny_subset, tiny_cfg, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the stage's default is not the library's
    result = score_dataset(request(tmp_path, tiny_subset, tiny_cfg))
    assert result.metrics["status"] == "ok" and list(result.metrics["datasets"]) == list(REAL_DATASETS)
    assert not (tmp_path / "xdg").exists() and not list(tmp_path.rglob("text-*.safetensors"))


def test_missing_weights_give_a_skipped_result_with_placeholder_outputs(tmp_path, tiny_subset):
    missing = tmp_path / "nowhere" / "open_clip_model.bin"
    result = score_dataset(request(tmp_path, tiny_subset, ScoreConfig(pretrained=str(missing), device="cpu")))
    assert result.skipped is not None and "does not exist" in result.skipped
    assert result.metrics == {
        "status": "skipped",
        "reason": result.skipped,
        "model": "ViT-B-32",
        "pretrained": str(missing),
    }
    table = pq.read_table(tmp_path / "out/s.parquet")
    assert table.num_rows == 0 and table.schema.equals(SAMPLE_SCHEMA)
    assert (tmp_path / "out/plot.png").read_bytes().startswith(PNG_MAGIC)


def test_require_weights_raises_and_writes_nothing(tmp_path, tiny_subset):
    cfg = ScoreConfig(pretrained=str(tmp_path / "none.bin"), require_weights=True, device="cpu")
    with pytest.raises(HydraMixError, match="require_weights is true.*--pretrained PATH"):
        score_dataset(request(tmp_path, tiny_subset, cfg))
    assert not (tmp_path / "out").exists()


def test_inputs_are_checked_before_weights(tmp_path, tiny_subset):
    missing = ScoreConfig(pretrained=str(tmp_path / "none.bin"), device="cpu")  # would be a skip, not an error
    not_shards = tmp_path / "not_shards"
    not_shards.mkdir()
    cases = [
        (ScoreConfig(model="ViT-Q-99", pretrained=missing.pretrained), {}, "unknown open_clip model"),
        (missing, {"synthetic": (("x", not_shards),)}, "manifest"),
        (missing, {"subset": tmp_path / "no_subset"}, "no_subset"),
        (ScoreConfig(pretrained=missing.pretrained, vocabulary="/no/such.txt"), {}, "/no/such.txt not found"),
    ]
    for cfg, changes, message in cases:
        subset = changes.pop("subset", tiny_subset)
        with pytest.raises(HydraMixError, match=message):
            score_dataset(request(tmp_path, subset, cfg, **changes))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("names", [("a", "a"), ("real_test",)])
def test_request_rejects_taken_dataset_names(tmp_path, names):
    with pytest.raises(ValueError, match="must be unique"):
        request(tmp_path, tmp_path, ScoreConfig(), synthetic=tuple((n, tmp_path) for n in names))
