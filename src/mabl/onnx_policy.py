"""Run a policy exported with ``mabl export --format onnx`` using numpy and onnxruntime only.

This module imports neither torch nor any other part of mabl (tested), so it can be copied on
its own next to the ``.onnx`` file onto an agent's device::

    from mabl.onnx_policy import OnnxPolicy       # or: from onnx_policy import OnnxPolicy

    policy = OnnxPolicy("policy.onnx", seed=0)
    policy.reset()                                 # at every episode start
    actions, info = policy.act(obs, avail=None, deterministic=False)

``act`` takes ``obs [N, O]`` of the agents this process runs (N = the team size, or pass
``agents=[i]`` with ``obs [1, O]`` to run agent i alone: rows never mix, each row carries its own
recurrent state) and returns what :class:`mabl.policy.DecentralizedPolicy` returns: discrete
``actions [N]`` int64 and ``{"probs": [N, A]}``; continuous ``actions [N, D]`` float32 in the
action bounds and ``{"mean": [N, D], "std": [D]}`` (normalised units).

A ``qmix`` graph (recurrent, no latent) outputs ``probs`` = softmax of its masked Q-values: greedy
(``deterministic``) is their argmax, as the PyTorch policy's.

Random numbers (the latent z^a's uniform noise, the action draw, the Gaussian noise) come from
this object's own ``numpy.random.Generator``; ``deterministic=True`` uses none and takes the same
most-likely latent and action as the PyTorch policy's deterministic path. The graph's inputs,
outputs and metadata are documented in :mod:`mabl.onnx_export`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

FORMAT = "mabl-onnx-policy"
VERSION = 1


class OnnxPolicyError(ValueError):
    """A one-line error about the policy file or an ``act`` input."""


@dataclass(frozen=True)
class OnnxPolicySpec:
    """What a user of an exported policy needs to know: the fields of ``mabl.policy_contract.PolicySpec``
    (restated here, as this module imports no other part of mabl)."""

    n_agents: int
    obs_dim: int
    n_actions: int | None = None
    action_dim: int | None = None
    action_low: float | None = None
    """Continuous actions: the bounds every returned action lies in (None for discrete)."""
    action_high: float | None = None
    centralized: bool = False
    """Always False: only decentralized policies are exported to ONNX."""


class OnnxPolicy:
    """The recurrent state of each agent row lives inside; call :meth:`reset` at every episode start."""

    def __init__(self, path: str, seed: int | None = None, agents: list[int] | None = None,
                 providers: list[str] | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise OnnxPolicyError("OnnxPolicy needs onnxruntime: pip install onnxruntime") from None
        try:
            self.session = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for missing or foreign files
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise OnnxPolicyError(f"{path} is not a readable ONNX file: {first[:200]}") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get("mabl")
        if raw is None:
            raise OnnxPolicyError(f"{path} is not a mabl ONNX policy (export one with `mabl export --format onnx`)")
        self.meta: dict[str, Any] = json.loads(raw)
        if self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
            raise OnnxPolicyError(f"{path} has format {self.meta.get('format')} version {self.meta.get('version')}; "
                                  f"this runner reads {FORMAT} version {VERSION}")
        self._spec = self.meta["spec"]
        sizes = self._spec
        self.spec = (OnnxPolicySpec(sizes["n_agents"], sizes["obs_dim"], n_actions=sizes["n_actions"])
                     if sizes["discrete"] else
                     OnnxPolicySpec(sizes["n_agents"], sizes["obs_dim"], action_dim=sizes["action_dim"],
                                    action_low=sizes["action_low"], action_high=sizes["action_high"]))
        """The attributes of :class:`mabl.policy_contract.PolicySpec` (``load_policy(...).spec``), for the
        same exported run; an ONNX policy is always decentralized."""
        self.env_name = self._spec["name"]
        self.algo = self.meta["algo"]
        inputs = self.meta["inputs"]
        self.recurrent = "prev_action" in inputs  # a step that reads the previous action (world models, qmix)
        self.gru = "gru_hidden" in self.meta  # rmappo's GRU actor: its state h only
        self.agents = list(range(self._spec["n_agents"])) if agents is None else [int(i) for i in agents]
        if any(not 0 <= i < self._spec["n_agents"] for i in self.agents):
            raise OnnxPolicyError(f"agents {self.agents} must lie in [0, {self._spec['n_agents']})")
        self.rng = np.random.default_rng(seed)
        self.reset()

    @property
    def n_rows(self) -> int:
        return len(self.agents)

    def reset(self) -> None:
        """Zero every agent row's recurrent state and previous action (an episode's start)."""
        n, inputs = self.n_rows, self.meta["inputs"]
        if "h" in inputs:
            self.h = np.zeros((n, self.meta["gru_hidden"] if self.gru else self.meta["deter"]), np.float32)
        if "z" in inputs:
            self.z = np.zeros((n, self.meta["latent_dim"]), np.float32)
        if self.recurrent:
            action_size = self._spec["n_actions"] or self._spec["action_dim"]
            self.prev_action = np.zeros((n, action_size), np.float32)

    def _check(self, obs: Any, avail: Any) -> tuple[np.ndarray, np.ndarray | None]:
        obs = np.asarray(obs, np.float32)
        if obs.shape != (self.n_rows, self._spec["obs_dim"]):
            raise OnnxPolicyError(f"act: obs has shape {obs.shape}, expected ({self.n_rows}, {self._spec['obs_dim']})")
        if not np.isfinite(obs).all():
            rows = sorted({self.agents[int(i)] for i in np.argwhere(~np.isfinite(obs))[:, 0]})
            raise OnnxPolicyError(f"act: obs of agent(s) {rows} hold NaN or infinite values; observations must be finite")
        if avail is None:
            if self._spec["discrete"] and self._spec["has_action_mask"]:
                avail = np.ones((self.n_rows, self._spec["n_actions"]), np.float32)
            return obs, avail
        if not self._spec["discrete"]:
            raise OnnxPolicyError("act: avail given, but this policy has continuous actions (no action masks); pass None")
        avail = np.asarray(avail)
        if avail.shape != (self.n_rows, self._spec["n_actions"]):
            raise OnnxPolicyError(f"act: avail has shape {avail.shape}, expected ({self.n_rows}, {self._spec['n_actions']})")
        if not self._spec["has_action_mask"]:
            return obs, None  # the task has no masks: every action is available
        avail = avail.astype(bool)
        if not avail.any(-1).all():
            raise OnnxPolicyError("act: every agent needs at least one available action in avail")
        return obs, avail.astype(np.float32)

    def act(self, obs: Any, avail: Any = None, deterministic: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One step of the agent rows (module docstring)."""
        obs, avail = self._check(obs, avail)
        feed: dict[str, np.ndarray] = {"obs": obs}
        inputs = self.meta["inputs"]
        if "z" in inputs:  # a world-model policy's latent
            noise = self.rng.random((self.n_rows, self.meta["n_categoricals"]), dtype=np.float32)
            feed.update(z=self.z, noise=noise, deterministic=np.array([1.0 if deterministic else 0.0], np.float32))
        if self.recurrent:
            feed["prev_action"] = self.prev_action
        if "h" in inputs:  # a recurrent state (world models, qmix, rmappo)
            feed["h"] = self.h
        if "agent" in inputs:  # the one-hot agent index (mappo's and rmappo's actors, qmix's Q-network)
            feed["agent"] = np.eye(self._spec["n_agents"], dtype=np.float32)[self.agents]
        if avail is not None:
            feed["avail"] = avail
        out = dict(zip(self.meta["outputs"], self.session.run(self.meta["outputs"], feed)))
        if "h" in inputs:
            self.h = out["h_next"]
        if "z" in inputs:
            self.z = out["z_next"]
        if self._spec["discrete"]:
            probs = out["probs"]
            if deterministic:
                action = probs.argmax(-1)
            else:  # inverse CDF with this policy's generator; the CDF is normalised to end at exactly 1,
                # so that rounding never selects a masked action (probability 0) past the last available one
                cdf = np.cumsum(probs.astype(np.float64), -1)
                u = self.rng.random((self.n_rows, 1)) * cdf[:, -1:]
                action = (cdf <= u).sum(-1)
            if self.recurrent:
                self.prev_action = np.eye(self._spec["n_actions"], dtype=np.float32)[action]
            return action.astype(np.int64), {"probs": probs}
        mean, std = out["mean"], out["std"]
        u = mean if deterministic else mean + std * self.rng.standard_normal(mean.shape, dtype=np.float32)
        clipped = np.clip(u, -1.0, 1.0)
        if self.recurrent:
            self.prev_action = clipped.astype(np.float32)
        low, high = self._spec["action_low"], self._spec["action_high"]
        action = low + (clipped + 1.0) * (0.5 * (high - low))
        return action.astype(np.float32), {"mean": mean, "std": std}
