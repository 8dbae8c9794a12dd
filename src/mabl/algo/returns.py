"""Return targets: lambda-returns over imagined trajectories (SPEC §3) and GAE over real episodes
(the model-free PPO learners, Yu et al. 2022)."""

from __future__ import annotations

import torch


def lambda_returns(
    reward: torch.Tensor, continuation: torch.Tensor, value: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """TD(lambda) targets, time-major.

    ``reward[k]`` and ``continuation[k]`` belong to the transition out of state k; ``value[k]`` is
    V(state k). With ``H = value.shape[0]``:

        R_{H-1} = V_{H-1}
        R_k     = r_k + gamma * c_k * ((1 - lam) * V_{k+1} + lam * R_{k+1}),   k = H-2 .. 0

    ``reward`` and ``continuation`` need at least ``H-1`` steps (extra steps are ignored); they
    broadcast against ``value`` (e.g. a team reward ``[H, B, 1]`` and per-agent values
    ``[H, B, N]``). Returns ``[H-1, ...]`` (the bootstrap row H-1 is not a target).
    """
    horizon = value.shape[0]
    returns = []
    next_return = value[-1]
    for k in range(horizon - 2, -1, -1):
        next_return = reward[k] + gamma * continuation[k] * ((1 - lam) * value[k + 1] + lam * next_return)
        returns.append(next_return)
    return torch.stack(returns[::-1])


def gae(reward: torch.Tensor, value: torch.Tensor, terminated: torch.Tensor, mask: torch.Tensor,
        gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(gamma, lambda) advantages and returns in the per-episode padded layout of :mod:`mabl.algo.mappo`.

    ``reward, terminated, mask [T, B]``; ``value [T+1, B, *rest]`` (``rest`` e.g. the agent axis),
    ``value[t] = V(s_t)`` and ``value[L_b, b]`` the final next state's value. A step flagged
    terminated neither bootstraps nor carries later advantages back; the last real step of a
    column that is not terminated (truncation) bootstraps from ``value[L_b]``. Returns
    ``(advantage, returns)`` ``[T, B, *rest]``, zero on padding; padding values, even NaN, are never read.
    """
    extra = (1,) * (value.dim() - reward.dim())
    reward, live, mask = (x.reshape(*x.shape, *extra) for x in (reward, ~terminated.bool(), mask.bool()))
    advantage = torch.zeros_like(value[:-1])
    running = torch.zeros_like(value[0])  # advantage of step t+1, zero past a column's end
    for t in range(reward.shape[0] - 1, -1, -1):
        delta = reward[t] + gamma * torch.where(live[t], value[t + 1], 0.0) - value[t]
        running = torch.where(mask[t], delta + gamma * lam * torch.where(live[t], running, 0.0), 0.0)
        advantage[t] = running
    return advantage, torch.where(mask, advantage + value[:-1], 0.0)
