"""``benchmarks/run_protocol.py``: the job list and the queue that runs it (restoring committed generators)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmark_scripts import load_benchmark


def load_script():
    return load_benchmark("run_protocol")


def test_every_generator_job_names_where_its_committed_weights_would_be(tmp_path):
    generators = [j for j in load_script().jobs(tmp_path, synthetic_only=True) if j["name"].startswith("generator-")]
    assert len(generators) == 10
    assert {j["restore"] for j in generators} == {
        f"weights/{k}-s{s}" for k in ("hydramix", "chimeramix") for s in range(5)
    }


def _fake_script(tmp_path: Path, jobs: list[dict]) -> Path:
    """A stand-in for run_protocol.py that only lists ``jobs`` (the queue calls ``script --root R --list``)."""
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    script = tmp_path / "fake_protocol.py"
    script.write_text(f"print(open({str(tmp_path / 'jobs.json')!r}).read())\n")
    return script


def _generator_then_evaluation(root: Path, train_cmd: str) -> tuple[list[dict], Path]:
    """A seed-3 generator job (``train_cmd``) and an evaluation that needs it; returns (jobs, generator.pt)."""
    g = root / "generators" / "hydramix" / "k10-seed3"
    metrics = root / "metrics" / "hydramix-s3.json"
    jobs = [
        {
            "name": "generator-hydramix-s3",
            "cmd": train_cmd.format(out=g / "generator.pt"),
            "deps": [],
            "outs": [str(g / "generator.pt")],
            "keep": {str(g / "metrics.json"): "generators/hydramix-s3.json"},
            "restore": "weights/hydramix-s3",
        },
        {
            "name": "classify-hydramix-s3",
            "cmd": f"mkdir -p {metrics.parent} && echo '{{}}' > {metrics}",
            "deps": [str(g / "generator.pt")],
            "outs": [str(metrics)],
            "metrics": True,
        },
    ]
    return jobs, g / "generator.pt"


def test_queue_restores_a_committed_generator_instead_of_training_and_runs_what_needs_it(tmp_path, monkeypatch):
    module = load_script()
    root, results = tmp_path / "runs", tmp_path / "results"
    weights = tmp_path / "results-inputs" / "weights" / "hydramix-s3"
    weights.mkdir(parents=True)
    (weights / "generator.pt").write_bytes(b"weights")
    (weights / "metrics.json").write_text('{"d": 0.18}')
    (weights / "README.md").write_text("not copied")
    jobs, generator = _generator_then_evaluation(root, "exit 3")  # training fails: only a restore gets past it
    monkeypatch.setattr(module.time, "sleep", lambda s: None)
    module.run_queue(str(_fake_script(tmp_path, jobs)), root, results, n_jobs=2)

    assert generator.read_bytes() == b"weights"
    assert not (generator.parent / "README.md").exists()
    assert json.loads((tmp_path / "results-inputs" / "generators" / "hydramix-s3.json").read_text()) == {"d": 0.18}
    assert (results / "hydramix-s3.json").is_file()


def test_queue_trains_when_no_weights_were_committed(tmp_path, monkeypatch, capsys):
    module = load_script()
    root, results = tmp_path / "runs", tmp_path / "results"
    train = "mkdir -p $(dirname {out}) && printf trained > {out}"
    jobs, generator = _generator_then_evaluation(root, train)
    monkeypatch.setattr(module.time, "sleep", lambda s: None)
    module.run_queue(str(_fake_script(tmp_path, jobs)), root, results, n_jobs=1)

    assert generator.read_bytes() == b"trained"
    assert (results / "hydramix-s3.json").is_file()
    assert "restored" not in capsys.readouterr().out
