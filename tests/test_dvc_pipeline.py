"""dvc.yaml and params.yaml agree with the code: every command exists, every section loads, every path flows."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from pipeline.augment import CLASSIC_AUGMENTATIONS, SYNTHETIC_METHODS
from pipeline.clip_scorer import ScoreConfig
from pipeline.config import from_dict
from pipeline.prepare import PrepareConfig, SubsetConfig
from pipeline.synthesis import SynthConfig
from pipeline.train_classifier import ClassifierConfig
from pipeline.train_generator import GeneratorConfig
from stages.cli import app

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {
    "prepare": PrepareConfig,
    "subset": SubsetConfig,
    "generator": GeneratorConfig,
    "synthesize": SynthConfig,
    "score": ScoreConfig,
    "classifier": ClassifierConfig,
}


@pytest.fixture(scope="module")
def params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture(scope="module")
def stages() -> dict:
    """Every stage of dvc.yaml with its matrix expanded, as DVC itself resolves it."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {stage.addressing: stage for stage in repo.index.stages}


def test_every_params_section_loads_into_its_config(params):
    for section, cls in SECTIONS.items():
        from_dict(cls, params[section], where=section)
    assert set(params) == set(SECTIONS) | {"protocol"}, "a params section no code reads"


def test_protocol_names_real_methods(params):
    protocol = params["protocol"]
    assert set(protocol["augmentations"]) <= set(CLASSIC_AUGMENTATIONS)
    assert set(protocol["mixes"]) <= set(SYNTHETIC_METHODS)
    assert set(protocol["combinations"]["mixes"]) <= set(SYNTHETIC_METHODS)
    assert set(protocol["combinations"]["augmentations"]) <= set(CLASSIC_AUGMENTATIONS) - {"baseline"}
    assert set(protocol["generators"]) <= {"hydramix", "chimeramix"}
    assert all(k >= 1 for k in protocol["k"]) and all(s >= 0 for s in protocol["seeds"])


def test_every_stage_runs_a_registered_command_named_like_it(stages):
    commands = {c.name for c in app.registered_commands}
    for address, stage in stages.items():
        argv = shlex.split(stage.cmd)
        assert argv[0] == "hydramix", address
        assert argv[1] in commands, f"{address}: unknown command {argv[1]}"
        # Names line up: the stage name starts with the command it runs (train-classifier-mix runs train-classifier).
        assert address.split("@")[0].startswith(argv[1]), address


def test_every_option_in_dvc_yaml_exists(stages):
    import typer.main

    group = typer.main.get_command(app)
    for address, stage in stages.items():
        argv = shlex.split(stage.cmd)
        command = group.commands[argv[1]]
        known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        used = {a.split("=")[0] for a in argv[2:] if a.startswith("--")}
        assert used <= known, f"{address}: unknown option(s) {used - known}"


def test_every_dependency_is_produced_upstream(stages):
    from dvc.dependency.param import ParamsDependency

    outs = {str(o.def_path) for stage in stages.values() for o in stage.outs}
    for address, stage in stages.items():
        for dep in (d for d in stage.deps if not isinstance(d, ParamsDependency)):
            path = str(dep.def_path)
            produced = any(o == path or o.startswith(path.rstrip("/") + "/") for o in outs)
            assert produced, f"{address}: dependency {path} is produced by no stage"


def test_the_synthetic_control_uses_hydramix_sources_and_masks(stages):
    """pixelmix must composite exactly HydraMix's samples: same seed and N, only the renderer differs."""
    hydra = shlex.split(stages["synthesize@10-0-hydramix"].cmd)
    pixel = shlex.split(stages["synthesize-pixelmix@10-0"].cmd)
    differing = {a for a in set(hydra) ^ set(pixel) if a.startswith("--")}
    assert differing == {"--mode"}  # (--name differs in value only)


def test_changing_synthesis_params_does_not_retrain_the_generator(stages):
    from dvc.dependency.param import ParamsDependency

    def sections(address: str) -> set[str]:
        deps = [d for d in stages[address].deps if isinstance(d, ParamsDependency)]
        return {key.split(".")[0] for d in deps for key in d.params}

    assert sections("train-generator@10-0-hydramix") == {"generator"}
    assert sections("synthesize@10-0-hydramix") == {"synthesize"}
    assert "synthesize" not in sections("subset@10-0") | sections("prepare")


def test_the_blur_control_mixes_hydramix_samples_too(stages):
    hydra = shlex.split(stages["synthesize@10-0-hydramix"].cmd)
    blur = shlex.split(stages["synthesize-pixelmix-blur@10-0"].cmd)
    differing = {a for a in set(hydra) ^ set(blur) if a.startswith("--")}
    assert differing == {"--mode", "--blur-reference"}


def test_a_combination_in_the_protocol_becomes_a_stage_that_says_what_it_runs(tmp_path):
    """protocol.combinations expands to train-classifier-combined@K-SEED-METHOD-AUGMENT stages, and the
    chimeramix generator to its own train-generator stage."""
    import shutil

    from dvc.repo import Repo

    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["protocol"]["generators"] = ["hydramix", "chimeramix"]
    params["protocol"]["mixes"] = ["chimeramix"]
    params["protocol"]["combinations"] = {"mixes": ["hydramix", "pixelmix"], "augmentations": ["autoaugment"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with Repo(str(tmp_path), uninitialized=True) as repo:
        stages = {stage.name: stage for stage in repo.index.stages}
    assert "train-generator@10-0-chimeramix" in stages and "train-classifier-mix@10-0-chimeramix" in stages
    assert "--kind chimeramix" in stages["train-generator@10-0-chimeramix"].cmd
    for method in ("hydramix", "pixelmix"):
        cmd = stages[f"train-classifier-combined@10-0-{method}-autoaugment"].cmd
        assert f"--method {method} --augment autoaugment" in cmd and f"{method}+autoaugment.pt" in cmd
        assert f"evaluate-combined@10-0-{method}-autoaugment" in stages
