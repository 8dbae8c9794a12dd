"""The recurrent actor and critic of ``--algo rmappo`` (Yu et al. 2022, recurrent MAPPO).

One network shared over agents, as marlbenchmark/on-policy builds it for SMAC
(``onpolicy/algorithms/r_mappo/algorithm/r_actor_critic.py``): feature LayerNorm of the input
(``algorithms/utils/mlp.py`` lines 46-47, ``use_feature_normalization``), the MLP base
``Linear ReLU LayerNorm`` x 2 (``mlp.py`` lines 18-24: ``fc1`` then ``layer_N`` = 1 ``fc2``
layers; orthogonal weights with ReLU gain sqrt(2), zero biases), one GRU layer (``utils/rnn.py``
lines 13-21: orthogonal weights of gain 1, zero biases) followed by a LayerNorm (``rnn.py`` line 22),
then the head: actor logits (or the Gaussian mean) with orthogonal gain 0.01 (``config.py``
``--gain``), the critic's value with gain 1 (``r_actor_critic.py`` lines 146-152).

Inputs are ``[..., N, in]`` with N the agent axis; the agent index is appended as a one-hot (their
SMAC observation carries it, ``envs/starcraft2/StarCraft2_Env.py`` ``obs_agent_id=True``). The
recurrent state is ``[..., N, hidden]``; every agent row is its own GRU sequence, so agent i's output
never reads another agent's input.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mabl.actions import action_distribution
from mabl.envs.base import EnvSpec
from mabl.models.actor_critic import masked_logits


class RecurrentAgentNet(nn.Module):
    """``LayerNorm(x_i ++ onehot(i))`` -> MLP base -> GRU -> LayerNorm -> Linear, per agent row."""

    def __init__(self, in_dim: int, n_agents: int, hidden: int, out_dim: int, out_gain: float):
        super().__init__()
        self.n_agents, self.hidden = n_agents, hidden
        width = in_dim + n_agents
        self.feature_norm = nn.LayerNorm(width)
        self.base = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.LayerNorm(hidden),
                                  nn.Linear(hidden, hidden), nn.ReLU(), nn.LayerNorm(hidden))
        for layer in self.base:
            if isinstance(layer, nn.Linear):
                nn.init.orthogonal_(layer.weight, gain=math.sqrt(2.0))
                nn.init.zeros_(layer.bias)
        self.gru = nn.GRU(hidden, hidden)
        for name, param in self.gru.named_parameters():
            (nn.init.zeros_ if "bias" in name else nn.init.orthogonal_)(param)
        self.gru_norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, out_dim)
        nn.init.orthogonal_(self.head.weight, gain=out_gain)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("agent_id", torch.eye(n_agents), persistent=False)

    def _with_id(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.agent_id.expand(*x.shape[:-1], self.n_agents)], dim=-1)

    def step(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: ``x [..., N, in]``, ``h [..., N, H]`` -> (output ``[..., N, out]``, next ``h``)."""
        rows = x.shape[:-1]
        feats = self.base(self.feature_norm(self._with_id(x))).reshape(1, -1, self.hidden)
        out, h_next = self.gru(feats, h.reshape(1, -1, self.hidden))
        return self.head(self.gru_norm(out[0])).reshape(*rows, -1), h_next.reshape(*rows, self.hidden)

    def sequence(self, x: torch.Tensor, h0: torch.Tensor, first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A time-major run: ``x [L, ..., N, in]``, ``h0 [..., N, H]`` the state entering step 0,
        ``first [L, ...]`` True where an episode starts (the state entering that step is zeroed, as
        their ``masks`` do in ``rnn.py`` lines 24-77). Returns (outputs ``[L, ..., N, out]``, the state
        after the last step)."""
        length, rows = x.shape[0], x.shape[1:-1]
        feats = self.base(self.feature_norm(self._with_id(x))).reshape(length, -1, self.hidden)
        keep = (~first.bool()).unsqueeze(-1).expand(*first.shape, self.n_agents).reshape(length, -1, 1)
        h = h0.reshape(1, -1, self.hidden)
        if not bool(first[1:].any()):  # one call: no episode starts after step 0
            out, h = self.gru(feats, h * keep[0])
        else:
            outs = []
            for t in range(length):
                o, h = self.gru(feats[t : t + 1], h * keep[t])
                outs.append(o)
            out = torch.cat(outs)
        out = self.head(self.gru_norm(out)).reshape(length, *rows, -1)
        return out, h.reshape(*rows, self.hidden)

    def states(self, x: torch.Tensor, first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs and the state entering every step of ``x [L, ..., N, in]`` from a zero start:
        (``[L, ..., N, out]``, ``[L, ..., N, H]``; row 0 is zero)."""
        h = torch.zeros(*x.shape[1:-1], self.hidden, device=x.device)
        outs, entering = [], []
        for t in range(x.shape[0]):
            entering.append(h * (~first[t].bool()).reshape(*first.shape[1:], 1, 1))
            out, h = self.step(x[t], entering[-1])
            outs.append(out)
        return torch.stack(outs), torch.stack(entering)


class GruActor(RecurrentAgentNet):
    """Shared decentralized recurrent actor. Discrete: masked logits; continuous: the Gaussian mean
    with a learned state-independent log std from ``log(init_std)`` (:mod:`mabl.actions`)."""

    def __init__(self, spec: EnvSpec, hidden: int, init_std: float = 0.5):
        super().__init__(spec.obs_dim, spec.n_agents, hidden, spec.action_size, 0.01)
        self.continuous = not spec.discrete
        self.log_std = nn.Parameter(torch.full((spec.action_size,), math.log(init_std))) if self.continuous else None

    def policy_step(self, obs: torch.Tensor, h: torch.Tensor, avail: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``obs [..., N, O]``, ``h [..., N, H]`` -> (masked logits or means ``[..., N, A]``, next h)."""
        out, h_next = self.step(obs, h)
        return (out if self.continuous else masked_logits(out, avail)), h_next

    def policy_sequence(self, obs: torch.Tensor, h0: torch.Tensor, first: torch.Tensor,
                        avail: torch.Tensor | None = None) -> torch.Tensor:
        """Masked logits (or means) over a time-major chunk ``obs [L, ..., N, O]`` from ``h0``."""
        out, _ = self.sequence(obs, h0, first)
        return out if self.continuous else masked_logits(out, avail)

    def dist(self, out: torch.Tensor) -> torch.distributions.Distribution:
        """The action distribution of an output of :meth:`policy_step` / :meth:`policy_sequence`."""
        return action_distribution(out, self.log_std)


class GruCritic(RecurrentAgentNet):
    """Centralized recurrent critic: agent i's value from the global state and its index
    (``[L, ..., G]`` is broadcast to every agent row)."""

    def __init__(self, spec: EnvSpec, hidden: int):
        super().__init__(spec.state_dim, spec.n_agents, hidden, 1, 1.0)

    def _rows(self, state: torch.Tensor) -> torch.Tensor:
        return state.unsqueeze(-2).expand(*state.shape[:-1], self.n_agents, state.shape[-1])

    def value_sequence(self, state: torch.Tensor, h0: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """Values ``[L, ..., N]`` over ``state [L, ..., G]`` from ``h0 [..., N, H]``."""
        return self.sequence(self._rows(state), h0, first)[0].squeeze(-1)

    def value_states(self, state: torch.Tensor, first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values ``[L, ..., N]`` and the state entering every step, from a zero start."""
        values, entering = self.states(self._rows(state), first)
        return values.squeeze(-1), entering
