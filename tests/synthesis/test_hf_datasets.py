"""Hugging Face ``datasets`` reads a synthetic dataset as it is: ``load_dataset(DIR)`` on the directory
``synthesize`` wrote gives the images, ``cls`` as a ``ClassLabel`` and the provenance, for one shard or many,
because the dataset card's YAML front matter says so (issue 15.13). Without it, a one-shard dataset loaded as
``manifest.json``: one row of JSON.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_MASKS, TINY_SYNTH
from typer.testing import CliRunner

from pipeline.synthesis.dataset_card import PROVENANCE_FEATURES, front_matter, render_card
from pipeline.synthesis.shards.dataset_writer import write_dataset
from pipeline.synthesis.shards.format import CARD, Sample, ShardConfig
from pipeline.synthesis.shards.reader import iter_samples, read_manifest
from pipeline.synthesis.shards.verification import verify
from stages.cli import app

runner = CliRunner()
NO_DATASETS = "Hugging Face `datasets` is not installed (pip install -e '.[dev]' installs it; CI does)"
MASKS = TINY_MASKS
SYNTH = {**TINY_SYNTH, "mode": "pixel"}
# Names YAML would misread unquoted (booleans, null, numbers, a mapping, a comment) and non-ASCII.
AWKWARD = ("yes", "null", "0", "a: b", "x #y", "naïve ✓")


def card_metadata(text: str) -> dict:
    """The YAML block between the card's opening ``---`` lines, parsed as the Hub parses it."""
    assert text.startswith("---\n")
    block, sep, _ = text[4:].partition("\n---\n")
    assert sep, "the front matter is not closed by a --- line"
    return yaml.safe_load(block)


def synthesize(tmp_path: Path, subset: Path, shard_size: int) -> Path:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"synthesize": SYNTH, "generator": {"masks": MASKS}}))
    out = tmp_path / f"ds-{shard_size}"
    args = ["synthesize", "--subset", str(subset), "--out", str(out), "--params", str(params)]
    result = runner.invoke(app, [*args, "--shard-size", str(shard_size)])
    assert result.exit_code == 0, result.output
    return out


def load(datasets, directory: Path, cache: Path):
    """``load_dataset(DIR)`` exactly as a user calls it, with the cache kept under the test's tmp_path."""
    return datasets.load_dataset(str(directory), cache_dir=str(cache))


def test_front_matter_declares_the_shards_and_the_features():
    manifest = {"class_names": list(AWKWARD), "total": 12}
    meta = card_metadata(front_matter(manifest))
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "*.tar"}]}]
    features = {f["name"]: f for f in meta["dataset_info"]["features"]}
    assert list(features) == ["png", "cls", "json", "__key__", "__url__"]
    assert features["png"]["dtype"] == "image"
    names = features["cls"]["dtype"]["class_label"]["names"]
    assert names == {str(i): n for i, n in enumerate(AWKWARD)}  # every awkward name read back as written
    provenance = {f["name"]: f.get("dtype", f.get("list")) for f in features["json"]["struct"]}
    assert provenance == {k: v[0] if isinstance(v, list) else v for k, v in PROVENANCE_FEATURES.items()}


def test_card_keeps_its_content_after_the_front_matter(tmp_path, tiny_subset):
    out = synthesize(tmp_path, tiny_subset, shard_size=6)
    text = (out / CARD).read_text()
    manifest = read_manifest(out)
    body = text.split("\n---\n", 1)[1]
    assert body.startswith("\n# Synthetic dataset `tiny`\n")
    for needle in ("wds.WebDataset", "load_dataset(", "## Licence", "## Loading", "24 synthetic 16x16"):
        assert needle in body
    assert card_metadata(text)["dataset_info"]["features"][1]["dtype"]["class_label"]["names"] == {
        str(i): n for i, n in enumerate(manifest["class_names"])
    }
    assert verify(out) == []  # the card's sha256 is still the manifest's card_sha256


@pytest.mark.parametrize(("shard_size", "n_shards"), [(24, 1), (6, 4)])
def test_load_dataset_gives_images_class_labels_and_provenance(tmp_path, tiny_subset, shard_size, n_shards):
    datasets = pytest.importorskip("datasets", reason=NO_DATASETS)
    out = synthesize(tmp_path, tiny_subset, shard_size)
    manifest = read_manifest(out)
    assert len(manifest["shards"]) == n_shards
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    loaded = load(datasets, out, tmp_path / "hf-cache")
    assert list(loaded) == ["train"]  # one split, of the shards: not manifest.json, not the card
    train = loaded["train"]
    assert train.num_rows == manifest["total"] == 24
    assert isinstance(train.features["cls"], datasets.ClassLabel)
    assert train.features["cls"].names == manifest["class_names"]
    assert isinstance(train.features["png"], datasets.Image)
    ours = list(iter_samples(out))
    for row, sample in zip(train, ours, strict=True):
        np.testing.assert_array_equal(np.asarray(row["png"].convert("RGB")), sample.image)  # decodes, lossless
        assert row["cls"] == sample.label and row["__key__"] == sample.key
        assert row["json"] == sample.meta  # every provenance key, with its value and type, survives
    assert train.features["cls"].int2str(train[5]["cls"]) == ours[5].meta["class"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # loading writes nothing beside the shards


def test_load_dataset_reads_awkward_class_names(tmp_path):
    """Class names YAML would misread (``yes``, ``null``, ``a: b``, ...) reach the ``ClassLabel`` unchanged."""
    datasets = pytest.importorskip("datasets", reason=NO_DATASETS)

    class Renderer:
        total = 2 * len(AWKWARD)

        def render(self, ids):
            rng = np.random.default_rng(0)
            return [
                Sample(f"{s:09d}", rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), int(s) % len(AWKWARD), {})
                for s in ids
            ]

    out = tmp_path / "awkward"
    manifest, _ = write_dataset(
        out,
        Renderer(),
        ShardConfig("awkward", 100),
        4,
        identity={"name": "awkward"},
        class_names=AWKWARD,
        resolution=4,
        card=render_card,
        progress=False,
    )
    train = load(datasets, out, tmp_path / "hf-cache")["train"]
    assert train.features["cls"].names == list(AWKWARD) and train.num_rows == manifest["total"]
    assert train["cls"] == [s % len(AWKWARD) for s in range(train.num_rows)]


def test_licence_caveat_follows_the_source_dataset():
    from pipeline.synthesis.dataset_card import licence_caveat

    assert "ciFAIR" in licence_caveat({"dataset": "cifair100"})
    assert "Krizhevsky" in licence_caveat({"dataset": "folder", "source": "/data/cifar10-jpeg.tar.gz"})
    assert "ImageNet" in licence_caveat({"dataset": "stl10"})
    assert "not recorded" in licence_caveat({"dataset": "folder", "source": "/my/photos"})
