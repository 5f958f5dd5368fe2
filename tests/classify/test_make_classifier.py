"""``pipeline.classify.make_classifier`` called directly (no Typer): the command's bytes, the synthetic sets it
refuses, the outputs it checks before loading anything, and what a failed write says about the checkpoint."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import yaml
from typer.testing import CliRunner

import pipeline.classify.make_classifier as mc
from pipeline.classify.make_classifier import ClassifierRequest, make_classifier
from pipeline.classify.train import ClassifierConfig
from pipeline.core.config import from_dict
from pipeline.core.digest import file_digest
from pipeline.core.errors import HydraMixError, WriteError
from stages.cli import app
from tests.stages.test_classifier_stages import PARAMS, write_synthetic

# As the command reads it: the model file pickles the config, so build it from the same YAML.
CFG = from_dict(ClassifierConfig, yaml.safe_load(PARAMS)["classifier"], where="test")


def request(subset, out, method="mixup", **changes) -> ClassifierRequest:
    fields = {"cfg": CFG, "checkpoint": out / "model.pt.ckpt", "out_metrics": out / "train.json", "checkpoint_every": 1}
    return ClassifierRequest(method, subset, out / "model.pt", **{**fields, **changes})


def test_the_library_writes_the_commands_model_file(tiny_subset, tmp_path):
    out = tmp_path / "lib"
    result = make_classifier(request(tiny_subset, out, cfg=replace(CFG, threads=1)))
    assert json.loads((out / "train.json").read_text()) == json.loads(json.dumps(result.stats))
    assert (out / "model.pt").is_file() and not (out / "model.pt.ckpt").exists()  # deleted once written

    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    cli = tmp_path / "cli" / "model.pt"
    args = ["train-classifier", "--method", "mixup", "--subset", str(tiny_subset), "--params", str(params)]
    # One thread on both sides (the library call runs on conftest's one): `auto` would use every core, and another
    # thread count may sum a convolution's partial products in another order (a CI run differed in the last bits).
    result = CliRunner().invoke(app, [*args, "--out", str(cli), "--checkpoint-every", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert file_digest(cli) == file_digest(out / "model.pt")


def test_synthetic_sets_of_other_classes_or_another_subset_are_refused(tiny_subset, tmp_path):
    other_classes = write_synthetic(tmp_path / "three", n_classes=3, subset=tiny_subset)
    with pytest.raises(HydraMixError, match=r"three: synthetic classes .* do not match .*tiny_subset's"):
        make_classifier(request(tiny_subset, tmp_path / "a", "hydramix", synthetic=other_classes))

    foreign = write_synthetic(tmp_path / "foreign")  # made from no subset we know
    with pytest.raises(HydraMixError, match="made from another subset than .*--allow-foreign-synthetic"):
        make_classifier(request(tiny_subset, tmp_path / "b", "hydramix", synthetic=foreign))
    assert not (tmp_path / "b" / "model.pt").exists()

    make_classifier(request(tiny_subset, tmp_path / "c", "hydramix", synthetic=foreign, allow_foreign_synthetic=True))
    recorded = torch.load(tmp_path / "c" / "model.pt", weights_only=True)["synthetic"]
    assert recorded == {"dir": str(foreign), "total": 12, "name": None, "subset_manifest_sha256": None}


def test_an_unwritable_output_fails_before_loading_anything(tiny_subset, tmp_path, monkeypatch):
    monkeypatch.setattr(mc, "train_classifier", lambda *a, **k: pytest.fail("trained before checking its outputs"))
    monkeypatch.setattr(mc, "read_subset", lambda *a, **k: pytest.fail("read the subset before checking its outputs"))
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file where a folder should be")
    with pytest.raises(WriteError, match=r"blocker is a file, not a folder \(checked before starting\)"):
        make_classifier(request(tiny_subset, tmp_path / "out", out_metrics=blocker / "train.json"))


def test_a_failed_write_names_the_kept_checkpoint_and_the_same_request_finishes(tiny_subset, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_save = mc.save_checkpoint

    def full_disk(path, *args):
        raise WriteError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(mc, "save_checkpoint", full_disk)
    with pytest.raises(WriteError) as failed:
        make_classifier(request(tiny_subset, out))
    assert str(failed.value) == (
        f"cannot write {out / 'model.pt'}: No space left on device; the training checkpoint at "
        f"{out / 'model.pt.ckpt'} (all 2 steps) is kept: free space and rerun the same command to write the outputs "
        "without training again"
    )
    assert (out / "model.pt.ckpt").is_file() and not (out / "model.pt").exists()

    monkeypatch.setattr(mc, "save_checkpoint", real_save)
    result = make_classifier(request(tiny_subset, out))
    assert result.stats["resumed_from_step"] == 2  # not trained again
    assert (out / "model.pt").is_file() and not (out / "model.pt.ckpt").exists()
