"""A torch file that would run code when unpickled is refused everywhere we load one, in one line of our own:
torch's own text (which advises loading it with weights_only=False) is never passed on."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from conftest import make_imageset, register_tiny_model, tiny_generator_config
from test_score_stage import invoke as invoke_score
from test_score_stage import write_params
from typer.testing import CliRunner

from pipeline.classify.train import ClassifierConfig, load_checkpoint, train_classifier
from pipeline.core.errors import HydraMixError
from pipeline.generator.files import load_generator
from pipeline.generator.train import train_generator
from pipeline.metric.clip_model import load_clip
from stages.cli import app


class _RunsCode:
    """Unpickling this would run ``touch MARKER`` (weights_only refuses the callable before calling it)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_files(directory: Path) -> dict[str, Path]:
    """The same payload as a torch zip file (with our format tag) and as a bare pickle."""
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / "code-ran"
    zipped = directory / "evil.pt"
    torch.save({"format": "hydramix-classifier-v1", "state_dict": _RunsCode(marker)}, zipped)
    bare = directory / "evil.pkl"
    bare.write_bytes(pickle.dumps({"state_dict": _RunsCode(marker)}, protocol=4))
    return {"zip": zipped, "pickle": bare}


def assert_our_refusal(message: str, path: Path) -> None:
    assert str(path) in message
    assert "\n" not in message.strip()
    assert "weights_only" not in message and "Re-running" not in message and "torch.load" not in message
    assert "refused" in message or "not a readable" in message


@pytest.mark.parametrize("kind", ["zip", "pickle"])
def test_the_library_loaders_refuse_in_one_line_and_run_nothing(tmp_path, kind):
    path = malicious_files(tmp_path)[kind]
    loaders = [load_checkpoint, load_generator, lambda p: load_clip(register_tiny_model(tmp_path), str(p), "cpu")]
    for load in loaders:
        with pytest.raises(HydraMixError) as info:
            load(path)
        assert_our_refusal(str(info.value), path)
    if kind == "zip":
        assert "it asks to import posix.system, which could run code" in str(info.value)
    assert not (tmp_path / "code-ran").exists()


def test_training_checkpoints_are_refused_too(tmp_path):
    path = malicious_files(tmp_path)["zip"]
    images = make_imageset(4, resolution=16, n_classes=3)
    with pytest.raises(HydraMixError) as info:
        train_generator(images, tiny_generator_config(), subset_sha256="s", checkpoint_path=path, progress=False)
    assert_our_refusal(str(info.value), path)
    config = ClassifierConfig(arch="wrn-10-1", iterations=2, batch_size=8, device="cpu")
    with pytest.raises(HydraMixError) as info:
        train_classifier("baseline", images, config, progress=False, checkpoint_path=path)
    assert_our_refusal(str(info.value), path)
    assert not (tmp_path / "code-ran").exists()


def test_evaluate_and_score_print_our_one_line_refusal(tmp_path, tiny_subset):
    path = malicious_files(tmp_path / "evil")["zip"]
    result = CliRunner().invoke(
        app,
        ["evaluate", "--checkpoint", str(path), "--subset", str(tiny_subset)]
        + ["--out-metrics", str(tmp_path / "m.json"), "--out-plot", str(tmp_path / "m.png")],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert_our_refusal(result.stderr, path)

    params = write_params(tmp_path / "params.yaml", model=register_tiny_model(tmp_path / "clip"))
    result = invoke_score(tmp_path, tiny_subset, "--pretrained", str(path), params=params)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert_our_refusal(result.stderr, path)
    assert not (tmp_path / "evil" / "code-ran").exists()
