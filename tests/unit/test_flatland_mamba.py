"""MAMBA's Flatland readings, the adapter's defaults: observation, forced forward driving, deadlocks.

Expected values are derived by hand (a hand-built line of rail) or recomputed from Flatland's own
objects (its rail, agents and distance map), never from the adapter's arrays.
"""

from __future__ import annotations

import numpy as np
import pytest

from mabl.envs.flatland.mamba_obs import OBS_DIM, MambaObservation
from mabl.envs.flatland.rail import new_deadlocks, rail_tables

# ------------------------------------------------------------------------------------- observation
H, W = 3, 7
STRAIGHT_EW = 0b0000_0100_0000_0001  # facing E leave E, facing W leave W
DEAD_END_WEST = 0b0000_0000_0000_0100  # entered facing W: leave E (turn back)
DEAD_END_EAST = 0b0000_0001_0000_0000  # entered facing E: leave W (turn back)
E_, W_ = 1, 3


def nd(d: float) -> float:
    return 0.0 if np.isinf(d) else d / 100 - 10


def line_rail():
    """Row 1: a dead end, five straight cells, a dead end; train 0 at (1, 1) facing E with its target
    at (1, 4); train 1 at (1, 5) facing W with its target at (1, 2)."""
    grid = np.zeros((H, W), dtype=np.uint16)
    grid[1, 0], grid[1, 1:6], grid[1, 6] = DEAD_END_WEST, STRAIGHT_EW, DEAD_END_EAST
    targets = np.array([[1, 4], [1, 2]])
    distance = np.full((2, H, W, 4), np.inf)
    for col in range(1, 5):
        distance[0, 1, col, E_] = 4 - col
    for col in range(2, 6):
        distance[1, 1, col, W_] = col - 2
    return grid, targets, distance


def observe(deadlocked=(False, False), arrived=(False, False), malfunction=(0, 0)):
    grid, targets, distance = line_rail()
    obs = MambaObservation()
    obs.reset(grid, rail_tables(grid)[0], targets)
    return obs.observe(np.array([[1, 1], [1, 5]]), np.array([E_, W_]), on_grid=np.array([True, True]),
                       off_map=np.array([False, False]), arrived=np.array(arrived), deadlocked=np.array(deadlocked),
                       malfunction=np.array(malfunction), distance_map=distance, random_handles=np.array([0.25, 0.75]))


def edges(row: np.ndarray) -> np.ndarray:
    return row[9:].reshape(14, 14)


def test_observation_of_a_hand_built_line():
    out = observe()
    assert out.shape == (2, OBS_DIM) == (2, 205) and out.dtype == np.float32
    # train 0: row/100, col/100, its random number, not deadlocked, not broken, nd(3), "on switch" never,
    # next to the next decision (one way out, an edge of length 1), departed
    np.testing.assert_allclose(out[0, :9], [0.01, 0.01, 0.25, -1, 1, nd(3), -1, 1, -1], atol=1e-6)
    tree = edges(out[0])
    # breadth first: level 1 = [A, pad], level 2 = [B, pad, pad, pad], level 3 = [C, pad x 7]
    a = [1, 0, nd(1), 0, nd(2) - nd(3), nd(3) - nd(3), -1, -1, -1, -1, -1, 1, 1, -1]  # (1,2): train 1's target
    b = [1, 0, nd(2), 0, nd(0) - nd(2), nd(2) - nd(2), -1, -1, -1, -1, -1, 1, 1, -1]  # (1,3)-(1,4): own target
    # past the own target (t = -1): train 1 one cell in, facing the other way, with a higher index
    c = [-1, nd(1), nd(2), 0, nd(-1) - nd(0), nd(1) - nd(0), -1, -1, 1, -1, 1, -1, -1, -1]
    np.testing.assert_allclose(tree[0], a, atol=1e-5)
    np.testing.assert_allclose(tree[2], b, atol=1e-5)
    np.testing.assert_allclose(tree[6], c, atol=1e-5)
    padding = [k for k in range(14) if k not in (0, 2, 6)]
    assert not tree[padding].any()
    # train 1, the other way: the train it meets has a lower index (feature 10 reads -1)
    np.testing.assert_allclose(out[1, :9], [0.01, 0.05, 0.75, -1, 1, nd(3), -1, 1, -1], atol=1e-6)
    c1 = [-1, nd(1), nd(2), 0, nd(-1) - nd(0), nd(1) - nd(0), -1, -1, 1, -1, -1, -1, -1, -1]
    np.testing.assert_allclose(edges(out[1])[6], c1, atol=1e-5)


def test_deadlocked_arrived_and_broken_trains():
    out = observe(deadlocked=(False, True), malfunction=(7, 0))
    assert out[0, 3] == -1 and out[0, 4] == -1 and out[1, 3] == 1
    last = edges(out[0])[6]
    assert last[13] == 1 and last[11] == 1  # a deadlocked train on the edge; the first *free* train: none
    arrived = observe(arrived=(True, False))
    assert not arrived[0].any() and arrived[1].any()  # MAMBA's absorbing state: zeros


