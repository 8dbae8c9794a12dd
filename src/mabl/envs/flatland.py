"""Flatland railway tasks (``flatland-rl`` 4.3) as a :class:`~mabl.envs.base.MultiAgentEnv`.

Trains (agents) must travel from a station in one city to a station in another on a sparse rail
network, sharing single tracks; a train can only go forward, turn at switches, or stop. Flatland
is imported here only, lazily: this module imports without it (``list_envs()`` needs
:data:`FLATLAND_TASKS` only).

Tasks (:data:`FLATLAND_TASKS`, the settings of MAMBA's and MABL's Flatland experiments):

- ``5_agents``: 35x35 grid, 5 trains, 3 cities, malfunction rate 1/100;
- ``10_agents``: 35x35 grid, 10 trains, 4 cities, malfunction rate 1/150;
- both: cities placed at random (``grid_mode=False``), at most 2 rails between cities, at most 4
  parallel station rails in a city (Flatland 3+ counts city rails in pairs: with
  ``max_rail_pairs_in_city=2`` each city gets 1 or 2 pairs, i.e. 2 or 4 rails, drawn per city,
  which is MAMBA's Flatland 2.2 ``max_rails_in_city=4``; the rails leaving a city are drawn
  between 1 and ``max_rails_between_cities``), malfunctions lasting 20 to 50 steps (Flatland's
  Poisson process: each train breaks with probability ``1 - exp(-rate)`` per step), every train
  at speed 1. Flatland places fewer cities than asked when random placement fails (rare here).

How Flatland's per-train dicts become the contract's arrays:

- agents: the trains in Flatland's handle order, all ``N`` of them for the whole episode. A train
  that has not departed yet or has arrived (Flatland removes it from the grid) stays in the arrays.
- departures: every train may depart from the first decision on (earliest departure 0), as in
  Flatland 2 where MAMBA/MABL trained; Flatland 3+ timetables would hold trains back for a random
  number of steps. (Flatland still spends the first step moving trains from WAITING to
  READY_TO_DEPART, so the reset step offers no decision.)
- observation ``[N, O]``, ``O = 263``: Flatland's ``TreeObsForRailEnv`` of depth 2 with a
  ``ShortestPathPredictorForRailEnv`` looking 30 steps ahead (the predictor depth of Flatland's
  baselines), flattened and normalised per train as Flatland's ``normalize_observation`` util
  does (re-implemented here with numpy, for all trains at once), then 11 extras:

  - ``[0:252]`` the tree: 21 nodes (the root, its 4 branches L, F, R, B, theirs, pre-order) of 12
    features, grouped as Flatland's util groups them: ``[0:126]`` the six distances of each node
    (own target, other target, other train, predicted conflict, unusable switch, next branch)
    divided by the observation radius 10 and clipped to ``[-1, 1]``; ``[126:147]`` each node's
    shortest distance to the target, min-max scaled over the tree's finite non-negative values
    (below 1000) and clipped; ``[147:252]`` the five train features of each node (trains in the
    same / opposite direction, malfunction steps, slowest speed, trains waiting to depart) clipped
    to ``[-1, 1]``. Missing branches (Flatland's ``-inf``) read -1, features not found (``+inf``)
    read 1. An arrived train's tree is all zeros (Flatland does not compute it). Checked equal to
    Flatland's ``FlattenedNormalizedTreeObsForRailEnv(observation_radius=10)`` on thousands of
    trees of both tasks (that class lives in ``flatland.ml``, which needs Ray RLlib to import).
  - ``[252:259]`` the train's status, one-hot over Flatland's ``TrainState`` (WAITING,
    READY_TO_DEPART, MALFUNCTION_OFF_MAP, MOVING, STOPPED, MALFUNCTION, DONE);
  - ``[259]`` steps of malfunction left / 51 (the longest malfunction's counter);
  - ``[260]`` the train's shortest-path distance to its target / ``2 (H + W)``, clipped to
    ``[0, 1]`` (1 when the target is unreachable from where the train faces, 0 once arrived);
  - ``[261]`` 1 if the train is deadlocked (see below);
  - ``[262]`` the elapsed fraction of the episode, ``t / episode_limit``.

- global state ``[G]``, ``G = N * (O + 16)``: every train's observation (``N * O``, train-major),
  then for each train 16 floats: its cell (row / (H - 1), column / (W - 1)), its facing direction
  one-hot (N, E, S, W), its target cell (row, column, scaled alike), its ``TrainState`` one-hot (7)
  and its deadlock flag. A train off the grid is placed at its start cell facing its start
  direction, an arrived one at the target cell it reached (its status says which). 5 trains:
  ``G = 1395``; 10 trains: ``G = 2790``.
- actions: Flatland's 5 (0 DO_NOTHING, 1 MOVE_LEFT, 2 MOVE_FORWARD, 3 MOVE_RIGHT, 4 STOP_MOVING),
  with action masks derived from the rail:

  - a train that needs no decision (arrived, deadlocked, malfunctioning with steps left, or still
    WAITING: its action has no effect) has only DO_NOTHING;
  - a train waiting to depart (READY_TO_DEPART, or past a malfunction before departure) may wait
    (DO_NOTHING) or depart with the moves valid from its start cell and direction;
  - a train on the grid may STOP_MOVING or take a move valid from its cell and direction.
    DO_NOTHING is masked out for it: it only repeats "keep moving" (a move) or "stay" (STOP).

  A move is valid when the rail has that exact transition and it leads onto rail: LEFT / RIGHT
  where the cell turns that way, FORWARD straight on, and in a cell with a single way out (a curve,
  a dead end) FORWARD along it (plus LEFT / RIGHT when that one way is a left / right turn). Moves
  that Flatland would silently correct (LEFT on a straight track becomes FORWARD) are masked: they
  duplicate another action. Every row has an available action.
- reward: the MAMBA-era shaped reward (not Flatland 4's timetable reward), summed over the trains
  (the team reward of a step is the sum of the trains' rewards, so each event keeps its size):

  - +10 once, on the step a train arrives;
  - +0.01 x the decrease of the train's shortest-path distance to its target on this step
    (Flatland's distance map at the train's cell and direction; the start cell and direction
    before departure, 0 once arrived; an unreachable target counts as distance 1000, as in MAMBA);
  - -5 once, on the step a train becomes deadlocked.

  Each train's own reward of the step is ``TimeStep.agent_reward`` ``[N]`` (``spec.per_agent_reward``;
  the MAMBA-era code gave every train its own reward), and ``TimeStep.agent_done`` ``[N]``
  (``spec.per_agent_done``) flags the trains that arrived or are deadlocked (MAMBA's per-train
  ``done``): their actions no longer matter (only DO_NOTHING is available to them).

- deadlocks (MAMBA's rule, in a fixed-point form): a train on the grid is deadlocked when every way
  out of its cell (in the direction it faces) leads into a cell held by a train that is itself
  deadlocked or in the same situation: the greatest set of trains in which every train's every way
  out is blocked by a member of the set (or an already deadlocked train). Such trains can never
  move again (Flatland trains cannot reverse, and no one in the set can move first), so the flag is
  permanent. Head-on pairs on a single track and the queues behind them are the common cases. One
  exception: trains forming a ring of three or more, each blocked by the next, are not deadlocked
  (Flatland moves such a ring on together; it only forbids head-on swaps), nor is anyone queueing
  behind them. A train that has not departed is deadlocked when its start cell is held by a
  deadlocked train (it can never depart). A train whose every way out is blocked by trains that may
  still move (a malfunctioning train with a free way out, say), or one with a free way out, is not
  deadlocked.
- ``terminated``: every train has arrived or is deadlocked (so also: all arrived);
  ``truncated``: ``spec.episode_limit`` steps passed without that; never both.
  ``info["metrics"] = {"arrived_fraction": arrived trains / N}`` on the final step; no win flag.
- ``episode_limit``: Flatland's sparse-schedule limit ``int(8 (W + H + N / cities))``, fixed per
  task: 573 steps (5 trains) and 580 (10 trains). It is Flatland 2's ``max_episode_steps`` for
  these maps, under which MAMBA/MABL trained (MAMBA's runner recomputed it with 3 cities, 586 for
  10 trains); Flatland 4 derives a limit per episode from the timetable (about 60 to 140 steps
  here), which would make episodes of one task differ in length. Flatland itself is told the same
  limit, so it never ends an episode first.
- seeding: the constructor's seed applies to the first :meth:`~FlatlandEnv.reset` without a seed;
  later unseeded resets continue Flatland's own generator (a new map each episode), so a run is
  reproducible from one number; ``reset(seed)`` gives the same map, schedule, malfunctions and
  (with the same actions) the same episode. Flatland reseeds Python's global ``random`` when it is
  seeded: the adapter restores that state afterwards. Malfunctions are drawn from the env's
  generator at each step (Flatland's own malfunction generator caches a million draws across
  episodes, which would make a reseeded episode differ).
- memory: Flatland memoises its rail's methods in process-wide caches that keep every old map
  alive (about 3 MB per episode, gigabytes over a training run); each reset empties them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import chain
from typing import Any

import numpy as np

from mabl.envs.base import EnvSpec, TimeStep
from mabl.errors import MablError

FLATLAND_TASKS: dict[str, dict[str, Any]] = {
    "5_agents": {
        "n_agents": 5,
        "width": 35,
        "height": 35,
        "n_cities": 3,
        "max_rails_between_cities": 2,
        "max_rail_pairs_in_city": 2,
        "malfunction_rate": 1 / 100,
        "malfunction_min_duration": 20,
        "malfunction_max_duration": 50,
        "speed": 1.0,
    },
    "10_agents": {
        "n_agents": 10,
        "width": 35,
        "height": 35,
        "n_cities": 4,
        "max_rails_between_cities": 2,
        "max_rail_pairs_in_city": 2,
        "malfunction_rate": 1 / 150,
        "malfunction_min_duration": 20,
        "malfunction_max_duration": 50,
        "speed": 1.0,
    },
}
"""Task name -> the settings of its maps (the paper's; ``max_rail_pairs_in_city=2``: at most 4 rails)."""

TREE_DEPTH = 2
PREDICTOR_DEPTH = 30
OBSERVATION_RADIUS = 10.0
"""Distances along the tree are divided by this and clipped (Flatland baselines' radius)."""

ARRIVAL_REWARD = 10.0
PROGRESS_COEF = 0.01
DEADLOCK_PENALTY = -5.0
UNREACHABLE_DISTANCE = 1000.0
"""The distance an unreachable target counts as in the progress term (MAMBA's value)."""

N_ACTIONS = 5
DO_NOTHING, MOVE_LEFT, MOVE_FORWARD, MOVE_RIGHT, STOP_MOVING = range(N_ACTIONS)

# TrainState values (flatland.envs.step_utils.states), fixed by Flatland's API.
WAITING, READY_TO_DEPART, MALFUNCTION_OFF_MAP, MOVING, STOPPED, MALFUNCTION, DONE = range(7)
N_STATES = 7

NODE_FEATURES = 12
TREE_NODES = sum(4**depth for depth in range(TREE_DEPTH + 1))  # 21
TREE_SIZE = TREE_NODES * NODE_FEATURES  # 252
OBS_EXTRAS = N_STATES + 4  # status one-hot, malfunction, distance, deadlocked, time
OBS_DIM = TREE_SIZE + OBS_EXTRAS  # 263
STATE_EXTRAS = 2 + 4 + 2 + N_STATES + 1  # cell, direction one-hot, target cell, status one-hot, deadlocked

# Row/column offsets of the four directions N, E, S, W (Flatland's Grid4 order).
_STEP = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]])


