"""torch.distributed: the helpers' single-process behaviour, and real 2-process runs under torchrun (CPU, gloo).

The torchrun test launches ``python -m torch.distributed.run --standalone --nproc-per-node 2`` on a small
driver script (written below) that, inside one process group, (1) trains the generator and a classifier through
the library and dumps a hash of each rank's state_dict, then (2) runs the real ``train-generator``,
``synthesize`` and ``train-classifier`` commands, recording every file each rank moves into place (all outputs
are written by temporary file + ``os.replace``). The test then compares with single-process runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import pipeline.generator.train as tg
from pipeline.classify.train import ClassifierConfig, train_classifier
from pipeline.core import distributed
from pipeline.core.config import to_dict
from pipeline.core.errors import HydraMixError
from pipeline.generator.config import DiscriminatorConfig, ModelConfig
from pipeline.generator.train import train_generator
from stages.cli import app
from tests.conftest import TINY_SYNTH, build_subset_dir, make_imageset, tiny_generator_config

REPO = Path(__file__).resolve().parents[2]

GENERATOR = tiny_generator_config(
    iterations=3,
    batch_size=4,  # global: 2 mixes per process
    model=ModelConfig(width=4, encoder_blocks=1, decoder_blocks=1),
    discriminator=DiscriminatorConfig(width=4, n_layers=2),
)
CLASSIFIER = ClassifierConfig(
    arch="wrn-10-1", iterations=3, batch_size=8, warmup_iterations=1, device="cpu", precision="fp32"
)
# 20 images in shards of 3 -> 7 shards: rank 0 writes 4, rank 1 writes 3.
SYNTHESIZE = {**TINY_SYNTH, "n_per_class": 5, "shards": {"name": "tiny", "shard_size": 3}}

DRIVER = """
import json, os, sys, hashlib
from pathlib import Path
import torch
torch.set_num_threads(1)
from pipeline.core import distributed
from pipeline.core.config import from_dict
from pipeline.classify.train import ClassifierConfig, train_classifier
from pipeline.generator.config import GeneratorConfig
from pipeline.generator.train import train_generator
from stages.cli import app
from tests.conftest import make_imageset

def state_hash(module):
    digest = hashlib.sha256()
    for key, value in module.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()

