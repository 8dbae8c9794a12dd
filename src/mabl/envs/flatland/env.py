"""The Flatland adapter: :class:`FlatlandEnv`, one task as a :class:`~mabl.envs.base.MultiAgentEnv`.

Its readings (``--flatland.obs``, ``--flatland.actions``, ``--flatland.deadlock``), observation,
state, masks, reward, episode end and seeding are documented in docs/ENVIRONMENTS.md (Flatland).
"""

from __future__ import annotations

import numpy as np

import mabl.envs.flatland.mamba_obs as mamba_obs
import mabl.envs.flatland.standard_obs as standard_obs
from mabl.envs.base import EnvSpec, TimeStep
from mabl.envs.flatland.maps import (
    FLATLAND_TASKS,
    Malfunctions,
    clear_rail_caches,
    departures_at_once,
    episode_limit,
    import_flatland,
    python_random_kept,
)
from mabl.envs.flatland.rail import (
    DEADLOCK_RULES,
    DO_NOTHING,
    DONE,
    MALFUNCTION,
    MALFUNCTION_OFF_MAP,
    MOVING,
    N_ACTIONS,
    N_STATES,
    STEP,
    STOP_MOVING,
    STOPPED,
    WAITING,
    decision_cells,
    new_deadlocks,
    rail_tables,
    way_actions,
)
from mabl.errors import MablError

FLATLAND_OPTIONS: dict[str, tuple[str, ...]] = {
    "obs": ("mamba", "standard"),
    "actions": ("mamba", "all"),
    "deadlock": DEADLOCK_RULES,
}
"""The adapter's readings, default first: MAMBA's Flatland code (the paper's Flatland runs) or the
standard Flatland ones mabl used before (docs/ENVIRONMENTS.md, Flatland)."""

ARRIVAL_REWARD = 10.0
PROGRESS_COEF = 0.01
DEADLOCK_PENALTY = -5.0
UNREACHABLE_DISTANCE = 1000.0
"""The distance an unreachable target counts as in the progress term (MAMBA's value)."""

MAMBA_ACTIONS = 3
LEFTMOST, RIGHTMOST, STOP = range(MAMBA_ACTIONS)
"""MAMBA's actions: the leftmost way out, the rightmost way out, stop (or wait before departure)."""

IDLE, DRIVEN, DECIDES = range(3)
"""A train's role on a step under MAMBA's actions: its action has no effect (arrived, deadlocked,
not ready or broken before departure), it is driven forward (on the grid away from decision cells,
or malfunctioning), or it chooses."""

STATE_EXTRAS = 2 + 4 + 2 + N_STATES + 1  # cell, direction one-hot, target cell, status one-hot, deadlocked


