"""The networks of ``--algo qmix`` (Rashid et al. 2018, as pymarl builds them): the agent Q-network
shared over agents and the monotonic mixing network with hypernetworks on the global state.

pymarl files cited: ``src/modules/agents/rnn_agent.py`` (the agent), ``src/modules/mixers/qmix.py``
(the mixer), ``src/controllers/basic_controller.py`` (``_build_inputs``: the agent's input).
Imports no training code, so the exported policy (:mod:`mabl.qmix_policy`) can use it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def agent_input_dim(obs_dim: int, n_actions: int, n_agents: int, last_action: bool, agent_id: bool) -> int:
    """Width of the agent's input: observation, then (optionally) the previous action one-hot and the
    agent index one-hot (pymarl ``basic_controller.py`` ``_get_input_shape``, lines 94-101)."""
    return obs_dim + (n_actions if last_action else 0) + (n_agents if agent_id else 0)


def agent_inputs(obs: torch.Tensor, prev_action: torch.Tensor | None, agent_id: torch.Tensor | None) -> torch.Tensor:
    """``obs [..., N, O]`` ++ ``prev_action [..., N, A]`` one-hot (zeros at an episode's first step) ++
    ``agent_id [N, N]`` (the identity, broadcast), in pymarl's order (``basic_controller.py`` lines 77-92);
    ``None`` leaves a part out."""
    parts = [obs]
    if prev_action is not None:
        parts.append(prev_action)
    if agent_id is not None:
        parts.append(agent_id.expand(*obs.shape[:-1], agent_id.shape[-1]))
    return torch.cat(parts, -1)


class QAgent(nn.Module):
    """``Linear -> ReLU -> GRUCell -> Linear``: one Q-value per action, rows independent (pymarl
    ``rnn_agent.py`` lines 10-23). ``recurrent=False`` replaces the GRU cell by ``Linear -> ReLU``
    on the same width, EPyMARL's ``use_rnn: False`` (its ``rnn_agent.py``); the hidden state then
    only passes through."""

    def __init__(self, in_dim: int, hidden: int, n_actions: int, recurrent: bool = True):
        super().__init__()
        self.hidden, self.recurrent = hidden, recurrent
        self.fc1 = nn.Linear(in_dim, hidden)
        self.rnn = nn.GRUCell(hidden, hidden) if recurrent else nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, n_actions)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [..., in]``, ``h [..., H]`` -> ``(q [..., A], h_next [..., H])``."""
        lead = x.shape[:-1]
        y = F.relu(self.fc1(x.reshape(-1, x.shape[-1])))
        h_next = self.rnn(y, h.reshape(-1, self.hidden)) if self.recurrent else F.relu(self.rnn(y))
        return self.fc2(h_next).reshape(*lead, -1), h_next.reshape(*lead, self.hidden)

    def unroll(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``x [T, ..., in]`` from the state ``h [..., H]`` -> ``q [T, ..., A]``: :meth:`forward` step by step,
        with the row-wise layers applied to all steps at once (the same numbers as stepping)."""
        y = F.relu(self.fc1(x))
        if not self.recurrent:
            return self.fc2(F.relu(self.rnn(y)))
        lead = h.shape[:-1]
        h = h.reshape(-1, self.hidden)
        states = []
        for t in range(x.shape[0]):
            h = self.rnn(y[t].reshape(-1, self.hidden), h)
            states.append(h)
        return self.fc2(torch.stack(states).reshape(x.shape[0], *lead, self.hidden))


class QMixer(nn.Module):
    """Q_tot(q, s) = w2(s) . ELU(q W1(s) + b1(s)) + V(s) with W1 = |hyper_w1(s)|, w2 = |hyper_w2(s)|,
    so dQ_tot/dq_i >= 0 for every state (pymarl ``qmix.py`` lines 7-60).

    ``hypernet_layers`` 1: each weight hypernetwork is one Linear; 2: Linear(G, hypernet_embed) ->
    ReLU -> Linear (pymarl ``qmix.py`` lines 17-31). ``b1`` is one Linear, ``V`` is Linear(G, E) ->
    ReLU -> Linear(E, 1) (lines 33-39)."""

    def __init__(self, n_agents: int, state_dim: int, embed: int, hypernet_layers: int, hypernet_embed: int):
        super().__init__()
        self.n_agents, self.embed = n_agents, embed

        def hyper(out: int) -> nn.Module:
            if hypernet_layers == 1:
                return nn.Linear(state_dim, out)
            return nn.Sequential(nn.Linear(state_dim, hypernet_embed), nn.ReLU(), nn.Linear(hypernet_embed, out))

        self.hyper_w1 = hyper(embed * n_agents)
        self.hyper_w2 = hyper(embed)
        self.hyper_b1 = nn.Linear(state_dim, embed)
        self.value = nn.Sequential(nn.Linear(state_dim, embed), nn.ReLU(), nn.Linear(embed, 1))

    def forward(self, q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """``q [..., N]`` (each agent's chosen Q), ``state [..., G]`` -> ``Q_tot [...]``."""
        w1 = self.hyper_w1(state).abs().unflatten(-1, (self.n_agents, self.embed))  # [..., N, E]
        hidden = F.elu((q.unsqueeze(-2) @ w1).squeeze(-2) + self.hyper_b1(state))  # [..., E]
        w2 = self.hyper_w2(state).abs()  # [..., E]
        return (hidden * w2).sum(-1) + self.value(state).squeeze(-1)
