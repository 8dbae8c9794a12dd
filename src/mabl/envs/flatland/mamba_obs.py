"""MAMBA's Flatland observation (the adapter's default, ``--flatland.obs mamba``): 205 floats per train.

MAMBA (jbr-ai-labs/mamba) builds it in ``env/flatland/observations/SimpleObservation.py`` on its own
copy of Flatland's tree search (``observations/TreeObsForRailEnv.py``), with ``max_depth=3`` and no
predictor (``train.py`` L60). This module re-implements both on the adapter's rail tables:

- 9 root features: the train's row / 100 and column / 100 (its start cell before departure), a
  number drawn uniformly from [0, 1) per train and episode, deadlocked, not malfunctioning (as
  +1 / -1), its distance to its target ``d`` normalised as ``d / 100 - 10`` (0 when unreachable),
  MAMBA's "on a switch" flag (always -1: MAMBA compares a (row, column, direction) triple with a set
  of (row, column) cells), "next to the next decision" (+1 / -1), "not departed yet" (+1 / -1);
- 14 edges of a binary tree of depth 3 (2 + 4 + 8, breadth-first; each node's branches in the order
  left, forward, right, back, at most two of them; a missing one is 14 zeros), 14 features each.

An edge follows the rail from the cell a way out leads to until a cell holding any train's target,
a switch or a dead end (a crossing is passed straight over). Its features (``get_features``,
SimpleObservation.py L137-157), with ``nd(x) = x / 100 - 10`` (0 for an infinite ``x``) and booleans
as +1 / -1: +1 if the edge's distance to the target ``t`` is >= 0, else -1 (the edge lies past the
train's own target, ``t = -1``); ``nd`` of the distance to the first train on it, of its length, of
the distance to an unusable switch (MAMBA's search stops at every switch before testing for one, so
this reads 0); ``nd(t) - nd(t_parent)``; ``nd(t + length) - nd(t_parent)``; at least 1 / 2 trains
on it facing the same way; at least 1 / 2 facing the other way; a train facing the other way with a
higher index than the observer's; the first (not deadlocked) train on it faces the same way; the
highest-index train on it faces the same way; a deadlocked train on it. ``t`` is Flatland's
distance map at the edge's last cell and direction (0 if that cell is the train's target, -1 past
it). An edge holding a deadlocked train is not expanded.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np

from mabl.envs.flatland.rail import STEP
from mabl.errors import MablError

MAX_DEPTH = 3
ROOT_FEATURES = 9
EDGE_FEATURES = 14
EDGES = sum(2**level for level in range(1, MAX_DEPTH + 1))  # 14
OBS_DIM = ROOT_FEATURES + EDGES * EDGE_FEATURES  # 205

_CROSSING = int("1000010000100001", 2)  # a diamond crossing: straight on in all four directions


def _nd(distance: float) -> float:
    """MAMBA's ``norm_dist``: ``d / 100 - 10``, 0 for an infinite distance."""
    return 0.0 if math.isinf(distance) else distance / 100.0 - 10.0


def _nb(flag: bool) -> float:
    """MAMBA's ``norm_bool``: +1 or -1."""
    return 1.0 if flag else -1.0


class _Edge:
    """One explored edge: the statistics of its line of cells, its distance to target, its children."""

    __slots__ = ("agent_dist", "length", "unusable", "same", "opposite", "max_opposite", "max_not_opposite",
                 "has_deadlocked", "first_not_opposite", "target_dist", "childs")

    def __init__(self, line: tuple, target_dist: float) -> None:
        (self.agent_dist, self.length, self.unusable, self.same, self.opposite, self.max_opposite,
         self.max_not_opposite, self.has_deadlocked, self.first_not_opposite) = line
        self.target_dist = target_dist
        self.childs: list[_Edge | None] = [None] * 4


