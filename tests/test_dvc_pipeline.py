"""dvc.yaml and params.yaml agree with the code: every command exists, every section loads, every path flows,
every stage depends on the code it runs."""

from __future__ import annotations

import ast
import json
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.classify.augment import CLASSIC_AUGMENTATIONS, SYNTHETIC_METHODS
from pipeline.classify.train import ClassifierConfig
from pipeline.core.config import from_dict
from pipeline.data.prepare import PrepareConfig, SubsetConfig
from pipeline.generator.config import GeneratorConfig
from pipeline.metric.score_dataset import ScoreConfig
from pipeline.synthesis.engine import SynthConfig
from stages.app import COMMANDS, stage_module
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
    from stages.app import load_all

    load_all()
    commands = {c.name for c in app.registered_commands}
    assert commands == set(COMMANDS)
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
        command = group.get_command(None, argv[1])
        known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        used = {a.split("=")[0] for a in argv[2:] if a.startswith("--")}
        assert used <= known, f"{address}: unknown option(s) {used - known}"


def test_every_dependency_is_produced_upstream(stages, params):
    """Data dependencies come from another stage's outputs; the rest is code (in git) and prepare's input."""
    from dvc.dependency.param import ParamsDependency

    outs = {str(o.def_path) for stage in stages.values() for o in stage.outs}
    for address, stage in stages.items():
        for dep in (d for d in stage.deps if not isinstance(d, ParamsDependency)):
            path = str(dep.def_path)
            if path.startswith(("pipeline/", "stages/")) or (address == "prepare" and path == _folder_path(params)):
                continue
            produced = any(o == path or o.startswith(path.rstrip("/") + "/") for o in outs)
            assert produced, f"{address}: dependency {path} is produced by no stage"


def _folder_path(params: dict) -> str:
    return params["prepare"]["folder_path"]


def imported_code(module: str) -> list[str]:
    """The repository files ``module`` runs: it and every first-party module it imports, transitively, at module
    level or inside a function, with the packages above each (Python runs a package's ``__init__`` before any of
    its submodules; those that hold only a docstring are left out: they run no code)."""

    def file_of(name: str) -> Path | None:
        base = ROOT.joinpath(*name.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(file_of(name).read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            names += [n.rsplit(".", k)[0] for n in names for k in range(1, n.count(".") + 1)]  # the packages above
            todo += [n for n in names if n.split(".")[0] in ("pipeline", "stages") and file_of(n)]
    files = {file_of(n) for n in seen}
    return sorted(f.relative_to(ROOT).as_posix() for f in files if not _docstring_only(f))


def _docstring_only(path: Path) -> bool:
    """A package marker: an ``__init__.py`` whose body is its docstring (pipeline's also sets ``__version__``)."""
    if path.name != "__init__.py":
        return False
    body = [n for n in ast.parse(path.read_text()).body if not isinstance(n, ast.Expr)]
    return all(isinstance(n, ast.Assign) and [t.id for t in n.targets] == ["__version__"] for n in body)


def test_every_stage_depends_on_exactly_the_code_it_runs(stages):
    from dvc.dependency.param import ParamsDependency

    for address, stage in stages.items():
        command = shlex.split(stage.cmd)[1]
        code = sorted(
            str(d.def_path)
            for d in stage.deps
            if not isinstance(d, ParamsDependency) and str(d.def_path).startswith(("pipeline/", "stages/"))
        )
        expected = imported_code(stage_module(command))
        assert code == expected, f"{address}: code deps should be\n" + "\n".join(f"      - {f}" for f in expected)


def test_results_are_metrics_and_timings_are_plain_outputs(stages):
    """A forced re-run changes timings only, and those are no metric (dvc metrics diff stays empty)."""
    timings = 0
    for address, stage in stages.items():
        for out in stage.outs:
            path = str(out.def_path)
            if path.startswith("timings/"):
                timings += 1
                assert not out.metric and not out.plot and not out.use_cache, f"{address}: {path}"
            if out.metric:
                assert path.startswith("metrics/") and not out.use_cache, f"{address}: {path}"
    assert timings == sum(a.startswith(("train-generator", "synthesize")) for a in stages)


def test_the_loss_curve_plot_draws_every_loss(stages):
    """The generator's loss-curve plot uses the template that folds every loss column (which columns the trainer
    writes: tests/generator/test_train_generator.py), and the report's accuracy-by-run CSV is a bar plot."""
    template = json.loads((ROOT / ".dvc" / "plots" / "loss_curves.json").read_text())
    assert template["data"]["values"] == "<DVC_METRIC_DATA>" and template["transform"][0]["fold"]
    plots = [o for o in stages["train-generator@10-0-hydramix"].outs if str(o.def_path).endswith(".csv")]
    assert [o.plot for o in plots] == [{"x": "step", "template": "loss_curves"}]
    report = {str(o.def_path): o.plot for o in stages["report"].outs}
    assert report["reports/results.csv"]["y"] == "label"


def _pipeline_copy(tmp_path: Path) -> Path:
    """dvc.yaml, params.yaml, the code and prepare's input folder in a fresh DVC repository (no git)."""
    from dvc.repo import Repo

    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("pipeline", "stages"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "data" / "downloads").mkdir(parents=True)
    (repo / "data" / "downloads" / "README.md").write_text("archives\n")
    Repo.init(str(repo), no_scm=True).close()
    return repo


def test_dvc_status_reacts_to_a_code_edit_and_to_the_input_folder(tmp_path, monkeypatch):
    from dvc.repo import Repo

    repo = _pipeline_copy(tmp_path)
    monkeypatch.chdir(repo)  # DVC resolves a stage's paths from the working directory
    (repo / "data" / "prepared").mkdir()
    (repo / "data" / "prepared" / "manifest.json").write_text("{}\n")  # stands in for prepare's output
    with Repo(str(repo)) as dvc:
        dvc.commit("prepare", force=True)  # as if prepare had run: dvc.lock records its deps
        assert dvc.status(targets=["prepare"]) == {}

    folder = repo / "pipeline" / "data" / "sources" / "folder.py"
    folder.write_text(folder.read_text() + "\n# an edit\n")
    with Repo(str(repo)) as dvc:
        status = dvc.status(targets=["prepare"])
    assert status == {"prepare": [{"changed deps": {"pipeline/data/sources/folder.py": "modified"}}]}

    folder.write_text(folder.read_text().removesuffix("\n# an edit\n"))
    (repo / "data" / "downloads" / "cifar-10-python.tar.gz").write_bytes(b"an archive")
    with Repo(str(repo)) as dvc:
        status = dvc.status(targets=["prepare"])
    assert status == {"prepare": [{"changed deps": {"data/downloads": "modified"}}]}


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
