"""The learners behind ``--algo``, found through :mod:`mabl.algo.registry`.

World-model algorithms share :class:`mabl.algo.agent.MablAgent` (the variant picks the world
model's parts, :data:`mabl.models.world_model.VARIANTS`; ``mag`` extends it in :mod:`mabl.algo.mag`);
``mappo``, ``ippo`` and ``rmappo`` are model-free (:mod:`mabl.algo.mappo`, :mod:`mabl.algo.ippo`,
:mod:`mabl.algo.rmappo`). What a learner provides: :mod:`mabl.algo.contract`. Importing this package loads no network code.
"""

from __future__ import annotations

from mabl.algo.loading import LoadedLearner, load_learner
from mabl.algo.registry import ALGORITHMS, Algorithm, algorithm, check_config

ALGOS = tuple(ALGORITHMS)
MODEL_BASED = tuple(name for name, entry in ALGORITHMS.items() if entry.world_model)
"""The world-model algorithms (registry entries with ``world_model``)."""
MODEL_FREE = tuple(name for name, entry in ALGORITHMS.items() if not entry.world_model)

__all__ = ["ALGORITHMS", "ALGOS", "MODEL_BASED", "MODEL_FREE", "Algorithm", "LoadedLearner", "algorithm",
           "build_learner", "check_config", "load_learner"]


def build_learner(spec, cfg, device):
    """The learner object of ``cfg.algo`` for an env of ``spec`` on ``device``."""
    return algorithm(cfg.algo).build(spec, cfg, device)
