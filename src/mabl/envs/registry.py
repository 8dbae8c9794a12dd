"""Env names to envs: ``make_env("smax:3s_vs_4z")``.

Names are ``<family>:<task>``:

- ``smax:<map>``: a SMAX map (:data:`mabl.envs.smax.SMAX_MAPS`), needs ``jaxmarl``;
- ``pettingzoo:<module.path>``: any module with a PettingZoo ``parallel_env``;
- ``flatland:<task>``: Flatland railway tasks (:data:`mabl.envs.flatland.FLATLAND_TASKS`), needs ``flatland-rl``;
- ``mamujoco:<scenario>-<agent_conf>``: multi-agent MuJoCo (``mamujoco:Humanoid-9|8``, or
  ``mamujoco:Humanoid-9+8``, which needs no quotes in a shell), needs ``gymnasium-robotics``;
- ``smac:<map>``: StarCraft II SMAC (oxwhirl's ``smac`` and the game; not installable here);
- aliases (:data:`ALIASES`), e.g. ``mpe:simple_spread`` for ``pettingzoo:mpe2.simple_spread_v3``.

Adapters, and the packages behind them, are imported only when an env of theirs is made.
"""

from __future__ import annotations

from typing import Any

from mabl.envs.base import MultiAgentEnv
from mabl.envs.checks import CheckedEnv
from mabl.errors import MablError

FAMILIES = ("smax", "pettingzoo", "mpe", "flatland", "mamujoco", "smac")

ALIASES: dict[str, str] = {"mpe:simple_spread": "pettingzoo:mpe2.simple_spread_v3"}
"""Short names for tasks of the open-ended families."""


FAMILY_REWARDS: dict[str, str] = {
    "smax": "SMAC's battle reward, at most 20 per episode (--smax.reward jaxmarl: SMAX's own, ~2)",
    "flatland": "MAMBA's shaped reward per train (+10 on arrival, progress, deadlock penalty), summed",
    "mamujoco": "the single-agent Gymnasium reward, shared",
    "smac": "SMAC's default battle reward, at most 20 per episode",
    "pettingzoo": "the mean of the acting agents' rewards",
}
"""The reward each family trains on, as ``mabl envs`` prints it (details: each adapter's docstring)."""


def list_envs() -> list[str]:
    """The named tasks (``pettingzoo:`` also takes any other module path)."""
    from mabl.envs.flatland import FLATLAND_TASKS
    from mabl.envs.mamujoco import MAMUJOCO_TASKS
    from mabl.envs.smac import SMAC_MAPS
    from mabl.envs.smax import SMAX_MAPS

    return ([f"smax:{map_name}" for map_name in SMAX_MAPS] + [f"flatland:{task}" for task in FLATLAND_TASKS]
            + [f"mamujoco:{task}" for task in MAMUJOCO_TASKS] + [f"smac:{map_name}" for map_name in SMAC_MAPS]
            + list(ALIASES))


def _checked_options(family: str, options: dict[str, Any], declared: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """``options`` when ``family`` declares each of them with an allowed value, else a one-line MablError."""
    if options and not declared:
        raise MablError(f"env family '{family}' takes no options (got {', '.join(sorted(options))})")
    unknown = sorted(set(options) - set(declared))
    if unknown:
        raise MablError(f"unknown {family} option(s) {', '.join(unknown)}: options are {', '.join(declared)}")
    for option, value in options.items():
        if value not in declared[option]:
            raise MablError(f"--{family}.{option}={value!r} is not allowed; choose one of {', '.join(declared[option])}")
    return options


def make_env(name: str, seed: int = 0, options: dict[str, Any] | None = None) -> MultiAgentEnv:
    """Build the env called ``name``, seeded with ``seed``, wrapped in a :class:`CheckedEnv`.

    ``options`` are the family's adapter readings, as the family declares them (``smax``:
    :data:`~mabl.envs.smax.SMAX_OPTIONS`; ``flatland``: :data:`~mabl.envs.flatland.FLATLAND_OPTIONS`;
    ``mamujoco``: :data:`~mabl.envs.mamujoco.MAMUJOCO_OPTIONS`; the other families take none);
    :func:`mabl.config.env_options` gives a run's. Left out, each takes the adapter's default.

    Raises:
        MablError: unknown family or task, an option the family does not have or a value it does
            not allow, or the package the env needs is not installed.
    """
    family, _, task = ALIASES.get(name, name).partition(":")
    options = dict(options or {})
    if family == "smax" and task:
        from mabl.envs.smax import SMAX_OPTIONS, SmaxEnv

        env: MultiAgentEnv = SmaxEnv(task, seed=seed, **_checked_options(family, options, SMAX_OPTIONS))
    elif family == "pettingzoo" and task:
        from mabl.envs.pettingzoo import PettingZooEnv

        env = PettingZooEnv(task, seed=seed, **_checked_options(family, options, {}))
    elif family == "flatland" and task:
        from mabl.envs.flatland import FLATLAND_OPTIONS, FlatlandEnv

        env = FlatlandEnv(task, seed=seed, **_checked_options(family, options, FLATLAND_OPTIONS))
    elif family == "mamujoco" and task:
        from mabl.envs.mamujoco import MAMUJOCO_OPTIONS, make_mamujoco

        # '+' is accepted for the '|' of a joint split, which a shell would take as a pipe: Humanoid-9+8
        env = make_mamujoco(task.replace("+", "|"), seed=seed, **_checked_options(family, options, MAMUJOCO_OPTIONS))
    elif family == "smac" and task:
        from mabl.envs.smac import SmacEnv

        env = SmacEnv(task, seed=seed, **_checked_options(family, options, {}))
    elif family == "mpe":
        raise MablError(
            f"unknown MPE task '{name}': known are {', '.join(ALIASES)}; any other MPE task is "
            "pettingzoo:mpe2.<module>, e.g. pettingzoo:mpe2.simple_tag_v3"
        )
    else:
        raise MablError(
            f"unknown env '{name}': families are {', '.join(FAMILIES)}; "
            "examples: smax:3s_vs_4z, flatland:5_agents, mamujoco:Humanoid-9+8, mpe:simple_spread, "
            "pettingzoo:mpe2.simple_spread_v3"
        )
    return CheckedEnv(env)
