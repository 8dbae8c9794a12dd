"""StarCraft II SMAC (oxwhirl's ``smac``) as a :class:`~mabl.envs.base.MultiAgentEnv`.

``smac:<map>`` plays a SMAC map through oxwhirl's ``StarCraft2Env`` with the paper's settings: the
built-in AI at difficulty ``"7"`` (VeryHard), ``continuing_episode=True`` (as the MAMBA code base
that MABL builds on sets it: SMAC then flags time-limit ends, below; it changes nothing else), SMAC's
defaults otherwise (its shaped reward scaled to at most 20 per episode, per-map episode limits,
``step_mul`` 8). The paper's five maps are :data:`SMAC_MAPS`; any other map of SMAC's registry
(``3m``, ``MMM2``, ...) passes through to ``smac``.

Needs, besides ``mabl``: oxwhirl's ``smac`` from GitHub
(``pip install git+https://github.com/oxwhirl/smac.git``; PyPI's ``smac`` is an unrelated AutoML
package), its ``pysc2`` (4.0 does not import on Python 3.11+, whose ``random.shuffle`` lost an argument
pysc2 uses: use Python 3.10 or lower for SMAC; and its ``s2clientprotocol`` needs ``protobuf<=3.20.3``), and
the StarCraft II game for Linux with the SMAC maps (``SMAC_Maps`` in ``$SC2PATH/Maps``), found at
``$SC2PATH`` or, without it, at pysc2's default (``~/StarCraftII`` on Linux). **The paper's numbers
assume StarCraft II 4.10 (SC2.4.10)**; SMAC's results are known to differ between game versions, so
compare only runs on the same version. Each of these is checked up front, and a missing one stops
with one line saying how to install everything. The imports are lazy: ``mabl`` never needs
``smac`` otherwise.

How ``StarCraft2Env`` maps to the contract:

- agents: SMAC's allied units in SMAC's order (``N = n_agents``); dead units stay in, with a zero
  observation and only the no-op available (SMAC's own convention).
- ``obs``: ``env.get_obs()`` ``[N, O]``; ``state``: ``env.get_state()`` ``[G]`` (both float32);
  ``avail``: ``env.get_avail_actions()`` as bool ``[N, A]`` (``has_action_mask``); sizes from
  ``env.get_env_info()`` (3s_vs_4z: O=42, G=61, A=10).
- actions: ``[N]`` ints in SMAC's numbering (0 no-op, 1 stop, 2-5 move north/south/east/west,
  ``6 + j`` attack enemy ``j``).
- reward: the team reward ``env.step(actions)`` returns, unchanged.
- episode end: SMAC returns ``terminated=True`` for both a battle's end and the time limit; with
  ``continuing_episode`` it adds ``info["episode_limit"] = True`` to the latter. A time-limit end is
  ``truncated`` here (not ``terminated``), a battle's end (win, loss, both teams dead) ``terminated``;
  a battle that ends on the last allowed step counts as terminated, as SMAC checks it first.
  ``episode_limit`` is the map's limit from ``get_env_info()``.
- win: ``info["win"] = info["battle_won"]`` on the final step (``has_win``); a time-limit end is
  never a win. When the game connection breaks, SMAC restarts the game and ends the episode with an
  empty info: that is a terminated, lost episode here.

Seeding: SMAC seeds StarCraft II once, when the game starts (``StarCraft2Env(seed=...)``, used at the
first reset to create the game); later episodes replay the map in the same running game, and there is
no way to reseed it per episode short of restarting StarCraft II (tens of seconds each). So the
constructor's ``seed`` seeds the game, and the ``seed`` of :meth:`SmacEnv.reset` is **ignored**: a
run is reproducible as far as StarCraft II itself is, from the constructor's seed, not per episode.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mabl.envs.base import EnvSpec, TimeStep
from mabl.errors import MablError

SMAC_MAPS: dict[str, dict[str, Any]] = {
    "2s_vs_1sc": {"class": "Easy", "n_agents": 2, "episode_limit": 300, "paper_steps": 100_000},
    "3s_vs_4z": {"class": "Easy", "n_agents": 3, "episode_limit": 200, "paper_steps": 100_000},
    "3s_vs_5z": {"class": "Hard", "n_agents": 3, "episode_limit": 250, "paper_steps": 200_000},
    "corridor": {"class": "Super Hard", "n_agents": 6, "episode_limit": 400, "paper_steps": 450_000},
    "3s5z_vs_3s6z": {"class": "Super Hard", "n_agents": 8, "episode_limit": 170, "paper_steps": 450_000},
}
"""The paper's SMAC maps -> notes: SMAC's difficulty class, agents, SMAC's episode limit, and the
paper's env-step budget (Table 1). Other SMAC map names also work."""

