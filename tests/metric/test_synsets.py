"""The synset vocabulary: ImageNet's 1,000 synsets with WordNet ids, and vocabulary files (formats and errors)."""

from __future__ import annotations

import pytest
from conftest import write_lines

from pipeline.core.errors import HydraMixError
from pipeline.metric.synsets import imagenet_vocabulary, read_vocabulary, templates


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