class FlatlandEnv:
    """One Flatland task: trains on a new random map every episode.

    Args:
        task: one of :data:`FLATLAND_TASKS` (``5_agents``, ``10_agents``).
        seed: seed of the first :meth:`reset` without a seed; later unseeded resets continue the
            env's own generator, so a run is reproducible from this one number.
        obs: ``mamba`` (MAMBA's 205 floats) or ``standard`` (Flatland's depth-2 tree with a
            predictor and 11 extras, 263 floats).
        actions: ``mamba`` (3 actions, trains driven forward away from decision cells) or ``all``
            (Flatland's 5 actions, masked, chosen on every step).
        deadlock: ``mamba`` (MAMBA's rule, rings of 3+ trains included) or ``rings_move``.

    ``rail_env`` is the Flatland ``RailEnv``; ``arrived``, ``deadlocked`` and ``driven`` are ``[N]``
    bool copies of the adapter's per-train flags (for tests and diagnostics).
    """

    def __init__(self, task: str, seed: int = 0, obs: str = "mamba", actions: str = "mamba",
                 deadlock: str = "mamba") -> None:
        if task not in FLATLAND_TASKS:
            raise MablError(f"unknown Flatland task '{task}': tasks are {', '.join(FLATLAND_TASKS)}")
        for option, value in (("obs", obs), ("actions", actions), ("deadlock", deadlock)):
            if value not in FLATLAND_OPTIONS[option]:
                raise MablError(f"--flatland.{option}={value!r} is not allowed; choose one of "
                                f"{', '.join(FLATLAND_OPTIONS[option])}")
        self.options = {"obs": obs, "actions": actions, "deadlock": deadlock}
        flatland = import_flatland(task)
        settings = FLATLAND_TASKS[task]
        n = n_agents = int(settings["n_agents"])
        self._limit = episode_limit(settings)
        self._height, self._width = int(settings["height"]), int(settings["width"])
        self._malfunction_scale = float(settings["malfunction_max_duration"] + 1)
        self._distance_scale = 2.0 * (self._height + self._width)
        obs_dim = mamba_obs.OBS_DIM if obs == "mamba" else standard_obs.OBS_DIM
        self.spec = EnvSpec(
            name=f"flatland:{task}",
            n_agents=n_agents,
            obs_dim=obs_dim,
            state_dim=n_agents * (obs_dim + STATE_EXTRAS),
            discrete=True,
            n_actions=MAMBA_ACTIONS if actions == "mamba" else N_ACTIONS,
            has_action_mask=True,
            episode_limit=self._limit,
            has_win=False,
            per_agent_reward=True,
            per_agent_done=True,
        )
        # MAMBA's observation reads the rail itself: Flatland computes no observation then.
        builder = standard_obs.make_tree_obs(flatland) if obs == "standard" else flatland["DummyObservationBuilder"]()
        with python_random_kept():
            self.rail_env = flatland["RailEnv"](
                width=self._width,
                height=self._height,
                rail_generator=flatland["SparseRailGen"](
                    max_num_cities=settings["n_cities"],
                    grid_mode=False,
                    max_rails_between_cities=settings["max_rails_between_cities"],
                    max_rail_pairs_in_city=settings["max_rail_pairs_in_city"],
                ),
                line_generator=flatland["SparseLineGen"](speed_ratio_map={float(settings["speed"]): 1.0}),
                number_of_agents=n_agents,
                obs_builder_object=builder,
                malfunction_generator=Malfunctions(
                    settings["malfunction_rate"],
                    settings["malfunction_min_duration"],
                    settings["malfunction_max_duration"],
                    flatland,
                ),
                remove_agents_at_target=True,
                random_seed=int(seed) % 2**64,
                timetable_generator=departures_at_once(self._limit, flatland["Timetable"]),
            )
        self._mamba_obs = mamba_obs.MambaObservation() if obs == "mamba" else None
        self._pending_seed: int | None = int(seed)
        self._t = 0
        self._in_episode = False
        self._status = np.zeros(n, dtype=np.int64)
        self._cell = np.zeros((n, 2), dtype=np.int64)
        self._direction = np.zeros(n, dtype=np.int64)
        self._malfunction = np.zeros(n, dtype=np.int64)
        self._start = np.zeros((n, 3), dtype=np.int64)  # start row, column, direction
        self._target = np.zeros((n, 2), dtype=np.int64)
        self._arrived = np.zeros(n, dtype=bool)
        self._deadlocked = np.zeros(n, dtype=bool)
        self._role = np.full(n, IDLE, dtype=np.int64)
        self._random_handles = np.zeros(n)
        self._distance = np.zeros(n, dtype=np.float64)
        self._distance_map = np.zeros((n, 1, 1, 4))
        self._transitions = np.zeros((1, 1, 4, 4), dtype=bool)
        self._moves = np.zeros((1, 1, 4, 3), dtype=bool)
        self._decision = np.zeros((1, 1, 4), dtype=bool)
        self._ways = np.zeros((1, 1, 4, 2), dtype=np.int64)
        self._exit_cache: dict[tuple[int, int, int], tuple[tuple[int, int], ...]] = {}  # per map

    @property
    def arrived(self) -> np.ndarray:
        return self._arrived.copy()

    @property
    def deadlocked(self) -> np.ndarray:
        return self._deadlocked.copy()

    @property
    def driven(self) -> np.ndarray:
        """Trains driven forward by the adapter on the coming step (MAMBA's actions only)."""
        return self._role == DRIVEN

    def reset(self, seed: int | None = None) -> TimeStep:
        """Start an episode on a new map (the constructor's seed applies to the first unseeded reset)."""
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        else:
            self._pending_seed = None
        if self.rail_env.rail is not None:
            clear_rail_caches(self.rail_env.rail)
        with python_random_kept():
            obs, _ = self.rail_env.reset(
                regenerate_rail=True, regenerate_schedule=True, random_seed=None if seed is None else int(seed) % 2**64
            )
        env = self.rail_env
        if len(env.agents) != self.spec.n_agents:
            raise MablError(f"env {self.spec.name}: Flatland placed {len(env.agents)} trains, expected {self.spec.n_agents}")
        if env.rail.grid.shape != (self._height, self._width):
            raise MablError(f"env {self.spec.name}: Flatland built a {env.rail.grid.shape} grid")
        for i, agent in enumerate(env.agents):
            (row, col), direction = agent.initial_configuration
            self._start[i] = row, col, direction
            self._target[i] = next(iter(agent.targets))[0]
        self._transitions, self._moves = rail_tables(env.rail.grid)
        self._decision = decision_cells(self._transitions, [tuple(t) for t in self._target.tolist()])
        self._ways = way_actions(self._transitions)
        if self._mamba_obs is not None:
            self._mamba_obs.reset(env.rail.grid, self._transitions, self._target)
            # MAMBA draws one number per train and episode (SimpleObservation.reset, np.random).
            self._random_handles = env.np_random.uniform(size=self.spec.n_agents)
        self._exit_cache.clear()
        self._distance_map = env.distance_map.get()
        self._t = 0
        self._in_episode = True
        self._arrived[:] = False
        self._deadlocked[:] = False
        self._read_agents()
        self._distance = self._distances()
        return self._timestep(obs, reward=0.0, terminated=False, truncated=False,
                              agent_reward=np.zeros(self.spec.n_agents, np.float32))

    def step(self, actions: np.ndarray) -> TimeStep:
        """Advance one step with ``actions`` ``[N]`` (ints in ``[0, spec.n_actions)``)."""
        if not self._in_episode:
            raise MablError(f"env {self.spec.name}: step() called outside an episode: call reset() first")
        actions = np.asarray(actions).reshape(-1)
        if self.options["actions"] == "mamba":
            actions = self._flatland_actions(actions)
        obs, _, dones, _ = self.rail_env.step({i: int(action) for i, action in enumerate(actions)})
        self._t += 1
        self._read_agents()

        arrived = self._status == DONE
        newly_arrived = arrived & ~self._arrived
        self._arrived = arrived
        distance = self._distances()
        previous = self._distance
        progress = float((previous - distance).sum())
        self._distance = distance
        newly_deadlocked = self._update_deadlocks()
        reward = (ARRIVAL_REWARD * int(newly_arrived.sum()) + PROGRESS_COEF * progress
                  + DEADLOCK_PENALTY * int(newly_deadlocked.sum()))
        agent_reward = (ARRIVAL_REWARD * newly_arrived + PROGRESS_COEF * (previous - distance)
                        + DEADLOCK_PENALTY * newly_deadlocked).astype(np.float32)

        terminated = bool((self._arrived | self._deadlocked).all())
        truncated = not terminated and self._t >= self._limit
        if dones["__all__"] and not (terminated or truncated):
            raise MablError(f"env {self.spec.name}: Flatland ended the episode unexpectedly at step {self._t}")
        self._in_episode = not (terminated or truncated)
        return self._timestep(obs, reward, terminated, truncated, agent_reward)

    def close(self) -> None:
        """Nothing to release (Flatland holds no external resources)."""
        self._in_episode = False

    def _flatland_actions(self, actions: np.ndarray) -> np.ndarray:
        """MAMBA's 3 actions as Flatland's (``FlatlandWrapper.transform_action`` and
        ``GreedyFlatland.step``, env/flatland/Flatland.py L132-148, GreedyFlatland.py L30-38): a
        driven train takes its leftmost way out, a choosing one the way it chose or STOP (wait,
        i.e. DO_NOTHING, before departure); an idle train does nothing."""
        ways = self._ways[self._cell[:, 0], self._cell[:, 1], self._direction]  # [N, 2]
        off_map = self._status <= MALFUNCTION_OFF_MAP
        chosen = np.where(actions == STOP, np.where(off_map, DO_NOTHING, STOP_MOVING),
                          ways[np.arange(len(actions)), np.clip(actions, 0, 1)])
        return np.select([self._role == DRIVEN, self._role == DECIDES], [ways[:, 0], chosen], DO_NOTHING)

    def _read_agents(self) -> None:
        """Copy each train's status, cell, direction and malfunction counter into the arrays.

        The cell is where the train is (Flatland's ``virtual_configuration``): its start before
        departure, its current cell on the grid, the target it reached once arrived.
        """
        for i, agent in enumerate(self.rail_env.agents):
            status = int(agent.state)
            if status == DONE:
                configuration = agent.target_configuration
            elif status in (MOVING, STOPPED, MALFUNCTION):
                configuration = agent.current_configuration
            else:
                configuration = agent.initial_configuration
            (row, col), direction = configuration
            self._status[i] = status
            self._cell[i] = row, col
            self._direction[i] = direction
            self._malfunction[i] = agent.malfunction_handler.malfunction_down_counter

    def _distances(self) -> np.ndarray:
        """Each train's shortest-path distance to its target (0 once arrived, 1000 if unreachable)."""
        n = self.spec.n_agents
        distance = self._distance_map[np.arange(n), self._cell[:, 0], self._cell[:, 1], self._direction].astype(np.float64)
        distance[~np.isfinite(distance)] = UNREACHABLE_DISTANCE
        distance[self._status == DONE] = 0.0
        return distance

    def _exits(self, row: int, col: int, direction: int) -> tuple[tuple[int, int], ...]:
        """The cells a train at ``(row, col)`` facing ``direction`` can move into (cached per map)."""
        key = (row, col, direction)
        exits = self._exit_cache.get(key)
        if exits is None:
            ways = np.flatnonzero(self._transitions[row, col, direction])
            exits = tuple((row + int(STEP[way, 0]), col + int(STEP[way, 1])) for way in ways)
            self._exit_cache[key] = exits
        return exits

    def _update_deadlocks(self) -> np.ndarray:
        """Flag the trains that became deadlocked on this step (``--flatland.deadlock``); return them."""
        status = self._status.tolist()
        cells = [tuple(cell) for cell in self._cell.tolist()]
        directions = self._direction.tolist()
        on_grid = [s in (MOVING, STOPPED, MALFUNCTION) for s in status]
        rule = self.options["deadlock"]
        stuck = new_deadlocks(cells, on_grid, self._deadlocked.tolist(),
                              lambda i: self._exits(*cells[i], directions[i]), rule)
        newly = np.zeros_like(self._deadlocked)
        if not stuck:
            return newly
        newly[list(stuck)] = True
        self._deadlocked |= newly
        if rule == "rings_move":
            # A train yet to depart whose start cell is held by a deadlocked train can never depart.
            blocked_cells = {cells[i] for i in np.flatnonzero(self._deadlocked) if on_grid[i]}
            for i in range(len(cells)):
                if not on_grid[i] and status[i] != DONE and not self._deadlocked[i]:
                    if (int(self._start[i, 0]), int(self._start[i, 1])) in blocked_cells:
                        newly[i] = True
            self._deadlocked |= newly
        return newly

    def _avail(self) -> np.ndarray:
        """The action masks of the current step (docs/ENVIRONMENTS.md, Flatland); sets the roles."""
        n = self.spec.n_agents
        status = self._status
        broken = self._malfunction > 0
        off_map = status <= MALFUNCTION_OFF_MAP  # WAITING, READY_TO_DEPART, MALFUNCTION_OFF_MAP
        idle = (status == DONE) | (status == WAITING) | self._deadlocked | (broken & off_map)
        departing = ~idle & off_map
        if self.options["actions"] == "mamba":
            decision = self._decision[self._cell[:, 0], self._cell[:, 1], self._direction]
            driven = ~idle & ~off_map & (~decision | broken)
            self._role = np.select([idle, driven], [IDLE, DRIVEN], DECIDES)
            avail = np.zeros((n, MAMBA_ACTIONS), dtype=bool)
            avail[:, LEFTMOST] = True
            avail[:, RIGHTMOST:] = (self._role == DECIDES)[:, None]
            return avail
        idle |= broken
        departing &= ~broken
        driving = ~idle & ~departing
        avail = np.zeros((n, N_ACTIONS), dtype=bool)
        moves = self._moves[self._cell[:, 0], self._cell[:, 1], self._direction]  # [N, 3]
        avail[:, DO_NOTHING] = idle | departing
        avail[:, DO_NOTHING + 1 : STOP_MOVING] = moves & (departing | driving)[:, None]
        avail[:, STOP_MOVING] = driving
        return avail

    def _observations(self, obs: dict) -> np.ndarray:
        """Every train's observation ``[N, O]`` under ``--flatland.obs``."""
        n = self.spec.n_agents
        status = self._status
        if self._mamba_obs is not None:
            return self._mamba_obs.observe(
                self._cell, self._direction, on_grid=(status >= MOVING) & (status < DONE),
                off_map=status <= MALFUNCTION_OFF_MAP, arrived=self._arrived, deadlocked=self._deadlocked,
                malfunction=self._malfunction, distance_map=self._distance_map, random_handles=self._random_handles)
        observations = np.empty((n, standard_obs.OBS_DIM), dtype=np.float32)
        observations[:, : standard_obs.TREE_SIZE] = standard_obs.flatten_trees(obs, status == DONE)
        extras = observations[:, standard_obs.TREE_SIZE :]
        extras[:, :N_STATES] = np.eye(N_STATES, dtype=np.float32)[status]
        extras[:, N_STATES] = np.minimum(self._malfunction / self._malfunction_scale, 1.0)
        extras[:, N_STATES + 1] = np.minimum(self._distance / self._distance_scale, 1.0)
        extras[:, N_STATES + 2] = self._deadlocked
        extras[:, N_STATES + 3] = self._t / self._limit
        return observations

    def _timestep(self, obs: dict, reward: float, terminated: bool, truncated: bool,
                  agent_reward: np.ndarray) -> TimeStep:
        n = self.spec.n_agents
        observations = self._observations(obs)
        per_train = np.zeros((n, STATE_EXTRAS), dtype=np.float32)
        scale = np.array([self._height - 1, self._width - 1], dtype=np.float32)
        per_train[:, 0:2] = self._cell / scale
        per_train[np.arange(n), 2 + self._direction] = 1.0
        per_train[:, 6:8] = self._target / scale
        per_train[:, 8 : 8 + N_STATES] = np.eye(N_STATES, dtype=np.float32)[self._status]
        per_train[:, 8 + N_STATES] = self._deadlocked
        state = np.concatenate([observations.ravel(), per_train.ravel()])

        done = terminated or truncated
        info = {"metrics": {"arrived_fraction": float(self._arrived.mean())}} if done else {}
        return TimeStep(
            obs=observations,
            state=state,
            avail=self._avail(),
            reward=float(reward),
            terminated=bool(terminated),
            truncated=bool(truncated),
            info=info,
            agent_reward=agent_reward,
            agent_done=self._arrived | self._deadlocked,
        )
