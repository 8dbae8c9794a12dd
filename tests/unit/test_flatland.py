"""The Flatland adapter against Flatland itself: settings, reward terms, deadlocks, masks, layout.

These tests run the standard readings (``--flatland.obs standard --flatland.actions all
--flatland.deadlock rings_move``, :data:`TODAY`); MAMBA's, the defaults, are tested in
``test_flatland_mamba.py``.

Every expected value is recomputed here from Flatland's own objects (its agents, distance map and
rail), not from the adapter's arrays. Trains are driven by a forward-biased random policy, so that
episodes see both arrivals and deadlocks within a few hundred steps.
"""

from __future__ import annotations

import gc
import random
import sys
import weakref

import numpy as np
import pytest

pytest.importorskip("flatland")

from flatland.envs.agent_utils import virtual_configuration  # noqa: E402
from flatland.envs.rail_env_action import RailEnvActions  # noqa: E402
from flatland.envs.step_utils.states import TrainState  # noqa: E402

from mabl.envs.checks import CheckedEnv  # noqa: E402
from mabl.envs.flatland import env as fl  # noqa: E402
from mabl.envs.flatland import maps, standard_obs  # noqa: E402
from mabl.envs.flatland.rail import rail_tables  # noqa: E402
from mabl.errors import MablError  # noqa: E402

ON_GRID = (TrainState.MOVING, TrainState.STOPPED, TrainState.MALFUNCTION)
STEP = {0: (-1, 0), 1: (0, 1), 2: (1, 0), 3: (0, -1)}  # N, E, S, W
TODAY = {"obs": "standard", "actions": "all", "deadlock": "rings_move"}
"""The readings every run had before MAMBA's became the defaults."""


@pytest.fixture(scope="module")
def env5():
    return fl.FlatlandEnv("5_agents", seed=0, **TODAY)


@pytest.fixture(scope="module")
def env10():
    return fl.FlatlandEnv("10_agents", seed=0, **TODAY)


