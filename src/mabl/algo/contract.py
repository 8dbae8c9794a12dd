"""What every learner provides, as :class:`typing.Protocol` classes (checked structurally, nothing
to inherit): the trainer, the CLI, ``mabl diagnose`` and the exporters use a learner only through
these methods and its :class:`mabl.algo.registry.Algorithm` entry.

``Learner``: the part shared by all. The update entry points depend on where a learner's data
comes from (the registry entry's ``world_model`` says which):

- :class:`WorldModelLearner` learns from windows the trainer samples from its replay: world-model
  updates, then policy iterations on imagined rollouts (the paper's Algorithm 1, lines 5-14).
- :class:`OnPolicyLearner` collects its own fresh episodes (``collect``), then makes one update.

Every update entry point returns its metrics as a dict of device tensors; the trainer reads all of
a learner call's metrics with one host sync (a ``skipped`` metric, or one ending in ``_skipped``,
counts updates the divergence guard skipped).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class Learner(Protocol):
    """Networks, optimizers and the steps that change them, for one run; built as
    ``Learner(spec: EnvSpec, cfg: RunConfig, device: torch.device)``. A learner class may add a
    static ``check_config(cfg)`` raising a one-line MablError for a config it cannot run
    (:func:`mabl.algo.registry.check_config`)."""

    guards: dict
    """Name -> :class:`mabl.algo.guard.UpdateGuard` of each learner (read by the trainer)."""

    def policy(self) -> Any:
        """The acting policy over the live networks (``reset()``, ``act(obs, avail, deterministic)``,
        ``spec``, ``generator``: the interface of :class:`mabl.policy.DecentralizedPolicy`)."""

    def params_finite(self) -> dict[str, torch.Tensor]:
        """Per network, a device bool: all its weights are finite."""

    def state_dict(self) -> dict:
        """Everything a resumed run needs (networks, optimizers, guards, learner counters)."""

    def load_state_dict(self, state: dict) -> None: ...

    def policy_payload(self, cfg) -> dict:
        """Export hook: the dict ``mabl export`` writes for the run of config ``cfg`` (plain data and
        CPU tensors, read back by :func:`mabl.policy.load_policy` through the registry entry's
        ``export`` kind, which also names the ONNX graph :mod:`mabl.onnx_export` writes)."""


@runtime_checkable
class WorldModelLearner(Learner, Protocol):
    """A learner with a world model (registry ``world_model=True``)."""

    def train_world_model(self, rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """One world-model update on replay windows ``[L, B, ...]``."""

    def after_world_model(self, sample: Callable[[], dict[str, np.ndarray]]) -> list[dict[str, torch.Tensor]]:
        """Extra steps after a learner call's world-model updates, on windows drawn with ``sample()``."""

    def train_policy(self, rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """One policy iteration from fresh replay windows; its metrics include ``imagined_rows``."""


@runtime_checkable
class OnPolicyLearner(Learner, Protocol):
    """A learner on its own fresh rollouts (registry ``world_model=False``)."""

    @staticmethod
    def n_envs(cfg) -> int:
        """How many envs the trainer builds for ``collect`` (env i seeded ``cfg.seed + i``)."""

    def collect(self, envs: list, next_seed: Callable[[], int]) -> tuple[list, Any]:
        """Whole episodes from ``envs`` (each reset with ``next_seed()``): ``(episodes, batch)``."""

    def update(self, batch: Any) -> dict[str, torch.Tensor]:
        """One update on ``batch``; its metrics include ``samples`` (rows consumed). Metrics holding only
        ``samples`` mean no step was made (an off-policy learner whose replay cannot fill a batch yet):
        the trainer then counts and logs no learner call."""
