"""Every ```python snippet of README.md and docs/shards.md runs as written, in a fresh interpreter, in a directory
holding what the snippets name (a tiny synthetic dataset ``my-synthetic``, made with the shard writer and carrying
the real dataset card, which Hugging Face ``datasets`` reads)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.synthesis.dataset_card import render_card
from pipeline.synthesis.shards.dataset_writer import finish_dataset
from pipeline.synthesis.shards.format import Sample, shard_name
from pipeline.synthesis.shards.writer import write_shard

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/shards.md")
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def snippets() -> list[tuple[str, int, str]]:
    found = []
    for doc in DOCS:
        for i, match in enumerate(FENCE.finditer((ROOT / doc).read_text())):
            found.append((doc, i, match.group(1)))
    return found


def make_synthetic(directory: Path) -> None:
    """12 samples of 3 classes in 4 shards, as `hydramix synthesize` lays them out."""
    rng = np.random.default_rng(0)
    samples = [
        Sample(f"{s:06d}", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), s % 3, {"sample_id": s}) for s in range(12)
    ]
    directory.mkdir()
    entries = [write_shard(directory / shard_name("hydramix", i), samples[3 * i : 3 * i + 3]) for i in range(4)]
    finish_dataset(
        directory,
        entries,
        class_names=("a", "b", "c"),
        resolution=8,
        counts={"a": 4, "b": 4, "c": 4},
        identity={"name": "hydramix"},
        card=render_card,
    )


def test_the_docs_have_python_snippets():
    assert {doc for doc, _, _ in snippets()} == set(DOCS)


@pytest.mark.parametrize(("doc", "index", "code"), snippets(), ids=lambda v: v if isinstance(v, (str, int)) else "")
def test_snippet_runs(tmp_path, doc, index, code):
    if "../shared" in code and not (ROOT.parent / "shared").is_dir():
        pytest.skip(f"{doc} snippet {index} reads real data in ../shared, which is absent here")
    if "from datasets import" in code:
        pytest.importorskip("datasets", reason=f"{doc} snippet {index} needs Hugging Face `datasets` (a dev extra)")
    make_synthetic(tmp_path / "my-synthetic")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_DATASETS_CACHE": str(tmp_path / "hf-cache")}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{doc} snippet {index} fails:\n{code}\n{result.stderr}"
