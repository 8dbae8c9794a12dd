"""Environments behind one contract (:mod:`mabl.envs.base`) and a registry of names.

Importing this package is cheap: adapters (and JAX, PettingZoo, ...) load when an env is made.
"""

from mabl.envs.base import EnvSpec, MultiAgentEnv, TimeStep
from mabl.envs.registry import list_envs, make_env

__all__ = ["EnvSpec", "MultiAgentEnv", "TimeStep", "list_envs", "make_env"]
