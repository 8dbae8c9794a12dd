"""The acting object of ``--algo rmappo``'s recurrent actor (export kind ``gru``): what ``mabl export``
writes for it, what ``mabl.load_policy`` reads back without any training code, and its ONNX graph.

Stateful: each agent's GRU state is carried from one ``act`` to the next and cleared by ``reset()``
(an episode's start, as Yu et al.'s runner zeroes ``rnn_states`` when an episode ends,
``onpolicy/runner/shared/smac_runner.py`` lines 133-136). Agent i's action depends on agent i's
observations (this one and the earlier ones of the episode) and its index only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from mabl.actions import action_std
from mabl.envs.base import EnvSpec
from mabl.models.actor_critic import MASKED_LOGIT
from mabl.models.gru import GruActor
from mabl.policy_contract import (
    act_from_output,
    check_act_inputs,
    check_actor_output,
    check_policy_payload,
    policy_generator,
    policy_payload,
    policy_spec,
)


class GruPolicy:
    """The acting object over a :class:`GruActor` (same interface as ``mabl.policy.DecentralizedPolicy``).

    Samples with ``generator`` when set, else with torch's global RNG. ``algo``: the ``--algo`` that
    trained it, written to the payload.
    """

    def __init__(self, actor: GruActor, env_spec: EnvSpec, device: torch.device | str = "cpu", seed: int | None = None,
                 algo: str = "rmappo"):
        self.actor, self.env_spec, self.device, self.algo = actor, env_spec, torch.device(device), algo
        self.generator = policy_generator(seed, self.device)
        self.spec = policy_spec(env_spec)
        self.reset()

    def reset(self) -> None:
        """Zero every agent's GRU state (call at each episode start)."""
        self.h = torch.zeros(self.env_spec.n_agents, self.actor.hidden, device=self.device)

    @torch.no_grad()
    def act(self, obs: np.ndarray, avail: np.ndarray | None = None, deterministic: bool = False
            ) -> tuple[np.ndarray, dict[str, Any]]:
        """``obs [N, O]``, ``avail [N, A]`` or None -> ``actions [N]`` int64, ``{"probs": [N, A]}``;
        continuous: ``actions [N, D]`` float32 in the spec's bounds, ``{"mean", "std"}`` (normalised units)."""
        obs_t, avail_t = check_act_inputs(self.spec, obs, avail, self.device)
        out, h_next = self.actor.policy_step(obs_t, self.h, avail_t)
        out = check_actor_output(out)
        self.h = h_next
        _, actions, info = act_from_output(self.spec, out, self.actor.log_std, deterministic, self.generator)
        return actions, info

    def to_payload(self) -> dict[str, Any]:
        """The exported-policy dict (plain data and CPU tensors; ``torch.load(weights_only=True)`` reads it)."""
        return policy_payload(self.algo, self.env_spec, self.actor, hidden=self.actor.hidden)


def gru_policy_from_payload(payload: dict[str, Any], device: torch.device | str = "cpu",
                            seed: int | None = None) -> GruPolicy:
    """Rebuild a :class:`GruPolicy` from :meth:`GruPolicy.to_payload` (no training code needed)."""
    check_policy_payload(payload, "gru", "GRU")
    env_spec = EnvSpec(**payload["spec"])
    actor = GruActor(env_spec, int(payload["hidden"]))  # log_std (continuous) comes from the state dict
    actor.load_state_dict(payload["actor"])
    return GruPolicy(actor.to(device).eval(), env_spec, device, seed=seed, algo=payload["algo"])


class GruStep(nn.Module):
    """One agent row's step of the GRU actor as plain ops (for ONNX): ``obs [B, O]``, ``agent [B, N]``
    (one-hot index), ``h [B, H]``, ``avail [B, A]`` when masked -> ``probs`` (or ``mean``, ``std``), ``h_next``.

    The GRU cell is written out (PyTorch's gate order r, z, n): ``r = s(W_ir x + b_ir + W_hr h + b_hr)``,
    ``z = s(W_iz x + b_iz + W_hz h + b_hz)``, ``n = tanh(W_in x + b_in + r (W_hn h + b_hn))``,
    ``h' = (1 - z) n + z h``."""

    def __init__(self, actor: GruActor, spec: EnvSpec):
        super().__init__()
        self.actor = actor
        self.masked = spec.discrete and spec.has_action_mask
        self.continuous = not spec.discrete

    def forward(self, obs, agent, h, avail=None):
        a, gru = self.actor, self.actor.gru
        x = a.base(a.feature_norm(torch.cat([obs, agent], -1)))
        gi = x @ gru.weight_ih_l0.T + gru.bias_ih_l0
        gh = h @ gru.weight_hh_l0.T + gru.bias_hh_l0
        i_r, i_z, i_n = gi.chunk(3, -1)
        h_r, h_z, h_n = gh.chunk(3, -1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        h_next = (1.0 - z) * torch.tanh(i_n + r * h_n) + z * h
        out = a.head(a.gru_norm(h_next))
        if self.continuous:
            return out, action_std(a.log_std), h_next
        if self.masked:
            out = torch.where(avail > 0.5, out, torch.full_like(out, MASKED_LOGIT))
        return torch.softmax(out, -1), h_next
