"""The decentralized policy: what each agent runs at execution time, and its export format.

Per agent i only: observation encoder e_o, agent recurrent model, agent posterior and actor,
fed with agent i's own observation and own previous action. Agents are a batch axis of
row-wise networks, so agent i's output never depends on another agent's input (tested).

Exported file (``mabl export``): a ``torch.save`` dict loadable with ``weights_only=True``::

    {"format": "mabl-policy", "version": 1, "algo": str, "execution": "decentralized" | "centralized",
     "spec": {...}, "model": {...}, "policy_hidden": int, "encoder": state_dict, "actor": state_dict}

``--algo mamba`` (and ``mag``) mixes the agents' inputs in its recurrent model, so its policy is a
:class:`JointPolicy`: the same ``act(obs [N, O])`` call, but agent i's action depends on every
agent's observation; ``policy.spec.centralized`` is True. ``--algo mappo`` files hold an MLP actor
(:mod:`mabl.mlp_policy`), ``--algo qmix`` files its recurrent agent Q-network (:mod:`mabl.qmix_policy`).
Files without "algo" are MABL policies.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mabl.config import ModelConfig
from mabl.config_migration import ADDED_FIELDS
from mabl.envs.base import EnvSpec
from mabl.errors import MablError
from mabl.models.actor_critic import Actor
from mabl.models.world_model import AgentEncoder
from mabl.policy_contract import (  # noqa: F401  (re-exported: the policy API users import from here)
    POLICY_FORMAT,
    POLICY_VERSION,
    PolicySpec,
    act_from_output,
    check_act_inputs,
    check_actor_output,
    cpu_state_dict,
    policy_generator,
    policy_payload,
    policy_spec,
)


class DecentralizedPolicy:
    """``reset()`` at every episode start, then ``act(obs)`` each step; the carry lives inside."""

    centralized = False

    def __init__(self, encoder: AgentEncoder, actor: Actor, env_spec: EnvSpec, device: torch.device | str = "cpu",
                 seed: int | None = None):
        self.encoder, self.actor, self.env_spec = encoder, actor, env_spec
        if (encoder.mixer is not None) != self.centralized:
            raise TypeError(f"{type(self).__name__} cannot run an agent encoder "
                            f"{'with' if encoder.mixer is not None else 'without'} an agent mixer")
        self.device = torch.device(device)
        self.generator = policy_generator(seed, self.device)
        self.spec = policy_spec(env_spec, self.centralized)
        self.reset()

    def reset(self) -> None:
        n, dev = self.env_spec.n_agents, self.device
        self.h = torch.zeros(n, self.encoder.deter, device=dev)
        self.z = torch.zeros(n, self.encoder.latent_dim, device=dev)
        self.prev_action = torch.zeros(n, self.env_spec.action_size, device=dev)

    @torch.no_grad()
    def act(self, obs: np.ndarray, avail: np.ndarray | None = None, deterministic: bool = False
            ) -> tuple[np.ndarray, dict[str, Any]]:
        """One step for all agents.

        Discrete: ``obs [N, O]``, ``avail [N, A]`` or None -> ``actions [N]`` int64,
        ``{"probs": [N, A]}``. Continuous: ``actions [N, D]`` float32 within the spec's bounds,
        ``{"mean": [N, D], "std": [D]}`` of the Gaussian in normalised units (:mod:`mabl.actions`);
        ``deterministic`` acts with the (clipped) mean.
        """
        obs_t, avail_t = check_act_inputs(self.spec, obs, avail, self.device)
        self.h, self.z = self.encoder.step(self.h, self.z, self.prev_action, obs_t, deterministic, self.generator)
        out = check_actor_output(self.actor(self.z, self.h, avail_t))
        sample, actions, info = act_from_output(self.spec, out, self.actor.log_std, deterministic, self.generator)
        # what the world model saw in training (mabl.actions): clip(u, -1, 1), or the one-hot action
        self.prev_action = (sample.clamp(-1.0, 1.0) if self.actor.continuous
                            else F.one_hot(sample, self.spec.n_actions).float())
        return actions, info


class JointPolicy(DecentralizedPolicy):
    """Centralized execution (MAMBA): the same interface, but every agent's recurrent state reads
    every agent's input, so ``act`` must always get all agents' observations of the same step."""

    centralized = True


def latent_policy(encoder: AgentEncoder, actor: Actor, env_spec: EnvSpec, device: torch.device | str = "cpu",
                  seed: int | None = None) -> DecentralizedPolicy:
    """The acting object of a world-model learner: decentralized unless the encoder mixes agents."""
    kind = DecentralizedPolicy if encoder.mixer is None else JointPolicy
    return kind(encoder, actor, env_spec, device, seed)


def latent_policy_payload(encoder: AgentEncoder, actor: Actor, env_spec: EnvSpec, model_cfg: ModelConfig,
                          policy_hidden: int, algo: str = "mabl") -> dict[str, Any]:
    """The exported-policy dict of a world-model learner (module docstring)."""
    return policy_payload(algo, env_spec, actor, "decentralized" if encoder.mixer is None else "centralized",
                          model=dataclasses.asdict(model_cfg), policy_hidden=policy_hidden,
                          encoder=cpu_state_dict(encoder))


def save_policy(path: str, encoder: AgentEncoder, actor: Actor, env_spec: EnvSpec, model_cfg: ModelConfig,
                policy_hidden: int, algo: str = "mabl") -> None:
    """Write the exported policy atomically (temp file + rename)."""
    from mabl.checkpoint import atomic_torch_save

    atomic_torch_save(latent_policy_payload(encoder, actor, env_spec, model_cfg, policy_hidden, algo), path)


def load_policy(path: str, device: str = "cpu", seed: int | None = None) -> DecentralizedPolicy:
    """Load an exported policy file; needs no training code, no global state, no other agent."""
    from mabl.checkpoint import describe_nonfinite, nonfinite_tensors, safe_torch_load

    payload = safe_torch_load(path, what="policy file")
    if not isinstance(payload, dict) or payload.get("format") != POLICY_FORMAT:
        raise MablError(f"{path} is not a mabl policy file (export one with `mabl export`)")
    bad = nonfinite_tensors({k: payload.get(k) for k in ("encoder", "actor")})
    if bad:
        raise MablError(f"policy file {path} holds non-finite weights ({describe_nonfinite(bad)}); "
                        "export it again from a healthy checkpoint")
    if payload.get("version") != POLICY_VERSION:
        raise MablError(f"{path} has policy format version {payload.get('version')}; this mabl reads {POLICY_VERSION}")
    from mabl.algo.registry import algorithm  # (the registry is plain data: no learner is imported)

    kind = algorithm(payload.get("algo", "mabl")).export
    if kind == "mlp":
        from mabl.mlp_policy import mlp_policy_from_payload

        return mlp_policy_from_payload(payload, device=device, seed=seed)
    if kind == "qmix":
        from mabl.qmix_policy import qmix_policy_from_payload

        return qmix_policy_from_payload(payload, device=device, seed=seed)
    if kind == "gru":
        from mabl.gru_policy import gru_policy_from_payload

        return gru_policy_from_payload(payload, device=device, seed=seed)
    env_spec = EnvSpec(**payload["spec"])
    # a file written before a model field existed acts as it did then (config_migration.ADDED_FIELDS)
    earlier = {path.split(".", 1)[1]: value for path, value in ADDED_FIELDS.items() if path.startswith("model.")}
    model_cfg = ModelConfig(**{**earlier, **payload["model"]})
    if kind == "local_latent":  # one parameter set per agent (mabl.models.mag)
        from mabl.models.mag import LocalAgentEncoder

        encoder = LocalAgentEncoder(env_spec, model_cfg)
    else:
        encoder = AgentEncoder(env_spec, model_cfg, mixer=payload.get("execution") == "centralized")
    actor = Actor(encoder.latent_dim, model_cfg.n_classes, model_cfg.deter, payload["policy_hidden"],
                  env_spec.action_size, continuous=not env_spec.discrete)
    encoder.load_state_dict(payload["encoder"])
    actor.load_state_dict(payload["actor"])
    dev = torch.device(device)
    return latent_policy(encoder.to(dev).eval(), actor.to(dev).eval(), env_spec, dev, seed=seed)
