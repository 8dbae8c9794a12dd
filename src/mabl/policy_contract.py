"""The contract of an exported policy, shared by every policy kind (``mabl.policy``'s recurrent
policies, ``mabl.algo.mappo``'s MLP actor): the file format's name and version, the
:class:`PolicySpec` users read, and the one-line checks of ``act``'s inputs and the actor's outputs.
It imports no policy, so every policy module can import it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mabl.envs.base import EnvSpec
from mabl.errors import MablError

POLICY_FORMAT = "mabl-policy"
POLICY_VERSION = 1


@dataclass(frozen=True)
class PolicySpec:
    """What a user of an exported policy needs to know."""

    n_agents: int
    obs_dim: int
    n_actions: int | None = None
    action_dim: int | None = None
    action_low: float | None = None
    """Continuous actions: the bounds every returned action lies in (None for discrete)."""
    action_high: float | None = None
    centralized: bool = False
    """True when an agent's action depends on other agents' observations (centralized execution)."""


def check_actor_output(out: torch.Tensor) -> torch.Tensor:
    """The actor's logits or means, or a one-line MablError when they are not finite (acting reads
    them on the host anyway, so this costs no extra wait)."""
    if not bool(torch.isfinite(out).all()):
        raise MablError("the actor's outputs are NaN or infinite (its weights or its recurrent state overflowed); "
                        "if this happens in training, lower the learning rates")
    return out


def policy_spec(env_spec: EnvSpec, centralized: bool = False) -> PolicySpec:
    """The :class:`PolicySpec` of a policy acting in an env of ``env_spec``."""
    if env_spec.discrete:
        return PolicySpec(env_spec.n_agents, env_spec.obs_dim, n_actions=env_spec.n_actions, centralized=centralized)
    return PolicySpec(env_spec.n_agents, env_spec.obs_dim, action_dim=env_spec.action_dim,
                      action_low=env_spec.action_low, action_high=env_spec.action_high, centralized=centralized)


def check_act_inputs(spec: PolicySpec, obs: np.ndarray, avail: np.ndarray | None, device: torch.device
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``act``'s inputs as tensors, or a one-line MablError naming the wrong shape and the right one."""
    obs_np = np.asarray(obs, np.float32)
    if obs_np.shape != (spec.n_agents, spec.obs_dim):
        raise MablError(f"policy.act: obs has shape {obs_np.shape}, expected ({spec.n_agents}, {spec.obs_dim})")
    if not np.isfinite(obs_np).all():
        agents = sorted({int(i) for i in np.argwhere(~np.isfinite(obs_np))[:, 0]})
        raise MablError(f"policy.act: obs of agent(s) {agents} hold NaN or infinite values; observations must be finite")
    obs_t = torch.as_tensor(obs_np, device=device)
    if avail is None:
        return obs_t, None
    if spec.n_actions is None:
        raise MablError("policy.act: avail given, but this policy has continuous actions (no action masks); pass None")
    avail_t = torch.as_tensor(np.asarray(avail, bool), device=device)
    if avail_t.shape != (spec.n_agents, spec.n_actions):
        raise MablError(f"policy.act: avail has shape {tuple(avail_t.shape)}, expected ({spec.n_agents}, {spec.n_actions})")
    return obs_t, avail_t
