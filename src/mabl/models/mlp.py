"""The MLP actor and critics of the model-free PPO learners (Yu et al. 2022, MLP-policy variant):
a network shared over agents reading ``LayerNorm(input ++ onehot(agent index))``."""

from __future__ import annotations

import math

import torch
from torch import nn

from mabl.actions import action_distribution
from mabl.envs.base import EnvSpec
from mabl.models.actor_critic import masked_logits
from mabl.models.nets import mlp


class AgentMlp(nn.Module):
    """``LayerNorm(x_i ++ onehot(i))`` -> [Linear ReLU] x 2 -> Linear, for every agent i at once.

    Orthogonal weights with gain sqrt(2) on hidden layers and ``out_gain`` on the output, zero
    biases (Yu et al.). Input ``[..., N, in_dim]`` -> ``[..., N, out_dim]``.
    """

    def __init__(self, in_dim: int, n_agents: int, hidden: int, out_dim: int, out_gain: float):
        super().__init__()
        self.n_agents, self.hidden = n_agents, hidden
        self.norm = nn.LayerNorm(in_dim + n_agents)
        self.net = mlp(in_dim + n_agents, hidden, out_dim, 2)
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        for layer in linears:
            nn.init.orthogonal_(layer.weight, gain=out_gain if layer is linears[-1] else math.sqrt(2.0))
            nn.init.zeros_(layer.bias)
        self.register_buffer("agent_id", torch.eye(n_agents), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = self.agent_id.expand(*x.shape[:-1], self.n_agents)
        return self.net(self.norm(torch.cat([x, ids], dim=-1)))


class MlpActor(AgentMlp):
    """Shared decentralized actor: agent i's output depends on agent i's observation only.

    Discrete: masked logits. Continuous: the mean of a diagonal Gaussian with a learned
    state-independent log std starting at ``log(init_std)`` (the convention of :mod:`mabl.actions`).
    """

    def __init__(self, spec: EnvSpec, hidden: int, init_std: float = 0.5):
        super().__init__(spec.obs_dim, spec.n_agents, hidden, spec.action_size, 0.01)
        self.continuous = not spec.discrete
        self.log_std = nn.Parameter(torch.full((spec.action_size,), math.log(init_std))) if self.continuous else None

    def forward(self, obs: torch.Tensor, avail: torch.Tensor | None = None) -> torch.Tensor:
        """``obs [..., N, O]``, ``avail [..., N, A]`` or None -> masked logits ``[..., N, A]`` (or means)."""
        out = super().forward(obs)
        return out if self.continuous else masked_logits(out, avail)

    def dist(self, obs: torch.Tensor, avail: torch.Tensor | None = None) -> torch.distributions.Distribution:
        """The action distribution per agent (``log_prob`` / ``entropy`` give ``[..., N]``)."""
        return action_distribution(self(obs, avail), self.log_std)


class MlpCritic(AgentMlp):
    """Centralized critic: one value per agent from the global state and the agent's index."""

    def __init__(self, spec: EnvSpec, hidden: int):
        super().__init__(spec.state_dim, spec.n_agents, hidden, 1, 1.0)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """``state [..., G]`` -> values ``[..., N]``."""
        per_agent = state.unsqueeze(-2).expand(*state.shape[:-1], self.n_agents, state.shape[-1])
        return super().forward(per_agent).squeeze(-1)


class LocalMlpCritic(AgentMlp):
    """Decentralized critic (IPPO): agent i's value from agent i's own observation and its index only.

    The same network as :class:`MlpCritic` with the observation in place of the global state
    (de Witt et al. 2020; Yu et al.'s code runs IPPO as MAPPO with ``use_centralized_V`` False, the
    critic then reading the agent's observation).
    """

    def __init__(self, spec: EnvSpec, hidden: int):
        super().__init__(spec.obs_dim, spec.n_agents, hidden, 1, 1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs [..., N, O]`` -> values ``[..., N]``."""
        return super().forward(obs).squeeze(-1)
