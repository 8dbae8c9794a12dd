"""The value normaliser of the model-free PPO learners (Yu et al. 2022's ValueNorm)."""

from __future__ import annotations

from typing import Any

import torch

VALUE_NORM_BETA = 0.99999
"""Decay of the value normaliser's running moments (Yu et al.'s ValueNorm)."""


class ValueNormalizer:
    """Running mean and variance of the value targets, one scalar statistic (Yu et al.'s ValueNorm).

    The moments are exponential averages with decay ``beta`` (0.99999, theirs); the total weight
    given so far, ``1 - beta^k``, is tracked as ``debias`` and divided out (as Adam's bias
    correction), so the statistics are unbiased from the first update. The variance is floored at
    1e-2 (theirs) so that near-constant targets are not blown up. Stored in float64.
    """

    def __init__(self, beta: float = VALUE_NORM_BETA, device: torch.device | str = "cpu"):
        self.beta = beta
        self.mean, self.mean_sq, self.debias = (torch.zeros((), dtype=torch.float64, device=device) for _ in range(3))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold in one batch of targets (any shape; every element counts once)."""
        x = x.detach().double()
        moments = torch.stack([self.mean, self.mean_sq, self.debias])
        new = moments * self.beta + (1.0 - self.beta) * torch.stack([x.mean(), x.square().mean(), x.new_ones(())])
        # a batch with a non-finite target is not folded in (divergence guard; decided on the device)
        new = torch.where(torch.isfinite(new).all(), new, moments)
        for stat, value in zip((self.mean, self.mean_sq, self.debias), new.unbind()):
            stat.copy_(value)

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Debiased (mean, std)."""
        debias = self.debias.clamp(min=1e-5)
        mean = self.mean / debias
        return mean, (self.mean_sq / debias - mean.square()).clamp(min=1e-2).sqrt()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.stats()
        return ((x - mean) / std).to(x.dtype)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.stats()
        return (x * std + mean).to(x.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"beta": self.beta, "mean": self.mean.cpu(), "mean_sq": self.mean_sq.cpu(), "debias": self.debias.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.beta = float(state["beta"])
        for key in ("mean", "mean_sq", "debias"):
            getattr(self, key).copy_(state[key])