def episode_limit(settings: dict[str, Any]) -> int:
    """Flatland's sparse-schedule episode limit for a task's maps: ``int(8 (W + H + N / cities))``."""
    return int(8 * (settings["width"] + settings["height"] + settings["n_agents"] / settings["n_cities"]))


@contextmanager
def _python_random_kept() -> Iterator[None]:
    """Run a block that reseeds Python's global ``random`` (Flatland does) and restore its state."""
    saved = random.getstate()
    try:
        yield
    finally:
        random.setstate(saved)


def _clear_rail_caches(rail: Any) -> None:
    """Empty the ``lru_cache`` of every method of the rail's classes.

    Flatland memoises its rail's methods in caches shared by all instances (keyed by the instance,
    up to millions of entries): each new map adds thousands of entries and keeps the old maps alive,
    about 3 MB per episode. Clearing them when a map is replaced bounds the memory to one map's
    worth. The caches are pure memoisation, so another env in the same process only recomputes.
    """
    for cls in type(rail).__mro__:
        for attribute in vars(cls).values():
            clear = getattr(attribute, "cache_clear", None)
            if clear is not None:
                clear()


def _import_flatland(task: str) -> dict[str, Any]:
    """The Flatland classes the adapter uses, or a one-line MablError naming what to install."""
    try:
        from flatland.envs.line_generators import SparseLineGen
        from flatland.envs.malfunction_generators import Malfunction, MalfunctionProcessData
        from flatland.envs.observations import TreeObsForRailEnv
        from flatland.envs.predictions import ShortestPathPredictorForRailEnv
        from flatland.envs.rail_env import RailEnv
        from flatland.envs.rail_generators import SparseRailGen
        from flatland.envs.timetable_utils import Timetable
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "flatland":
            raise MablError(
                f"flatland:{task} needs flatland-rl: pip install 'mabl[flatland]' && "
                "pip install --no-deps flatland-rl==4.3.0"
            ) from None
        raise MablError(
            f"flatland:{task}: flatland-rl is installed but needs '{exc.name}': pip install 'mabl[flatland]'"
        ) from None
    except ImportError as exc:
        raise MablError(f"flatland:{task}: cannot import flatland-rl ({exc})") from None
    return {
        "SparseLineGen": SparseLineGen,
        "Malfunction": Malfunction,
        "MalfunctionProcessData": MalfunctionProcessData,
        "TreeObsForRailEnv": TreeObsForRailEnv,
        "ShortestPathPredictorForRailEnv": ShortestPathPredictorForRailEnv,
        "RailEnv": RailEnv,
        "SparseRailGen": SparseRailGen,
        "Timetable": Timetable,
    }


