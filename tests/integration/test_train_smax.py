"""MABL trains through the CLI on SMAX maps (debug preset): the SMAC-family path end to end."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("jaxmarl")

from mabl.cli import main  # noqa: E402


@pytest.mark.parametrize("env_name", ["smax:3m", "smax:3s_vs_4z"])
def test_debug_training_on_smax(env_name, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", "--env", env_name, "--preset", "debug", "--steps", "300", "--run-dir", str(run_dir),
                 "--progress", "false", "--eval-every", "300", "--eval-episodes", "2"])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    episodes = [r for r in records if r["kind"] == "episode"]
    assert episodes and all(isinstance(r["win"], bool) for r in episodes)
    assert all(1 <= r["length"] <= {"smax:3m": 60, "smax:3s_vs_4z": 200}[env_name] for r in episodes)
    assert any(r["kind"] == "learner" for r in records)
    evals = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert evals and 0.0 <= evals[-1]["win_rate"] <= 1.0
    assert main(["eval", "--run-dir", str(run_dir), "--episodes", "2"]) == 0
    assert "win rate" in capsys.readouterr().out
