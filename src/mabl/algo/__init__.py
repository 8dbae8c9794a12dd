"""The learners behind ``--algo``.

World-model algorithms share :class:`mabl.algo.agent.MablAgent` (the variant picks the world
model's parts, :data:`mabl.models.world_model.VARIANTS`; ``mag`` extends it in :mod:`mabl.algo.mag`);
``mappo`` is model-free
(:mod:`mabl.algo.model_free`).
"""

from __future__ import annotations

MODEL_BASED = ("mabl", "mabl-sg", "dreamer", "mamba", "mag")
MODEL_FREE = ("mappo",)
ALGOS = MODEL_BASED + MODEL_FREE


def build_learner(spec, cfg, device):
    """The learner object of ``cfg.algo`` for an env of ``spec`` on ``device``."""
    if cfg.algo in MODEL_FREE:
        from mabl.algo.model_free import ModelFreeMappo

        return ModelFreeMappo(spec, cfg, device)
    if cfg.algo == "mag":
        from mabl.algo.mag import MagAgent

        return MagAgent(spec, cfg, device)
    from mabl.algo.agent import MablAgent

    return MablAgent(spec, cfg, device)