class MambaObservation:
    """MAMBA's observation of every train on one map; :meth:`reset` per map, :meth:`observe` per step."""

    def __init__(self) -> None:
        self._lines: dict[tuple[int, int, int], tuple] = {}

    def reset(self, grid: np.ndarray, transitions: np.ndarray, targets: np.ndarray) -> None:
        """A new map: ``grid`` the rail's 16-bit cells, ``transitions`` ``[H, W, 4, 4]``, ``targets``
        ``[N, 2]`` each train's target cell."""
        self._transitions = transitions
        count = transitions.sum(axis=-1)  # [H, W, 4] ways out facing each direction
        total = transitions.sum(axis=(2, 3))
        total[grid.astype(np.int64) == _CROSSING] = 2  # MAMBA's Graph counts a crossing as a straight rail
        self._total = total
        # The single way out where a line simply continues (MAMBA's Graph.one_transition), else -1.
        self._only_way = np.where((count == 1) & (total != 1)[:, :, None], np.argmax(transitions, axis=-1), -1)
        self._has_target = np.zeros(grid.shape, dtype=bool)
        self._has_target[targets[:, 0], targets[:, 1]] = True
        self._targets = [tuple(t) for t in targets.tolist()]
        self._max_line = grid.size * 4  # no line on a valid rail is longer (a guard against loops)

    def observe(self, cells: np.ndarray, directions: np.ndarray, on_grid: np.ndarray, off_map: np.ndarray,
                arrived: np.ndarray, deadlocked: np.ndarray, malfunction: np.ndarray, distance_map: np.ndarray,
                random_handles: np.ndarray) -> np.ndarray:
        """Every train's observation ``[N, 205]`` (zeros for an arrived train, MAMBA's absorbing state).

        ``cells`` / ``directions``: where each train is and faces (its start before departure);
        ``on_grid``, ``off_map`` (not departed), ``arrived``, ``deadlocked`` bool ``[N]``;
        ``malfunction`` the steps of malfunction left; ``distance_map`` Flatland's ``[N, H, W, 4]``.
        """
        n = len(cells)
        self._lines.clear()
        self._holder = {(int(r), int(c)): i for i, (r, c) in enumerate(cells.tolist()) if on_grid[i]}
        self._train_dir = directions.tolist()
        self._deadlocked = deadlocked.tolist()
        self._distance_map = distance_map
        out = np.zeros((n, OBS_DIM), dtype=np.float32)
        for i in range(n):
            if arrived[i]:
                continue
            row, col = int(cells[i, 0]), int(cells[i, 1])
            root = self._root(i, row, col, int(directions[i]))
            features = [row / 100.0, col / 100.0, float(random_handles[i]), _nb(bool(deadlocked[i])),
                        _nb(malfunction[i] == 0), _nd(root.target_dist), -1.0, _nb(_near_next_decision(root)),
                        _nb(bool(off_map[i]))]
            _traverse(root, i, features)
            out[i] = features
        return out

    def _root(self, handle: int, row: int, col: int, direction: int) -> _Edge:
        """The tree of a train at ``(row, col)`` facing ``direction`` (MAMBA's ``TreeObsForRailEnv.get``)."""
        root = _Edge((0, 0, 0, 0, 0, 0, True, False, True), float(self._distance_map[handle, row, col, direction]))
        ways = self._transitions[row, col, direction]
        orientation = int(np.argmax(ways)) if ways.sum() == 1 else direction
        for k, way in enumerate((orientation + turn) % 4 for turn in (-1, 0, 1, 2)):
            if ways[way]:
                root.childs[k] = self._branch(handle, row + int(STEP[way, 0]), col + int(STEP[way, 1]), way, 1, False)
        return root

    def _branch(self, handle: int, row: int, col: int, direction: int, depth: int, was_target: bool) -> _Edge:
        """The edge starting at ``(row, col)`` entered facing ``direction``, and its subtree."""
        key = (row, col, direction)
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = self._line(row, col, direction)
        stats, (end_row, end_col, end_dir) = line
        last_is_target = (end_row, end_col) == self._targets[handle]
        if was_target:
            target_dist = -1.0
        elif last_is_target:
            target_dist = 0.0
        else:
            target_dist = float(self._distance_map[handle, end_row, end_col, end_dir])
        edge = _Edge(stats, target_dist)
        if depth == MAX_DEPTH or edge.has_deadlocked:
            return edge
        ways = self._transitions[end_row, end_col, end_dir]
        for k, way in enumerate((end_dir + turn) % 4 for turn in (-1, 0, 1, 2)):
            if ways[way]:
                edge.childs[k] = self._branch(handle, end_row + int(STEP[way, 0]), end_col + int(STEP[way, 1]), way,
                                              depth + 1, last_is_target or was_target)
        return edge

    def _line(self, row: int, col: int, direction: int) -> tuple[tuple, tuple[int, int, int]]:
        """Follow the rail from ``(row, col)`` facing ``direction`` to the end of its edge (MAMBA's
        ``_explore_line``, TreeObsForRailEnv.py L154-252): the edge's statistics and its last cell."""
        length, agent_dist, unusable = 1, math.inf, math.inf
        same = opposite = max_opposite = 0
        has_deadlocked, first, first_not_opposite = False, -1, True
        max_handle, max_not_opposite = -1, True
        for _ in range(self._max_line):
            other = self._holder.get((row, col))
            if other is not None:
                agent_dist = min(agent_dist, length)
                facing_same = self._train_dir[other] == direction
                if self._deadlocked[other]:
                    has_deadlocked = True
                elif first == -1:
                    first, first_not_opposite = other, facing_same
                if facing_same:
                    same += 1
                else:
                    opposite += 1
                    max_opposite = max(max_opposite, other)
                if other > max_handle:
                    max_handle, max_not_opposite = other, facing_same
            if self._has_target[row, col]:
                break
            way = int(self._only_way[row, col, direction])
            if way != -1:
                row, col, direction = row + int(STEP[way, 0]), col + int(STEP[way, 1]), way
                length += 1
                continue
            if self._total[row, col] > 2 > self._transitions[row, col, direction].sum():
                unusable = min(unusable, length)
            break  # a switch or a dead end
        else:
            raise MablError(f"Flatland rail: the line from cell ({row}, {col}) never ends (a loop without switches)")
        stats = (agent_dist, length, unusable, same, opposite, max_opposite, max_not_opposite, has_deadlocked,
                 first_not_opposite)
        return stats, (row, col, direction)


