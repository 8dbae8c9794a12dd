"""A misbehaving environment stops training with one clear line and leaves the run directory intact."""

from __future__ import annotations

import numpy as np
import pytest

import mabl.train
from mabl.cli import main
from mabl.envs.base import EnvSpec, TimeStep
from mabl.envs.checks import CheckedEnv


class FlakyEnv:
    """A tiny valid env that turns bad (NaN observation or a wrong shape) at a given env step."""

    def __init__(self, fault: str, at_step: int):
        self.spec = EnvSpec(name="test:flaky", n_agents=2, obs_dim=3, state_dim=4, discrete=True, n_actions=2,
                            episode_limit=10)
        self.fault, self.at_step, self.total, self.t = fault, at_step, 0, 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros((2, 3), np.float32)
        if self.total >= self.at_step:
            if self.fault == "nan":
                obs[1, 2] = np.nan
            else:
                obs = np.zeros((2, 4), np.float32)
        return obs

    def reset(self, seed=None) -> TimeStep:
        self.t = 0
        return TimeStep(self._obs(), np.zeros(4, np.float32), None)

    def step(self, actions) -> TimeStep:
        self.t += 1
        self.total += 1
        done = self.t >= 10
        return TimeStep(self._obs(), np.zeros(4, np.float32), None, reward=1.0, truncated=done)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("fault, needle", [("nan", "non-finite"), ("shape", "shape")])
def test_bad_env_output_is_one_line_and_keeps_the_run(fault, needle, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"

    def train_args(steps: int) -> list[str]:
        return ["train", "--env", "test:flaky", "--preset", "debug", "--steps", str(steps), "--checkpoint-every",
                "100", "--eval-every", "0", "--run-dir", str(run_dir), "--progress", "false"]

    # First a healthy run to 200 steps, so there is a checkpoint and logs to protect.
    monkeypatch.setattr(mabl.train, "make_env", lambda name, seed=0, options=None: CheckedEnv(FlakyEnv(fault, 10**9)))
    assert main(train_args(200)) == 0
    capsys.readouterr()
    snapshot = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and "tb" not in p.parts}
    # Resume with an env that breaks after 50 more steps.
    monkeypatch.setattr(mabl.train, "make_env", lambda name, seed=0, options=None: CheckedEnv(FlakyEnv(fault, 50)))
    assert main(train_args(400)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "test:flaky" in err and needle in err, err
    for path, content in snapshot.items():
        if path.name in ("metrics.jsonl", "eval.jsonl"):
            assert path.read_bytes().startswith(content), f"{path} lost lines"
        elif path.suffix == ".pt":
            assert path.exists() and path.read_bytes() == content, f"{path} was modified"
