"""``pipeline.generator.make_generator`` called directly (no Typer): the command's bytes, the outputs it checks
before training, and what a failed write says about the checkpoint."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

import pipeline.generator.make_generator as mg
from pipeline.core.config import from_dict, to_dict
from pipeline.core.digest import file_digest
from pipeline.core.errors import HydraMixError, WriteError
from pipeline.generator.config import GeneratorConfig
from pipeline.generator.files import load_generator
from pipeline.generator.make_generator import GeneratorRequest, make_generator
from pipeline.generator.train import RUN_KEYS
from stages.cli import app
from tests.conftest import tiny_generator_config

# Read as the command reads its params file (with --threads 1): the generator file pickles the config, and the
# strings of a YAML file are not shared objects as those of a literal are, which changes the pickle's bytes.
CFG = from_dict(
    GeneratorConfig, yaml.safe_load(yaml.safe_dump(to_dict(tiny_generator_config(iterations=3, threads=1))))
)


def request(subset, out, **changes) -> GeneratorRequest:
    fields = {
        "generator": out / "g.pt",
        "metrics": out / "metrics.json",
        "timings": out / "timings.json",
        "loss_curve": out / "loss.csv",
        "grid": out / "grid.png",
        "checkpoint": out / "state.pt",
        "progress": False,
    }
    return GeneratorRequest(subset, cfg=CFG, **{**fields, **changes})


def test_the_library_writes_the_commands_files(tiny_subset, tmp_path):
    out = tmp_path / "lib"
    result = make_generator(request(tiny_subset, out))
    _, meta = load_generator(out / "g.pt")
    assert meta["subset_sha256"] == file_digest(tiny_subset / "manifest.json") and meta["step"] == 3
    metrics = json.loads((out / "metrics.json").read_text())
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == set(RUN_KEYS) and not set(metrics) & set(RUN_KEYS)
    assert metrics == json.loads(json.dumps({k: v for k, v in result.metrics.items() if k not in RUN_KEYS}))
    assert (out / "loss.csv").read_text().startswith("step,") and (out / "grid.png").is_file()
    assert not (out / "state.pt").exists()  # deleted once every output is written

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"generator": to_dict(CFG)}))
    cli = tmp_path / "cli"
    args = ["train-generator", "--subset", str(tiny_subset), "--params", str(params), "--no-progress"]
    args += ["--generator", str(cli / "g.pt"), "--metrics", str(cli / "metrics.json"), "--threads", "1"]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert file_digest(cli / "g.pt") == file_digest(out / "g.pt")
    assert json.loads((cli / "metrics.json").read_text()) == metrics


def test_an_unwritable_output_fails_before_training(tiny_subset, tmp_path, monkeypatch):
    monkeypatch.setattr(mg, "train_generator", lambda *a, **k: pytest.fail("trained before checking its outputs"))
    monkeypatch.setattr(mg, "read_subset", lambda *a, **k: pytest.fail("read the subset before checking its outputs"))
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file where a folder should be")
    with pytest.raises(WriteError, match=r"blocker is a file, not a folder \(checked before starting\)"):
        make_generator(request(tiny_subset, tmp_path / "out", grid=blocker / "grid.png"))


def test_a_failed_write_names_the_kept_checkpoint_and_the_same_request_finishes(tiny_subset, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_save = mg.save_generator

    def full_disk(path, *args):
        raise WriteError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(mg, "save_generator", full_disk)
    with pytest.raises(WriteError) as failed:
        make_generator(request(tiny_subset, out))
    assert str(failed.value) == (
        f"cannot write {out / 'g.pt'}: No space left on device; the training checkpoint at {out / 'state.pt'} "
        "(all 3 steps) is kept: free space and rerun the same command to write the outputs without training again"
    )
    assert (out / "state.pt").is_file() and not (out / "g.pt").exists()

    monkeypatch.setattr(mg, "save_generator", real_save)
    result = make_generator(request(tiny_subset, out))
    assert result.metrics["resumed_from_step"] == 3  # not trained again
    assert (out / "g.pt").is_file() and not (out / "state.pt").exists()

    monkeypatch.setattr(mg, "save_generator", full_disk)
    with pytest.raises(WriteError, match=r"; no training checkpoint was kept \(no --checkpoint given\)$"):
        make_generator(request(tiny_subset, tmp_path / "none", checkpoint=None))


def test_not_a_subset_is_a_clean_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(HydraMixError, match="not a subset directory"):
        make_generator(request(tmp_path / "empty", tmp_path / "out"))