def forward_policy(avail: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mostly keep moving (forward first), sometimes a random available action."""
    actions = np.empty(len(avail), dtype=np.int64)
    for i, row in enumerate(avail):
        moves = [a for a in (2, 1, 3) if row[a]]
        if moves and rng.random() < 0.85:
            actions[i] = moves[0] if rng.random() < 0.7 else moves[rng.integers(len(moves))]
        else:
            actions[i] = rng.choice(np.flatnonzero(row))
    return actions


def configuration_of(agent) -> tuple[tuple[int, int], int]:
    return virtual_configuration(agent)


def distance_to_target(env: fl.FlatlandEnv, handle: int) -> float:
    """Flatland's distance map at the train's cell and direction; 0 once arrived, 1000 if unreachable."""
    agent = env.rail_env.agents[handle]
    if agent.state == TrainState.DONE:
        return 0.0
    (row, col), direction = configuration_of(agent)
    value = float(env.rail_env.distance_map.get()[handle, row, col, direction])
    return value if np.isfinite(value) else 1000.0


@pytest.mark.parametrize(("task", "n_agents", "n_cities", "rate", "limit"), [
    ("5_agents", 5, 3, 1 / 100, 573),
    ("10_agents", 10, 4, 1 / 150, 580),
])
def test_generated_maps_have_the_paper_settings(task, n_agents, n_cities, rate, limit, env5, env10):
    env = env5 if task == "5_agents" else env10
    spec = env.spec
    assert (spec.n_agents, spec.n_actions, spec.obs_dim) == (n_agents, 5, 263)
    assert spec.state_dim == n_agents * (263 + 16)
    assert spec.episode_limit == limit == int(8 * (35 + 35 + n_agents / n_cities))
    assert spec.has_action_mask and not spec.has_win
    assert spec.per_agent_reward and spec.per_agent_done
    for seed in (0, 1):
        env.reset(seed=seed)
        rail_env = env.rail_env
        assert (rail_env.height, rail_env.width) == (35, 35) and rail_env.rail.grid.shape == (35, 35)
        assert len(rail_env.agents) == n_agents
        generator = rail_env.rail_generator
        assert (generator.max_num_cities, generator.max_rails_between_cities, generator.max_rail_pairs_in_city) == (
            n_cities, 2, 2)
        assert not generator.grid_mode
        stations = rail_env.stations_links.stations
        assert 2 <= len(stations) <= n_cities
        assert {len(station.stopping_points) for station in stations.values()} <= {2, 4}  # at most 4 rails a city
        data = rail_env.malfunction_process_data
        assert (data.malfunction_rate, data.min_duration, data.max_duration) == pytest.approx((rate, 20, 50))
        assert all(agent.speed_counter.max_speed == 1 for agent in rail_env.agents)
        assert all(agent.earliest_departure == 0 for agent in rail_env.agents)
        assert rail_env._max_episode_steps == limit  # Flatland never ends an episode before the adapter


def test_malfunctions_follow_the_configured_law():
    draws = maps.Malfunctions(0.25, 20, 50, maps.import_flatland("5_agents"))
    rng = np.random.RandomState(0)
    results = [draws.generate(rng) for _ in range(20000)]
    broken = [m.num_broken_steps for m in results if m is not None]
    assert len(broken) / len(results) == pytest.approx(1 - np.exp(-0.25), abs=0.01)
    assert min(broken) == 21 and max(broken) == 51  # 20..50 steps, plus the tick of the breaking step


def test_state_layout_and_observation_extras(env5):
    env = env5
    rng = np.random.default_rng(3)
    timestep = env.reset(seed=3)
    n, obs_dim = env.spec.n_agents, env.spec.obs_dim
    for t in range(60):
        rail_env = env.rail_env
        state, obs = timestep.state, timestep.obs
        np.testing.assert_array_equal(state[: n * obs_dim], obs.ravel())
        per_train = state[n * obs_dim :].reshape(n, 16)
        for i, agent in enumerate(rail_env.agents):
            (row, col), direction = configuration_of(agent)
            target = next(iter(agent.targets))[0]
            np.testing.assert_allclose(per_train[i, 0:2], [row / 34, col / 34], rtol=1e-6)
            np.testing.assert_array_equal(per_train[i, 2:6], np.eye(4)[direction])
            np.testing.assert_allclose(per_train[i, 6:8], [target[0] / 34, target[1] / 34], rtol=1e-6)
            np.testing.assert_array_equal(per_train[i, 8:15], np.eye(7)[int(agent.state)])
            assert per_train[i, 15] == env.deadlocked[i]
            extras = obs[i, 252:]
            np.testing.assert_array_equal(extras[:7], np.eye(7)[int(agent.state)])
            assert extras[7] == pytest.approx(min(agent.malfunction_handler.malfunction_down_counter / 51, 1.0))
            assert extras[8] == pytest.approx(min(distance_to_target(env, i) / 140, 1.0))
            assert extras[9] == env.deadlocked[i]
            assert extras[10] == pytest.approx(t / 573)
            if agent.state == TrainState.DONE:
                assert not obs[i, :252].any()
        assert np.abs(obs).max() <= 1.0
        timestep = env.step(forward_policy(timestep.avail, rng))
        if timestep.done:
            break


def test_tree_normalisation_matches_flatlands_rule():
    tree = np.full((1, 21, 12), -np.inf)
    tree[0, 0] = [0, 0, 0, 0, 0, 0, 40, 0, 0, 0, 1, 0]
    tree[0, 1] = [np.inf, 12, 3, np.inf, np.inf, 5, 38, 1, 2, 30, 0.5, 0]
    tree[0, 2] = [np.inf, np.inf, np.inf, np.inf, np.inf, np.inf, np.inf, 0, 0, 0, 1, 3]
    flat = standard_obs.normalise_trees(tree)[0]
    data, distance, agents = flat[:126].reshape(21, 6), flat[126:147], flat[147:].reshape(21, 5)
    np.testing.assert_allclose(data[1], [1, 1, 0.3, 1, 1, 0.5])  # distances / 10, clipped; +inf reads 1
    assert (data[3:] == -1).all()  # missing branches
    # min 38, max 40 + 1 over the finite distances: (d - 38) / 3
    np.testing.assert_allclose(distance[:3], [2 / 3, 0, 1])
    assert (distance[3:] == -1).all()
    np.testing.assert_allclose(agents[1], [1, 1, 1, 0.5, 0])
    np.testing.assert_allclose(agents[2], [0, 0, 0, 1, 1])


def test_rail_tables_match_flatlands_transitions(env10):
    env = env10
    env.reset(seed=4)
    rail = env.rail_env.rail
    transitions, moves = rail_tables(rail.grid)
    actions = (RailEnvActions.MOVE_LEFT, RailEnvActions.MOVE_FORWARD, RailEnvActions.MOVE_RIGHT)
    checked = 0
    for row in range(35):
        for col in range(35):
            for direction in range(4):
                configuration = ((row, col), direction)
                assert tuple(transitions[row, col, direction]) == tuple(map(bool, rail.get_transitions(configuration)))
                if not rail.is_valid_configuration(configuration):
                    assert not moves[row, col, direction].any()
                    continue
                flatland_moves = [rail.apply_action_independent(a, configuration) for a in actions]
                reachable = {m[0] for m in flatland_moves if m is not None}
                offered = set()
                for k, action in enumerate(actions):
                    if moves[row, col, direction, k]:
                        assert flatland_moves[k] is not None, (configuration, action)
                        offered.add(flatland_moves[k][0])
                assert offered == reachable  # nothing valid is lost, only duplicates are masked
                checked += 1
    assert checked > 200


def test_rewards_arrivals_deadlocks_masks_and_metrics(env5):
    """Reward = 10 x arrivals + 0.01 x distance decrease - 5 x new deadlocks, step by step."""
    env = CheckedEnv(env5)
    inner = env5
    rng = np.random.default_rng(11)
    seen = {"arrivals": 0, "deadlocks": 0, "head_on": 0, "terminated": 0, "progress": 0}
    for episode in range(6):
        timestep = env.reset(seed=100 + episode)
        rail_env = inner.rail_env
        n = inner.spec.n_agents
        distance = [distance_to_target(inner, i) for i in range(n)]
        arrived = [False] * n
        deadlocked = np.zeros(n, dtype=bool)
        frozen: dict[int, tuple] = {}
        while True:
            check_masks(inner, timestep.avail)
            timestep = env.step(forward_policy(timestep.avail, rng))
            states = [agent.state for agent in rail_env.agents]
            arrived_now = [states[i] == TrainState.DONE and not arrived[i] for i in range(n)]
            new_arrivals = sum(arrived_now)
            arrived = [s == TrainState.DONE for s in states]
            new_distance = [distance_to_target(inner, i) for i in range(n)]
            progress = sum(distance) - sum(new_distance)
            flags = inner.deadlocked
            assert (flags >= deadlocked).all(), "a deadlock flag was cleared"
            new_deadlocks = int((flags & ~deadlocked).sum())
            # each train's own reward (spec.per_agent_reward) and done: arrived or deadlocked (per_agent_done)
            own = [10 * arrived_now[i] + 0.01 * (distance[i] - new_distance[i]) - 5 * (flags[i] and not deadlocked[i])
                   for i in range(n)]
            np.testing.assert_allclose(timestep.agent_reward, own, rtol=1e-6, atol=1e-5)
            assert timestep.agent_done.tolist() == [a or bool(d) for a, d in zip(arrived, flags)]
            distance = new_distance
            deadlocked = flags
            assert timestep.reward == pytest.approx(10 * new_arrivals + 0.01 * progress - 5 * new_deadlocks, abs=1e-9)
            seen["arrivals"] += new_arrivals
            seen["deadlocks"] += new_deadlocks
            seen["progress"] += progress != 0
            seen["head_on"] += check_deadlocks(inner, frozen)
            if timestep.done:
                break
            assert "metrics" not in timestep.info
        n_arrived = sum(arrived)
        assert timestep.info["metrics"] == {"arrived_fraction": pytest.approx(n_arrived / n)}
        assert timestep.terminated == all(a or d for a, d in zip(arrived, deadlocked))
        assert timestep.terminated != timestep.truncated
        seen["terminated"] += timestep.terminated
    # the episodes exercised every reward term and both kinds of termination checks
    assert seen["arrivals"] > 0 and seen["deadlocks"] > 0 and seen["head_on"] > 0 and seen["progress"] > 0
    assert seen["terminated"] > 0


def check_masks(env: fl.FlatlandEnv, avail: np.ndarray) -> None:
    """At least one action per train; moves only where Flatland's rail allows them; idle trains wait."""
    assert avail.any(axis=1).all()
    for i, agent in enumerate(env.rail_env.agents):
        row = avail[i]
        idle = (agent.state in (TrainState.DONE, TrainState.WAITING) or env.deadlocked[i]
                or agent.malfunction_handler.malfunction_down_counter > 0)
        if idle:
            assert row.tolist() == [True, False, False, False, False]
            continue
        configuration = agent.current_configuration if agent.state in ON_GRID else agent.initial_configuration
        rail = env.rail_env.rail
        for action in (1, 2, 3):
            if row[action]:
                assert rail.apply_action_independent(RailEnvActions.from_value(action), configuration) is not None
        if agent.state in ON_GRID:
            assert row[4] and not row[0]  # stop, or a move; DO_NOTHING would only repeat one of them
        else:
            assert row[0] and not row[4]  # waiting to depart: wait, or depart


def check_deadlocks(env: fl.FlatlandEnv, frozen: dict[int, tuple]) -> int:
    """Deadlocked trains never move again; trains meeting head-on on a single track are deadlocked.

    Returns the number of head-on pairs seen.
    """
    agents = env.rail_env.agents
    flags = env.deadlocked
    for i in np.flatnonzero(flags):
        configuration = configuration_of(agents[i])
        assert frozen.setdefault(int(i), configuration) == configuration, f"deadlocked train {i} moved"
        assert agents[i].state != TrainState.DONE
    on_grid = {agent.current_configuration[0]: agent for agent in agents if agent.state in ON_GRID}
    head_on = 0
    for agent in on_grid.values():
        (row, col), direction = agent.current_configuration
        ways = [d for d, bit in enumerate(env.rail_env.rail.get_transitions(agent.current_configuration)) if bit]
        if len(ways) != 1:
            continue
        ahead = (row + STEP[ways[0]][0], col + STEP[ways[0]][1])
        other = on_grid.get(ahead)
        if other is None:
            continue
        other_ways = [d for d, bit in enumerate(env.rail_env.rail.get_transitions(other.current_configuration)) if bit]
        if len(other_ways) == 1 and (ahead[0] + STEP[other_ways[0]][0], ahead[1] + STEP[other_ways[0]][1]) == (row, col):
            assert flags[agent.handle] and flags[other.handle], "a head-on pair is not flagged"
            head_on += 1
    return head_on


def test_seeding_is_reproducible_and_leaves_python_random_alone():
    first = fl.FlatlandEnv("5_agents", seed=21, **TODAY)
    second = fl.FlatlandEnv("5_agents", seed=99, **TODAY)
    random.seed(5)
    expected = random.random()
    random.seed(5)
    a = first.reset()  # the constructor's seed
    assert random.random() == expected, "Flatland's reseeding of Python's random leaked"
    b = second.reset(seed=21)
    np.testing.assert_array_equal(a.state, b.state)
    np.testing.assert_array_equal(first.rail_env.rail.grid, second.rail_env.rail.grid)
    # later unseeded resets continue each env's own generator the same way
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    for _ in range(20):
        a = first.step(forward_policy(a.avail, rng_a))
        b = second.step(forward_policy(b.avail, rng_b))
        np.testing.assert_array_equal(a.obs, b.obs)
        assert a.reward == b.reward
    np.testing.assert_array_equal(first.reset().state, second.reset().state)
    other = fl.FlatlandEnv("5_agents", seed=22, **TODAY)
    other.reset()
    assert not np.array_equal(first.rail_env.rail.grid, other.rail_env.rail.grid)


def test_a_replaced_map_is_freed(env5):
    """Flatland's method caches would keep every old map alive (megabytes per episode)."""
    env5.reset(seed=1)
    old_rail = weakref.ref(env5.rail_env.rail)
    env5.reset(seed=2)
    gc.collect()
    assert old_rail() is None


def test_truncates_exactly_at_the_episode_limit(monkeypatch):
    monkeypatch.setattr(fl, "episode_limit", lambda settings: 6)
    env = CheckedEnv(fl.FlatlandEnv("5_agents", seed=0, **TODAY))
    assert env.spec.episode_limit == 6
    timestep = env.reset()
    rng = np.random.default_rng(0)
    for t in range(1, 7):
        timestep = env.step(forward_policy(timestep.avail, rng))
        assert timestep.done == (t == 6)
    assert timestep.truncated and not timestep.terminated
    assert set(timestep.info["metrics"]) == {"arrived_fraction"}


def test_errors_are_one_line(monkeypatch):
    with pytest.raises(MablError, match=r"unknown Flatland task '3_agents': tasks are 5_agents, 10_agents$"):
        fl.FlatlandEnv("3_agents")
    for name in [module for module in sys.modules if module == "flatland" or module.startswith("flatland.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MablError, match=r"needs flatland-rl: pip install .*flatland-rl==4\.3\.0") as caught:
        fl.FlatlandEnv("5_agents")
    assert "\n" not in str(caught.value)
