"""Flatland railway tasks (``flatland-rl`` 4.3) as :class:`~mabl.envs.base.MultiAgentEnv` s.

Trains (agents) travel from a station in one city to a station in another on a sparse rail
network, sharing single tracks. By default the adapter runs them as MAMBA's Flatland code did (the
code behind the paper's Flatland runs): MAMBA's 205-float tree observation, its 3 actions with
trains driven forward away from decision cells, and its deadlock rule; Flatland's standard tree
observation, its 5 actions on every step and a deadlock rule that lets rings move are named options
(:data:`FLATLAND_OPTIONS`). docs/ENVIRONMENTS.md (Flatland) documents every mapping.

Modules: :mod:`~mabl.envs.flatland.maps` (tasks, Flatland's generators and imports),
:mod:`~mabl.envs.flatland.rail` (rail tables, decision cells, deadlock rules),
:mod:`~mabl.envs.flatland.mamba_obs` and :mod:`~mabl.envs.flatland.standard_obs` (the two
observations), :mod:`~mabl.envs.flatland.env` (the adapter). Flatland itself is imported lazily,
when an env is made: this package imports without it (``list_envs()`` needs :data:`FLATLAND_TASKS`).
"""

from mabl.envs.flatland.env import FLATLAND_OPTIONS, FlatlandEnv
from mabl.envs.flatland.maps import FLATLAND_TASKS, episode_limit

__all__ = ["FLATLAND_OPTIONS", "FLATLAND_TASKS", "FlatlandEnv", "episode_limit"]