class _Malfunctions:
    """Flatland's malfunction process, drawn from the env's generator at each call.

    Same law as Flatland's ``ParamMalfunctionGen`` (break with probability ``1 - exp(-rate)`` per
    train and step, for ``randint(min, max) + 1`` counter steps: the counter also ticks on the step
    the malfunction starts), without its cache of a million draws kept across episodes.
    """

    def __init__(self, rate: float, min_duration: int, max_duration: int, flatland: dict[str, Any]) -> None:
        self.probability = 1.0 - math.exp(-rate)
        self.min_duration, self.max_duration = min_duration, max_duration
        self._malfunction = flatland["Malfunction"]
        self._process_data = flatland["MalfunctionProcessData"](rate, min_duration, max_duration)

    def generate(self, np_random: np.random.RandomState) -> Any:
        if np_random.rand() < self.probability:
            return self._malfunction(int(np_random.randint(self.min_duration, self.max_duration + 1)) + 1)
        return None

    def get_process_data(self) -> Any:
        return self._process_data


def _departures_at_once(limit: int, timetable_type: Any) -> Callable[..., Any]:
    """A Flatland timetable generator: every train may depart at step 0; ``limit`` steps per episode."""

    def generate(agents: list, distance_map: Any, agents_hints: Any, np_random: Any = None) -> Any:
        earliest = [[0] * (len(agent.waypoints) - 1) + [None] for agent in agents]
        latest = [[None] + [limit] * (len(agent.waypoints) - 1) for agent in agents]
        return timetable_type(earliest_departures=earliest, latest_arrivals=latest, max_episode_steps=limit)

    return generate


