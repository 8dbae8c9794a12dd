"""A tiny registered-free env for CLI tests that need no simulator package: 2 agents, 3 actions,
20-step episodes; the reward grows with the actions, and an episode is won when its return is high."""

from __future__ import annotations

import numpy as np

import mabl.train
from mabl.envs.base import EnvSpec, TimeStep
from mabl.envs.checks import CheckedEnv


class WinToyEnv:
    def __init__(self, seed: int = 0):
        self.spec = EnvSpec(name="test:toy", n_agents=2, obs_dim=4, state_dim=5, discrete=True, n_actions=3,
                            episode_limit=20)
        self.rng, self.t, self.ret = np.random.default_rng(seed), 0, 0.0

    def _step(self, reward: float = 0.0, done: bool = False) -> TimeStep:
        info = {"win": self.ret > 40.0} if done else {}
        return TimeStep(self.rng.normal(size=(2, 4)).astype(np.float32), self.rng.normal(size=5).astype(np.float32),
                        None, reward=reward, truncated=done, info=info)

    def reset(self, seed=None) -> TimeStep:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t, self.ret = 0, 0.0
        return self._step()

    def step(self, actions) -> TimeStep:
        self.t += 1
        reward = float(np.sum(actions))
        self.ret += reward
        return self._step(reward, self.t >= 20)

    def close(self) -> None:
        pass


def use_toy(monkeypatch, module=mabl.train) -> None:
    """Make ``module.make_env`` build the toy env whatever name it is asked for."""
    monkeypatch.setattr(module, "make_env", lambda name, seed=0, options=None: CheckedEnv(WinToyEnv(seed)))
