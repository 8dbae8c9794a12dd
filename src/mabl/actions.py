"""How actions travel between the actor, the env and the world model (one convention for all algos).

Discrete actions are class indices ``[..., N]``; the networks see them one-hot.

Continuous actions (``spec.discrete`` False) use a **clipped diagonal Gaussian** in normalised
units, not a tanh-squashed one:

- the actor outputs a mean ``mu [..., N, D]`` and has one learned, state-independent ``log_std``
  per action dimension (clamped to ``[LOG_STD_MIN, LOG_STD_MAX]``); it samples ``u ~ N(mu, std)``;
- PPO's log-probability and entropy are those of that Gaussian at the raw sample ``u`` (summed
  over the D dimensions; exact, no squashing correction needed);
- the env receives ``u`` clipped to ``[-1, 1]`` and mapped linearly onto the spec's bounds
  ``[action_low, action_high]`` (:func:`to_env_action`); that executed action is what the replay
  stores;
- the world model sees actions in normalised units (:func:`normalize_action` of the executed action,
  equal to ``clip(u, -1, 1)``), both as input (own action for the agent level, the joint action for
  the global level) and as the target of its action decoder (a regression);
- agents with fewer action dimensions than ``D`` (MAMuJoCo's "9|8") use the first entries of their
  row; the env adapter ignores the rest, so weights stay shared across agents.
"""

from __future__ import annotations

import torch

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
"""Range the Gaussian actor's log standard deviation is clamped to (normalised units)."""


def to_env_action(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Raw Gaussian samples (normalised units) -> executed actions in ``[low, high]``."""
    return low + (u.clamp(-1.0, 1.0) + 1.0) * (0.5 * (high - low))


def normalize_action(action: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Executed actions in ``[low, high]`` -> normalised units in ``[-1, 1]``."""
    return (action.float() - low) * (2.0 / (high - low)) - 1.0


def gaussian(mean: torch.Tensor, log_std: torch.Tensor) -> torch.distributions.Distribution:
    """The diagonal Gaussian over the last axis: ``log_prob`` and ``entropy`` sum over the D dims."""
    std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp().expand_as(mean)
    return torch.distributions.Independent(torch.distributions.Normal(mean, std), 1)
