"""Read-only output folders and full disks: train-generator, train-classifier, prepare and subset fail before
their work with one line, and a write that fails later says what was kept (and a rerun finishes from it).

Tests run as root, whom chmod does not stop, so a folder that cannot be written is made the way root meets one
too (an output path under a regular file), or by making the OS calls fail as a read-only or full file system
makes them fail (PermissionError from ``os.open``, ENOSPC from a write).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import tiny_generator_config
from test_classifier_stages import PARAMS as CLASSIFIER_PARAMS
from test_prepare_stage import make_folder_archive, write_params
from typer.testing import CliRunner

import pipeline.classify.make_classifier
import pipeline.generator.make_generator
import stages.prepare
import stages.subset
from pipeline.core.atomic import check_writable, write_json
from pipeline.core.config import to_dict
from pipeline.core.errors import WriteError
from stages.cli import app

runner = CliRunner()


def one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and "error: " in result.stderr, result.output
    error = result.stderr[result.stderr.index("error: ") :]  # after any progress bar
    assert error.count("\n") == 1 and error.endswith("\n"), error
    for fragment in fragments:
        assert fragment in error, (fragment, error)
    return error


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def no_work(*args, **kwargs):
    raise AssertionError("the stage started its work before checking its outputs")


def refuse_probes(monkeypatch, under: Path) -> None:
    """os.open answers PermissionError for probe files under ``under``, as a read-only folder does."""
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if ".probe-" in os.fspath(path) and os.fspath(path).startswith(os.fspath(under)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


def disk_full_for(monkeypatch, name: str, after: int = 0) -> dict[str, int]:
    """Path.write_bytes (how torch files are written) raises ENOSPC for the temporary file of ``name``, from its
    ``after + 1``-th write on; returns the write counter."""
    real, seen = Path.write_bytes, {"n": 0}

    def write_bytes(self, data):
        if self.name == f"{name}.tmp":
            seen["n"] += 1
            if seen["n"] > after:
                self.open("wb").close()  # a full disk leaves a short file behind: it must be cleaned up
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    return seen


# ------------------------------------------------------------------------------------------ check_writable


def test_check_writable_probes_and_leaves_nothing(tmp_path, monkeypatch):
    check_writable(files=(tmp_path / "a" / "b" / "model.pt",), dirs=(tmp_path / "c" / "prepared",))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["a", "a/b", "c"]
    blocker = tmp_path / "file"
    blocker.write_text("a regular file")
    with pytest.raises(WriteError, match=r"cannot write .*file/out/model.pt: .*file is a file, not a folder"):
        check_writable(files=(blocker / "out" / "model.pt",))
    with pytest.raises(WriteError, match="it exists and is a folder"):
        check_writable(files=(tmp_path / "a",))
    with pytest.raises(WriteError, match="it exists and is a file"):
        check_writable(dirs=(blocker,))
    refuse_probes(monkeypatch, tmp_path / "ro")
    with pytest.raises(WriteError, match=r"cannot write .*ro/x.json: Permission denied .*\(checked before starting\)"):
        check_writable(files=(tmp_path / "ro" / "x.json",))
    assert not list((tmp_path / "ro").iterdir())


def test_write_failures_are_write_errors_and_leave_no_temporary(tmp_path, monkeypatch):
    disk_full_for(monkeypatch, "m.json")  # write_json goes through write_text, not write_bytes: patch that too
    real_write_text = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name == "m.json.tmp":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(WriteError, match=r"cannot write .*m.json: No space left on device"):
        write_json(tmp_path / "m.json", {"a": 1})
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ the stages


@pytest.fixture
def generator_params(tmp_path) -> Path:
    path = tmp_path / "gparams.yaml"
    path.write_text(yaml.safe_dump({"generator": to_dict(tiny_generator_config(iterations=3))}))
    return path


def generator_args(subset: Path, out: Path, params: Path) -> list[str]:
    return [
        "train-generator", "--subset", str(subset), "--params", str(params), "--no-progress",
        "--generator", str(out / "g.pt"), "--metrics", str(out / "metrics.json"),
        "--loss-curve", str(out / "loss.csv"), "--grid", str(out / "grid.png"),
        "--checkpoint", str(out / "ckpt" / "state.pt"), "--threads", "1",
    ]  # fmt: skip


@pytest.fixture
def classifier_params(tmp_path) -> Path:
    path = tmp_path / "cparams.yaml"
    path.write_text(
        CLASSIFIER_PARAMS.replace("iterations: 2", "iterations: 6").replace("precision: auto", "precision: fp32")
    )
    return path


def classifier_args(subset: Path, out: Path, params: Path, *extra: str) -> list[str]:
    return [
        "train-classifier", "--method", "mixup", "--subset", str(subset), "--params", str(params),
        "--out", str(out / "model.pt"), "--out-metrics", str(out / "train.json"), "--checkpoint-every", "2", *extra,
    ]  # fmt: skip


def test_train_generator_read_only_and_full_disk(tiny_subset, tmp_path, generator_params, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file where a folder should be")
    with monkeypatch.context() as patch:
        patch.setattr(pipeline.generator.make_generator, "train_generator", no_work)
        one_line_error(
            runner.invoke(app, generator_args(tiny_subset, blocker / "out", generator_params)),
            "cannot write",
            "is a file, not a folder",
            "checked before starting",
        )
        refuse_probes(patch, tmp_path / "ro")
        one_line_error(
            runner.invoke(app, generator_args(tiny_subset, tmp_path / "ro", generator_params)),
            "Permission denied",
        )
    reference = tmp_path / "reference"
    assert runner.invoke(app, generator_args(tiny_subset, reference, generator_params)).exit_code == 0

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        disk_full_for(patch, "g.pt")
        message = one_line_error(
            runner.invoke(app, generator_args(tiny_subset, out, generator_params)),
            f"cannot write {out / 'g.pt'}: No space left on device",
            f"the training checkpoint at {out / 'ckpt' / 'state.pt'} (all 3 steps) is kept",
            "rerun the same command",
        )
    assert (out / "ckpt" / "state.pt").is_file() and not (out / "g.pt").exists(), message
    assert not list(out.glob("*.tmp"))
    result = runner.invoke(app, generator_args(tiny_subset, out, generator_params))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] == 3  # no training again
    assert sha256(out / "g.pt") == sha256(reference / "g.pt")
    assert not (out / "ckpt" / "state.pt").exists()


def test_train_generator_checkpoint_write_failure_stops_and_says_which_is_kept(
    tiny_subset, tmp_path, generator_params, monkeypatch
):
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"generator": to_dict(tiny_generator_config(iterations=5, checkpoint_every=2))}))
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        disk_full_for(patch, "state.pt", after=1)  # the checkpoint of step 2 is written, that of step 4 is not
        one_line_error(
            runner.invoke(app, generator_args(tiny_subset, out, params)),
            "No space left on device",
            "training stopped at step 4 of 5 and the checkpoint of step 2 is kept",
        )
    result = runner.invoke(app, generator_args(tiny_subset, out, params))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] == 2


def test_train_classifier_read_only_and_full_disk(tiny_subset, tmp_path, classifier_params, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file where a folder should be")
    with monkeypatch.context() as patch:
        patch.setattr(pipeline.classify.make_classifier, "train_classifier", no_work)
        patch.setattr(pipeline.classify.make_classifier, "read_subset", no_work)
        one_line_error(
            runner.invoke(app, classifier_args(tiny_subset, blocker / "out", classifier_params)),
            "is a file, not a folder",
            "checked before starting",
        )
        refuse_probes(patch, tmp_path / "ro")
        one_line_error(
            runner.invoke(app, classifier_args(tiny_subset, tmp_path / "ro", classifier_params)),
            "Permission denied",
        )
    reference = tmp_path / "reference"
    assert runner.invoke(app, classifier_args(tiny_subset, reference, classifier_params)).exit_code == 0

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        disk_full_for(patch, "model.pt")
        one_line_error(
            runner.invoke(app, classifier_args(tiny_subset, out, classifier_params)),
            f"cannot write {out / 'model.pt'}: No space left on device",
            f"the training checkpoint at {out / 'model.pt.ckpt'} (all 6 steps) is kept",
        )
    assert (out / "model.pt.ckpt").is_file() and not (out / "model.pt").exists()
    assert not list(out.glob("*.tmp"))
    result = runner.invoke(app, classifier_args(tiny_subset, out, classifier_params))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "train.json").read_text())["resumed_from_step"] == 6
    assert sha256(out / "model.pt") == sha256(reference / "model.pt")
    assert not (out / "model.pt.ckpt").exists()

    with monkeypatch.context() as patch:
        disk_full_for(patch, "model.pt.ckpt", after=1)
        one_line_error(
            runner.invoke(app, classifier_args(tiny_subset, tmp_path / "mid", classifier_params)),
            "training stopped at step 4 of 6 and the checkpoint of step 2 is kept",
        )
    result = runner.invoke(app, classifier_args(tiny_subset, tmp_path / "mid", classifier_params))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "mid" / "train.json").read_text())["resumed_from_step"] == 2
    assert sha256(tmp_path / "mid" / "model.pt") == sha256(reference / "model.pt")


def _parquet_disk_full(monkeypatch) -> None:
    import pipeline.data.imageset

    def write_table(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half")  # what a full disk leaves
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pipeline.data.imageset.pq, "write_table", write_table)


def test_prepare_and_subset_read_only_and_full_disk(tmp_path, monkeypatch):
    params = write_params(tmp_path / "params.yaml", folder_path=str(make_folder_archive(tmp_path / "ds.tar.gz")))
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file where a folder should be")
    prepare_args = ["prepare", "--params", str(params), "--out"]
    subset_args = ["subset", "--prepared", str(tmp_path / "prep"), "--params", str(params), "--out"]
    with monkeypatch.context() as patch:
        patch.setattr(stages.prepare, "prepare", no_work)
        patch.setattr(stages.subset, "make_subset", no_work)
        for args in (prepare_args, subset_args):
            one_line_error(
                runner.invoke(app, [*args, str(blocker / "x")]), "is a file, not a folder", "before starting"
            )
            refuse_probes(patch, tmp_path / "ro")
            one_line_error(runner.invoke(app, [*args, str(tmp_path / "ro" / "x")]), "Permission denied")

    with monkeypatch.context() as patch:
        _parquet_disk_full(patch)
        one_line_error(
            runner.invoke(app, [*prepare_args, str(tmp_path / "prep")]),
            "No space left on device",
            f"nothing was kept ({tmp_path / 'prep'} is as it was before)",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "ds.tar.gz", "params.yaml", "ro"]
    assert runner.invoke(app, [*prepare_args, str(tmp_path / "prep")]).exit_code == 0
    before = sha256(tmp_path / "prep" / "train.parquet")

    assert runner.invoke(app, [*subset_args, str(tmp_path / "s")]).exit_code == 0
    previous = {p.name: sha256(p) for p in (tmp_path / "s").iterdir()}
    with monkeypatch.context() as patch:
        _parquet_disk_full(patch)
        one_line_error(runner.invoke(app, [*subset_args, str(tmp_path / "s"), "--k", "3"]), "No space left")
    assert {p.name: sha256(p) for p in (tmp_path / "s").iterdir()} == previous  # the old subset survives
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert sha256(tmp_path / "prep" / "train.parquet") == before
