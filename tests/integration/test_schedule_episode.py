"""``--schedule.mode episode`` (the paper's Algorithm 1 and the ``paper`` preset's mode): one learner
call after every collected episode once ``learning_starts`` real transitions are stored, checked on
a debug run against the episode lines it wrote (an episode-mode run, resumed, also continues exactly)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mabl.train
from mabl.cli import main
from mabl.envs.base import EnvSpec, TimeStep
from mabl.envs.checks import CheckedEnv
from mabl.presets import build_config

LEARNING_STARTS, UPDATES, ITERATIONS = 100, 2, 1


class VaryingEnv:
    """Episodes of 7 to 23 steps (drawn from the episode seed), so episode ends and a fixed step
    period cannot coincide by accident."""

    def __init__(self, seed: int = 0):
        self.spec = EnvSpec(name="test:varying", n_agents=2, obs_dim=4, state_dim=3, discrete=True, n_actions=3,
                            episode_limit=25)
        self.rng, self.t, self.length = np.random.default_rng(seed), 0, 10

    def _step(self, reward: float = 0.0, done: bool = False) -> TimeStep:
        return TimeStep(self.rng.normal(size=(2, 4)).astype(np.float32), self.rng.normal(size=3).astype(np.float32),
                        None, reward=reward, terminated=done)

    def reset(self, seed=None) -> TimeStep:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t, self.length = 0, int(self.rng.integers(7, 24))
        return self._step()

    def step(self, actions) -> TimeStep:
        self.t += 1
        return self._step(float(np.sum(actions)), self.t >= self.length)

    def close(self) -> None:
        pass


def _args(run_dir, steps: int) -> list[str]:
    return ["train", "--env", "test:varying", "--preset", "debug", "--steps", str(steps), "--seed", "3",
            "--schedule.mode", "episode", "--checkpoint-every", "150", "--run-dir", str(run_dir),
            "--progress", "false", "--threads", "1"]


@pytest.fixture
def varying(monkeypatch):
    monkeypatch.setattr(mabl.train, "make_env", lambda name, seed=0, options=None: CheckedEnv(VaryingEnv(seed)))


def _lines(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_episode_mode_makes_one_learner_call_after_every_episode_once_learning_starts(varying, tmp_path):
    cfg = build_config("debug", {})
    assert (cfg.schedule.learning_starts, cfg.schedule.model_updates, cfg.schedule.policy_iterations) == (
        LEARNING_STARTS, UPDATES, ITERATIONS)  # the numbers the expectation below is built from
    assert build_config("paper", {}).schedule.mode == "episode"
    run_dir = tmp_path / "run"
    assert main(_args(run_dir, 400)) == 0
    lines = _lines(run_dir)
    episodes = [r for r in lines if r["kind"] == "episode"]
    learner = [r for r in lines if r["kind"] == "learner"]
    lengths = [r["length"] for r in episodes]
    assert len(set(lengths)) > 3 and np.cumsum(lengths)[-1] == episodes[-1]["env_step"] >= 400
    # expected by hand: the replay holds every real transition, so learning starts after the first episode
    # whose end brings the stored transitions to LEARNING_STARTS; from there, one call per episode
    ends = np.cumsum(lengths)
    expected_steps = [int(e) for e in ends if e >= LEARNING_STARTS]
    assert [r["env_step"] for r in learner] == expected_steps
    assert [r["learner_call"] for r in learner] == list(range(1, len(expected_steps) + 1))
    assert [r["model_updates"] for r in learner] == [UPDATES * k for k in range(1, len(expected_steps) + 1)]
    assert [r["policy_iterations"] for r in learner] == [ITERATIONS * k for k in range(1, len(expected_steps) + 1)]
    # each learner line follows its episode's line directly
    order = [(r["kind"], r["env_step"]) for r in lines if r["kind"] in ("episode", "learner")]
    for r in learner:
        assert order[order.index(("learner", r["env_step"])) - 1] == ("episode", r["env_step"])
    assert all(np.isfinite(r["model/loss"]) and np.isfinite(r["policy/critic_loss"]) for r in learner)


def test_episode_mode_resumes_to_the_uninterrupted_result(varying, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(_args(whole, 300)) == 0
    assert main(_args(parts, 150)) == 0
    assert main(_args(parts, 300)) == 0
    drop = ("sps", "learner_s", "wall_s", "cpu_s")
    strip = [[{k: v for k, v in r.items() if k not in drop and not k.startswith("time/")} for r in _lines(d)]
             for d in (whole, parts)]
    assert strip[0] == strip[1]
