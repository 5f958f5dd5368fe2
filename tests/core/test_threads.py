"""The threads setting: auto never oversubscribes (OMP_NUM_THREADS, torchrun, physical cores), N is N."""

from __future__ import annotations

import os

import pytest

from pipeline.core.config import from_dict
from pipeline.core.errors import ConfigError
from pipeline.core.threads import check_threads, physical_cores, resolve_threads


def test_a_number_is_used_as_given():
    assert resolve_threads(3, environ={"OMP_NUM_THREADS": "1", "WORLD_SIZE": "4"}) == 3


def test_auto_follows_omp_num_threads_then_torchrun_then_the_physical_cores():
    assert resolve_threads("auto", environ={"OMP_NUM_THREADS": "2", "WORLD_SIZE": "4"}) == 2
    assert resolve_threads("auto", environ={"WORLD_SIZE": "4", "RANK": "1"}) == 1  # one per torchrun process
    assert resolve_threads("auto", environ={"WORLD_SIZE": "1"}) == physical_cores()
    assert resolve_threads("auto", environ={}) == physical_cores()


def test_physical_cores_are_no_more_than_the_cpus_this_process_may_use():
    cores = physical_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize("bad", [0, -2, "4", "all", 1.5, True])
def test_bad_values_are_rejected(bad):
    with pytest.raises(ValueError, match="auto or an integer >= 1"):
        check_threads(bad)


@pytest.mark.parametrize(
    "section, cls",
    [
        ("synthesize", "pipeline.synthesis.engine:SynthConfig"),
        ("score", "pipeline.metric.score_dataset:ScoreConfig"),
        ("classifier", "pipeline.classify.train:ClassifierConfig"),
        ("prepare", "pipeline.data.prepare:PrepareConfig"),
    ],
)
def test_every_compute_section_has_a_checked_threads_key(section, cls):
    import importlib
    from pathlib import Path

    import yaml

    module, name = cls.split(":")
    config_cls = getattr(importlib.import_module(module), name)
    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    assert params[section]["threads"] == "auto"
    assert from_dict(config_cls, {**params[section], "threads": 2}).threads == 2
    with pytest.raises(ConfigError, match="threads"):
        from_dict(config_cls, {**params[section], "threads": 0})


def test_the_generator_section_too_and_threads_do_not_block_a_resume():
    from pathlib import Path

    import yaml

    from pipeline.generator.config import GeneratorConfig
    from pipeline.generator.files import _RESUME_FREE_KEYS

    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    assert from_dict(GeneratorConfig, params["generator"]).threads == "auto"
    assert "threads" in _RESUME_FREE_KEYS


def test_every_compute_command_has_a_threads_flag():
    import typer.main

    from stages.app import load_all
    from stages.cli import app

    load_all()
    group = typer.main.get_command(app)
    for name in ("prepare", "train-generator", "synthesize", "score", "train-classifier", "evaluate"):
        options = {opt for p in group.get_command(None, name).params for opt in p.opts}
        assert "--threads" in options, name