DIFFICULTY = "7"
"""The built-in AI's level, as in the paper (SMAC's default too)."""

INSTALL = (
    "on Python <= 3.10, install oxwhirl's smac (pip install git+https://github.com/oxwhirl/smac.git, not PyPI's "
    "unrelated 'smac'; with 'protobuf<=3.20.3' for pysc2) and StarCraft II 4.10 (Blizzard's Linux SC2.4.10.zip) "
    "with the SMAC maps (SMAC_Maps.zip unzipped into $SC2PATH/Maps), and set SC2PATH to the game directory; "
    "see docs/ENVIRONMENTS.md"
)
"""How to get everything SMAC needs (the tail of every "cannot run SMAC" error)."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _import_starcraft2env() -> Any:
    """``smac.env.StarCraft2Env``, or a one-line MablError naming what is missing."""
    try:
        importlib.import_module("smac")
    except ModuleNotFoundError as exc:
        if exc.name == "smac":
            raise MablError(f"smac envs need oxwhirl's smac, which is not installed: {INSTALL}") from None
        raise MablError(f"cannot import smac ({_one_line(exc)}): {INSTALL}") from None
    except Exception as exc:  # a broken or foreign package: report it, whatever it raised
        raise MablError(f"cannot import smac ({type(exc).__name__}: {_one_line(exc)}): {INSTALL}") from None
    try:
        env_module = importlib.import_module("smac.env")
    except ModuleNotFoundError as exc:
        if exc.name == "smac.env":
            raise MablError(
                f"the installed 'smac' has no smac.env: it is PyPI's unrelated AutoML package, not oxwhirl's SMAC; "
                f"pip uninstall smac, then {INSTALL}"
            ) from None
        raise MablError(f"oxwhirl's smac cannot be imported: module '{exc.name}' is missing; {INSTALL}") from None
    except Exception as exc:  # pysc2 4.0 fails while importing on Python 3.11+, or with protobuf > 3.20
        why = f"{type(exc).__name__}: {_one_line(exc)}"
        if sys.version_info >= (3, 11):
            hint = f"pysc2 4.0 does not import on Python {sys.version_info[0]}.{sys.version_info[1]}, use Python <= 3.10"
        elif "Descriptors cannot be created directly" in why:
            hint = "pysc2's s2clientprotocol needs pip install 'protobuf<=3.20.3'"
        else:
            hint = "see the error"
        raise MablError(f"oxwhirl's smac cannot be imported, pysc2 failed ({why[:300]}); {hint}; {INSTALL}") from None
    starcraft2env = getattr(env_module, "StarCraft2Env", None)
    if starcraft2env is None:
        raise MablError(f"the installed 'smac' has no smac.env.StarCraft2Env: it is not oxwhirl's SMAC; {INSTALL}")
    return starcraft2env


def sc2_path() -> Path:
    """Where pysc2 looks for StarCraft II: ``$SC2PATH``, else its per-platform default."""
    if os.environ.get("SC2PATH"):
        return Path(os.environ["SC2PATH"]).expanduser()
    if sys.platform == "win32":
        return Path("C:/Program Files (x86)/StarCraft II")
    if sys.platform == "darwin":
        return Path("/Applications/StarCraft II")
    return Path("~/StarCraftII").expanduser()


def _check_game(map_name: str) -> None:
    """StarCraft II and the map file must be where pysc2 will look for them."""
    game = sc2_path()
    where = f"SC2PATH={game}" if os.environ.get("SC2PATH") else f"{game} (SC2PATH is not set)"
    if not game.is_dir():
        raise MablError(f"smac:{map_name} needs StarCraft II, which is not at {where}: {INSTALL}")
    map_file = game / "Maps" / "SMAC_Maps" / f"{map_name}.SC2Map"
    if not map_file.is_file():
        raise MablError(f"smac:{map_name} needs the SMAC map file {map_file}, which is missing: {INSTALL}")


class SmacEnv:
    """One SMAC map against StarCraft II's built-in AI at difficulty 7.

    Args:
        map_name: a SMAC map, e.g. ``"3s_vs_4z"`` (:data:`SMAC_MAPS` are the paper's).
        seed: StarCraft II's random seed, used when the game starts (at the first reset); see the
            module docstring for why per-episode seeds cannot apply.
        **kwargs: further ``StarCraft2Env`` arguments (e.g. ``game_version="4.10"``), for experiments
            off the paper's settings.

    Raises:
        MablError: smac, pysc2 or the game is missing, or the map is unknown.
    """

    def __init__(self, map_name: str, seed: int = 0, **kwargs: Any) -> None:
        starcraft2env = _import_starcraft2env()
        kwargs.setdefault("difficulty", DIFFICULTY)
        kwargs.setdefault("continuing_episode", True)
        try:
            env = starcraft2env(map_name=map_name, seed=int(seed) % 2**32, **kwargs)
        except KeyError:
            raise MablError(
                f"unknown SMAC map '{map_name}': the paper's maps are {', '.join(SMAC_MAPS)}; "
                "others are the maps of smac's registry (smac/env/starcraft2/maps/smac_maps.py)"
            ) from None
        try:
            _check_game(map_name)
        except MablError:
            env.close()
            raise
        self._env = env
        info = env.get_env_info()
        self.spec = EnvSpec(
            name=f"smac:{map_name}",
            n_agents=int(info["n_agents"]),
            obs_dim=int(info["obs_shape"]),
            state_dim=int(info["state_shape"]),
            discrete=True,
            n_actions=int(info["n_actions"]),
            has_action_mask=True,
            episode_limit=int(info["episode_limit"]),
            has_win=True,
        )

    def reset(self, seed: int | None = None) -> TimeStep:
        """Start an episode (the first one starts StarCraft II); ``seed`` is ignored (module docstring)."""
        self._env.reset()
        return self._timestep(reward=0.0, terminated=False, truncated=False, info={})

    def step(self, actions: np.ndarray) -> TimeStep:
        """Advance one step with ``actions`` ``[N]`` (ints in ``[0, n_actions)``, available ones)."""
        reward, done, env_info = self._env.step([int(action) for action in np.asarray(actions).ravel()])
        env_info = env_info or {}
        truncated = bool(done) and bool(env_info.get("episode_limit", False))
        terminated = bool(done) and not truncated
        info: dict[str, Any] = {"win": bool(env_info.get("battle_won", False))} if done else {}
        return self._timestep(float(reward), terminated, truncated, info)

    def _timestep(self, reward: float, terminated: bool, truncated: bool, info: dict[str, Any]) -> TimeStep:
        spec = self.spec
        obs = np.asarray(self._env.get_obs(), dtype=np.float32).reshape(spec.n_agents, spec.obs_dim)
        state = np.asarray(self._env.get_state(), dtype=np.float32).reshape(spec.state_dim)
        avail = np.asarray(self._env.get_avail_actions(), dtype=bool).reshape(spec.n_agents, spec.n_actions)
        return TimeStep(obs=obs, state=state, avail=avail, reward=reward, terminated=terminated, truncated=truncated,
                        info=info)

    def close(self) -> None:
        """Close StarCraft II."""
        self._env.close()
