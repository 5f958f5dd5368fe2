"""dvc.yaml and params.yaml agree with the code: every command exists, every section loads, every path flows."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from pipeline.augment import METHODS, SYNTHETIC_METHODS
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
    assert set(protocol["augmentations"]) <= set(METHODS) - SYNTHETIC_METHODS
    assert set(protocol["mixes"]) <= SYNTHETIC_METHODS
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
    hydra = shlex.split(stages["synthesize-hydramix@10-0"].cmd)
    pixel = shlex.split(stages["synthesize-pixelmix@10-0"].cmd)
    differing = {a for a in set(hydra) ^ set(pixel) if a.startswith("--")}
    assert differing == {"--mode", "--name"}


def test_changing_synthesis_params_does_not_retrain_the_generator(stages):
    from dvc.dependency.param import ParamsDependency

    def sections(address: str) -> set[str]:
        deps = [d for d in stages[address].deps if isinstance(d, ParamsDependency)]
        return {key.split(".")[0] for d in deps for key in d.params}

    assert sections("train-generator@10-0") == {"generator"}
    assert sections("synthesize-hydramix@10-0") == {"synthesize"}
    assert "synthesize" not in sections("subset@10-0") | sections("prepare")
