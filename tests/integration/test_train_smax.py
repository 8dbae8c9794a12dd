"""MABL trains through the CLI on SMAX maps (debug preset): the SMAC-family path end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("jaxmarl")

from mabl.cli import main  # noqa: E402
from mabl.envs.registry import make_env  # noqa: E402
from mabl.policy import load_policy  # noqa: E402
from mabl.train import episode_seed  # noqa: E402


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
    assert len(evals) == 1 and evals[0]["episodes"] == 2
    # The evaluation round, replayed here: the exported policy (the weights of the final checkpoint,
    # written right after the round) plays greedily from the round's episode seeds on a fresh env;
    # wins are counted from the env's own final-step flag.
    assert main(["export", "--run-dir", str(run_dir), "--out", str(tmp_path / "p.pt")]) == 0
    policy = load_policy(str(tmp_path / "p.pt"))
    env = make_env(env_name, seed=1)
    returns, lengths, wins = [], [], []
    for i in range(2):
        step, total, length = env.reset(seed=episode_seed(0, 2, 0, i)), 0.0, 0
        policy.reset()
        while not step.done:
            step = env.step(policy.act(step.obs, step.avail, deterministic=True)[0])
            total, length = total + step.reward, length + 1
        returns.append(total)
        lengths.append(length)
        wins.append(bool(step.info["win"]))
    assert evals[0]["win_rate"] == pytest.approx(np.mean(wins))
    assert evals[0]["mean_return"] == pytest.approx(np.mean(returns), rel=1e-5)
    assert evals[0]["mean_length"] == pytest.approx(np.mean(lengths))
