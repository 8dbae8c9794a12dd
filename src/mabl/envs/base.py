"""The one environment contract the algorithms read.

Every adapter (SMAX, PettingZoo, ...) turns its package's API into this shape, so the algorithm
never branches on an environment's name: it reads an :class:`EnvSpec`.

Arrays (numpy, fixed shapes for the whole episode; dead agents stay in, masked):

- ``obs``    ``[N, O]`` float32, each agent's own observation
- ``state``  ``[G]``    float32, the global state (training only; never on the acting path)
- ``avail``  ``[N, A]`` bool, available actions, or ``None`` when ``spec.has_action_mask`` is False;
  every row has at least one True
- ``reward`` float, the team reward of the step
- ``agent_reward`` ``[N]`` float32, each agent's own reward of the step, where ``spec.per_agent_reward``
  (Flatland: each train's; ``reward`` is their sum), else ``None``
- ``agent_done`` ``[N]`` bool, where ``spec.per_agent_done``: the agent has finished its part of the
  episode (Flatland: the train arrived or is deadlocked); once True it stays True until the episode
  ends (every agent is done on a step that terminates the episode), and its actions have no effect
  from then on; else ``None``
- ``terminated`` bool (the episode ended in the env's own terms: win, loss, all done)
- ``truncated`` bool (the time limit ``spec.episode_limit`` was reached)
- ``info`` dict; ``info["win"]`` (bool) where the env defines a win, only on the final step;
  ``info["metrics"]`` (dict of name -> float) on the final step for the env's own episode measures
  (Flatland: ``arrived_fraction``), logged in each episode line of ``metrics.jsonl`` and averaged by
  ``mabl eval`` as ``mean_<name>``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class EnvSpec:
    """Sizes and capabilities of a multi-agent environment."""

    name: str
    n_agents: int
    obs_dim: int
    state_dim: int
    discrete: bool
    n_actions: int = 0
    """Number of actions per agent (discrete envs)."""
    action_dim: int = 0
    """Action vector size per agent (continuous envs)."""
    action_low: float = -1.0
    action_high: float = 1.0
    has_action_mask: bool = False
    episode_limit: int = 0
    has_win: bool = False
    """Whether ``info["win"]`` is reported at episode end."""
    per_agent_reward: bool = False
    """Whether each step reports ``TimeStep.agent_reward`` (each agent's own reward ``[N]``)."""
    per_agent_done: bool = False
    """Whether each step reports ``TimeStep.agent_done`` (which agents have finished ``[N]``)."""

    @property
    def action_size(self) -> int:
        """Width of one agent's action as the networks see it (one-hot size or vector size)."""
        return self.n_actions if self.discrete else self.action_dim


@dataclass
class TimeStep:
    """What ``reset`` and ``step`` return."""

    obs: np.ndarray
    state: np.ndarray
    avail: np.ndarray | None
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] | None = None
    agent_reward: np.ndarray | None = None
    agent_done: np.ndarray | None = None

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


class MultiAgentEnv(Protocol):
    """The contract. ``actions`` is ``[N]`` int64 (discrete) or ``[N, action_dim]`` float32."""

    spec: EnvSpec

    def reset(self, seed: int | None = None) -> TimeStep: ...

    def step(self, actions: np.ndarray) -> TimeStep: ...

    def close(self) -> None: ...
