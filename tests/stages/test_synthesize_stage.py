"""``hydramix synthesize`` end to end on the tiny subset with a tiny (untrained) generator checkpoint.

An untrained generator is enough here: these tests check the artifact (determinism, resume, provenance,
loaders, errors), not image quality.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from pipeline.core.devices import resolve_device
from pipeline.core.digest import file_digest
from pipeline.data.subsets import read_subset
from pipeline.generator.config import DiscriminatorConfig, GeneratorConfig, ModelConfig
from pipeline.generator.files import save_generator
from pipeline.generator.masks import MaskConfig
from pipeline.generator.networks import HydraMixGenerator
from pipeline.synthesis.engine import SynthConfig, Synthesizer
from pipeline.synthesis.shards import writer
from pipeline.synthesis.shards.dataset_writer import write_dataset_shards
from pipeline.synthesis.shards.format import CARD, LOCK, MANIFEST, PLAN, ShardConfig, n_shards, shards_for_rank
from pipeline.synthesis.shards.plan import plan_dataset
from pipeline.synthesis.shards.reader import iter_samples, load_images, read_manifest, shard_paths
from pipeline.synthesis.shards.verification import verify
from stages.cli import app
from tests.conftest import TINY_MASKS, TINY_SYNTH, tiny_generator_config

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
MASKS = TINY_MASKS
SYNTH = TINY_SYNTH


def generator_config(resolution: int = 16, resize_subset: bool = False) -> GeneratorConfig:
    return tiny_generator_config(
        resolution=resolution,
        resize_subset=resize_subset,
        iterations=1,
        lr_discriminator=1e-3,
        lr_milestones=(),
        lr_gamma=1.0,
        checkpoint_every=1,
        eval_mixes=1,
        grid_mixes=1,
        seed=0,
        model=ModelConfig(width=4, encoder_blocks=0, decoder_blocks=0),
        discriminator=DiscriminatorConfig(width=4, n_layers=1),
        masks=MaskConfig(**{**MASKS, "n_sources": (2, 3)}),
    )


def make_generator(
    path: Path, subset: Path, class_names=None, resolution: int = 16, sha=None, resize_subset: bool = False
) -> Path:
    """A tiny randomly initialised generator saved in the documented generator file format."""
    cfg = generator_config(resolution, resize_subset)
    torch.manual_seed(0)
    g = HydraMixGenerator(**{"width": 4, "encoder_blocks": 0, "decoder_blocks": 0})
    names = class_names or tuple(read_subset(subset).train.class_names)
    save_generator(path, g, cfg, names, sha or file_digest(subset / "manifest.json"), step=1)
    return path


@pytest.fixture
def setup(tmp_path, tiny_subset):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"synthesize": SYNTH, "generator": {"masks": MASKS}}))
    gen = make_generator(tmp_path / "g.pt", tiny_subset)
    return {"params": params, "subset": tiny_subset, "generator": gen, "tmp": tmp_path}


def synth(setup, out: Path, *extra: str, generator: bool = True):
    args = [
        "synthesize",
        "--subset",
        str(setup["subset"]),
        "--out",
        str(out),
        "--params",
        str(setup["params"]),
    ]
    if generator:
        args += ["--generator", str(setup["generator"])]
    return runner.invoke(app, args + list(extra))


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.tar"))}


def test_synthesize_is_deterministic_verifiable_and_self_describing(setup):
    out_a, out_b = setup["tmp"] / "a", setup["tmp"] / "b"
    timings = setup["tmp"] / "t.json"
    result = synth(setup, out_a, "--metrics", str(setup["tmp"] / "m.json"), "--timings", str(timings))
    assert result.exit_code == 0, result.output
    assert synth(setup, out_b).exit_code == 0
    assert digests(out_a) == digests(out_b) and len(digests(out_a)) == 3  # 24 samples in shards of 10
    assert verify(out_a) == []
    assert runner.invoke(app, ["verify", str(out_a)]).exit_code == 0

    manifest = read_manifest(out_a)
    assert manifest["total"] == 24 and set(manifest["counts"].values()) == {6}
    assert manifest["generator"]["sha256"] == file_digest(setup["generator"])
    assert manifest["subset"]["manifest_sha256"] == file_digest(setup["subset"] / "manifest.json")
    assert manifest["synthesis"]["n_per_class"] == 6 and manifest["masks"]["n_sources"] == [2, 3]
    assert set(manifest["versions"]) == {"hydramix", "torch", "numpy", "pillow"}
    assert {s["name"]: s["sha256"] for s in manifest["shards"]} == digests(out_a)
    card = (out_a / "README.md").read_text()
    assert "wds.WebDataset" in card and "## Licence" in card and "24 synthetic 16x16" in card
    # The metrics say what the dataset is; how long it took is apart, so a forced re-run changes no metric.
    figures = json.loads((setup["tmp"] / "m.json").read_text())
    assert figures == {"images": 24, "shards": 3, "classes": 4, "diagnostics": manifest["diagnostics"]}
    run = json.loads(timings.read_text())
    assert run["images_rendered"] == 24 and run["images_per_s"] > 0 and "seconds" in run
    assert "threads" not in manifest["synthesis"]  # how many threads ran it is not part of the dataset
    assert not (out_a / PLAN).exists()


def test_provenance_matches_the_subset(setup):
    out = setup["tmp"] / "ds"
    assert synth(setup, out).exit_code == 0
    train = read_subset(setup["subset"]).train
    label_of_index = dict(zip(train.indices.tolist(), train.labels.tolist(), strict=True))
    samples = list(iter_samples(out))
    assert [s.meta["sample_id"] for s in samples] == list(range(24))
    for s in samples:
        assert s.label == s.meta["sample_id"] % 4 == s.meta["label"]
        assert s.meta["class"] == train.class_names[s.label]
        assert 2 <= s.meta["n_sources"] == len(s.meta["sources"]) <= 3
        assert len(set(s.meta["sources"])) == len(s.meta["sources"])  # distinct sources
        assert all(label_of_index[i] == s.label for i in s.meta["sources"])  # all of the labelled class
        assert s.image.shape == (16, 16, 3)
    images = load_images(out)
    assert len(images) == 24 and images.class_names == train.class_names
    np.testing.assert_array_equal(images.images[5], samples[5].image)


def test_stock_webdataset_reads_synthesize_output(setup):
    wds = pytest.importorskip("webdataset")
    out = setup["tmp"] / "ds"
    assert synth(setup, out).exit_code == 0
    urls = [str(p) for p in shard_paths(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = list(wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("png", "cls", "json"))
    assert len(rows) == 24
    ours = list(iter_samples(out))
    for (img, cls, meta), s in zip(rows, ours, strict=True):
        np.testing.assert_array_equal(np.asarray(img), s.image)
        assert cls == s.label and meta == s.meta


def test_resume_after_an_interrupted_run(setup, monkeypatch):
    clean = setup["tmp"] / "clean"
    assert synth(setup, clean).exit_code == 0
    out = setup["tmp"] / "ds"
    real_render = Synthesizer.render

    def interrupted(self, ids):
        if ids[0] >= 10:  # Ctrl-C while rendering the second shard
            raise KeyboardInterrupt
        return real_render(self, ids)

    monkeypatch.setattr(Synthesizer, "render", interrupted)
    result = synth(setup, out)
    assert result.exit_code == 130
    assert sorted(p.name for p in out.iterdir()) == [PLAN, "tiny-000000.tar"]
    (out / "tiny-000001.tar.tmp").write_bytes(b"half a shard")  # what a SIGKILL would leave behind
    monkeypatch.setattr(Synthesizer, "render", real_render)
    result = synth(setup, out)
    assert result.exit_code == 0, result.output
    assert "(14 rendered, 1 shard(s) kept)" in result.stdout
    assert digests(out) == digests(clean) and not list(out.glob("*.tmp"))
    assert read_manifest(out)["shards"] == read_manifest(clean)["shards"]


def test_resume_keeps_complete_shards(setup):
    out = setup["tmp"] / "ds"
    assert synth(setup, out).exit_code == 0
    before = digests(out)
    (out / "tiny-000001.tar").unlink()
    result = synth(setup, out)
    assert result.exit_code == 0, result.output
    assert "(10 rendered, 2 shard(s) kept)" in result.stdout
    assert digests(out) == before and verify(out) == []


def test_different_dataset_in_out_is_refused_unless_forced(setup):
    out = setup["tmp"] / "ds"
    assert synth(setup, out).exit_code == 0
    before = digests(out)
    result = synth(setup, out, "--seed", "1")
    assert result.exit_code == 1 and "different synthetic dataset" in result.stderr
    assert "synthesis.seed" in result.stderr and digests(out) == before
    result = synth(setup, out, "--seed", "1", "--force")
    assert result.exit_code == 0, result.output
    assert digests(out) != before and verify(out) == []
    assert read_manifest(out)["synthesis"]["seed"] == 1


def test_full_disk_fails_cleanly(setup, monkeypatch):
    out = setup["tmp"] / "ds"
    real = writer._tar_member_bytes
    calls = {"n": 0}

    def full_disk(name, data):
        calls["n"] += 1
        if calls["n"] == 40:  # second shard (30 members per full shard), mid-shard
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(name, data)

    monkeypatch.setattr(writer, "_tar_member_bytes", full_disk)
    result = synth(setup, out)
    assert result.exit_code == 1 and "disk full" in result.stderr
    assert "Traceback" not in result.output
    assert sorted(p.name for p in out.iterdir()) == [PLAN, "tiny-000000.tar"]
    monkeypatch.setattr(writer, "_tar_member_bytes", real)
    assert synth(setup, out).exit_code == 0 and verify(out) == []


def test_pixel_mode_needs_no_generator(setup):
    out = setup["tmp"] / "px"
    result = synth(setup, out, "--mode", "pixel", "--n-sources", "2", "--n-per-class", "3", generator=False)
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert manifest["generator"] is None and manifest["total"] == 12
    assert "pixel-space composition" in (out / "README.md").read_text()
    assert all(s.meta["n_sources"] == 2 and s.meta["mode"] == "pixel" for s in iter_samples(out))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--n-per-class", "0"], "--n-per-class must be >= 1"),
        (["--n-sources", "1,3"], "n_sources"),
        (["--n-sources", "two"], "--n-sources must be"),
        (["--mode", "magic"], "--mode must be"),
        (["--device", "tpu"], "unknown device"),
        (["--shard-size", "0"], "shard_size must be >= 1"),
        (["--threads", "none"], "--threads must be auto or an integer"),
    ],
)
def test_bad_flags(setup, extra, message):
    result = synth(setup, setup["tmp"] / "ds", *extra)
    assert result.exit_code == 1 and message in result.stderr, result.output
    assert not (setup["tmp"] / "ds").exists()


def test_bad_generator_files(setup, make_subset):
    out = setup["tmp"] / "ds"
    real = setup["generator"]

    def with_generator(path: Path):
        setup["generator"] = path
        return synth(setup, out)

    result = with_generator(setup["tmp"] / "missing.pt")
    assert result.exit_code == 1 and "missing.pt: no such file" in result.stderr
    # The generator's directory (a dvc.yaml output) is not the generator file, and the message says so.
    folder = setup["tmp"] / "gdir"
    folder.mkdir()
    (folder / "generator.pt").write_bytes(real.read_bytes())
    message = with_generator(folder).stderr
    assert "is a directory, not a file" in message and f"did you mean {folder / 'generator.pt'}?" in message
    foreign = setup["tmp"] / "foreign.pt"
    foreign.write_bytes(b"not a checkpoint")
    assert "not a readable generator file" in with_generator(foreign).stderr
    torch.save({"format": "something else"}, setup["tmp"] / "other.pt")
    assert "not a hydramix generator file" in with_generator(setup["tmp"] / "other.pt").stderr
    other_classes = make_generator(setup["tmp"] / "c.pt", setup["subset"], class_names=("w", "x", "y", "z"))
    assert "trained for classes" in with_generator(other_classes).stderr
    other_res = make_generator(setup["tmp"] / "r.pt", setup["subset"], resolution=32)
    assert "trained at 32 px" in with_generator(other_res).stderr
    other_subset = make_generator(setup["tmp"] / "s.pt", setup["subset"], sha="0" * 64)
    assert "trained on another subset" in with_generator(other_subset).stderr
    assert not out.exists()


def test_shard_size_flag_and_the_few_shards_warning(setup):
    """Fewer shards than 4 warns (a DataLoader with more workers than shards gets "No samples found")."""
    few = synth(setup, setup["tmp"] / "few")  # 24 samples in shards of 10: 3 shards
    assert few.exit_code == 0 and "warning: " in few.stderr and "has 3 shard(s)" in few.stderr
    assert "--shard-size" in few.stderr
    enough = synth(setup, setup["tmp"] / "enough", "--shard-size", "6")
    assert enough.exit_code == 0, enough.output
    assert len(read_manifest(setup["tmp"] / "enough")["shards"]) == 4 and "warning" not in enough.stderr


def test_generator_mode_without_generator(setup):
    result = synth(setup, setup["tmp"] / "ds", generator=False)
    assert result.exit_code == 1 and "--generator PATH is required" in result.stderr


@pytest.mark.parametrize("mode", ["pixel", "generator"])
def test_split_across_processes_is_byte_identical(setup, mode):
    """Two 'ranks' writing alternate shards (each with its own Synthesizer) == one process writing all."""
    subset = read_subset(setup["subset"])
    cfg = SynthConfig(
        **{**SYNTH, "mode": mode, "n_sources": (2, 3), "n_per_class": 5, "shards": ShardConfig("tiny", 3)}
    )
    mask_cfg = MaskConfig(**{**MASKS, "n_sources": (2, 3)})
    device = resolve_device("cpu")

    def synthesizer() -> Synthesizer:
        torch.manual_seed(0)
        g = HydraMixGenerator(width=4, encoder_blocks=0, decoder_blocks=0)
        return Synthesizer(subset.train, cfg, mask_cfg, g, device, torch.float32)

    one, split = setup["tmp"] / "one", setup["tmp"] / "split"
    for directory in (one, split):
        plan_dataset(directory, {"mode": mode}, force=False)
    write_dataset_shards(one, synthesizer(), cfg.shards, cfg.batch_size, progress=False)
    count = n_shards(20, 3)
    for rank in range(2):
        indices = shards_for_rank(count, rank, 2)
        write_dataset_shards(split, synthesizer(), cfg.shards, cfg.batch_size, indices, progress=False)
    assert digests(one) == digests(split) and len(digests(one)) == 7


def test_missing_subset_and_missing_params_section(setup):
    setup["subset"] = setup["tmp"] / "nope"
    result = synth(setup, setup["tmp"] / "ds")
    assert result.exit_code == 1 and "--subset" in result.stderr and "nope: no such directory" in result.stderr
    setup["params"].write_text(yaml.safe_dump({"generator": {"masks": MASKS}}))
    result = synth(setup, setup["tmp"] / "ds")
    assert result.exit_code == 1 and "has no 'synthesize' section" in result.stderr


def test_every_set_carries_its_diagnostics_and_the_real_subsets(setup):
    out = setup["tmp"] / "ds"
    assert synth(setup, out).exit_code == 0
    diagnostics = read_manifest(out)["diagnostics"]
    assert diagnostics["prefix_per_class"] == 200
    syn, real = diagnostics["synthetic"], diagnostics["real"]
    assert syn["n_images"] == 24 and real["n_images"] == len(read_subset(setup["subset"]).train)
    assert 0 < syn["hf_share"] < 1 and 0 < real["hf_share"] < 1 and syn["diversity"] > 0
    shares = [s.meta["largest_share"] for s in iter_samples(out)]
    assert syn["largest_source_share"] == pytest.approx(np.mean(shares)) and min(shares) >= 1 / 3
    assert real["largest_source_share"] is None
    assert "high-frequency power share" in (out / "README.md").read_text()


def test_blur_control_mixes_the_reference_sources_and_masks_and_matches_its_sharpness(setup):
    reference, blurred = setup["tmp"] / "hydramix", setup["tmp"] / "blur"
    assert synth(setup, reference).exit_code == 0
    result = synth(setup, blurred, "--mode", "blur", "--blur-reference", str(reference), "--name", "blur")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(blurred)
    sigma = manifest["synthesis"]["blur_sigma"]
    assert manifest["synthesis"]["mode"] == "blur" and sigma >= 0 and f"sigma {sigma} px" in result.output
    ref = {s.key: s.meta for s in iter_samples(reference)}
    for sample in iter_samples(blurred):
        assert sample.meta["sources"] == ref[sample.key]["sources"]
        assert sample.meta["largest_share"] == ref[sample.key]["largest_share"]  # the same masks
    target = read_manifest(reference)["diagnostics"]["synthetic"]["hf_share"]
    got = manifest["diagnostics"]["synthetic"]["hf_share"]
    assert got == pytest.approx(target, abs=0.02) or sigma in (0.0, 4.0)
    # A given sigma is reproducible and recorded.
    fixed = setup["tmp"] / "fixed"
    assert synth(setup, fixed, "--mode", "blur", "--blur-sigma", "1.5", generator=False).exit_code == 0
    assert read_manifest(fixed)["synthesis"]["blur_sigma"] == 1.5


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mode", "blur"], "exactly one of --blur-reference"),
        (["--mode", "blur", "--blur-sigma", "1", "--blur-reference", "x"], "exactly one of --blur-reference"),
        (["--blur-sigma", "1"], "for --mode blur only"),
        (["--mode", "blur", "--blur-reference", "nowhere"], "nowhere"),
    ],
)
def test_blur_mode_bad_input(setup, extra, message):
    result = synth(setup, setup["tmp"] / "ds", *extra)
    assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.output, result.output
    assert not (setup["tmp"] / "ds").exists()


def test_blur_reference_must_share_the_seed(setup):
    reference = setup["tmp"] / "hydramix"
    assert synth(setup, reference).exit_code == 0
    result = synth(setup, setup["tmp"] / "ds", "--mode", "blur", "--blur-reference", str(reference), "--seed", "1")
    assert result.exit_code == 1 and "very sources and masks" in result.stderr


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_a_crafted_manifest_makes_synthesize_delete_nothing(setup, where):
    """Issue 14.1, as reported: an entry naming a file outside --out, with a sha256 that differs from the
    file's, added to the manifest of a matching dataset; the same command again must refuse and delete nothing."""
    victim = setup["tmp"] / "victimdir" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("precious")
    out = setup["tmp"] / "ds"
    assert synth(setup, out).exit_code == 0
    name = "../victimdir/victim.txt" if where == "relative" else str(victim)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["shards"].append({"name": name, "sha256": "0" * 64, "count": 1})
    (out / MANIFEST).write_text(json.dumps(manifest))
    before = tree(setup["tmp"])
    result = synth(setup, out)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert f"shards[3] names {name!r}, which is not a shard of this dataset" in result.stderr
    assert "nothing was deleted" in result.stderr
    assert victim.read_text() == "precious" and tree(setup["tmp"]) == before
    verified = runner.invoke(app, ["verify", str(out)])
    assert verified.exit_code == 1 and verified.stderr.count("\n") == 1 and name in verified.stderr


