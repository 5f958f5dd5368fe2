"""Progress output: a tqdm bar on a terminal, plain lines in a log, nothing when switched off."""

from __future__ import annotations

import io

import pytest

from pipeline.core import progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def loud(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    progress.set_quiet(False)
    yield
    progress.set_quiet(False)


def test_a_log_gets_a_line_every_5_percent_and_an_eta(capsys):
    bar = progress.tqdm(total=40, desc="work", unit="step")
    assert isinstance(bar, progress.LineProgress)
    for i in range(40):
        if i == 10:
            bar.set_postfix({"loss": "0.500"}, refresh=False)
        bar.update(1)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 20  # at 2, 4, ..., 40; closing at the total adds none
    assert lines[0].startswith("work: 2/40 step (5%), ") and "elapsed" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("work: 40/40 step (100%)") and "ETA" not in lines[-1]
    assert lines[-1].endswith("; loss=0.500")


def test_iteration_resumed_bars_and_unknown_totals(capsys):
    assert list(progress.tqdm(range(3), desc="it", every=1)) == [0, 1, 2]
    assert capsys.readouterr().err.splitlines()[-1].startswith("it: 3/3 it (100%)")
    with progress.tqdm(total=100, initial=90, desc="resumed", every=5) as bar:
        bar.update(10)
    assert capsys.readouterr().err.startswith("resumed: 100/100 it (100%)")


def test_unknown_total_prints_its_count_when_it_closes(capsys):
    with progress.tqdm(desc="decoding", unit="img") as bar:  # no total: a line every 10 s, and one at the end
        bar.update(7)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("decoding: 7 img, ")


def test_a_terminal_gets_tqdm(monkeypatch):
    from tqdm import tqdm as real_tqdm

    monkeypatch.setattr("sys.stderr", FakeTerminal())
    bar = progress.tqdm(total=3, desc="x")
    assert isinstance(bar, real_tqdm)
    bar.close()


@pytest.mark.parametrize("switch", ["quiet", "env"])
def test_quiet_and_tqdm_disable_silence_bars_lines_and_notes(capsys, monkeypatch, switch):
    if switch == "quiet":
        progress.set_quiet(True)
    else:
        monkeypatch.setenv("TQDM_DISABLE", "1")
    for _ in progress.tqdm(range(5), desc="x", every=1):
        pass
    progress.note("resuming from step 3")
    assert capsys.readouterr().err == ""
    monkeypatch.setattr("sys.stderr", FakeTerminal())
    assert progress.tqdm(total=2, desc="x").disable


def test_tqdm_disable_zero_means_on(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert progress.enabled()


def test_the_cli_quiet_flag_does_not_leak_into_the_next_invocation(tmp_path):
    from typer.testing import CliRunner

    from stages.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["--quiet", "verify", str(tmp_path / "none")]).exit_code == 1
    assert not progress.enabled()
    assert runner.invoke(app, ["verify", str(tmp_path / "none")]).exit_code == 1
    assert progress.enabled()
