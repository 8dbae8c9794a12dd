"""The acting object of ``--algo qmix`` (export kind ``qmix``): each agent's recurrent Q-network on its
own observation, its own previous action and its index; what ``mabl export`` writes for a QMIX run,
what ``mabl.load_policy`` reads back, and the one-agent step of its ONNX graph.

Acting: ``deterministic=True`` is greedy over the available actions (argmax of the masked Q-values,
pymarl's test mode: ``action_selectors.py`` ``EpsilonGreedyActionSelector`` with epsilon 0).
``deterministic=False`` samples from ``softmax(Q)`` over the available actions (a Boltzmann policy at
temperature 1, no epsilon): a trained QMIX has no stochastic policy of its own, and this one keeps
the greedy action as the most likely one; ``info["probs"]`` is that distribution, ``info["q"]`` the
Q-values. The previous action and the GRU state are carried between ``act`` calls and cleared by
``reset()``. Rows are agents: agent i's output reads only agent i's inputs (tested).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mabl.envs.base import EnvSpec
from mabl.errors import MablError
from mabl.models.actor_critic import MASKED_LOGIT
from mabl.models.qmix import QAgent, agent_input_dim, agent_inputs
from mabl.policy_contract import (
    act_discrete,
    check_act_inputs,
    check_actor_output,
    policy_generator,
    policy_payload,
    policy_spec,
)


@dataclasses.dataclass(frozen=True)
class QAgentShape:
    """What builds a :class:`~mabl.models.qmix.QAgent` and its inputs (``qmix.*`` flags of the run)."""

    hidden: int
    last_action: bool
    agent_id: bool
    recurrent: bool

    def build(self, spec: EnvSpec) -> QAgent:
        dim = agent_input_dim(spec.obs_dim, spec.n_actions, spec.n_agents, self.last_action, self.agent_id)
        return QAgent(dim, self.hidden, spec.n_actions, self.recurrent)


class QmixPolicy:
    """Same interface as ``mabl.policy.DecentralizedPolicy`` (module docstring)."""

    centralized = False

    def __init__(self, agent: QAgent, shape: QAgentShape, env_spec: EnvSpec, device: torch.device | str = "cpu",
                 seed: int | None = None):
        self.agent, self.shape, self.env_spec, self.device = agent, shape, env_spec, torch.device(device)
        self.generator = policy_generator(seed, self.device)
        self.spec = policy_spec(env_spec)
        self.eye = torch.eye(env_spec.n_agents, device=self.device)
        self.reset()

    def reset(self) -> None:
        """Zero every agent's GRU state and previous action (an episode's start)."""
        n = self.env_spec.n_agents
        self.h = torch.zeros(n, self.shape.hidden, device=self.device)
        self.prev_action = torch.zeros(n, self.env_spec.n_actions, device=self.device)

    @torch.no_grad()
    def act(self, obs: np.ndarray, avail: np.ndarray | None = None, deterministic: bool = False
            ) -> tuple[np.ndarray, dict[str, Any]]:
        """``obs [N, O]``, ``avail [N, A]`` or None -> ``actions [N]`` int64, ``{"probs", "q"}`` ``[N, A]``."""
        obs_t, avail_t = check_act_inputs(self.spec, obs, avail, self.device)
        x = agent_inputs(obs_t, self.prev_action if self.shape.last_action else None,
                         self.eye if self.shape.agent_id else None)
        q, self.h = self.agent(x, self.h)
        check_actor_output(q)
        masked = q if avail_t is None else q.masked_fill(~avail_t, MASKED_LOGIT)
        action, actions, info = act_discrete(masked, deterministic, self.generator, greedy_on_logits=True)
        self.prev_action = F.one_hot(action, self.env_spec.n_actions).float()
        return actions, {**info, "q": q.cpu().numpy()}

    def to_payload(self, algo: str = "qmix") -> dict[str, Any]:
        """The exported-policy dict (plain data and CPU tensors; ``torch.load(weights_only=True)`` reads it)."""
        return policy_payload(algo, self.env_spec, self.agent, "decentralized",
                              agent_net=dataclasses.asdict(self.shape))


def qmix_policy_from_payload(payload: dict[str, Any], device: torch.device | str = "cpu",
                             seed: int | None = None) -> QmixPolicy:
    """Rebuild a :class:`QmixPolicy` from :meth:`QmixPolicy.to_payload` (no training code needed)."""
    if not isinstance(payload.get("agent_net"), dict) or "actor" not in payload:
        raise MablError("not a mabl QMIX policy (export one with `mabl export` from a --algo qmix run)")
    env_spec = EnvSpec(**payload["spec"])
    shape = QAgentShape(**payload["agent_net"])
    agent = shape.build(env_spec)
    agent.load_state_dict(payload["actor"])
    return QmixPolicy(agent.to(device).eval(), shape, env_spec, device, seed=seed)


class QmixStep(nn.Module):
    """The ONNX graph of one agent's step (:mod:`mabl.onnx_export`, export kind ``qmix``).

    Inputs ``obs [B, O]``, ``prev_action [B, A]`` (one-hot, zeros at an episode's start), ``agent [B, N]``
    (one-hot index), ``h [B, H]`` (zeros at an episode's start), and ``avail [B, A]`` (1 available, 0
    not) on masked tasks. Outputs ``probs [B, A]`` = softmax of the masked Q-values (greedy = its
    argmax), ``q [B, A]`` the raw Q-values, ``h_next [B, H]``."""

    inputs = ("obs", "prev_action", "agent", "h")
    outputs = ("probs", "q", "h_next")

    def __init__(self, agent: QAgent, shape: QAgentShape, spec: EnvSpec):
        super().__init__()
        self.agent, self.shape = agent, shape
        self.masked = spec.has_action_mask

    def forward(self, obs, prev_action, agent, h, avail=None):
        x = agent_inputs(obs, prev_action if self.shape.last_action else None, None)
        if self.shape.agent_id:
            x = torch.cat([x, agent], -1)
        q, h_next = self.agent(x, h)
        masked = torch.where(avail > 0.5, q, torch.full_like(q, MASKED_LOGIT)) if self.masked else q
        return torch.softmax(masked, -1), q, h_next

    def example_args(self, spec: EnvSpec, batch: int) -> list[torch.Tensor]:
        """Example inputs (the batch axis is exported as dynamic)."""
        return [torch.zeros(batch, spec.obs_dim), torch.zeros(batch, spec.n_actions),
                torch.eye(spec.n_agents)[:1].expand(batch, -1).contiguous(), torch.zeros(batch, self.shape.hidden)]
