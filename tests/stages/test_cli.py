"""The ``hydramix`` console script: fast --help (no stage imported), --version, completion, readable metavars."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stages.app import COMMANDS, version
from stages.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_top_level_help_imports_no_stage_and_no_heavy_library():
    """What keeps `hydramix --help` fast (benchmarks/bench_cli.py measures it): nothing heavy is imported."""
    loaded = (
        _python(
            "import sys\nfrom stages.cli import app\n"
            "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED', ' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'numpy', 'pyarrow', 'PIL', 'webdataset', 'open_clip', 'matplotlib', 'stages', 'yaml'))))"
        )
        .rsplit("LOADED", 1)[1]
        .split()
    )
    assert loaded == ["stages", "stages.app", "stages.cli"]


def test_help_lists_every_command_in_pipeline_order_with_its_summary():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    listed = re.findall(r"^  ([a-z-]+)  +(.+)$", result.output.split("Commands:")[1], re.MULTILINE)
    assert listed == list(COMMANDS.items())
    for option in ("--version", "--quiet", "--install-completion", "--show-completion"):
        assert option in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"hydramix {version()}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", version())


def test_shell_completion_of_command_names():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "_HYDRAMIX_COMPLETE": "complete_bash"}
    env.update(COMP_WORDS="hydramix tra", COMP_CWORD="1")
    out = subprocess.run(
        [sys.executable, "-c", "from stages.cli import app; app(prog_name='hydramix')"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert set(out.stdout.split()) == {"train-generator", "train-classifier"}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_help_shows_words_not_python_types(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    options = result.output.split("Options:")[1]
    python_types = r"<(path|str|int|float|bool|list\[\w+\]|\w+ range)>"  # what Typer shows without a metavar
    assert not re.search(python_types, options), options
    assert command in result.output


def test_a_typo_suggests_the_command():
    result = runner.invoke(app, ["repot"])
    assert result.exit_code == 2 and "Did you mean 'report'" in result.output