def damage_shard(path: Path, how: str) -> None:
    if how == "flip":  # one byte inside a PNG: still a tar of complete samples (the old resume kept it)
        data = bytearray(path.read_bytes())
        data[700] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "other-shard":  # a valid shard of the same size, but not this one
        path.write_bytes((path.parent / "tiny-000000.tar").read_bytes())
    else:
        path.write_bytes(path.read_bytes()[:-1024])


@pytest.mark.parametrize("how", ["flip", "other-shard", "truncate"])
@pytest.mark.parametrize("state", ["killed", "complete"])
def test_resume_renders_a_damaged_shard_again_and_verify_advice_repairs(setup, monkeypatch, state, how):
    """Issue 14.5: with the state a kill leaves (plan + complete shards), or a finished dataset that verify
    found damaged, one shard damaged under its final name is rendered again by the same command; the result
    is byte-identical to an uninterrupted run and passes verify."""
    clean = setup["tmp"] / "clean"
    assert synth(setup, clean).exit_code == 0
    out = setup["tmp"] / "ds"
    if state == "killed":
        real_render = Synthesizer.render

        def killed(self, ids):
            if ids[0] >= 20:  # in the third (last) shard
                raise KeyboardInterrupt
            return real_render(self, ids)

        monkeypatch.setattr(Synthesizer, "render", killed)
        assert synth(setup, out).exit_code == 130
        monkeypatch.setattr(Synthesizer, "render", real_render)
        assert sorted(p.name for p in out.iterdir()) == [PLAN, "tiny-000000.tar", "tiny-000001.tar"]
    else:
        assert synth(setup, out).exit_code == 0
    damage_shard(out / "tiny-000001.tar", how)
    if state == "complete":
        verified = runner.invoke(app, ["verify", str(out)])
        assert verified.exit_code == 1 and "tiny-000001.tar" in verified.stderr
        assert "re-run `hydramix synthesize` with the same arguments" in verified.stderr
    result = synth(setup, out)
    assert result.exit_code == 0, result.output
    # killed: shard 1 again and the unfinished shard 2 (10 + 4), shard 0 kept; complete: shard 1 alone
    expected = "(14 rendered, 1 shard(s) kept)" if state == "killed" else "(10 rendered, 2 shard(s) kept)"
    assert expected in result.stdout
    assert "1 shard(s) differed from their recorded sha256 and were rendered again" in result.stderr
    assert tree(out) == tree(clean)  # shards, manifest and card, byte for byte
    assert runner.invoke(app, ["verify", str(out)]).exit_code == 0