def _make_tree_obs(flatland: dict[str, Any]) -> Any:
    """``TreeObsForRailEnv`` (depth 2, shortest-path predictor) that skips the trees of arrived trains."""

    class TreeObsSkippingArrived(flatland["TreeObsForRailEnv"]):
        def get(self, handle: int = 0) -> Any:
            if self.env.agents[handle].state == DONE:
                return None  # zeroed by the adapter: no need to explore the rail from the target
            return super().get(handle)

    predictor = flatland["ShortestPathPredictorForRailEnv"](PREDICTOR_DEPTH)
    return TreeObsSkippingArrived(max_depth=TREE_DEPTH, predictor=predictor)


def _subtree_nodes(depth: int) -> int:
    """Nodes of a subtree rooted at ``depth`` in a tree of depth :data:`TREE_DEPTH`."""
    return sum(4**d for d in range(TREE_DEPTH - depth + 1))


_MISSING_ROW = (-math.inf,) * NODE_FEATURES
_MISSING_SUBTREE = {depth: [_MISSING_ROW] * _subtree_nodes(depth) for depth in range(TREE_DEPTH + 1)}


def _append_tree(node: Any, depth: int, rows: list) -> None:
    """Append the 12 features of ``node`` and of its subtree, pre-order (node, L, F, R, B)."""
    rows.append(node[:NODE_FEATURES])  # a Node namedtuple: its features come before ``childs``
    if depth == TREE_DEPTH:
        return
    childs = node.childs
    for branch in "LFRB":
        child = childs.get(branch)
        if hasattr(child, "childs"):
            _append_tree(child, depth + 1, rows)
        else:  # -inf: no rail that way
            rows.extend(_MISSING_SUBTREE[depth + 1])


