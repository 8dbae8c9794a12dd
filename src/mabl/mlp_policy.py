"""The acting object of the model-free learners' exported MLP actor (``mappo``, ``ippo``): what
``mabl export`` writes for them and ``mabl.load_policy`` reads back, without any training code."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from mabl.actions import act_gaussian
from mabl.envs.base import EnvSpec
from mabl.errors import MablError
from mabl.models.mlp import MlpActor
from mabl.policy_contract import POLICY_FORMAT, POLICY_VERSION, check_act_inputs, check_actor_output, policy_spec


class MlpPolicy:
    """The acting object over an :class:`MlpActor` (same interface as ``mabl.policy.DecentralizedPolicy``).

    Stateless (no recurrence). Samples with ``generator`` when set, else with torch's global RNG.
    ``algo``: the ``--algo`` that trained it (``mappo`` or ``ippo``: the same actor), written to the payload.
    """

    def __init__(self, actor: MlpActor, env_spec: EnvSpec, device: torch.device | str = "cpu", seed: int | None = None,
                 algo: str = "mappo"):

        self.actor, self.env_spec, self.device, self.algo = actor, env_spec, torch.device(device), algo
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.spec = policy_spec(env_spec)

    def reset(self) -> None:
        """Nothing to clear: the MLP policy has no memory."""

    @torch.no_grad()
    def act(self, obs: np.ndarray, avail: np.ndarray | None = None, deterministic: bool = False
            ) -> tuple[np.ndarray, dict[str, Any]]:
        """``obs [N, O]``, ``avail [N, A]`` or None -> ``actions [N]`` int64, ``{"probs": [N, A]}``;
        continuous: ``actions [N, D]`` float32 in the spec's bounds, ``{"mean", "std"}`` (normalised units)."""

        obs_t, avail_t = check_act_inputs(self.spec, obs, avail, self.device)
        if self.actor.continuous:
            mean = check_actor_output(self.actor(obs_t))
            _, action, std = act_gaussian(mean, self.actor.log_std, deterministic, self.env_spec.action_low,
                                          self.env_spec.action_high, self.generator)
            return action.cpu().numpy().astype(np.float32), {"mean": mean.cpu().numpy(), "std": std.cpu().numpy()}
        probs = check_actor_output(self.actor(obs_t, avail_t)).softmax(-1)
        if deterministic:
            action = probs.argmax(-1)
        else:
            action = torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)
        return action.cpu().numpy(), {"probs": probs.cpu().numpy()}

    def to_payload(self) -> dict[str, Any]:
        """The exported-policy dict (plain data and CPU tensors; ``torch.load(weights_only=True)`` reads it)."""

        return {"format": POLICY_FORMAT, "version": POLICY_VERSION, "algo": self.algo,
                "spec": dataclasses.asdict(self.env_spec), "hidden": self.actor.hidden,
                "actor": {k: v.detach().cpu() for k, v in self.actor.state_dict().items()}}


def mlp_policy_from_payload(payload: dict[str, Any], device: torch.device | str = "cpu",
                              seed: int | None = None) -> MlpPolicy:
    """Rebuild a :class:`MlpPolicy` from :meth:`MlpPolicy.to_payload` (no training code needed);
    any algorithm whose registry entry exports an ``mlp`` policy (mappo, ippo)."""
    from mabl.algo.registry import ALGORITHMS  # (plain data: imports no learner)

    mlp_algos = [name for name, entry in ALGORITHMS.items() if entry.export == "mlp"]
    if not isinstance(payload, dict) or payload.get("format") != POLICY_FORMAT or payload.get("algo") not in mlp_algos:
        raise MablError(f"not a mabl MLP policy (export one with `mabl export` from a --algo {'/'.join(mlp_algos)} run)")
    if payload.get("version") != POLICY_VERSION:
        raise MablError(f"policy format version {payload.get('version')}; this mabl reads {POLICY_VERSION}")
    env_spec = EnvSpec(**payload["spec"])
    actor = MlpActor(env_spec, int(payload["hidden"]))  # log_std (continuous) comes from the state dict
    actor.load_state_dict(payload["actor"])
    return MlpPolicy(actor.to(device).eval(), env_spec, device, seed=seed, algo=payload["algo"])
