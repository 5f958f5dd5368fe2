"""open_clip plumbing with a tiny, randomly initialised open_clip model: shapes, batching, the text-embedding
cache, shard streaming, weight resolution and the vocabulary file. Random weights are used here ONLY for
plumbing assertions; no metric value from them is checked or reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from conftest import TINY_NAME, register_tiny_model

from pipeline.core.errors import HydraMixError
from pipeline.metric import clip_scorer
from pipeline.metric.clip_scorer import (
    SAMPLE_SCHEMA,
    SampleTableWriter,
    ScoreSource,
    WeightsUnavailable,
    batches_from_arrays,
    batches_from_samples,
    encode_images,
    load_clip,
    prefetch,
    preprocess,
    resolve_checkpoint,
    score_source,
    text_embeddings,
)
from pipeline.metric.synsets import imagenet_vocabulary, load_vocabulary, read_vocabulary, templates
from pipeline.synthesis.shards.dataset_writer import finish_dataset
from pipeline.synthesis.shards.format import Sample
from pipeline.synthesis.shards.reader import iter_samples
from pipeline.synthesis.shards.writer import write_shard


def tiny_checkpoint(directory: Path) -> Path:
    """A randomly initialised tiny open_clip model saved as a local checkpoint file (plumbing only)."""
    directory.mkdir(parents=True, exist_ok=True)
    name = register_tiny_model(directory)
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained_text=False)
    path = directory / "tiny_open_clip.bin"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    path = tiny_checkpoint(tmp_path_factory.mktemp("tiny"))
    return load_clip(TINY_NAME, str(path), device="cpu", precision="fp32")


def synthetic_dataset(directory: Path, n_per_class: int, class_names=("a", "b"), size: int = 12) -> Path:
    rng = np.random.default_rng(1)
    samples = [
        Sample(f"s{c}x{i:03d}", rng.integers(0, 256, (size, size, 3), dtype=np.uint8), c, {})
        for c in range(len(class_names))
        for i in range(n_per_class)
    ]
    directory.mkdir(parents=True, exist_ok=True)
    entries = [write_shard(directory / "toy-000000.tar", samples)] if samples else []
    finish_dataset(
        directory,
        entries,
        class_names=class_names,
        resolution=size,
        counts={name: n_per_class for name in class_names},
        identity={},
        card="toy",
    )
    return directory


def test_load_clip_from_local_file(tiny_clip):
    assert tiny_clip.image_size == (32, 32)
    assert "file:" in tiny_clip.identity and tiny_clip.identity.startswith(TINY_NAME)
    assert not any(p.requires_grad for p in tiny_clip.model.parameters())
    assert not tiny_clip.model.training
    assert 0 < tiny_clip.logit_scale <= 100


def test_preprocess_shapes_and_centre_crop(tiny_clip):
    square = torch.randint(0, 256, (3, 12, 12, 3), dtype=torch.uint8)
    wide = torch.zeros(2, 10, 30, 3, dtype=torch.uint8)
    wide[:, :, 10:20] = 255  # the white middle third survives the centre crop; the black sides do not all
    assert preprocess(tiny_clip, square).shape == (3, 3, 32, 32)
    out = preprocess(tiny_clip, wide)
    assert out.shape == (2, 3, 32, 32)
    mean, std = torch.tensor(tiny_clip.mean), torch.tensor(tiny_clip.std)
    centre = out[0, :, 16, 16] * std + mean
    assert torch.allclose(centre, torch.ones(3), atol=1e-4)


def test_encode_images_unit_vectors_and_batch_invariance(tiny_clip):
    images = torch.randint(0, 256, (5, 12, 12, 3), dtype=torch.uint8)
    whole = encode_images(tiny_clip, preprocess(tiny_clip, images))
    assert whole.shape == (5, 16) and whole.dtype == torch.float32
    assert torch.allclose(whole.norm(dim=-1), torch.ones(5), atol=1e-5)
    split = torch.cat([encode_images(tiny_clip, preprocess(tiny_clip, images[i : i + 2])) for i in (0, 2, 4)])
    assert torch.allclose(whole, split, atol=1e-5)


def test_text_embeddings_cached_on_disk(tiny_clip, tmp_path, monkeypatch):
    names, template_set = ("cat", "dog", "maple_tree"), templates("simple")
    first = text_embeddings(tiny_clip, names, template_set, cache_dir=tmp_path)
    assert first.shape == (3, 16)
    assert torch.allclose(first.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert len(list(tmp_path.glob("text-*.safetensors"))) == 1

    calls = []
    original = tiny_clip.model.encode_text
    monkeypatch.setattr(tiny_clip.model, "encode_text", lambda t: calls.append(len(t)) or original(t))
    again = text_embeddings(tiny_clip, names, template_set, cache_dir=tmp_path)
    assert calls == [] and torch.equal(first, again)  # cache hit: no text forward at all
    text_embeddings(tiny_clip, names, templates("openai")[:3], cache_dir=tmp_path)
    assert calls and len(list(tmp_path.glob("text-*.safetensors"))) == 2  # other templates, other key
    for f in tmp_path.glob("text-*.safetensors"):
        f.write_bytes(b"garbage")  # a damaged entry is recomputed, not trusted
    calls.clear()
    assert torch.allclose(text_embeddings(tiny_clip, names, template_set, cache_dir=tmp_path), first, atol=1e-6)
    assert calls


def test_batches_from_samples_groups_and_splits_on_size_change():
    img = lambda n: np.zeros((n, n, 3), np.uint8)  # noqa: E731
    samples = [Sample(f"k{i}", img(4 if i < 5 else 6), i % 2, {}) for i in range(8)]
    batches = list(batches_from_samples(samples, batch_size=3))
    assert [len(b.keys) for b in batches] == [3, 2, 3]
    assert batches[1].images.shape == (2, 4, 4, 3) and batches[2].images.shape == (3, 6, 6, 3)
    assert [k for b in batches for k in b.keys] == [s.key for s in samples]


def test_prefetch_preserves_order_and_raises_producer_errors():
    assert list(prefetch(iter(range(10)))) == list(range(10))

    def broken():
        yield 1
        raise HydraMixError("bad shard")

    with pytest.raises(HydraMixError, match="bad shard"):
        list(prefetch(broken()))


def test_score_source_streams_shards_into_the_sample_table(tiny_clip, tmp_path):
    dataset = synthetic_dataset(tmp_path / "synth", n_per_class=5)
    vocab = load_vocabulary(str(write_lines(tmp_path / "v.txt", ["n02121808\tdomestic cat", "dog", "car"])))
    template_set = templates("simple")[:2]
    synsets = text_embeddings(tiny_clip, vocab.names, template_set)
    classes = text_embeddings(tiny_clip, ("a", "b"), template_set)

    def run(batch_size: int, out: Path):
        source = ScoreSource("synth", ("a", "b"), batches_from_samples(iter_samples(dataset), batch_size))
        with SampleTableWriter(out) as sink:
            return score_source(tiny_clip, source, vocab, synsets, classes, top_k=5, sink=sink, progress=False)

    m3 = run(3, tmp_path / "s3.parquet")
    m10 = run(10, tmp_path / "s10.parquet")
    assert m3.count.tolist() == [5, 5]
    np.testing.assert_allclose(m3.h_class, m10.h_class, atol=1e-5)  # batching does not change the statistics
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "s3.parquet")
    assert table.schema.equals(SAMPLE_SCHEMA) and table.num_rows == 10
    row = table.slice(0, 1).to_pylist()[0]
    assert row["dataset"] == "synth" and row["key"] == "s0x000" and row["class_name"] == "a"
    assert len(row["top_synset_ids"]) == 3  # top_k capped at |S|
    assert set(row["top_synset_ids"]) == {"n02121808", "dog", "car"}
    assert row["top_probs"] == sorted(row["top_probs"], reverse=True)
    assert sum(row["top_probs"]) == pytest.approx(1.0, abs=1e-5)


def test_score_source_rejects_empty_and_bad_labels(tiny_clip):
    vocab = imagenet_vocabulary()
    synsets = torch.nn.functional.normalize(torch.randn(len(vocab), 16), dim=-1)
    classes = torch.nn.functional.normalize(torch.randn(2, 16), dim=-1)
    empty = ScoreSource("nothing", ("a", "b"), iter([]))
    with pytest.raises(HydraMixError, match="'nothing' has no images"):
        score_source(tiny_clip, empty, vocab, synsets, classes, progress=False)
    images = np.zeros((2, 8, 8, 3), np.uint8)
    bad = ScoreSource("bad", ("a", "b"), batches_from_arrays(["x", "y"], images, np.array([0, 7]), 4))
    with pytest.raises(HydraMixError, match="label 7 outside its 2 classes"):
        score_source(tiny_clip, bad, vocab, synsets, classes, progress=False)


def test_resolve_checkpoint_errors_and_offline_fast_path(tmp_path, monkeypatch):
    with pytest.raises(HydraMixError, match="unknown open_clip model 'ViT-B-33'.*ViT-B-32"):
        resolve_checkpoint("ViT-B-33", "laion2b_s34b_b79k")
    with pytest.raises(HydraMixError, match="neither a file nor a pretrained tag") as info:
        resolve_checkpoint("ViT-B-32", "laion9000")
    assert not isinstance(info.value, WeightsUnavailable)  # a typo is an error, not a skip
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        resolve_checkpoint("ViT-B-32", str(tmp_path / "missing.bin"))
    with pytest.raises(WeightsUnavailable, match="empty"):
        resolve_checkpoint("ViT-B-32", "")
    # Offline: a tag that is not cached fails at once instead of retrying downloads (never downloads here).
    monkeypatch.setattr(clip_scorer, "_cached_tag_file", lambda cfg: None)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailable, match="HF_HUB_OFFLINE"):
        resolve_checkpoint("ViT-B-32", "laion2b_s34b_b79k")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(WeightsUnavailable, match="unreachable"):  # port 9 on localhost: refused at once
        clip_scorer._probe_hub({"url": "http://127.0.0.1:9/w.pt"}, 2.0, "x")


def test_load_clip_rejects_a_file_of_the_wrong_architecture(tmp_path):
    path = tiny_checkpoint(tmp_path)
    with pytest.raises(HydraMixError, match="cannot load") as info:
        load_clip("RN50", str(path), device="cpu")
    assert not isinstance(info.value, WeightsUnavailable)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_imagenet_vocabulary_has_wordnet_ids():
    vocab = imagenet_vocabulary()
    assert len(vocab) == 1000 and len(set(vocab.ids)) == 1000
    assert vocab.ids[0] == "n01440764" and vocab.names[0] == "tench"
    assert len(templates("openai")) == 80 and all("{}" in t for t in templates("openai"))


def test_read_vocabulary_formats_and_errors(tmp_path):
    vocab = read_vocabulary(write_lines(tmp_path / "ok.txt", ["# comment", "", "n01440764\ttench", "red fox"]))
    assert vocab.ids == ("n01440764", "red fox") and vocab.names == ("tench", "red fox")
    assert vocab.digest() != read_vocabulary(write_lines(tmp_path / "b.txt", ["red fox"])).digest()
    cases = {
        "missing.txt": "not found",
        "empty.txt": "lists no synsets",
        "badid.txt": "not a WordNet id",
        "dup.txt": "listed twice",
        "noname.txt": "empty name",
        "binary.txt": "not readable UTF-8",
    }
    write_lines(tmp_path / "empty.txt", ["# only a comment", ""])
    write_lines(tmp_path / "badid.txt", ["wn123\tthing"])
    write_lines(tmp_path / "dup.txt", ["n01440764\ttench", "n01440764\ttinca"])
    write_lines(tmp_path / "noname.txt", ["n01440764\t "])
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bad")
    for name, message in cases.items():
        with pytest.raises(HydraMixError, match=message):
            read_vocabulary(tmp_path / name)