# Feature index of each output column: node-major groups of the six distances, the distance to the
# target, the five train features (Flatland's ``split_tree_into_feature_groups`` order).
_NODE_BASE = np.arange(TREE_NODES)[:, None] * NODE_FEATURES
_GROUPED = np.concatenate([(_NODE_BASE + np.arange(6)).ravel(), (_NODE_BASE + 6).ravel(),
                           (_NODE_BASE + np.arange(7, NODE_FEATURES)).ravel()])


def normalise_trees(trees: np.ndarray) -> np.ndarray:
    """Flatland's ``normalize_observation`` for trees ``[N, 21, 12]`` at once -> ``[N, 252]``.

    Groups, each node-major: the six distances / :data:`OBSERVATION_RADIUS`, the distance to the
    target min-max scaled over each tree (from its smallest finite non-negative value to 1 + its
    largest below 1000, at least 2), the five train features; all clipped to ``[-1, 1]``.
    """
    out = trees.astype(np.float64, copy=True)
    out[:, :, :6] *= 1.0 / OBSERVATION_RADIUS
    distance = trees[:, :, 6]
    known = (distance >= 0) & np.isfinite(distance)
    top = np.maximum(np.where(known & (distance < 1000), distance, 0.0).max(axis=1), 1.0) + 1.0
    bottom = np.minimum(np.where(known, distance, np.inf).min(axis=1), top)
    flat = bottom >= top  # one value only: Flatland divides by the top instead
    offset = np.where(flat, 0.0, bottom)
    span = np.where(flat, top, top - bottom)
    out[:, :, 6] = (distance - offset[:, None]) / span[:, None]
    np.clip(out, -1.0, 1.0, out=out)
    return out.reshape(len(out), TREE_SIZE)[:, _GROUPED]


