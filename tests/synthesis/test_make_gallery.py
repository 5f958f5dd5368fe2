"""``pipeline.synthesis.make_gallery`` called directly (no Typer): the command's page, and the inputs it refuses."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipeline.core.config import from_dict
from pipeline.core.errors import HydraMixError
from pipeline.generator.masks import MaskConfig
from pipeline.synthesis.engine import SynthConfig
from pipeline.synthesis.make_gallery import GalleryRequest, make_gallery
from pipeline.synthesis.synthesize_dataset import SynthesisRequest, synthesize_dataset
from stages.cli import app
from tests.conftest import TINY_MASKS, TINY_SYNTH


@pytest.fixture
def dataset(tmp_path, tiny_subset):
    """24 pixel-mode samples of the tiny subset, as `hydramix synthesize --mode pixel` writes them."""
    cfg = from_dict(SynthConfig, {**TINY_SYNTH, "mode": "pixel"}, where="test")
    masks = from_dict(MaskConfig, TINY_MASKS, where="test")
    out = tmp_path / "tiny-set"
    synthesize_dataset(SynthesisRequest(tiny_subset, out, cfg, masks=masks))
    return out


def test_the_library_writes_the_commands_page(dataset, tiny_subset, tmp_path):
    lib = tmp_path / "lib.html"
    page = make_gallery(GalleryRequest(dataset, lib, per_class=2, subset=tiny_subset))
    assert (page.images, page.classes, page.size) == (8, 4, lib.stat().st_size)
    cli = tmp_path / "cli.html"
    args = ["gallery", str(dataset), "--out", str(cli), "--per-class", "2", "--subset", str(tiny_subset)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert cli.read_bytes() == lib.read_bytes()


def test_scores_of_another_command_and_another_subset_are_refused(dataset, make_subset, tmp_path):
    page = tmp_path / "g.html"
    not_scores = tmp_path / "scores.json"
    not_scores.write_text(json.dumps({"top1": 0.5}))
    with pytest.raises(HydraMixError, match=r"not the metrics JSON of `hydramix score` \(no 'status'\)"):
        make_gallery(GalleryRequest(dataset, page, scores=not_scores))
    not_scores.write_text("{")
    with pytest.raises(HydraMixError, match="not readable JSON"):
        make_gallery(GalleryRequest(dataset, page, scores=not_scores))
    with pytest.raises(HydraMixError, match="not the subset this dataset was made from"):
        make_gallery(GalleryRequest(dataset, page, subset=make_subset("other", seed=5)))
    with pytest.raises(HydraMixError, match="not a synthetic dataset"):
        make_gallery(GalleryRequest(tmp_path, page))
    with pytest.raises(HydraMixError, match="cannot write"):
        make_gallery(GalleryRequest(dataset, dataset / "manifest.json" / "g.html"))
    assert not page.exists()
