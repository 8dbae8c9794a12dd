"""The env families' config sections (``--smax.*``, ``--flatland.*``, ``--mamujoco.*``): the options
each adapter takes (:func:`mabl.envs.make_env`'s ``options``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mabl.config.fields import option as _f


@dataclass(frozen=True)
class SmaxConfig:
    """``smax:`` tasks: SMAC's reading of SMAX (the released code trained on SMAC) or JaxMARL's
    (:mod:`mabl.envs.smax`, SPEC §8). Other env families ignore this section."""

    reward: str = _f(
        "smac",
        "'smac': SMAC's default battle reward (enemy damage + 10 per kill + 200 for a win, scaled so a won episode "
        "that kills every enemy sums to 20) [code: SMAC defaults]; 'jaxmarl': SMAX's own (damage share + 1 for a "
        "win, ~2 at most)",
        ("smac", "jaxmarl"),
    )
    state: str = _f(
        "smac",
        "global state: 'smac' = SMAC's get_state (normalised, every ally's last action) [code: SMAC defaults]; "
        "'jaxmarl' = SMAX's world_state (raw positions, no last actions)",
        ("smac", "jaxmarl"),
    )
    walls: str = _f(
        "stop",
        "the map's edge: 'stop' = a unit stops there (SC2) [code: SMAC]; 'lethal' = it dies there (SMAX's default)",
        ("stop", "lethal"),
    )


@dataclass(frozen=True)
class FlatlandConfig:
    """``flatland:`` tasks: MAMBA's Flatland code (behind the paper's Flatland runs) or the standard
    Flatland readings (:mod:`mabl.envs.flatland`, docs/ENVIRONMENTS.md). Other env families ignore this section."""

    obs: str = _f(
        "mamba",
        "'mamba': MAMBA's tree observation (depth 3, no predictor, 205 floats, its normalisation) [code: MAMBA's Flatland]; "
        "'standard': Flatland's tree (depth 2, 30-step shortest-path predictor, normalize_observation) + 11 extras, "
        "263 floats",
        ("mamba", "standard"),
    )
    actions: str = _f(
        "mamba",
        "'mamba': 3 actions (leftmost way, rightmost way, stop), trains driven forward away from decision cells "
        "(only action 0 available there) [code: MAMBA's Flatland]; 'all': Flatland's 5 actions, masked, chosen every step",
        ("mamba", "all"),
    )
    deadlock: str = _f(
        "mamba",
        "'mamba': MAMBA's DeadlockChecker (every cycle of blocked trains, rings of 3+ included) [code: MAMBA's Flatland]; "
        "'rings_move': rings of 3+ trains are not deadlocks (Flatland moves them on), a train whose start cell is "
        "held by a deadlocked one is",
        ("mamba", "rings_move"),
    )


@dataclass(frozen=True)
class MamujocoConfig:
    """``mamujoco:`` tasks (:mod:`mabl.envs.mamujoco`). Other env families ignore this section."""

    contact_forces: str = _f(
        "zero",
        "contact forces (cfrc_ext) in observations and state: 'zero' = all zero, as the MuJoCo 2.0 / v2 models of "
        "the paper's era gave them [paper: MuJoCo 2.0 era]; 'v5' = Gymnasium v5's real forces (up to ~2,500)",
        ("zero", "v5"),
    )


def env_family(env: str) -> str:
    """The family of a task name (``smax`` for ``smax:3m``), aliases resolved."""
    from mabl.envs.registry import ALIASES

    return ALIASES.get(env, env).partition(":")[0]


def env_options(cfg) -> dict[str, Any]:
    """The keyword options of ``cfg.env``'s adapter: its family's config section (e.g. ``smax``) as a
    dict, empty for a family without one. What :func:`mabl.envs.make_env` takes as ``options``."""
    section = getattr(cfg, env_family(cfg.env), None)
    return dataclasses.asdict(section) if dataclasses.is_dataclass(section) else {}
