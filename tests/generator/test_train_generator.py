"""Generator training: determinism, resume == uninterrupted, bad input, files, and the train-generator
stage."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import pipeline.generator.train as tg
from pipeline.core.config import from_dict, to_dict
from pipeline.core.errors import ConfigError, HydraMixError
from pipeline.generator.batches import class_members, prepare_images
from pipeline.generator.config import GeneratorConfig
from pipeline.generator.files import load_generator, save_generator
from pipeline.generator.masks import MaskConfig
from pipeline.generator.sources import draw_classes, draw_sources, mix_seeds
from pipeline.generator.train import train_generator
from stages.cli import app
from tests.conftest import make_imageset, tiny_generator_config

tiny_config = tiny_generator_config


@pytest.fixture(scope="module")
def images():
    return make_imageset(5, resolution=16, n_classes=3)


def _weights(g: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in g.state_dict().items()}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_determinism_and_outputs(images) -> None:
    a = train_generator(images, tiny_config(), subset_sha256="s", progress=False)
    b = train_generator(images, tiny_config(), subset_sha256="s", progress=False)
    _assert_same(_weights(a.generator), _weights(b.generator))
    assert [r["step"] for r in a.history] == [1, 2, 3, 4]
    assert a.history == b.history
    m = a.metrics
    assert m["step"] == 4 and np.isfinite(m["reconstruction_psnr_db"])
    assert set(m["mask_fidelity"]) == {"generator", "pixel_composite", "plain_mean"}
    assert m["mask_fidelity"]["pixel_composite"]["gap_db"] > 10  # hard masks: the composite follows them exactly
    assert m["throughput"]["source_images_per_s"] > 0
    assert a.grid.dtype == np.uint8 and a.grid.shape[2] == 3
    c = train_generator(images, tiny_config(seed=4), subset_sha256="s", progress=False)
    assert not torch.equal(
        c.generator.state_dict()["decoder.layers.0.body.1.weight"],
        a.generator.state_dict()["decoder.layers.0.body.1.weight"],
    )


def test_resume_equals_uninterrupted(images, tmp_path: Path, monkeypatch) -> None:
    cfg = tiny_config(iterations=5, masks=MaskConfig(kind="grid", n_sources=(2, 3)))
    full = train_generator(images, cfg, subset_sha256="s", progress=False)

    ckpt = tmp_path / "state.pt"
    real_step, calls = tg.train_step, {"n": 0}

    def killed_at_step_4(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # killed in step 4: the last checkpoint (every 2 steps) is the one after step 2
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(tg, "train_step", killed_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train_generator(images, cfg, subset_sha256="s", checkpoint_path=ckpt, progress=False)
    monkeypatch.setattr(tg, "train_step", real_step)
    assert torch.load(ckpt, weights_only=True)["step"] == 2

    resumed = train_generator(images, cfg, subset_sha256="s", checkpoint_path=ckpt, progress=False)
    _assert_same(_weights(full.generator), _weights(resumed.generator))
    assert resumed.history == full.history

    with pytest.raises(HydraMixError, match="different config or subset"):
        train_generator(images, cfg, subset_sha256="other", checkpoint_path=ckpt, progress=False)


def test_corrupt_checkpoint_is_an_error_and_left_alone(images, tmp_path: Path) -> None:
    ckpt = tmp_path / "state.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(HydraMixError, match="unreadable"):
        train_generator(images, tiny_config(), subset_sha256="s", checkpoint_path=ckpt, progress=False)
    assert ckpt.read_bytes() == b"not a checkpoint"


def test_small_class_error_and_cap(images) -> None:
    small = images.take(np.r_[0:5, 5:10, 10:12])  # class 'stripes' keeps 2 images
    cfg = tiny_config(iterations=1, masks=MaskConfig(kind="grid", n_sources=(3, 3)))
    with pytest.raises(HydraMixError, match="class 'stripes' has 2 train image"):
        train_generator(small, cfg, subset_sha256="s", progress=False)
    capped = train_generator(
        small, dataclasses.replace(cfg, cap_sources_to_class_size=True), subset_sha256="s", progress=False
    )
    assert capped.metrics["step"] == 1
    classes = class_members(small, dataclasses.replace(cfg, cap_sources_to_class_size=True))
    seeds = mix_seeds(0, 1, 0, 64)
    draw = draw_sources(seeds, draw_classes(seeds, 3), classes, (3, 3), flip=True)
    assert (draw.rows[:, :2] >= 0).all() and (draw.rows == -1).any()  # stripes mixes are padded
    assert (draw.n == np.where(classes.counts[draw_classes(seeds, 3)] < 3, 2, 3)).all()
    assert not draw.flipped[draw.rows < 0].any()


def test_resolution_mismatch_and_resize(images) -> None:
    with pytest.raises(HydraMixError, match="subset is 16 px but generator.resolution is 32"):
        prepare_images(images, tiny_config(resolution=32))
    resized = prepare_images(images, tiny_config(resolution=32, resize_subset=True))
    assert resized.shape == (len(images), 32, 32, 3) and resized.dtype == np.uint8


def test_config_validation() -> None:
    good = to_dict(tiny_config())
    assert from_dict(GeneratorConfig, good) == tiny_config()
    for key, value in [("resolution", 18), ("batch_size", 0), ("lr_milestones", [0.9, 0.5])]:
        with pytest.raises(ConfigError, match=key):
            from_dict(GeneratorConfig, {**good, key: value})
    with pytest.raises(ConfigError, match="n_sources"):
        from_dict(GeneratorConfig, {**good, "masks": {**good["masks"], "n_sources": [1, 3]}})


def test_generator_file_round_trip(tmp_path: Path) -> None:
    cfg = tiny_config()
    g, _ = tg.build_models(cfg)
    path = tmp_path / "g.pt"
    save_generator(path, g, cfg, ("a", "b"), "abc", 7)
    loaded, meta = load_generator(path)
    _assert_same(_weights(g), _weights(loaded))
    assert meta["model"] == to_dict(cfg.model) and meta["masks"] == to_dict(cfg.masks)
    assert meta["class_names"] == ["a", "b"] and meta["resolution"] == 16
    assert meta["subset_sha256"] == "abc" and meta["step"] == 7
    assert not loaded.training
    torch.save({"format": "other"}, tmp_path / "foreign.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00garbage")
    for bad, match in [
        ("missing.pt", "not found"),
        (".", "is a directory"),
        ("foreign.pt", "not a hydramix"),
        ("corrupt.pt", "readable"),
    ]:
        with pytest.raises(HydraMixError, match=match):
            load_generator(tmp_path / bad)


# ---------------------------------------------------------------------------------------------- the stage


def _params(tmp_path: Path, **changes) -> Path:
    section = to_dict(tiny_config(**changes))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"generator": section}))
    return path


def _stage_args(subset: Path, out: Path, params: Path) -> list[str]:
    return [
        "train-generator", "--subset", str(subset), "--params", str(params), "--no-progress",
        "--generator", str(out / "g.pt"), "--metrics", str(out / "metrics.json"),
        "--loss-curve", str(out / "loss.csv"), "--grid", str(out / "grid.png"),
        "--checkpoint", str(out / "state.pt"), "--threads", "1", "--timings", str(out / "timings.json"),
    ]  # fmt: skip


def test_stage_help() -> None:
    result = CliRunner().invoke(app, ["train-generator", "--help"])
    assert result.exit_code == 0
    assert "--subset" in result.output and "--iterations" in result.output and "resumes" in result.output


def test_stage_end_to_end(tiny_subset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = _stage_args(tiny_subset, out, _params(tmp_path)) + ["--iterations", "2", "--seed", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 2 and "mask_fidelity" in metrics
    # Results and timings apart: nothing that depends on the hardware or the load is a metric.
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == set(tg.RUN_KEYS) and not set(metrics) & set(tg.RUN_KEYS)
    assert timings["throughput"]["source_images_per_s"] > 0
    # dvc plots draws every column the loss curve has (the template folds them; dvc.yaml uses it).
    header = (out / "loss.csv").read_text().splitlines()[0].split(",")
    template = json.loads((Path(__file__).resolve().parents[2] / ".dvc/plots/loss_curves.json").read_text())
    assert header[0] == "step" and header[1:] == template["transform"][0]["fold"]
    assert (out / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "state.pt").exists()
    g, meta = load_generator(out / "g.pt")
    assert meta["step"] == 2 and meta["config"]["seed"] == 1 and len(meta["subset_sha256"]) == 64


def test_stage_without_a_terminal_prints_progress_lines_and_says_when_it_resumes(
    tiny_subset: Path, tmp_path: Path, monkeypatch
) -> None:
    """Under dvc repro (stderr not a terminal) the stage prints plain progress lines, and a restarted run says
    from which step it resumes; --quiet and TQDM_DISABLE silence both."""
    out = tmp_path / "out"
    args = _stage_args(tiny_subset, out, _params(tmp_path, iterations=40, checkpoint_every=20))
    args.remove("--no-progress")
    real_step, calls = tg.train_step, {"n": 0, "kill_at": 25}

    def killed(*a, **k):
        calls["n"] += 1
        if calls["n"] == calls["kill_at"]:
            raise KeyboardInterrupt
        return real_step(*a, **k)

    monkeypatch.setattr(tg, "train_step", killed)
    first = CliRunner().invoke(app, args)  # killed in step 25: the checkpoint holds step 20
    assert first.exit_code == 130 and (out / "state.pt").exists()
    lines = [line for line in first.output.splitlines() if line.startswith("train-generator: ")]
    assert lines[0].startswith("train-generator: 2/40 step (5%)") and "ETA" in lines[0]
    assert len(lines) == 12  # every 2 steps (5% of 40) up to step 24, then the kill

    calls.update(n=0, kill_at=3)  # a quiet run resumes, is killed in step 23, and prints nothing of it
    quiet = CliRunner().invoke(app, ["--quiet", *args])
    assert quiet.exit_code == 130 and "train-generator" not in quiet.output

    monkeypatch.setattr(tg, "train_step", real_step)
    resumed = CliRunner().invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert "train-generator: resuming from step 20 of 40" in resumed.output
    assert "train-generator: 40/40 step (100%)" in resumed.output

    monkeypatch.setenv("TQDM_DISABLE", "1")
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "train-generator:" not in again.output


def test_stage_path_errors_say_what_is_wrong(tiny_subset: Path, tmp_path: Path) -> None:
    params = _params(tmp_path)
    missing = CliRunner().invoke(app, _stage_args(tmp_path / "nope", tmp_path / "o", params))
    assert missing.exit_code == 1 and "--subset" in missing.output and "no such directory" in missing.output
    for bad in (["--threads", "0"], ["--threads", "many"]):
        result = CliRunner().invoke(app, _stage_args(tiny_subset, tmp_path / "o", params) + bad)
        assert result.exit_code == 1 and "--threads must be auto or an integer >= 1" in result.output


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"masks": MaskConfig(n_sources=(2, 9))}, "has 8 train image"),
        ({"resolution": 32}, "subset is 16 px"),
    ],
)
def test_stage_bad_input(tiny_subset: Path, tmp_path: Path, changes, message) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, _stage_args(tiny_subset, out, _params(tmp_path, **changes)))
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())  # outputs are probed (their folder made) before training


def test_stage_bad_params_and_corrupt_checkpoint(tiny_subset: Path, tmp_path: Path) -> None:
    params = _params(tmp_path)
    data = yaml.safe_load(params.read_text())
    data["generator"]["masks"]["min_size"] = 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, _stage_args(tiny_subset, out, bad))
    assert result.exit_code == 1 and "min_size" in result.output

    out.mkdir()
    (out / "state.pt").write_bytes(b"junk")
    result = CliRunner().invoke(app, _stage_args(tiny_subset, out, params))
    assert result.exit_code == 1 and "unreadable" in result.output
    assert (out / "state.pt").read_bytes() == b"junk" and not (out / "g.pt").exists()


def test_stage_trains_the_true_chimeramix_generator(tiny_subset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = _stage_args(tiny_subset, out, _params(tmp_path)) + ["--iterations", "2"]
    result = CliRunner().invoke(app, args + ["--n-sources", "2", "--mask-kind", "chimeramix"])
    assert result.exit_code == 0, result.output
    _, meta = load_generator(out / "g.pt")
    assert meta["masks"]["kind"] == "chimeramix" and meta["masks"]["n_sources"] == [2, 2]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--mask-kind", "chimeramix"], "n_sources must be [2, 2]"),  # the params' N range is [2, 3]
        (["--mask-kind", "voronoi"], "--mask-kind must be one of"),
        (["--n-sources", "2,x"], "--n-sources must be N or MIN,MAX"),
    ],
)
def test_stage_mask_flags_bad_input(tiny_subset: Path, tmp_path: Path, flags, message) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, _stage_args(tiny_subset, out, _params(tmp_path)) + flags)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not out.exists()
