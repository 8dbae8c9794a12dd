"""Any PettingZoo ``ParallelEnv`` as a :class:`~mabl.envs.base.MultiAgentEnv`.

``env_id`` is a module path whose module has ``parallel_env(**kwargs)`` (``mpe2.simple_spread_v3``,
``pettingzoo.sisl.multiwalker_v9``, ...). PettingZoo's MPE moved to ``mpe2``: a
``pettingzoo.mpe.<name>`` path that no longer imports is served from ``mpe2.<name>``.

How PettingZoo's per-agent dicts become the contract's arrays:

- agents: ``env.possible_agents`` in that order, fixed for the whole run. An agent that leaves
  ``env.agents`` mid-episode stays in the arrays with a zero observation; when the task has action
  masks, only its action 0 is marked available (it is ignored: no action is sent for it).
- observations: flattened to float32. Agents whose observations differ in size are zero-padded at
  the end to the largest size ``O``. Observations that are dicts ``{"observation",
  "action_mask"}`` give the masks (``has_action_mask``); otherwise ``avail`` is ``None``.
- global state: ``env.state()`` when the env implements it, else every agent's (padded) observation
  concatenated (``G = N * O``).
- actions: all ``Discrete`` -> discrete with ``n_actions`` the largest ``n``; an agent with fewer
  actions gets its missing actions masked out (so sizes that differ turn masks on). All ``Box`` ->
  continuous with ``action_dim`` the largest flat size; an agent uses the first entries of its row,
  clipped to its own bounds; the spec's bounds are the lowest low and the highest high.
- competitive tasks (agents named ``adversary_*`` or ``eve_*`` beside others: MPE's simple_tag,
  simple_push, simple_adversary, simple_world_comm, simple_crypto) are refused with one line.
- reward: the mean of the rewards of the agents that acted this step. For ``simple_spread`` every
  agent gets the shared coverage reward plus its own collision penalty, so the mean is the shared
  term plus the mean collision term (the sum would only scale it by ``N``).
- ``terminated``: every agent has terminated; ``truncated``: any agent was truncated (PettingZoo's
  time limit) or the adapter's own limit was reached, and never both (termination wins).
- ``episode_limit``: the env's ``max_cycles`` (MPE: 25 by default), or the ``episode_limit``
  argument, the smaller when both are known; the adapter truncates there itself.

Other families that are PettingZoo envs underneath (``mamujoco:``) build their ``ParallelEnv``
themselves and wrap it with :meth:`PettingZooEnv.from_parallel_env`, under their own name.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np

from mabl.envs.base import EnvSpec, TimeStep
from mabl.errors import MablError


def _import_env_module(env_id: str) -> ModuleType:
    """Import the module named by ``env_id``, turning import failures into one-line MablErrors."""
    try:
        module = importlib.import_module(env_id)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        top = env_id.split(".")[0]
        if missing == top:
            # mabl's "pettingzoo" extra brings PettingZoo and MPE2; other suites are the user's to install
            install = "'mabl[pettingzoo]'" if top in ("pettingzoo", "mpe2") else top
            raise MablError(f"pettingzoo:{env_id} needs the '{top}' package: pip install {install}") from None
        if env_id == missing or env_id.startswith(missing + "."):
            raise MablError(
                f"unknown PettingZoo module '{env_id}': give the module path of a ParallelEnv, e.g. mpe2.simple_spread_v3"
            ) from None
        raise MablError(f"cannot import '{env_id}': {exc}") from None
    except ImportError as exc:
        if env_id.startswith("pettingzoo.mpe."):
            return _import_env_module("mpe2." + env_id.removeprefix("pettingzoo.mpe."))
        raise MablError(f"cannot import '{env_id}': {exc}") from None
    if not callable(getattr(module, "parallel_env", None)):
        raise MablError(f"module '{env_id}' has no parallel_env(): it is not a PettingZoo task module")
    return module


def _flat_size(space: Any) -> int:
    return int(np.prod(space.shape))


class PettingZooEnv:
    """A PettingZoo ``ParallelEnv`` behind the :class:`~mabl.envs.base.MultiAgentEnv` contract.

    Args:
        env_id: module path with a ``parallel_env`` function, e.g. ``"mpe2.simple_spread_v3"``.
        seed: seed of the first :meth:`reset` without a seed; later unseeded resets continue the
            env's own generator, so a run is reproducible from this one number.
        episode_limit: time limit for envs without ``max_cycles`` (or a shorter one than theirs).
        **kwargs: passed to ``parallel_env``. For MPE modules ``continuous_actions`` defaults to
            False (discrete actions).
    """

    def __init__(self, env_id: str, seed: int = 0, *, episode_limit: int | None = None, **kwargs: Any) -> None:
        try:
            import gymnasium  # noqa: F401  (PettingZoo's own dependency: missing means no PettingZoo)
        except ImportError:
            raise MablError("pettingzoo envs need pettingzoo: pip install 'mabl[pettingzoo]'") from None

        module = _import_env_module(env_id)
        if module.__name__.startswith("mpe2."):
            kwargs.setdefault("continuous_actions", False)
        self._setup(module.parallel_env(**kwargs), f"pettingzoo:{env_id}", seed, episode_limit)

    @classmethod
    def from_parallel_env(
        cls, parallel_env: Any, *, name: str, seed: int = 0, episode_limit: int | None = None
    ) -> PettingZooEnv:
        """Wrap an already-built ``ParallelEnv`` (mappings as in the module docstring).

        Args:
            parallel_env: the PettingZoo ``ParallelEnv``; the adapter owns it from now on (closes it).
            name: the spec's name, e.g. ``"mamujoco:Humanoid-9|8"``.
            seed: as for the constructor.
            episode_limit: as for the constructor (required when the env has no ``max_cycles``).
        """
        env = cls.__new__(cls)
        env._setup(parallel_env, name, seed, episode_limit)
        return env

    def _setup(self, parallel_env: Any, name: str, seed: int, episode_limit: int | None) -> None:
        """Read the spaces of ``parallel_env``, reset it once with ``seed`` and build the spec."""
        from gymnasium import spaces

        self._env = parallel_env
        self._agents: list[str] = list(self._env.possible_agents)
        n_agents = len(self._agents)
        # MPE's competitive tasks name one side adversary_* (simple_tag, simple_push, simple_adversary,
        # simple_world_comm) or eve_* (simple_crypto): mabl trains one team on the mean reward, so it refuses them
        rivals = [a for a in self._agents if "adversary" in a or a.startswith("eve_")]
        if 0 < len(rivals) < n_agents:
            self._env.close()
            raise MablError(f"{name} is competitive ({', '.join(rivals)} against "
                            f"{', '.join(a for a in self._agents if a not in rivals)}): mabl trains one cooperative "
                            "team on the mean of all agents' rewards; use a cooperative task, e.g. mpe:simple_spread")

        obs_spaces = [self._env.observation_space(agent) for agent in self._agents]
        self._env_masks = all(isinstance(space, spaces.Dict) and "action_mask" in space.spaces for space in obs_spaces)
        if self._env_masks:
            obs_spaces = [space["observation"] for space in obs_spaces]
        if not all(isinstance(space, spaces.Box) for space in obs_spaces):
            raise MablError(
                f"env {name}: observations must be Box spaces (or dicts of observation and action_mask), got {obs_spaces[0]}"
            )
        obs_dim = max(_flat_size(space) for space in obs_spaces)

        action_spaces = [self._env.action_space(agent) for agent in self._agents]
        if all(isinstance(space, spaces.Discrete) for space in action_spaces):
            self._discrete = True
            self._action_starts = [int(space.start) for space in action_spaces]
            sizes = [int(space.n) for space in action_spaces]
            n_actions, action_dim = max(sizes), 0
            # Padding rows: each agent's own actions True, the padded ones False.
            self._action_pad = np.arange(n_actions)[None, :] < np.array(sizes)[:, None]
            low, high = -1.0, 1.0  # unused for discrete actions; the spec's defaults
        elif all(isinstance(space, spaces.Box) for space in action_spaces):
            self._discrete = False
            self._action_boxes = [
                (space.low.ravel(), space.high.ravel(), space.shape, space.dtype) for space in action_spaces
            ]
            n_actions, action_dim = 0, max(_flat_size(space) for space in action_spaces)
            low = float(min(box[0].min() for box in self._action_boxes))
            high = float(max(box[1].max() for box in self._action_boxes))
        else:
            raise MablError(
                f"env {name}: action spaces must be all Discrete or all Box, got "
                f"{sorted({type(space).__name__ for space in action_spaces})}"
            )
        has_action_mask = self._discrete and (self._env_masks or not self._action_pad.all())

        max_cycles = getattr(self._env.unwrapped, "max_cycles", None)
        limits = [limit for limit in (episode_limit, max_cycles) if limit]
        if not limits:
            raise MablError(f"env {name} has no max_cycles: pass episode_limit=<steps>")
        self._limit = int(min(limits))

        # One seeded reset tells whether env.state() works and how long the state is.
        self._pending_seed: int | None = seed
        self._env.reset(seed=seed)
        try:
            state_dim = int(np.asarray(self._env.state()).size)
            self._env_state = True
        except (NotImplementedError, AttributeError):
            state_dim = n_agents * obs_dim
            self._env_state = False

        self.spec = EnvSpec(
            name=name,
            n_agents=n_agents,
            obs_dim=obs_dim,
            state_dim=state_dim,
            discrete=self._discrete,
            n_actions=n_actions,
            action_dim=action_dim,
            action_low=low,
            action_high=high,
            has_action_mask=has_action_mask,
            episode_limit=self._limit,
        )
        self._t = 0
        self._agent_terminated = np.zeros(n_agents, dtype=bool)

    def reset(self, seed: int | None = None) -> TimeStep:
        """Start an episode (the constructor's seed applies to the first unseeded reset)."""
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        else:
            self._pending_seed = None
        obs, _ = self._env.reset(seed=seed)
        self._t = 0
        self._agent_terminated[:] = False
        return self._timestep(obs, reward=0.0, terminated=False, truncated=False)

    def step(self, actions: np.ndarray) -> TimeStep:
        """Advance one step: ``actions`` ``[N]`` ints (discrete) or ``[N, action_dim]`` floats."""
        live = set(self._env.agents)
        action_dict = {agent: self._env_action(i, actions[i]) for i, agent in enumerate(self._agents) if agent in live}
        obs, rewards, terminations, truncations, _ = self._env.step(action_dict)
        self._t += 1
        for i, agent in enumerate(self._agents):
            self._agent_terminated[i] |= bool(terminations.get(agent, False))
        terminated = bool(self._agent_terminated.all())
        truncated = not terminated and (
            any(truncations.values())
            or self._t >= self._limit
            # the env let every agent go without saying why: the episode is over all the same
            or not self._env.agents
        )
        values = [float(value) for value in rewards.values()]
        reward = sum(values) / len(values) if values else 0.0
        return self._timestep(obs, reward, terminated, truncated)

    def _env_action(self, i: int, action: Any) -> Any:
        if self._discrete:
            return int(action) + self._action_starts[i]
        low, high, shape, dtype = self._action_boxes[i]
        flat = np.asarray(action, dtype=np.float64)[: low.size]
        return np.clip(flat, low, high).astype(dtype).reshape(shape)

    def _timestep(self, obs: dict[str, Any], reward: float, terminated: bool, truncated: bool) -> TimeStep:
        spec = self.spec
        obs_arr = np.zeros((spec.n_agents, spec.obs_dim), dtype=np.float32)
        avail = self._action_pad.copy() if spec.has_action_mask else None
        for i, agent in enumerate(self._agents):
            agent_obs = obs.get(agent)
            if agent_obs is None:  # gone from the episode: zero observation, only action 0
                if avail is not None:
                    avail[i] = False
                    avail[i, 0] = True
                continue
            if self._env_masks:
                mask = np.asarray(agent_obs["action_mask"], dtype=bool).ravel()
                avail[i, : mask.size] &= mask
                agent_obs = agent_obs["observation"]
            flat = np.asarray(agent_obs, dtype=np.float32).ravel()
            obs_arr[i, : flat.size] = flat
        if self._env_state:
            state = np.asarray(self._env.state(), dtype=np.float32).ravel()
        else:
            state = obs_arr.flatten()  # a copy: the state must not alias obs
        return TimeStep(
            obs=obs_arr,
            state=state,
            avail=avail,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            info={},
        )

    def close(self) -> None:
        """Close the PettingZoo env."""
        self._env.close()