def test_the_manifest_covers_the_card_and_gains_only_card_sha256(setup):
    out = setup["tmp"] / "ds"
    assert synth(setup, out).exit_code == 0
    manifest = read_manifest(out)
    assert manifest["card_sha256"] == file_digest(out / CARD)
    assert set(manifest) == {
        "format", "total", "class_names", "resolution", "counts", "shards", "diagnostics", "card_sha256",
        "name", "shard_size", "generator", "subset", "synthesis", "compute", "masks", "versions",
    }  # fmt: skip
    names = [CARD, MANIFEST, *[f"tiny-00000{i}.tar" for i in range(3)]]
    assert sorted(p.name for p in out.iterdir()) == names  # no plan, no lock, no temporary left


HOLD_LOCK = """
import sys, time
from pipeline.synthesis.shards.lock import lock_directory
with lock_directory(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_synthesize_into_the_same_out_is_refused(setup):
    """Issue 14.11: while one process writes into --out, another gets a one-line refusal naming its pid."""
    out = setup["tmp"] / "ds"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, env=env)
    try:
        assert holder.stdout.readline() == b"held\n"
        result = synth(setup, out)
        assert result.exit_code == 1 and result.stderr.count("\n") == 1
        assert f"another synthesize is writing to {out} (pid {holder.pid})" in result.stderr
        assert sorted(p.name for p in out.iterdir()) == [LOCK]  # nothing claimed, nothing written
    finally:
        holder.kill()  # a SIGKILL: its lock dies with it, its lock file stays
        holder.wait()
    assert (out / LOCK).exists()
    assert synth(setup, out).exit_code == 0
    assert not (out / LOCK).exists() and verify(out) == []


# `hydramix` with rendering slowed to 20 ms per chunk, so that a shard takes about a second to write.
SLOW_HYDRAMIX = """
import time
from pipeline.synthesis.engine import Synthesizer
from stages.cli import main
render = Synthesizer.render
Synthesizer.render = lambda self, ids: time.sleep(0.02) or render(self, ids)
main()
"""


@pytest.mark.slow
def test_sigint_to_a_real_synthesize_leaves_no_temporary(setup):
    """Issue 14.12 end to end: Ctrl-C (SIGINT) to a real `hydramix synthesize` while a shard is being written
    leaves no .tmp and no lock; the same command then finishes the dataset."""
    params = setup["tmp"] / "big.yaml"
    big = {**SYNTH, "n_per_class": 150, "shards": {"name": "tiny", "shard_size": 200}}  # 3 shards of 200
    params.write_text(yaml.safe_dump({"synthesize": big, "generator": {"masks": MASKS}}))
    out = setup["tmp"] / "ds"
    args = ["synthesize", "--subset", str(setup["subset"]), "--out", str(out), "--params", str(params)]
    args += ["--mode", "pixel", "--n-sources", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_HYDRAMIX, *args], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(out.glob("*.tar.tmp")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "synthesize ended before a shard was begun"
    time.sleep(0.2)  # mid-shard
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"interrupted" in err and b"Traceback" not in err
    assert not list(out.glob("*.tmp")) and not (out / LOCK).exists()
    finished = runner.invoke(app, args)
    assert finished.exit_code == 0, finished.output
    assert verify(out) == []


def test_a_generator_trained_on_resized_sources_writes_the_subsets_resolution(setup):
    """generator.resize_subset (ChimeraMix trains CIFAR at 64 px): the sources are resized to the generator's side
    as in training, and the mixes back to the subset's, for the generator set and both controls."""
    big = make_generator(setup["tmp"] / "big.pt", setup["subset"], resolution=32, resize_subset=True)
    out = setup["tmp"] / "big"
    for extra in ([], ["--mode", "pixel", "--name", "px"], ["--mode", "blur", "--blur-reference", str(out)]):
        target = out if not extra else setup["tmp"] / extra[1]
        result = synth(setup, target, "--generator", str(big), *extra, generator=False)
        assert result.exit_code == 0, result.output
        manifest = read_manifest(target)
        assert manifest["resolution"] == 16 and manifest["render_resolution"] == 32
        assert all(s.image.shape == (16, 16, 3) for s in iter_samples(target))
        assert verify(target) == []
