"""``pipeline.synthesis.synthesize_dataset`` called directly (no Typer): the same bytes as the command, resume,
errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import from_dict, replace
from pipeline.core.errors import HydraMixError
from pipeline.generator.masks import MaskConfig
from pipeline.synthesis.engine import SynthConfig
from pipeline.synthesis.synthesize_dataset import SynthesisRequest, synthesize_dataset
from tests.stages.test_synthesize_stage import MASKS, SYNTH, digests, make_generator, synth

CFG = from_dict(SynthConfig, SYNTH, where="test")
PIXEL_MASKS = from_dict(MaskConfig, MASKS, where="test")


@pytest.fixture
def setup(tmp_path, tiny_subset):
    """The tiny subset, a tiny generator and the params file the command reads (for the comparisons with it)."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"synthesize": SYNTH, "generator": {"masks": MASKS}}))
    return {
        "params": params,
        "subset": tiny_subset,
        "generator": make_generator(tmp_path / "g.pt", tiny_subset),
        "tmp": tmp_path,
    }


def test_the_library_writes_the_commands_bytes_and_reports_its_figures(setup):
    out = setup["tmp"] / "lib"
    result = synthesize_dataset(SynthesisRequest(setup["subset"], out, CFG, generator=setup["generator"]))
    assert synth(setup, setup["tmp"] / "cli").exit_code == 0
    assert digests(out) == digests(setup["tmp"] / "cli") and len(digests(out)) == 3
    cli_manifest = json.loads((setup["tmp"] / "cli" / "manifest.json").read_text())
    assert result.manifest == cli_manifest == json.loads((out / "manifest.json").read_text())
    assert result.metrics == {"images": 24, "shards": 3, "classes": 4, "diagnostics": cli_manifest["diagnostics"]}
    assert (result.rendered, result.kept, result.repaired) == (24, 0, 0)
    assert result.timings["images_rendered"] == 24 and result.timings["world_size"] == 1

    again = synthesize_dataset(SynthesisRequest(setup["subset"], out, CFG, generator=setup["generator"]))
    assert (again.rendered, again.kept) == (0, 3) and again.manifest == result.manifest  # resumed: nothing to do


def test_pixel_mode_takes_the_masks_it_is_given(setup):
    cfg = replace(CFG, mode="pixel")
    result = synthesize_dataset(SynthesisRequest(setup["subset"], setup["tmp"] / "px", cfg, masks=PIXEL_MASKS))
    assert result.manifest["generator"] is None and result.manifest["masks"]["scale"] == MASKS["scale"]
    assert synth(setup, setup["tmp"] / "cli", "--mode", "pixel", generator=False).exit_code == 0
    assert digests(setup["tmp"] / "px") == digests(setup["tmp"] / "cli")
    with pytest.raises(HydraMixError, match="needs the mask params"):
        synthesize_dataset(SynthesisRequest(setup["subset"], setup["tmp"] / "none", cfg))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"mode": "blur"}, "exactly one of"),
        ({"mode": "blur", "blur_sigma": 1.0, "blur_reference": Path("x")}, "exactly one of"),
        ({"blur_sigma": 1.0}, "for --mode blur only"),
        ({"generator": None}, "required in generator mode"),
    ],
)
def test_bad_requests_are_one_line_errors(setup, changes, message):
    fields = {"generator": setup["generator"], **changes}
    cfg = replace(CFG, mode=fields.pop("mode", None))
    with pytest.raises(HydraMixError, match=message) as info:
        synthesize_dataset(SynthesisRequest(setup["subset"], setup["tmp"] / "out", cfg, **fields))
    assert "\n" not in str(info.value) and not (setup["tmp"] / "out").exists()
