"""SMAX (JaxMARL's JAX re-implementation of SMAC) as a :class:`~mabl.envs.base.MultiAgentEnv`.

The learning team is SMAX's allied units, in SMAX's fixed order; the enemy is JaxMARL's scripted
heuristic (``HeuristicEnemySMAX``), as SMAC's built-in AI is. Dead allies stay in the arrays: SMAX
zeroes their observation and marks only the stop action available for them.

Three readings follow SMAC by default, each with JaxMARL's as the other choice (SPEC §8):

- ``reward="smac"``: SMAC's battle reward (enemy damage + 10 per kill + 200 for a win, scaled so a
  won episode that kills every enemy sums to 20; :mod:`mabl.envs.smac_terms`), the reward the
  released code trained on. ``"jaxmarl"``: SMAX's own (damage share + 1 for a win, ~2 at most).
- ``state="smac"``: SMAC's global state (normalised, every ally's last action; e.g. 3s_vs_4z:
  G=58, SMAC's 61 less the no-op column of each ally's last action, which SMAX lacks).
  ``"jaxmarl"``: SMAX's ``world_state`` (raw positions 0-32, no last actions; 3s_vs_4z: G=84).
- ``walls="stop"``: a unit that walks into the map's edge stops there, as in SC2. ``"lethal"``:
  SMAX's default, the edge kills it.

What still differs from SMAC (so numbers are not comparable one to one):

- the enemy: JaxMARL's heuristic, not SC2's built-in AI; the physics: SMAX's simplified movement,
  ranges and cooldowns; no shields (SMAX's health is SMAC's health + shield, see smac_terms).
- observations: SMAX's unit-list features (3s_vs_4z: O=88 against SMAC's 42).
- actions: ``0..3`` move, ``4`` stop, ``5 + j`` attack enemy ``j`` (A=9 on 3s_vs_4z against
  SMAC's 10: SMAX has no separate no-op).
- the win flag: SMAX reports none. A win is derived from the final state: every enemy dead and
  at least one ally alive (both teams wiped out on the same step is a draw, as in SMAC and as
  SMAX's own win bonus counts it). ``info["win"]`` is set on the final step only.

Episode limits are SMAC's per-map limits (``smac_maps.py``). The adapter truncates an episode after
exactly that many steps; it also passes the limit to SMAX as ``max_steps``, whose own limit ends an
episode one step later (JaxMARL 0.2 tests the step count from before the step), so SMAX never ends
one first. An episode that hits the limit is ``truncated``; one that ends by a team's elimination is
``terminated`` (elimination on the last allowed step counts as terminated, as SMAC checks the
battle before the time limit).

JAX is imported here only, lazily, and kept on the CPU without preallocating accelerator memory
(``JAX_PLATFORMS=cpu``, ``XLA_PYTHON_CLIENT_PREALLOCATE=false``, set with ``setdefault`` so a user
can override them): the torch learner owns the GPU. XLA runs single-threaded on the CPU (unless
``XLA_FLAGS`` already sets ``xla_cpu_multi_thread_eigen``): its thread pool otherwise competes with
torch's for the cores. Compiling a map takes seconds; JAX's own
persistent cache (``JAX_COMPILATION_CACHE_DIR``) makes later processes skip it.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mabl.envs import smac_terms
from mabl.envs.base import EnvSpec, TimeStep
from mabl.errors import MablError

SMAX_OPTIONS: dict[str, tuple[str, ...]] = {
    "reward": ("smac", "jaxmarl"),
    "state": ("smac", "jaxmarl"),
    "walls": ("stop", "lethal"),
}
"""The adapter's readings, default first: SMAC's (the released code's task) or JaxMARL's."""

SMAC_EPISODE_LIMITS: dict[str, int] = {
    "3m": 60,
    "2s3z": 120,
    "3s5z": 150,
    "5m_vs_6m": 70,
    "3s_vs_4z": 200,
    "3s_vs_5z": 250,
    "3s5z_vs_3s6z": 170,
}
"""SMAC's episode limit per map (``smac/env/starcraft2/maps/smac_maps.py``); the maps offered."""

SMAX_MAPS: tuple[str, ...] = tuple(SMAC_EPISODE_LIMITS)

# SMAX unit-type indices (its default ``unit_type_names``: marine, marauder, stalker, zealot, ...).
_STALKER = 2
_ZEALOT = 3


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence stdout for a block, and put ``sys.stdout`` / ``sys.stderr`` back afterwards.

    JaxMARL prints progress lines on import, and its MABrax module resets ``sys.stdout`` and
    ``sys.stderr`` to ``sys.__stdout__`` / ``sys.__stderr__`` while importing, which would undo a
    plain ``redirect_stdout`` and any capture a caller has set up. Pointing ``sys.__stdout__`` at
    the sink too keeps the lines out; restoring all three undoes the reset.
    """
    saved = sys.stdout, sys.stderr, sys.__stdout__
    sink = io.StringIO()
    sys.stdout = sys.__stdout__ = sink
    try:
        yield
    finally:
        sys.stdout, sys.stderr, sys.__stdout__ = saved


def _import_jaxmarl() -> Any:
    """Import JaxMARL (JAX pinned to the CPU), register the maps SMAX lacks; return the module."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
        # One env step is tiny; XLA's multi-threaded CPU pool only fights torch's threads for the
        # cores (measured: a 20 ms learner step took 3-6 s with both pools active on 2 cores).
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    try:
        with _quiet_stdout():
            import jaxmarl
            from jaxmarl.environments.smax import smax_env
    except ImportError as exc:
        raise MablError(f"smax needs jaxmarl: pip install 'mabl[smax]' ({exc})") from None

    if "3s_vs_4z" not in smax_env.MAP_NAME_TO_SCENARIO:
        import jax.numpy as jnp

        unit_types = jnp.array([_STALKER] * 3 + [_ZEALOT] * 4, dtype=jnp.uint8)
        smax_env.register_scenario(
            "3s_vs_4z",
            smax_env.Scenario(
                unit_types=unit_types,
                num_allies=3,
                num_enemies=4,
                smacv2_position_generation=False,
                smacv2_unit_type_generation=False,
            ),
        )
    return jaxmarl


def _compile(jax: Any, reset_fn: Callable, step_fn: Callable, key: Any, n_agents: int) -> tuple[Callable, Callable]:
    """Compile ``reset_fn(key)`` and ``step_fn(key, state, actions)`` ahead of time, in parallel.

    This replaces warming up a plain ``jax.jit`` with calls: such a step compiles twice, as reset's
    state holds weakly typed leaves where step's does not (``reset_fn`` casts those away, so both
    share one signature). A compiled executable has exactly one signature and never retraces, the
    cost is paid here rather than in the first episode, and since XLA compiles without holding the
    GIL the two compilations (seconds each on a CPU) overlap.
    """
    import jax.numpy as jnp

    reset_traced = jax.jit(reset_fn).trace(key)
    key_type, state_type, _ = reset_traced.out_info
    actions_type = jax.ShapeDtypeStruct((n_agents,), jnp.int32)
    step_lowered = jax.jit(step_fn).lower(key_type, state_type, actions_type)
    with ThreadPoolExecutor(max_workers=1) as pool:
        step_future = pool.submit(step_lowered.compile)
        reset_compiled = reset_traced.lower().compile()
        return reset_compiled, step_future.result()


def _prng_key(seed: int) -> np.ndarray:
    """The threefry key of a 64-bit seed: ``jax.random.PRNGKey(seed)`` for seeds below 2**32.

    PRNGKey itself keeps only the low 32 bits while JAX runs in 32-bit mode (2**32 would seed
    like 0); the high word keeps larger seeds apart.
    """
    seed %= 2**64
    return np.array([seed >> 32, seed & 0xFFFFFFFF], dtype=np.uint32)


class SmaxEnv:
    """One SMAX map against the heuristic enemy.

    Args:
        map_name: one of :data:`SMAX_MAPS`.
        seed: seeds the JAX PRNG key chain; ``reset(seed)`` restarts the chain, so the same seed and
            the same actions give the same episode.
        reward, state, walls: SMAC's or JaxMARL's reading of each (:data:`SMAX_OPTIONS`, module
            docstring).

    Construction compiles the map (seconds). Each :meth:`reset` / :meth:`step` is then one call of
    one compiled function that returns everything (observations, state, masks, reward, flags)
    packed into a single float32 vector, copied to numpy once: the step costs SMAX's own compute
    plus one dispatch, with no per-array conversions.
    """

    def __init__(self, map_name: str, seed: int = 0, reward: str = "smac", state: str = "smac",
                 walls: str = "stop") -> None:
        if map_name not in SMAC_EPISODE_LIMITS:
            raise MablError(f"unknown SMAX map '{map_name}': maps are {', '.join(SMAX_MAPS)}")
        for option, value in (("reward", reward), ("state", state), ("walls", walls)):
            if value not in SMAX_OPTIONS[option]:
                raise MablError(f"--smax.{option}={value!r} is not allowed; choose one of "
                                f"{', '.join(SMAX_OPTIONS[option])}")
        self.options = {"reward": reward, "state": state, "walls": walls}
        jaxmarl = _import_jaxmarl()
        import jax
        import jax.numpy as jnp
        from jaxmarl.environments.smax import map_name_to_scenario

        limit = SMAC_EPISODE_LIMITS[map_name]
        scenario = map_name_to_scenario(map_name)
        env = jaxmarl.make("HeuristicEnemySMAX", scenario=scenario, max_steps=limit,
                           walls_cause_death=walls == "lethal")
        agents = list(env.agents)  # the allies, "ally_0".."ally_{N-1}"
        n_agents = len(agents)
        obs_dim = int(env.obs_size)
        n_actions = int(env.action_spaces[agents[0]].n)
        layout = smac_terms.SMAC_STATE_LAYOUTS[map_name]
        enemy_types = np.asarray(scenario.unit_types)[n_agents:]
        max_reward = smac_terms.max_battle_reward(enemy_types)
        if state == "smac":
            state_dim = smac_terms.smac_state_dim(layout, n_agents, len(enemy_types), n_actions)
        else:
            state_dim = int(env.state_size)
        map_size = (float(env.map_width), float(env.map_height))
        type_cooldowns = env.unit_type_weapon_cooldowns

        def global_state(obs: dict, units: Any, last_actions: Any) -> Any:
            if state == "jaxmarl":
                return obs["world_state"]
            return smac_terms.smac_state(
                jnp, layout, n_agents, units.unit_health, units.unit_alive, units.unit_types,
                units.unit_weapon_cooldowns, type_cooldowns[units.unit_types], units.unit_positions,
                map_size, last_actions)
        self.spec = EnvSpec(
            name=f"smax:{map_name}",
            n_agents=n_agents,
            obs_dim=obs_dim,
            state_dim=state_dim,
            discrete=True,
            n_actions=n_actions,
            has_action_mask=True,
            episode_limit=limit,
            has_win=True,
        )

        # Layout of the packed vector: obs | state | avail | reward, terminated, truncated, win.
        obs_end = n_agents * obs_dim
        state_end = obs_end + state_dim
        avail_end = state_end + n_agents * n_actions
        self._obs_end, self._state_end, self._avail_end = obs_end, state_end, avail_end

        def pack(obs: dict, env_state: Any, reward: Any, last_actions: Any) -> Any:
            units_alive = env_state.state.unit_alive
            allies_dead = ~jnp.any(units_alive[:n_agents])
            enemies_dead = ~jnp.any(units_alive[n_agents:])
            terminated = allies_dead | enemies_dead
            # Not SMAX's ``done``: it tests the time limit on the step count from before the step,
            # so it ends an episode one step past max_steps.
            truncated = (env_state.state.step >= limit) & ~terminated
            won = enemies_dead & ~allies_dead
            avail = env.get_avail_actions(env_state)
            parts = [obs[agent] for agent in agents]
            parts.append(global_state(obs, env_state.state, last_actions))
            parts.extend(avail[agent] for agent in agents)
            parts.append(jnp.stack([reward, terminated, truncated, won]))
            return jnp.concatenate([jnp.ravel(p).astype(jnp.float32) for p in parts])

        def reset_fn(key: Any) -> tuple[Any, Any, Any]:
            key, reset_key = jax.random.split(key)
            obs, env_state = env.reset(reset_key)
            # reset makes some leaves weakly typed (the heuristic enemy's memory) where step makes
            # them strongly typed; casting every leaf to its own dtype gives both one signature.
            env_state = jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), env_state)
            no_actions = jnp.zeros((n_agents, n_actions), jnp.float32)
            return key, env_state, pack(obs, env_state, jnp.float32(0.0), no_actions)

        def step_fn(key: Any, env_state: Any, actions: Any) -> tuple[Any, Any, Any]:
            key, step_key = jax.random.split(key)
            action_dict = {agent: actions[i] for i, agent in enumerate(agents)}
            # step_env, not step: step would auto-reset at the episode end, and we reset ourselves.
            before = env_state.state
            obs, env_state, rewards, _, _ = env.step_env(step_key, env_state, action_dict)
            after = env_state.state
            if reward == "smac":
                alive = after.unit_alive
                won = ~jnp.any(alive[n_agents:]) & jnp.any(alive[:n_agents])
                team_reward = smac_terms.battle_reward(
                    jnp, before.unit_alive[n_agents:], before.unit_health[n_agents:],
                    after.unit_health[n_agents:], won, max_reward)
            else:
                # The allies share one team reward (SMAX computes it per team); take the first ally's.
                team_reward = rewards[agents[0]]
            return key, env_state, pack(obs, env_state, team_reward, jax.nn.one_hot(actions, n_actions))

        self._key = _prng_key(seed)
        self._env_state: Any = None
        self._reset_fn, self._step_fn = _compile(jax, reset_fn, step_fn, self._key, n_agents)

    def reset(self, seed: int | None = None) -> TimeStep:
        """Start an episode; ``seed`` restarts the key chain (``None`` continues it)."""
        if seed is not None:
            self._key = _prng_key(seed)
        self._key, self._env_state, packed = self._reset_fn(self._key)
        return self._unpack(packed)

    def step(self, actions: np.ndarray) -> TimeStep:
        """Advance one step with ``actions`` ``[N]`` (ints in ``[0, n_actions)``)."""
        if self._env_state is None:
            raise MablError(f"env {self.spec.name}: step() called before reset()")
        actions = np.asarray(actions, dtype=np.int32)
        self._key, self._env_state, packed = self._step_fn(self._key, self._env_state, actions)
        return self._unpack(packed)

    def _unpack(self, packed: Any) -> TimeStep:
        # One copy: the result is writable and no longer tied to JAX's buffer.
        flat = np.array(packed)
        spec = self.spec
        reward, terminated, truncated, won = flat[self._avail_end :].tolist()
        done = terminated > 0.5 or truncated > 0.5
        return TimeStep(
            obs=flat[: self._obs_end].reshape(spec.n_agents, spec.obs_dim),
            state=flat[self._obs_end : self._state_end],
            avail=flat[self._state_end : self._avail_end].reshape(spec.n_agents, spec.n_actions) > 0.5,
            reward=reward,
            terminated=terminated > 0.5,
            truncated=truncated > 0.5,
            info={"win": won > 0.5} if done else {},
        )

    def close(self) -> None:
        """Drop the JAX state (nothing else is held)."""
        self._env_state = None
