"""Decentralized actor and centralized attention critic (SPEC §1)."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from mabl.actions import action_distribution
from mabl.models.nets import SplitLinear, SplitMLP, mlp, sinusoidal_encoding, xavier_init

MASKED_LOGIT = -1e10
"""Logit given to unavailable actions (a large negative number, as the released code)."""


def masked_logits(logits: torch.Tensor, avail: torch.Tensor | None) -> torch.Tensor:
    """Replace the logits of unavailable actions (``avail`` False/0) by :data:`MASKED_LOGIT`.

    A row with no available action (an imagined mask kept empty, SPEC §3) becomes all zeros: the
    uniform distribution the released code's all -1e10 row gives under its ``log_softmax``
    (log-probability -log A). Left at -1e10, ``Categorical``'s normalisation ``x - logsumexp(x)``
    would lose log A against 1e10 in float32 and give log-probabilities 0."""
    if avail is None:
        return logits
    avail = avail.bool()
    out = logits.masked_fill(~avail, MASKED_LOGIT)
    return out.masked_fill(~avail.any(-1, keepdim=True), 0.0)


class Actor(nn.Module):
    """pi(a^i | z^a_i, h^a_i): agent features only, shared weights, no agent id (code).

    Latents ``z`` may be one-hot ``[..., N, C*K]`` or class indices ``[..., N, C]``. Discrete: a
    categorical over ``action_size`` actions. ``continuous``: a diagonal Gaussian over
    ``action_size`` dimensions with a learned state-independent log std starting at
    ``log(init_std)`` (the convention of :mod:`mabl.actions`).
    """

    def __init__(self, latent_dim: int, n_classes: int, deter: int, hidden: int, action_size: int,
                 continuous: bool = False, init_std: float = 0.5, zero_bias: bool = False):
        super().__init__()
        self.net = SplitMLP([latent_dim, deter], hidden, action_size, 2, nn.ReLU, {0: n_classes})
        xavier_init(self, zero_bias)
        self.continuous = continuous
        self.log_std = nn.Parameter(torch.full((action_size,), math.log(init_std))) if continuous else None

    def forward(self, z_a: torch.Tensor, h_a: torch.Tensor, avail: torch.Tensor | None = None) -> torch.Tensor:
        """Masked logits ``[..., N, A]`` (discrete) or the Gaussian's mean ``[..., N, D]`` (continuous)."""
        out = self.net(z_a, h_a).float()
        return out if self.continuous else masked_logits(out, avail)

    def dist(self, z_a: torch.Tensor, h_a: torch.Tensor, avail: torch.Tensor | None = None
             ) -> torch.distributions.Distribution:
        """The action distribution per agent (``log_prob`` / ``entropy`` give ``[..., N]``)."""
        return action_distribution(self(z_a, h_a, avail), self.log_std)


class AttentionCritic(nn.Module):
    """V_i from every agent's ``[feat^a_i, feat^g_i]``: one self-attention layer over the agent axis.

    ``levels=1`` (no global level: dreamer, mamba) reads ``feat^a_i`` only. Call it with
    ``world_model.level_features(*latent)`` so a shared global latent arrives broadcast.

    Linear -> ReLU -> + sinusoidal agent-index encoding -> TransformerEncoderLayer (no dropout)
    -> ReLU -> Linear ReLU Linear -> one value per agent (code).
    """

    def __init__(self, latent_dim: int, n_classes: int, deter: int, hidden: int, heads: int, n_agents: int,
                 levels: int = 2, zero_bias: bool = False):
        super().__init__()
        dims, onehot = [latent_dim, deter] * levels, {2 * i: n_classes for i in range(levels)}
        self.embed = SplitLinear(dims, hidden, onehot)
        self.attention = nn.TransformerEncoderLayer(
            hidden, heads, dim_feedforward=hidden, dropout=0.0, batch_first=True
        )
        self.out = mlp(hidden, hidden, 1, 1)
        xavier_init(self, zero_bias)
        self.register_buffer("agent_code", sinusoidal_encoding(n_agents, hidden), persistent=False)

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        """``(z^a, h^a[, z^g, h^g])`` of every agent, each ``[..., N, .]`` -> values ``[..., N]``."""
        lead = features[1].shape[:-2]
        x = torch.relu(self.embed(*features)) + self.agent_code
        # Attention over a handful of agents: on the CPU the plain matmul form of scaled dot-product
        # attention beats the flash kernel, built for long sequences (the layer's forward+backward
        # on 2,000 x 3 agents, bf16: 105 -> 85 ms). Same formula; other devices keep torch's choice.
        backend = sdpa_kernel(SDPBackend.MATH) if x.device.type == "cpu" else contextlib.nullcontext()
        with backend:
            x = self.attention(x.flatten(0, -3) if lead else x.unsqueeze(0))
        x = x.view(*lead, *x.shape[-2:])
        return self.out(torch.relu(x)).squeeze(-1).float()