def _near_next_decision(root: _Edge) -> bool:
    """One way out, and the next switch right after it (MAMBA's ``_is_near_next_decision``)."""
    childs = [child for child in root.childs if child is not None]
    return len(childs) == 1 and (childs[0].length == 1 or childs[0].unusable == 1)


def _edge_features(edge: _Edge, parent: _Edge, handle: int) -> Sequence[float]:
    target, parent_target = edge.target_dist, parent.target_dist
    return (
        1.0 if target >= 0 else -1.0,
        _nd(edge.agent_dist),
        _nd(edge.length),
        _nd(edge.unusable),
        _nd(target) - _nd(parent_target),
        _nd(target + edge.length) - _nd(parent_target),
        _nb(edge.same >= 1),
        _nb(edge.same >= 2),
        _nb(edge.opposite >= 1),
        _nb(edge.opposite >= 2),
        _nb(edge.max_opposite > handle),
        _nb(edge.first_not_opposite),
        _nb(edge.max_not_opposite),
        _nb(edge.has_deadlocked),
    )


def _traverse(root: _Edge, handle: int, out: list[float]) -> None:
    """Append the 14 edges' features breadth-first (MAMBA's ``SimpleObservation.traverse``): each
    node's first two branches (left, forward, right, back order), 14 zeros for each one missing."""
    queue: deque[tuple[_Edge | None, int]] = deque([(root, MAX_DEPTH)])
    padding = (0.0,) * EDGE_FEATURES
    while queue:
        node, level = queue.popleft()
        childs = [child for child in node.childs if child is not None][:2] if node is not None else []
        for child in childs:
            out.extend(_edge_features(child, node, handle))  # type: ignore[arg-type]
            if level > 1:
                queue.append((child, level - 1))
        for _ in range(len(childs), 2):
            out.extend(padding)
            if level > 1:
                queue.append((None, level - 1))
