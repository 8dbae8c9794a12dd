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


def one_hot(index: torch.Tensor, n_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``F.one_hot(index, n_classes)`` as ``dtype`` ``[..., n_classes]``, by a scatter: it never reads
    values back to the host (``F.one_hot`` checks its range with a host read on the CPU), and an
    index outside ``[0, n_classes)`` is still an error on the CPU."""
    out = torch.zeros(*index.shape, n_classes, dtype=dtype, device=index.device)
    return out.scatter_(-1, index.unsqueeze(-1), 1.0)


def to_env_action(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Raw Gaussian samples (normalised units) -> executed actions in ``[low, high]``."""
    return low + (u.clamp(-1.0, 1.0) + 1.0) * (0.5 * (high - low))


def normalize_action(action: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Executed actions in ``[low, high]`` -> normalised units in ``[-1, 1]``."""
    return (action.float() - low) * (2.0 / (high - low)) - 1.0


def action_std(log_std: torch.Tensor) -> torch.Tensor:
    """The Gaussian actor's standard deviation ``[D]`` from its (clamped) log std parameter."""
    return log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()


def gaussian(mean: torch.Tensor, log_std: torch.Tensor) -> torch.distributions.Distribution:
    """The diagonal Gaussian over the last axis: ``log_prob`` and ``entropy`` sum over the D dims."""
    normal = torch.distributions.Normal(mean, action_std(log_std).expand_as(mean), validate_args=False)
    return torch.distributions.Independent(normal, 1, validate_args=False)


def action_distribution(out: torch.Tensor, log_std: torch.Tensor | None) -> torch.distributions.Distribution:
    """An actor's distribution: the Gaussian when it has a ``log_std`` (continuous), else categorical
    over the (masked) logits ``out``.

    Argument validation is off: it checks values with host reads (a GPU synchronisation at every
    construction and ``log_prob``), and the learner builds these from its own tensors."""
    if log_std is None:
        return torch.distributions.Categorical(logits=out, validate_args=False)
    return gaussian(out, log_std)


def act_gaussian(mean: torch.Tensor, log_std: torch.Tensor, deterministic: bool, low: float, high: float,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One acting step of the Gaussian actor: ``u`` (the mean when ``deterministic``, else a sample
    drawn with ``generator``), the executed action in ``[low, high]`` and the std ``[D]``."""
    std = action_std(log_std)
    u = mean if deterministic else mean + std * torch.randn(mean.shape, generator=generator, device=mean.device)
    return u, to_env_action(u, low, high), std
