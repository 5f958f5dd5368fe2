"""Template-averaged text embeddings with the tiny random open_clip model: unit vectors, and the on-disk cache
(hit, other key, damaged entry). Plumbing only."""

from __future__ import annotations

import torch

from pipeline.metric.synsets import templates
from pipeline.metric.text_embeddings import text_embeddings


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
