"""Lambda-returns over imagined trajectories (SPEC §3)."""

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
