"""The acting object of the model-free learners' exported MLP actor (``mappo``, ``ippo``): what
``mabl export`` writes for them and ``mabl.load_policy`` reads back, without any training code."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mabl.envs.base import EnvSpec
from mabl.models.mlp import MlpActor
from mabl.policy_contract import (
    act_from_output,
    check_act_inputs,
    check_actor_output,
    check_policy_payload,
    policy_generator,
    policy_payload,
    policy_spec,
)


class MlpPolicy:
    """The acting object over an :class:`MlpActor` (same interface as ``mabl.policy.DecentralizedPolicy``).

    Stateless (no recurrence). Samples with ``generator`` when set, else with torch's global RNG.
    ``algo``: the ``--algo`` that trained it (``mappo`` or ``ippo``: the same actor), written to the payload.
    """

    def __init__(self, actor: MlpActor, env_spec: EnvSpec, device: torch.device | str = "cpu", seed: int | None = None,
                 algo: str = "mappo"):

        self.actor, self.env_spec, self.device, self.algo = actor, env_spec, torch.device(device), algo
        self.generator = policy_generator(seed, self.device)
        self.spec = policy_spec(env_spec)

    def reset(self) -> None:
        """Nothing to clear: the MLP policy has no memory."""

    @torch.no_grad()
    def act(self, obs: np.ndarray, avail: np.ndarray | None = None, deterministic: bool = False
            ) -> tuple[np.ndarray, dict[str, Any]]:
        """``obs [N, O]``, ``avail [N, A]`` or None -> ``actions [N]`` int64, ``{"probs": [N, A]}``;
        continuous: ``actions [N, D]`` float32 in the spec's bounds, ``{"mean", "std"}`` (normalised units)."""

        obs_t, avail_t = check_act_inputs(self.spec, obs, avail, self.device)  # avail_t None when continuous
        out = check_actor_output(self.actor(obs_t, avail_t))
        _, actions, info = act_from_output(self.spec, out, self.actor.log_std, deterministic, self.generator)
        return actions, info

    def to_payload(self) -> dict[str, Any]:
        """The exported-policy dict (plain data and CPU tensors; ``torch.load(weights_only=True)`` reads it)."""

        return policy_payload(self.algo, self.env_spec, self.actor, hidden=self.actor.hidden)


def mlp_policy_from_payload(payload: dict[str, Any], device: torch.device | str = "cpu",
                              seed: int | None = None) -> MlpPolicy:
    """Rebuild a :class:`MlpPolicy` from :meth:`MlpPolicy.to_payload` (no training code needed);
    any algorithm whose registry entry exports an ``mlp`` policy (mappo, ippo)."""
    check_policy_payload(payload, "mlp", "MLP")
    env_spec = EnvSpec(**payload["spec"])
    actor = MlpActor(env_spec, int(payload["hidden"]))  # log_std (continuous) comes from the state dict
    actor.load_state_dict(payload["actor"])
    return MlpPolicy(actor.to(device).eval(), env_spec, device, seed=seed, algo=payload["algo"])
