"""Config defaults that belong to a task family, not to a preset.

The released (MAMBA-derived) code runs Flatland differently from SMAC in ways that shape learning
(SPEC §8): each train learns its own reward, an arrived train is absorbed while the others go on,
no action-mask head, no advantage normalisation, and the lambda-returns read a copy of the critic.
Those readings are config fields like any other; this table makes them Flatland's defaults.
:func:`mabl.presets.build_config` applies it after the preset and before the user's flags, so a
flag still wins, and the resolved values are written into the run's ``config.json``. The algorithm
never looks at an env's name: it reads the config and the :class:`~mabl.envs.base.EnvSpec`.
"""

from __future__ import annotations

from typing import Any

TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "flatland": {
        "model.reward_target": "per_agent",
        "model.done_target": "per_agent",
        "model.avail_head": False,
        "policy.normalize_advantages": False,
        "policy.target_critic": 1,
    },
}
"""Family (the part of an env name before ':') -> dotted config field -> default for its tasks."""


def task_defaults(env: str) -> dict[str, Any]:
    """The config defaults of task ``env`` (e.g. ``flatland:5_agents``); empty for most families."""
    from mabl.envs.registry import ALIASES

    family = ALIASES.get(env, env).partition(":")[0]
    return dict(TASK_DEFAULTS.get(family, {}))
