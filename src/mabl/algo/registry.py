"""The algorithms of ``--algo``: name -> :class:`Algorithm`, what the rest of mabl may know of one.

Code outside :mod:`mabl.algo` asks an algorithm's entry (does it learn a world model, is its
exported policy centralized, how is its policy exported) and never compares algorithm names.
The learner class is named as ``"module:Class"`` and imported when a learner is built, so reading
the registry imports no network code. Adding an algorithm: its learner module (satisfying
:class:`mabl.algo.contract.WorldModelLearner` or :class:`mabl.algo.contract.OnPolicyLearner`) and
one line in :data:`ALGORITHMS` (docs/ALGORITHM.md, "Adding an algorithm").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from mabl.errors import MablError

EXPORT_KINDS = ("latent", "local_latent", "mlp", "gru", "qmix")
"""How a learner's acting policy is written by ``mabl export`` and read back by ``mabl.load_policy``:
``latent`` = observation encoder + agent recurrent model + posterior + actor (:mod:`mabl.policy`,
an ONNX graph of one agent's step in :mod:`mabl.onnx_export`); ``local_latent`` = the same with one
parameter set per agent (:class:`mabl.models.mag.LocalAgentEncoder`); ``mlp`` = the stateless MLP
actor of :mod:`mabl.algo.mappo`; ``gru`` = the recurrent actor of :mod:`mabl.algo.rmappo` (:mod:`mabl.gru_policy`);
``qmix`` = the recurrent agent Q-network of :mod:`mabl.qmix_policy`."""


@dataclass(frozen=True)
class Algorithm:
    """One ``--algo``: its learner and the facts other modules act on."""

    name: str
    learner: str
    """``"module:Class"`` of the learner, built as ``Class(spec, cfg, device)``."""
    world_model: bool
    """True: learns a world model from a replay (:class:`~mabl.algo.contract.WorldModelLearner`: the
    trainer samples windows for its world-model and policy steps, Alg. 1); False: learns on its own
    fresh rollouts (:class:`~mabl.algo.contract.OnPolicyLearner`: ``collect`` then ``update``)."""
    centralized_policy: bool
    """Its acting policy reads every agent's input (a :class:`mabl.policy.JointPolicy`): no per-agent
    ONNX graph, and every ``act`` needs all agents' observations of one step."""
    config_sections: tuple[str, ...]
    """The :class:`mabl.config.RunConfig` sections its learner reads."""
    export: str
    """How its policy is exported and read back: one of :data:`EXPORT_KINDS`."""

    def learner_class(self) -> type:
        module, name = self.learner.split(":")
        return getattr(importlib.import_module(module), name)

    def build(self, spec, cfg, device):
        """A fresh learner for an env of ``spec`` on ``device``."""
        return self.learner_class()(spec, cfg, device)


_WM = ("model", "policy", "schedule")
ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("mabl", "mabl.algo.agent:MablAgent", True, False, _WM, "latent"),
    Algorithm("mabl-sg", "mabl.algo.agent:MablAgent", True, False, _WM, "latent"),
    Algorithm("dreamer", "mabl.algo.agent:MablAgent", True, False, _WM, "latent"),
    Algorithm("mamba", "mabl.algo.agent:MablAgent", True, True, _WM, "latent"),
    Algorithm("mag", "mabl.algo.mag:MagAgent", True, True, (*_WM, "mag"), "local_latent"),
    Algorithm("mappo", "mabl.algo.mappo:Mappo", False, False, ("mappo",), "mlp"),
    Algorithm("ippo", "mabl.algo.ippo:Ippo", False, False, ("mappo",), "mlp"),
    Algorithm("rmappo", "mabl.algo.rmappo:Rmappo", False, False, ("mappo", "rmappo"), "gru"),
    Algorithm("qmix", "mabl.algo.qmix:Qmix", False, False, ("qmix",), "qmix"),
)}
"""Every algorithm of ``--algo``, in the order the CLI and reports list them."""


def algorithm(name: str) -> Algorithm:
    """The entry of ``name``; a one-line MablError naming the known ones when there is none."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise MablError(f"unknown algorithm '{name}'; available: {', '.join(ALGORITHMS)}") from None


def check_config(cfg) -> None:
    """The algorithm-specific checks of a run's config (a known ``--algo``, and its learner's own
    ``check_config`` where it has one), each a one-line MablError."""
    check = getattr(algorithm(cfg.algo).learner_class(), "check_config", None)
    if check is not None:
        check(cfg)