# ---------------------------------------------------------------------------------------- deadlocks
def test_ring_of_three_is_a_deadlock_under_mambas_rule_only():
    cells = [(0, 0), (0, 1), (0, 2), (5, 5)]
    ring = {0: [(0, 1)], 1: [(0, 2)], 2: [(0, 0)], 3: [(0, 0)]}  # 0 -> 1 -> 2 -> 0, train 3 waits behind 0
    on_grid, none = [True] * 4, [False] * 4
    assert new_deadlocks(cells, on_grid, none, ring.__getitem__, "mamba") == {0, 1, 2, 3}
    assert new_deadlocks(cells, on_grid, none, ring.__getitem__, "rings_move") == set()
    # a head-on pair is a deadlock under both rules; a train with a free way out is not
    pair = {0: [(0, 1)], 1: [(0, 0)], 2: [(0, 1), (9, 9)], 3: [(0, 0)]}
    for rule in ("mamba", "rings_move"):
        assert new_deadlocks(cells, on_grid, none, pair.__getitem__, rule) == {0, 1, 3}
    # blocked only by a train that may still move: not deadlocked; by a deadlocked one: deadlocked
    chain = {0: [(0, 1)], 1: [(0, 2)], 2: [(0, 3)], 3: [(0, 0)]}
    assert new_deadlocks(cells, on_grid, none, chain.__getitem__, "mamba") == set()
    assert new_deadlocks(cells, on_grid, [False, False, True, False], chain.__getitem__, "mamba") == {0, 1, 3}


def test_ring_of_four_on_a_square_loop():
    """The smallest ring the grid allows (rings of 3 cannot close on a square grid): 4 trains going
    round a 2x2 loop of curves, each facing the next one's cell."""
    cells = [(0, 0), (0, 1), (1, 1), (1, 0)]
    grid = np.zeros((2, 2), dtype=np.uint16)
    grid[0, 0] = 0b0100_0000_0000_0000  # facing N: leave E
    grid[0, 1] = 0b0000_0010_0000_0000  # facing E: leave S
    grid[1, 1] = 0b0000_0000_0001_0000  # facing S: leave W
    grid[1, 0] = 0b0000_0000_0000_1000  # facing W: leave N
    transitions = rail_tables(grid)[0]
    facing = [0, 1, 2, 3]
    steps = {0: (-1, 0), 1: (0, 1), 2: (1, 0), 3: (0, -1)}

    def exits(i):
        (row, col), d = cells[i], facing[i]
        return [(row + steps[e][0], col + steps[e][1]) for e in range(4) if transitions[row, col, d, e]]

    assert [exits(i) for i in range(4)] == [[(0, 1)], [(1, 1)], [(1, 0)], [(0, 0)]]
    assert new_deadlocks(cells, [True] * 4, [False] * 4, exits, "mamba") == {0, 1, 2, 3}
    assert new_deadlocks(cells, [True] * 4, [False] * 4, exits, "rings_move") == set()


# ------------------------------------------------------------------------------------ with Flatland
flatland = pytest.importorskip("flatland")

from flatland.envs.rail_env_action import RailEnvActions  # noqa: E402
from flatland.envs.step_utils.states import TrainState  # noqa: E402

from mabl.envs import make_env  # noqa: E402
from mabl.envs.flatland import FlatlandEnv  # noqa: E402

ON_GRID = (TrainState.MOVING, TrainState.STOPPED, TrainState.MALFUNCTION)
OFF_MAP = (TrainState.WAITING, TrainState.READY_TO_DEPART, TrainState.MALFUNCTION_OFF_MAP)
STEP = {0: (-1, 0), 1: (0, 1), 2: (1, 0), 3: (0, -1)}


def flatland_decision_cells(rail_env) -> set[tuple[int, int, int]]:
    """MAMBA's decision cells from Flatland's rail: switches (and crossings), target cells, and the
    cells and directions with a way into one."""
    rail = rail_env.rail
    height, width = rail.grid.shape
    special = {(r, c) for r in range(height) for c in range(width) if bin(rail.get_full_transitions(r, c)).count("1") > 2}
    special |= {next(iter(agent.targets))[0] for agent in rail_env.agents}
    out = {(r, c, d) for (r, c) in special for d in range(4)}
    for r in range(height):
        for c in range(width):
            for d in range(4):
                for e, bit in enumerate(rail.get_transitions(((r, c), d))):
                    if bit and (r + STEP[e][0], c + STEP[e][1]) in special:
                        out.add((r, c, d))
    return out


