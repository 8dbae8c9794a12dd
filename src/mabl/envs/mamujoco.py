"""Multi-agent MuJoCo (MAMuJoCo) as a :class:`~mabl.envs.base.MultiAgentEnv`.

``mamujoco:<Scenario>-<agent_conf>`` builds gymnasium-robotics' ``mamujoco_v1.parallel_env(scenario,
agent_conf, agent_obsk=1)`` (a PettingZoo ``ParallelEnv``) and wraps it in
:class:`~mabl.envs.pettingzoo.PettingZooEnv`. The paper's tasks (:data:`MAMUJOCO_TASKS`) are the
2-agent humanoids ``Humanoid-9|8`` and ``HumanoidStandup-9|8``: agent 0 drives the 9 upper-body
joints (abdomen and arms), agent 1 the 8 leg joints. Any other scenario and joint split that
``mamujoco_v1`` knows works too (``mamujoco:Ant-2x4``, ``mamujoco:HalfCheetah-6x1``, ...).

How the task maps to the contract (sizes for both humanoids):

- observations: each agent's local view, ``agent_obsk=1`` (below): its own joints' ``qpos, qvel,
  cinert, cvel, qfrc_actuator, cfrc_ext``, the ``qpos`` of the joints one hop away, and the torso's
  global ``qpos, qvel``. 242 floats for agent 0, 170 for agent 1; agent 1's row is zero-padded at the
  end to ``O = 242``. Float64 in MuJoCo, float32 here.
- global state: ``env.state()``, the single-agent Gymnasium observation (``G = 348``), for the
  centralized parts of training only.
- actions: continuous. Both agents' actions live in ``[-0.4, 0.4]`` (the humanoid's torque limits);
  ``action_dim = 9``, the larger agent's; agent 1 uses the first 8 entries of its row and ignores
  the ninth. Actions are clipped to the bounds. No action masks.
- reward: MAMuJoCo hands every agent the same number, the single-agent Gymnasium reward of the
  step (``rewards[agent] = reward`` for all agents), so the adapter's mean over agents *is* that
  shared team reward, unscaled. An episode's return is its sum, logged like any other env's; there
  is no win flag.
- episode end: ``terminated`` when Gymnasium's humanoid falls (``Humanoid``: torso height outside
  ``[1.0, 2.0]``; ``HumanoidStandup`` never terminates), ``truncated`` at the time limit,
  ``episode_limit = 1000`` steps (Gymnasium's own ``TimeLimit``; a scenario with a shorter one,
  e.g. ``Reacher`` at 50, keeps its own).
- seeding: the constructor's seed applies to the first unseeded reset; ``reset(seed)`` reseeds
  Gymnasium's initial-state noise, so a seed and an action sequence give one exact episode.

``agent_obsk``, the number of joint hops an agent observes: 1 here, gymnasium-robotics' default and
the value of Schroeder de Witt et al.'s MAMuJoCo examples. The MABL paper does not state the value
it used, and published setups differ: FACMAC's ``Humanoid 9|8`` config uses 0, HAPPO's scripts 2
(Ant), HARL observes everything. With 1 each agent sees its own limbs fully and its neighbours'
positions, a partial view, as the paper's CTDE setting wants. ``make_mamujoco(task, agent_obsk=k)``
builds another ``k`` (0: 236 / 167 floats, 2: 244 / 174 for the humanoids).

The models are Gymnasium's MuJoCo **v5** ones (``Humanoid-v5``, ``HumanoidStandup-v5``, on the
``mujoco`` bindings from PyPI); the paper's era used the ``-v2`` models on ``mujoco-py``. What v5
changed: the single-agent observation (the state here) drops entries that were always 0 (the world
body's ``cinert, cvel, cfrc_ext`` and the free joint's ``qfrc_actuator``: 376 -> 348 floats);
``Humanoid``'s survival bonus is paid only while it is healthy (earlier versions paid it on every
step) and its contact cost is back (v4 had none); contact forces are real (``mujoco-py`` >= 2 gave
zeros). Returns are of the same kind (``Humanoid``: 5 per healthy step plus forward progress;
``HumanoidStandup``: height gain, tens of thousands per episode) but not equal numbers: compare
with the paper's table with that in mind.

gymnasium-robotics prints a notice about its Adroit hand tasks to stderr when it is imported; the
adapter drops exactly that notice (other output passes through).
"""