spec = json.loads(Path(sys.argv[1]).read_text())
with distributed.session() as launch:
    rank = distributed.rank()
    images = make_imageset(5, resolution=16, n_classes=3)
    g = train_generator(images, from_dict(GeneratorConfig, spec["generator"], "g"), subset_sha256="s",
                        progress=False)
    resumed = train_generator(images, from_dict(GeneratorConfig, spec["generator"], "g"), subset_sha256="s",
                              checkpoint_path=spec["checkpoint"], progress=False)
    c = train_classifier("mixup", make_imageset(6, resolution=16, n_classes=4),
                         from_dict(ClassifierConfig, spec["classifier"], "c"), progress=False)
    # The same training killed in step 3 (both processes) after the checkpoint of step 2, then resumed.
    import pipeline.classify.train as tc
    real_next, calls = tc.BatchSource.next_batch, {"n": 0}
    def killed_in_step_3(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_next(self)
    tc.BatchSource.next_batch = killed_in_step_3
    c_ckpt = Path(spec["out"], "classifier.ckpt")
    try:
        train_classifier("mixup", make_imageset(6, resolution=16, n_classes=4),
                         from_dict(ClassifierConfig, spec["classifier"], "c"), progress=False,
                         checkpoint_path=c_ckpt, checkpoint_every=2)
    except KeyboardInterrupt:
        pass
    tc.BatchSource.next_batch = real_next
    distributed.barrier()  # rank 0 has written the checkpoint of step 2
    c_resumed = train_classifier("mixup", make_imageset(6, resolution=16, n_classes=4),
                                 from_dict(ClassifierConfig, spec["classifier"], "c"), progress=False,
                                 checkpoint_path=c_ckpt, checkpoint_every=2)
    dump = {"launch": [launch.rank, launch.world_size, launch.local_rank], "world_size": distributed.world_size(),
            "generator": state_hash(g.generator), "history": g.history, "resumed": resumed.history,
            "resumed_hash": state_hash(resumed.generator), "g_world": g.metrics["world_size"],
            "classifier": state_hash(c.model), "c_world": c.stats["world_size"],
            "c_resumed": state_hash(c_resumed.model), "c_resumed_from": c_resumed.stats["resumed_from_step"]}
    replaced, real_replace = [], os.replace
    def logged_replace(src, dst, *args, **kwargs):
        replaced.append(str(dst))
        return real_replace(src, dst, *args, **kwargs)
    os.replace = logged_replace
    for command in spec["commands"]:
        assert app(command, standalone_mode=False) in (None, 0), command
    os.replace = real_replace
    dump["replaced"] = replaced
    Path(spec["out"], f"rank{rank}.json").write_text(json.dumps(dump))
"""


# ------------------------------------------------------------------------------------------------------------
# Single process: every helper is a no-op.


def test_launch_from_env() -> None:
    assert distributed.launch_from_env({}) is None
    assert distributed.launch_from_env({"WORLD_SIZE": "1", "RANK": "0"}) is None  # torchrun with one process
    env = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}
    assert distributed.launch_from_env(env) == distributed.Launch(rank=3, world_size=4, local_rank=1)
    with pytest.raises(HydraMixError, match="must be integers"):
        distributed.launch_from_env({**env, "RANK": "x"})
    with pytest.raises(HydraMixError, match="inconsistent launch"):
        distributed.launch_from_env({**env, "RANK": "4"})
    with pytest.raises(HydraMixError, match="MASTER_ADDR"):
        distributed.launch_from_env({"WORLD_SIZE": "2", "RANK": "0"})


def test_part_of_splits_the_global_batch() -> None:
    parts = [distributed.part_of(12, r, 3) for r in range(3)]
    assert [np.arange(12)[p].tolist() for p in parts] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    with pytest.raises(HydraMixError, match="divisible by the 4 processes; use a multiple of 4 \\(e.g. 12\\)"):
        distributed.part_of(10, 0, 4)


def test_single_process_is_untouched() -> None:
    assert not distributed.active() and distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.is_main()
    module = torch.nn.Linear(2, 2)
    assert distributed.wrap(module, torch.device("cpu")) is module and distributed.unwrap(module) is module
    losses = {"a": torch.tensor(1.5)}
    assert distributed.mean_over_ranks(losses) is losses
    assert distributed.sum_over_ranks(7) == 7
    assert distributed.batch_part(7) == slice(None)
    assert distributed.place(torch.device("cpu")) == torch.device("cpu")
    distributed.barrier()
    distributed.average_buffers(module)
    with distributed.session() as launch:
        assert launch is None and not distributed.active()
    ran = []
    distributed.on_main(lambda: ran.append(1))
    assert ran == [1]

    def refuse() -> None:
        raise HydraMixError("out holds another dataset")

    with pytest.raises(HydraMixError, match="out holds another dataset"):
        distributed.on_main(refuse)


# ------------------------------------------------------------------------------------------------------------
# Two processes under torchrun.


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def test_torchrun_two_processes(tmp_path: Path, monkeypatch) -> None:
    # A single-process generator run killed in step 3 leaves its checkpoint after step 2: the 2-process run
    # resumes it (the data stream depends only on (seed, step), not on the number of processes).
    interrupted = tmp_path / "interrupted.pt"
    real_step, calls = tg.train_step, {"n": 0}

    def killed_in_step_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(tg, "train_step", killed_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_generator(
            make_imageset(5, resolution=16, n_classes=3),
            GENERATOR,
            subset_sha256="s",
            checkpoint_path=interrupted,
            progress=False,
        )
    monkeypatch.setattr(tg, "train_step", real_step)
    assert torch.load(interrupted, weights_only=True)["step"] == 2

    subset = build_subset_dir(tmp_path / "subset", n_train_per_class=6, n_test_per_class=2)
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump({"generator": to_dict(GENERATOR), "classifier": to_dict(CLASSIFIER), "synthesize": SYNTHESIZE})
    )
    out = tmp_path / "out"
    out.mkdir()
    gen = out / "g" / "generator.pt"
    train_gen = ["train-generator", "--subset", str(subset), "--generator", str(gen)]
    train_gen += ["--metrics", str(out / "g" / "metrics.json"), "--loss-curve", str(out / "g" / "loss.csv")]
    train_gen += ["--grid", str(out / "g" / "grid.png"), "--checkpoint", str(out / "g" / "ckpt.pt")]
    train_gen += ["--timings", str(out / "g" / "timings.json")]
    train_gen += ["--params", str(params), "--no-progress"]
    synth = ["synthesize", "--subset", str(subset), "--generator", str(gen), "--params", str(params)]
    train_cls = ["train-classifier", "--method", "baseline", "--subset", str(subset), "--params", str(params)]
    train_cls += ["--out", str(out / "c" / "model.pt"), "--out-metrics", str(out / "c" / "stats.json")]
    spec = {
        "generator": to_dict(GENERATOR),
        "classifier": to_dict(CLASSIFIER),
        "commands": [train_gen, [*synth, "--out", str(out / "ds")], train_cls],
        "out": str(out),
        "checkpoint": str(interrupted),
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    # Own process group: on a timeout the launcher and both workers are stopped together.
    proc = subprocess.Popen(
        [*launcher, str(tmp_path / "driver.py"), str(tmp_path / "spec.json")],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in 240 s:\n{stderr[-4000:]}")
    assert proc.returncode == 0, stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]

    # A real process group of two, and DDP kept the ranks' weights identical.
    assert [r["launch"] for r in ranks] == [[0, 2, 0], [1, 2, 1]]
    assert all(r["world_size"] == r["g_world"] == r["c_world"] == 2 for r in ranks)
    assert ranks[0]["generator"] == ranks[1]["generator"]
    assert ranks[0]["classifier"] == ranks[1]["classifier"]  # BatchNorm running stats averaged at the end
    # A killed 2-process classifier resumes to the same weights (each process gets its own BatchNorm statistics
    # back from the checkpoint).
    assert [r["c_resumed_from"] for r in ranks] == [2, 2]
    assert ranks[0]["c_resumed"] == ranks[1]["c_resumed"] == ranks[0]["classifier"]
    assert ranks[0]["history"] == ranks[1]["history"]  # losses averaged over the ranks
    assert ranks[0]["resumed_hash"] == ranks[1]["resumed_hash"]

    # Same global batches as one process (parts of them per rank): the same losses up to float rounding
    # (gradients are averaged in another order) and mathematically the same training.
    single = train_generator(make_imageset(5, resolution=16, n_classes=3), GENERATOR, subset_sha256="s", progress=False)
    assert [h["step"] for h in ranks[0]["history"]] == [h["step"] for h in single.history] == [1, 2, 3]
    for history in (ranks[0]["history"], ranks[0]["resumed"]):
        for dist_row, single_row in zip(history, single.history, strict=True):
            for key, value in single_row.items():
                assert dist_row[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert ranks[0]["resumed"][:2] == single.history[:2]  # from the 1-process checkpoint
    other_seed = train_generator(
        make_imageset(5, resolution=16, n_classes=3),
        dataclasses.replace(GENERATOR, seed=4),
        subset_sha256="s",
        progress=False,
    )
    assert other_seed.history[0]["g_total"] != pytest.approx(single.history[0]["g_total"], rel=1e-3)

    # Outputs written once, by rank 0; synthesis shards split r, r + 2, ...; the checkpoint gone at the end.
    names = [[Path(p).name for p in r["replaced"]] for r in ranks]
    for output in ("generator.pt", "metrics.json", "loss.csv", "grid.png", "manifest.json", "README.md"):
        assert names[0].count(output) == 1 and output not in names[1], output
    assert names[0].count("model.pt") == 1 and names[0].count("stats.json") == 1
    assert "ckpt.pt" in names[0] and "ckpt.pt" not in names[1] and not (out / "g" / "ckpt.pt").exists()
    shard_names = [sorted(n for n in ns if n.endswith(".tar")) for ns in names]
    assert shard_names == [
        [f"tiny-{i:06d}.tar" for i in (0, 2, 4, 6)],
        [f"tiny-{i:06d}.tar" for i in (1, 3, 5)],
    ]
    assert json.loads((out / "g" / "metrics.json").read_text())["step"] == 3
    assert json.loads((out / "g" / "timings.json").read_text())["world_size"] == 2
    assert json.loads((out / "c" / "stats.json").read_text())["world_size"] == 2

    # Synthesis by two ranks == by one process, byte for byte (shards, manifest and dataset card).
    single_ds = tmp_path / "single_ds"
    result = CliRunner().invoke(app, [*synth, "--out", str(single_ds)])
    assert result.exit_code == 0, result.output
    assert _digests(out / "ds") == _digests(single_ds)
    assert len([n for n in _digests(single_ds) if n.endswith(".tar")]) == 7
    assert runner_verify(out / "ds")


def runner_verify(directory: Path) -> bool:
    return CliRunner().invoke(app, ["verify", str(directory)]).exit_code == 0


def test_single_process_classifier_still_reports_world_size() -> None:
    result = train_classifier("baseline", make_imageset(4, resolution=16, n_classes=2), CLASSIFIER, progress=False)
    assert result.stats["world_size"] == 1