def leftmost_cell(rail, configuration):
    """The cell of the first way out of left, forward, right (MAMBA's action 0); back at a dead end."""
    (row, col), d = configuration
    bits = rail.get_transitions(configuration)
    ways = [(d + turn) % 4 for turn in (-1, 0, 1) if bits[(d + turn) % 4]] or [(d + 2) % 4]
    return row + STEP[ways[0]][0], col + STEP[ways[0]][1]


def random_choice(avail, rng):
    return np.array([rng.choice(np.flatnonzero(row)) for row in avail])


def test_defaults_are_mambas_and_the_standard_readings_remain():
    env = make_env("flatland:5_agents")
    assert (env.spec.obs_dim, env.spec.n_actions, env.spec.state_dim) == (205, 3, 5 * (205 + 16))
    old = make_env("flatland:5_agents", options={"obs": "standard", "actions": "all", "deadlock": "rings_move"})
    assert (old.spec.obs_dim, old.spec.n_actions) == (263, 5)


def test_observation_entries_on_seeded_maps():
    env = FlatlandEnv("5_agents", seed=0)
    rng = np.random.default_rng(1)
    timestep = env.reset(seed=5)
    handles = timestep.obs[:, 2].copy()
    assert ((0 <= handles) & (handles < 1)).all() and len(set(handles.tolist())) == 5
    seen_real = 0
    for _ in range(150):
        rail_env, obs = env.rail_env, timestep.obs
        distance = rail_env.distance_map.get()
        for i, agent in enumerate(rail_env.agents):
            row = obs[i]
            if agent.state == TrainState.DONE:
                assert not row.any()
                continue
            (r, c), d = agent.current_configuration if agent.state in ON_GRID else agent.initial_configuration
            np.testing.assert_allclose(row[:2], [r / 100, c / 100], atol=1e-6)
            assert row[2] == handles[i]
            assert row[3] == (1 if env.deadlocked[i] else -1)
            assert row[4] == (1 if agent.malfunction_handler.malfunction_down_counter == 0 else -1)
            assert row[5] == pytest.approx(nd(distance[i, r, c, d]), abs=1e-5)
            assert row[6] == -1 and row[8] == (1 if agent.state in OFF_MAP else -1)
            tree = edges(row)
            real = tree.any(axis=1)
            assert real[0], "every train has a way out"
            assert set(np.unique(tree[real][:, [0, *range(6, 14)]])) <= {-1.0, 1.0}
            seen_real += int(real.sum())
        timestep = env.step(random_choice(timestep.avail, rng))
        if timestep.done:
            timestep = env.reset()
            handles = timestep.obs[:, 2].copy()  # drawn anew each episode
    assert seen_real > 1000


def test_trains_are_driven_forward_away_from_decision_cells():
    env = FlatlandEnv("5_agents", seed=0)
    sent: list[dict] = []
    original = env.rail_env.step
    env.rail_env.step = lambda actions: sent.append(dict(actions)) or original(actions)
    rng = np.random.default_rng(2)
    counts = {"driven": 0, "moved": 0, "decides": 0, "stops": 0}  # driven: steps driven while not broken
    for episode in range(3):
        timestep = env.reset(seed=40 + episode)
        decision = flatland_decision_cells(env.rail_env)
        while not timestep.done:
            agents = env.rail_env.agents
            rail = env.rail_env.rail
            before = [(a.state, a.current_configuration, a.initial_configuration,
                       a.malfunction_handler.malfunction_down_counter) for a in agents]
            drive = []
            for i, (state, current, _, broken) in enumerate(before):
                on_grid = state in ON_GRID and not env.deadlocked[i]
                drive.append(on_grid and (broken > 0 or (*current[0], current[1]) not in decision))
                assert env.driven[i] == drive[i]
                if drive[i]:
                    assert timestep.avail[i].tolist() == [True, False, False]
                elif timestep.avail[i].all():
                    counts["decides"] += 1
            actions = random_choice(timestep.avail, rng)
            timestep = env.step(actions)
            for i, (state, current, _, _) in enumerate(before):
                action = RailEnvActions.from_value(sent[-1][i])
                if drive[i]:
                    # MAMBA's greedy action: the leftmost way out, which Flatland takes as such
                    counts["driven"] += before[i][3] == 0
                    target = leftmost_cell(rail, current)
                    moved = rail.apply_action_independent(action, current)
                    assert moved is not None and moved[0][0] == target
                    counts["moved"] += before[i][3] == 0 and agents[i].current_configuration is not None \
                        and agents[i].current_configuration[0] == target
                elif actions[i] == 2:
                    counts["stops"] += 1
                    expected = RailEnvActions.STOP_MOVING if state in ON_GRID else RailEnvActions.DO_NOTHING
                    assert action == expected
    assert counts["driven"] > 100 and counts["decides"] > 50 and counts["stops"] > 10
    # driven trains that are not broken go on unless a train blocks the way
    assert counts["moved"] > 0.7 * counts["driven"]