def rail_tables(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Transitions and valid moves of a Flatland rail grid, for every cell and facing direction.

    Returns ``transitions`` ``[H, W, 4, 4]`` bool (facing ``d``, the rail lets a train leave
    towards ``e``) and ``moves`` ``[H, W, 4, 3]`` bool, whether MOVE_LEFT, MOVE_FORWARD, MOVE_RIGHT
    are valid as given (see the module docstring): Flatland's own check of an action, without the
    corrections it applies to invalid LEFT / RIGHT, plus the check that the next cell is rail.
    """
    height, width = grid.shape
    cells = grid.astype(np.int64)
    facing = np.arange(4)
    leaving = np.arange(4)
    # A cell's 16 bits: 4 per facing direction (N first), 1 per leaving direction (N first).
    nibbles = (cells[:, :, None] >> ((3 - facing) * 4)[None, None, :]) & 0xF
    transitions = ((nibbles[..., None] >> (3 - leaving)) & 1).astype(bool)  # [H, W, 4, 4]
    on_rail = transitions.any(axis=-1)  # [H, W, 4]: a train may stand there facing that way
    count = transitions.sum(axis=-1)
    only_way = transitions.argmax(axis=-1)  # the single way out where count == 1

    turn = np.array([-1, 0, 1])  # LEFT, FORWARD, RIGHT
    wanted = (facing[:, None] + turn[None, :]) % 4  # [4, 3] leaving direction of each move
    single = (count == 1)[..., None]
    out_dir = np.where(single, np.where(turn == 0, only_way[..., None], wanted), wanted)  # [H, W, 4, 3]
    allowed_multi = np.take_along_axis(transitions, np.broadcast_to(wanted, (height, width, 4, 3)), axis=-1)
    allowed_single = (turn == 0) | (only_way[..., None] == wanted)
    allowed = np.where(single, allowed_single, allowed_multi) & (count > 0)[..., None]

    rows = np.arange(height)[:, None, None, None] + _STEP[out_dir, 0]
    cols = np.arange(width)[None, :, None, None] + _STEP[out_dir, 1]
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    lands_on_rail = on_rail[np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1), out_dir]
    return transitions, allowed & inside & lands_on_rail


def _on_ring(start: int, blockers: dict[int, list[int]]) -> bool:
    """Whether train ``start`` lies on a cycle of three or more trains, each blocked by the next.

    ``blockers`` maps each train whose every way out is held to the trains holding them; the
    search follows simple paths among those trains (at most a handful: cheap).
    """
    paths = [(start, (start,))]
    while paths:
        train, path = paths.pop()
        for blocker in blockers[train]:
            if blocker == start and len(path) >= 3:
                return True
            if blocker in blockers and blocker not in path:
                paths.append((blocker, (*path, blocker)))
    return False


class FlatlandEnv:
    """One Flatland task: trains on a new random map every episode.

    Args:
        task: one of :data:`FLATLAND_TASKS` (``5_agents``, ``10_agents``).
        seed: seed of the first :meth:`reset` without a seed; later unseeded resets continue the
            env's own generator, so a run is reproducible from this one number.

    ``rail_env`` is the Flatland ``RailEnv``; ``arrived`` and ``deadlocked`` are ``[N]`` bool copies
    of the adapter's per-train flags (for tests and diagnostics).
    """

    def __init__(self, task: str, seed: int = 0) -> None:
        if task not in FLATLAND_TASKS:
            raise MablError(f"unknown Flatland task '{task}': tasks are {', '.join(FLATLAND_TASKS)}")
        flatland = _import_flatland(task)
        settings = FLATLAND_TASKS[task]
        n_agents = int(settings["n_agents"])
        self._limit = episode_limit(settings)
        self._height, self._width = int(settings["height"]), int(settings["width"])
        self._malfunction_scale = float(settings["malfunction_max_duration"] + 1)
        self._distance_scale = 2.0 * (self._height + self._width)
        self.spec = EnvSpec(
            name=f"flatland:{task}",
            n_agents=n_agents,
            obs_dim=OBS_DIM,
            state_dim=n_agents * (OBS_DIM + STATE_EXTRAS),
            discrete=True,
            n_actions=N_ACTIONS,
            has_action_mask=True,
            episode_limit=self._limit,
            has_win=False,
            per_agent_reward=True,
            per_agent_done=True,
        )
        with _python_random_kept():
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
                obs_builder_object=_make_tree_obs(flatland),
                malfunction_generator=_Malfunctions(
                    settings["malfunction_rate"],
                    settings["malfunction_min_duration"],
                    settings["malfunction_max_duration"],
                    flatland,
                ),
                remove_agents_at_target=True,
                random_seed=int(seed) % 2**64,
                timetable_generator=_departures_at_once(self._limit, flatland["Timetable"]),
            )
        self._pending_seed: int | None = int(seed)
        self._t = 0
        self._in_episode = False
        n = n_agents
        self._status = np.zeros(n, dtype=np.int64)
        self._cell = np.zeros((n, 2), dtype=np.int64)
        self._direction = np.zeros(n, dtype=np.int64)
        self._malfunction = np.zeros(n, dtype=np.int64)
        self._start = np.zeros((n, 3), dtype=np.int64)  # start row, column, direction
        self._target = np.zeros((n, 2), dtype=np.int64)
        self._arrived = np.zeros(n, dtype=bool)
        self._deadlocked = np.zeros(n, dtype=bool)
        self._distance = np.zeros(n, dtype=np.float64)
        self._distance_map = np.zeros((n, 1, 1, 4))
        self._transitions = np.zeros((1, 1, 4, 4), dtype=bool)
        self._moves = np.zeros((1, 1, 4, 3), dtype=bool)
        self._exit_cache: dict[tuple[int, int, int], tuple[tuple[int, int], ...]] = {}  # per map

    @property
    def arrived(self) -> np.ndarray:
        return self._arrived.copy()

    @property
    def deadlocked(self) -> np.ndarray:
        return self._deadlocked.copy()

    def reset(self, seed: int | None = None) -> TimeStep:
        """Start an episode on a new map (the constructor's seed applies to the first unseeded reset)."""
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        else:
            self._pending_seed = None
        if self.rail_env.rail is not None:
            _clear_rail_caches(self.rail_env.rail)
        with _python_random_kept():
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
        """Advance one step with ``actions`` ``[N]`` (ints in ``[0, 5)``)."""
        if not self._in_episode:
            raise MablError(f"env {self.spec.name}: step() called outside an episode: call reset() first")
        actions = np.asarray(actions).reshape(-1)
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
            exits = tuple((row + int(_STEP[way, 0]), col + int(_STEP[way, 1])) for way in ways)
            self._exit_cache[key] = exits
        return exits

    def _update_deadlocks(self) -> np.ndarray:
        """Flag the trains that became deadlocked on this step (see the module docstring); return them."""
        status = self._status.tolist()
        cells = [tuple(cell) for cell in self._cell.tolist()]
        directions = self._direction.tolist()
        deadlocked = self._deadlocked.tolist()
        on_grid = [s in (MOVING, STOPPED, MALFUNCTION) for s in status]
        holder = {cell: i for i, cell in enumerate(cells) if on_grid[i]}
        blockers: dict[int, list[int]] = {}  # trains whose every way out is held, and by whom
        for i, cell in enumerate(cells):
            if not on_grid[i] or deadlocked[i]:
                continue
            held = [holder.get(exit_cell) for exit_cell in self._exits(*cell, directions[i])]
            if held and None not in held:
                blockers[i] = held
        newly = np.zeros_like(self._deadlocked)
        if not blockers:
            return newly
        # Trains in a ring of three or more, each blocked by the next, may all move on together
        # (Flatland rotates such rings; it only forbids head-on swaps): not stuck.
        stuck = {i for i in blockers if not _on_ring(i, blockers)}
        changed = True
        while changed:  # drop trains with a blocker that may still move, until none is left
            changed = False
            for i in list(stuck):
                if any(b not in stuck and not deadlocked[b] for b in blockers[i]):
                    stuck.discard(i)
                    changed = True
        if not stuck:
            return newly
        newly[list(stuck)] = True
        self._deadlocked |= newly
        # A train yet to depart whose start cell is held by a deadlocked train can never depart.
        blocked_cells = {cells[i] for i in np.flatnonzero(self._deadlocked) if on_grid[i]}
        for i in range(len(cells)):
            if not on_grid[i] and status[i] != DONE and not self._deadlocked[i]:
                if (int(self._start[i, 0]), int(self._start[i, 1])) in blocked_cells:
                    newly[i] = True
        self._deadlocked |= newly
        return newly

    def _avail(self) -> np.ndarray:
        """The action masks of the current step (see the module docstring)."""
        n = self.spec.n_agents
        status = self._status
        idle = (status == DONE) | (status == WAITING) | self._deadlocked | (self._malfunction > 0)
        departing = ~idle & ((status == READY_TO_DEPART) | (status == MALFUNCTION_OFF_MAP))
        driving = ~idle & ~departing
        avail = np.zeros((n, N_ACTIONS), dtype=bool)
        moves = self._moves[self._cell[:, 0], self._cell[:, 1], self._direction]  # [N, 3]
        avail[:, DO_NOTHING] = idle | departing
        avail[:, MOVE_LEFT:STOP_MOVING] = moves & (departing | driving)[:, None]
        avail[:, STOP_MOVING] = driving
        return avail

    def _timestep(self, obs: dict, reward: float, terminated: bool, truncated: bool,
                  agent_reward: np.ndarray) -> TimeStep:
        spec = self.spec
        n = spec.n_agents
        rows: list = []
        has_tree = np.zeros(n, dtype=bool)
        for i in range(n):
            node = obs.get(i)
            if node is None or self._status[i] == DONE:
                rows.extend(_MISSING_SUBTREE[0])
            else:
                has_tree[i] = True
                _append_tree(node, 0, rows)
        # fromiter: the rows mix ints, numpy floats and Fractions (speeds), which np.array converts slowly
        trees = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=n * TREE_SIZE)
        trees = trees.reshape(n, TREE_NODES, NODE_FEATURES)

        status_one_hot = np.zeros((n, N_STATES), dtype=np.float32)
        status_one_hot[np.arange(n), self._status] = 1.0
        observations = np.empty((n, OBS_DIM), dtype=np.float32)
        observations[:, :TREE_SIZE] = normalise_trees(trees) * has_tree[:, None]
        extras = observations[:, TREE_SIZE:]
        extras[:, :N_STATES] = status_one_hot
        extras[:, N_STATES] = np.minimum(self._malfunction / self._malfunction_scale, 1.0)
        extras[:, N_STATES + 1] = np.minimum(self._distance / self._distance_scale, 1.0)
        extras[:, N_STATES + 2] = self._deadlocked
        extras[:, N_STATES + 3] = self._t / self._limit

        per_train = np.zeros((n, STATE_EXTRAS), dtype=np.float32)
        scale = np.array([self._height - 1, self._width - 1], dtype=np.float32)
        per_train[:, 0:2] = self._cell / scale
        per_train[np.arange(n), 2 + self._direction] = 1.0
        per_train[:, 6:8] = self._target / scale
        per_train[:, 8 : 8 + N_STATES] = status_one_hot
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
