"""The contract of an exported policy, shared by every policy kind (``mabl.policy``'s latent
policies, ``mabl.mlp_policy``, ``mabl.gru_policy``, ``mabl.qmix_policy``): the file format's name and
version, the :class:`PolicySpec` users read, the one-line checks of ``act``'s inputs and the actor's
outputs, the acting step from the actor's outputs to ``act``'s return value (discrete and
continuous), and the keys every exported-policy dict holds. It imports no policy, so every policy
module can import it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mabl.actions import act_gaussian
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


def policy_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """The generator an acting object samples with: seeded with ``seed`` on ``device``, or None (torch's
    global RNG) without a seed."""
    return None if seed is None else torch.Generator(device=device).manual_seed(seed)


def act_discrete(logits: torch.Tensor, deterministic: bool, generator: torch.Generator | None,
                 greedy_on_logits: bool = False) -> tuple[torch.Tensor, np.ndarray, dict[str, Any]]:
    """One acting step over (masked) ``logits [N, A]``: ``probs = softmax(logits)``; the action is the
    most likely one when ``deterministic`` (the argmax of ``probs``, or of ``logits`` themselves with
    ``greedy_on_logits``: QMIX's greedy action on its Q-values), else one draw of
    ``torch.multinomial(probs, 1, generator)`` per agent (torch's global RNG when ``generator`` is None).

    Returns the action tensor ``[N]`` int64 (on the policy's device), the same as numpy, and
    ``{"probs": [N, A]}``."""
    probs = logits.softmax(-1)
    if deterministic:
        action = (logits if greedy_on_logits else probs).argmax(-1)
    else:
        action = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return action, action.cpu().numpy(), {"probs": probs.cpu().numpy()}


def act_from_output(spec: PolicySpec, out: torch.Tensor, log_std: torch.Tensor | None, deterministic: bool,
                    generator: torch.Generator | None) -> tuple[torch.Tensor, np.ndarray, dict[str, Any]]:
    """One acting step from an actor's outputs ``out [N, ...]`` and its ``log_std`` (None for discrete
    actions, as :func:`mabl.actions.action_distribution` reads it).

    Discrete: :func:`act_discrete` over the (masked) logits. Continuous: the Gaussian's step
    (:func:`mabl.actions.act_gaussian`) from the means ``out``: returns the raw ``u`` (normalised units),
    the executed actions ``[N, D]`` float32 in the spec's bounds as numpy, and
    ``{"mean": [N, D], "std": [D]}`` (normalised units)."""
    if log_std is None:
        return act_discrete(out, deterministic, generator)
    u, action, std = act_gaussian(out, log_std, deterministic, spec.action_low, spec.action_high, generator)
    return u, action.cpu().numpy().astype(np.float32), {"mean": out.cpu().numpy(), "std": std.cpu().numpy()}


def cpu_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s weights as detached CPU tensors (what a policy file stores)."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def policy_payload(algo: str, env_spec: EnvSpec, actor: nn.Module, execution: str | None = None,
                   **fields: Any) -> dict[str, Any]:
    """An exported-policy dict (``torch.load(weights_only=True)`` reads it): ``format``, ``version``,
    ``algo``, ``execution`` where the kind writes one, ``spec`` (the env's), the kind's own ``fields``,
    then ``actor`` (``actor``'s weights), in that order."""
    head: dict[str, Any] = {"format": POLICY_FORMAT, "version": POLICY_VERSION, "algo": algo}
    if execution is not None:
        head["execution"] = execution
    return {**head, "spec": dataclasses.asdict(env_spec), **fields, "actor": cpu_state_dict(actor)}


def check_policy_payload(payload: Any, export: str, kind: str) -> None:
    """A one-line MablError unless ``payload`` is a policy dict of this mabl's format and version
    written by an algorithm whose registry entry exports ``export`` (``kind`` names it in the message)."""
    from mabl.algo.registry import ALGORITHMS  # (plain data: imports no learner)

    algos = [name for name, entry in ALGORITHMS.items() if entry.export == export]
    if not isinstance(payload, dict) or payload.get("format") != POLICY_FORMAT or payload.get("algo") not in algos:
        raise MablError(f"not a mabl {kind} policy (export one with `mabl export` from a --algo {'/'.join(algos)} run)")
    if payload.get("version") != POLICY_VERSION:
        raise MablError(f"policy format version {payload.get('version')}; this mabl reads {POLICY_VERSION}")