from __future__ import annotations

import io
import re
import sys
from typing import Any

import numpy as np

from mabl.envs.pettingzoo import PettingZooEnv
from mabl.errors import MablError

MAMUJOCO_TASKS: tuple[str, ...] = ("Humanoid-9|8", "HumanoidStandup-9|8")
"""The paper's MAMuJoCo tasks (2 agents each); other ``<Scenario>-<agent_conf>`` names also work."""

MAMUJOCO_OPTIONS: dict[str, tuple[str, ...]] = {"contact_forces": ("zero", "v5")}
"""The adapter's readings, default first: ``zero`` contact forces (the paper era's MuJoCo 2.0 / v2
models gave all-zero ``cfrc_ext``) or Gymnasium v5's real ones."""

AGENT_OBSK = 1
"""Joint hops each agent observes (see the module docstring for the choice)."""

EPISODE_LIMIT = 1000
"""MAMuJoCo's (and Gymnasium MuJoCo's) time limit in steps."""

_INSTALL = "pip install 'mabl[mamujoco]' (gymnasium-robotics and mujoco)"

# The notice gymnasium-robotics prints on import (farama_notifications), matched by its content.
_ADROIT_NOTICE = re.compile(r"Adroit\w*-v1.*reward functions were updated")


def _import_mamujoco() -> Any:
    """Import ``gymnasium_robotics.mamujoco_v1``, dropping only gymnasium-robotics' Adroit notice."""
    if "gymnasium_robotics" in sys.modules:
        try:
            from gymnasium_robotics import mamujoco_v1
        except ImportError as exc:
            raise MablError(f"mamujoco envs need gymnasium-robotics: {_INSTALL} ({_one_line(exc)})") from None
        return mamujoco_v1
    saved = sys.stderr
    captured = io.StringIO()
    sys.stderr = captured
    try:
        from gymnasium_robotics import mamujoco_v1
    except ImportError as exc:
        raise MablError(f"mamujoco envs need gymnasium-robotics: {_INSTALL} ({_one_line(exc)})") from None
    finally:
        sys.stderr = saved
        kept = [line for line in captured.getvalue().splitlines(keepends=True) if not _ADROIT_NOTICE.search(line)]
        if kept:
            saved.write("".join(kept))
    return mamujoco_v1


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _unknown_task(task: str, why: str) -> MablError:
    named = ", ".join(MAMUJOCO_TASKS)
    why = _one_line(why)  # one line, whatever the package said
    return MablError(
        f"unknown MAMuJoCo task '{task}' ({why}): named tasks are {named}; others are <Scenario>-<agent_conf> "
        "of gymnasium-robotics' mamujoco_v1, e.g. Ant-2x4, HalfCheetah-6x1"
    )


