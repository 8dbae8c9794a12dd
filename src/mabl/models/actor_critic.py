"""Decentralized actor and centralized attention critic (SPEC §1)."""

from __future__ import annotations

import torch
from torch import nn

from mabl.models.nets import SplitLinear, SplitMLP, mlp, sinusoidal_encoding, xavier_init

MASKED_LOGIT = -1e10
"""Logit given to unavailable actions (a large negative number, as the released code)."""


def masked_logits(logits: torch.Tensor, avail: torch.Tensor | None) -> torch.Tensor:
    """Replace the logits of unavailable actions (``avail`` False/0) by :data:`MASKED_LOGIT`."""
    if avail is None:
        return logits
    return logits.masked_fill(~avail.bool(), MASKED_LOGIT)


class Actor(nn.Module):
    """pi(a^i | z^a_i, h^a_i): agent features only, shared weights, no agent id (code).

    Latents ``z`` may be one-hot ``[..., N, C*K]`` or class indices ``[..., N, C]``.
    """

    def __init__(self, latent_dim: int, n_classes: int, deter: int, hidden: int, n_actions: int):
        super().__init__()
        self.net = SplitMLP([latent_dim, deter], hidden, n_actions, 2, nn.ReLU, {0: n_classes})
        xavier_init(self)

    def forward(self, z_a: torch.Tensor, h_a: torch.Tensor, avail: torch.Tensor | None = None) -> torch.Tensor:
        """Masked logits ``[..., N, A]``."""
        return masked_logits(self.net(z_a, h_a).float(), avail)


class AttentionCritic(nn.Module):
    """V_i from every agent's ``[feat^a_i, feat^g_i]``: one self-attention layer over the agent axis.

    ``levels=1`` (no global level: dreamer, mamba) reads ``feat^a_i`` only. Call it with
    ``world_model.level_features(*latent)`` so a shared global latent arrives broadcast.

    Linear -> ReLU -> + sinusoidal agent-index encoding -> TransformerEncoderLayer (no dropout)
    -> ReLU -> Linear ReLU Linear -> one value per agent (code).
    """

    def __init__(self, latent_dim: int, n_classes: int, deter: int, hidden: int, heads: int, n_agents: int,
                 levels: int = 2):
        super().__init__()
        dims, onehot = [latent_dim, deter] * levels, {2 * i: n_classes for i in range(levels)}
        self.embed = SplitLinear(dims, hidden, onehot)
        self.attention = nn.TransformerEncoderLayer(
            hidden, heads, dim_feedforward=hidden, dropout=0.0, batch_first=True
        )
        self.out = mlp(hidden, hidden, 1, 1)
        xavier_init(self)
        self.register_buffer("agent_code", sinusoidal_encoding(n_agents, hidden), persistent=False)

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        """``(z^a, h^a[, z^g, h^g])`` of every agent, each ``[..., N, .]`` -> values ``[..., N]``."""
        lead = features[1].shape[:-2]
        x = torch.relu(self.embed(*features)) + self.agent_code
        x = self.attention(x.flatten(0, -3) if lead else x.unsqueeze(0))
        x = x.view(*lead, *x.shape[-2:])
        return self.out(torch.relu(x)).squeeze(-1).float()
