"""``pipeline.classify.evaluate_checkpoint`` called directly (no Typer): the command's outputs and the
checkpoints and splits it refuses."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.classify.evaluate_checkpoint import EvaluationRequest, evaluate_checkpoint
from pipeline.classify.make_classifier import ClassifierRequest, make_classifier
from pipeline.classify.train import ClassifierConfig
from pipeline.core.config import from_dict
from pipeline.core.digest import file_digest
from pipeline.core.errors import HydraMixError
from stages.cli import app
from tests.stages.test_classifier_stages import PARAMS


@pytest.fixture
def model(tiny_subset, tmp_path):
    cfg = from_dict(ClassifierConfig, yaml.safe_load(PARAMS)["classifier"], where="test")
    path = tmp_path / "model.pt"
    make_classifier(ClassifierRequest("baseline", tiny_subset, path, tmp_path / "model.pt.ckpt", cfg))
    return path


def test_the_library_writes_the_commands_metrics(model, tiny_subset, tmp_path):
    lib = EvaluationRequest(model, tiny_subset, tmp_path / "lib" / "m.json", tmp_path / "lib" / "c.png", device="cpu")
    evaluation = evaluate_checkpoint(lib)
    assert json.loads(lib.out_metrics.read_text()) == evaluation.metrics
    assert evaluation.metrics["n_test"] == 16 and evaluation.metrics["split"] == "test"
    assert evaluation.title == "baseline wrn-10-1 tiny k=8 seed=0"
    assert lib.out_plot.read_bytes().startswith(b"\x89PNG")

    cli = tmp_path / "cli"
    args = ["evaluate", "--checkpoint", str(model), "--subset", str(tiny_subset), "--device", "cpu", "--threads", "1"]
    result = CliRunner().invoke(app, [*args, "--out-metrics", str(cli / "m.json"), "--out-plot", str(cli / "c.png")])
    assert result.exit_code == 0, result.output
    assert file_digest(cli / "m.json") == file_digest(lib.out_metrics)


def test_another_subset_or_a_missing_validation_draw_is_refused(model, tiny_subset, make_subset, tmp_path):
    outs = {"out_metrics": tmp_path / "m.json", "out_plot": tmp_path / "c.png"}
    with pytest.raises(HydraMixError, match="trained on another subset"):
        evaluate_checkpoint(EvaluationRequest(model, make_subset("other", seed=3), **outs))
    with pytest.raises(HydraMixError, match="has no validation split; write one with `hydramix subset --val-per"):
        evaluate_checkpoint(EvaluationRequest(model, tiny_subset, split="val", **outs))
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "c.png").exists()