def make_mamujoco(task: str, seed: int = 0, *, agent_obsk: int = AGENT_OBSK,
                  contact_forces: str = "zero", render_mode: str | None = None) -> PettingZooEnv:
    """Build ``mamujoco:<task>``, e.g. ``make_mamujoco("Humanoid-9|8", seed=0)``.

    Args:
        task: ``<Scenario>-<agent_conf>``, a scenario and a joint split of ``mamujoco_v1``.
        seed: seed of the first unseeded reset (as for :class:`~mabl.envs.pettingzoo.PettingZooEnv`).
        agent_obsk: joint hops each agent observes (:data:`AGENT_OBSK` by default).
        contact_forces: ``zero`` (every ``cfrc_ext`` entry of the observations and the state reads 0,
            as under the paper era's models) or ``v5`` (Gymnasium v5's forces); :func:`contact_force_entries`.
        render_mode: passed to the Gymnasium env (``"rgb_array"`` for ``mabl eval --render``).

    Raises:
        MablError: a malformed or unknown task, or gymnasium-robotics / mujoco not installed.
    """
    if contact_forces not in MAMUJOCO_OPTIONS["contact_forces"]:
        raise MablError(f"--mamujoco.contact_forces={contact_forces!r} is not allowed; choose one of "
                        f"{', '.join(MAMUJOCO_OPTIONS['contact_forces'])}")
    scenario, _, agent_conf = task.partition("-")
    if not scenario or not agent_conf:
        raise _unknown_task(task, "expected <Scenario>-<agent_conf>")
    mamujoco_v1 = _import_mamujoco()
    from gymnasium.error import DependencyNotInstalled

    try:
        extra = {} if render_mode is None else {"render_mode": render_mode}
        parallel_env = mamujoco_v1.parallel_env(scenario, agent_conf, agent_obsk=agent_obsk, **extra)
    except DependencyNotInstalled as exc:
        raise MablError(f"mamujoco:{task} needs mujoco: {_INSTALL} ({_one_line(exc)})") from None
    except NotImplementedError:
        raise _unknown_task(task, f"no scenario '{scenario}'") from None
    except Exception as exc:  # mamujoco raises a bare Exception for an unknown joint split
        raise _unknown_task(task, str(exc) or type(exc).__name__) from None

    # Gymnasium's TimeLimit of the scenario (1000 for the humanoids), never above EPISODE_LIMIT.
    gym_spec = getattr(parallel_env.single_agent_env, "spec", None)
    own_limit = getattr(gym_spec, "max_episode_steps", None) or EPISODE_LIMIT
    limit = min(EPISODE_LIMIT, int(own_limit))
    try:
        if contact_forces == "zero":
            parallel_env = ZeroContactForces(parallel_env)
        return PettingZooEnv.from_parallel_env(parallel_env, name=f"mamujoco:{task}", seed=seed, episode_limit=limit)
    except BaseException:
        parallel_env.close()
        raise


def contact_force_entries(parallel_env: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Where the contact forces (``cfrc_ext``) are: per agent, bool over its observation, and bool
    over the state (the single-agent observation).

    The single-agent observation lays out ``qpos, qvel, cinert, cvel, qfrc_actuator, cfrc_ext`` in
    the sizes of its ``observation_structure``; gymnasium-robotics' ``observation_factorization``
    maps each entry of an agent's observation to its index there. A scenario without that structure
    (``CoupledHalfCheetah``, the many-segment ones) observes no contact forces: no entries.
    """
    single = parallel_env.single_agent_env.unwrapped
    size = int(parallel_env.single_agent_env.observation_space.shape[0])
    structure = getattr(single, "observation_structure", None)
    factorization = getattr(parallel_env, "observation_factorization", None)
    state = np.zeros(size, dtype=bool)
    agents = {agent: np.zeros(parallel_env.observation_space(agent).shape[0], dtype=bool)
              for agent in parallel_env.possible_agents}
    if not structure or not structure.get("cfrc_ext") or factorization is None:
        return agents, state
    start = sum(structure.get(key, 0) for key in ("qpos", "qvel", "cinert", "cvel", "qfrc_actuator"))
    state[start : start + structure["cfrc_ext"]] = True
    for agent, indices in factorization.items():
        agents[agent] = state[np.asarray(indices, dtype=np.int64)]
    return agents, state


class ZeroContactForces:
    """A ``mamujoco_v1`` parallel env whose observations and state read 0 at every contact force
    (:func:`contact_force_entries`), as the MuJoCo 2.0 / v2 models of the paper's era gave them.
    The physics and the reward (Humanoid's contact cost included) are v5's, unchanged."""

    def __init__(self, parallel_env: Any) -> None:
        self._env = parallel_env
        self._agent_masks, self._state_mask = contact_force_entries(parallel_env)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def _zeroed(self, observations: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for agent, obs in observations.items():
            obs = np.array(obs, copy=True)
            obs[self._agent_masks[agent]] = 0.0
            out[agent] = obs
        return out

    def reset(self, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        observations, infos = self._env.reset(*args, **kwargs)
        return self._zeroed(observations), infos

    def step(self, actions: dict[str, Any]) -> tuple:
        observations, *rest = self._env.step(actions)
        return (self._zeroed(observations), *rest)

    def state(self) -> np.ndarray:
        state = np.array(self._env.state(), copy=True)
        state[self._state_mask] = 0.0
        return state
