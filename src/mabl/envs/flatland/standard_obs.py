"""Flatland's standard tree observation as the adapter's ``--flatland.obs standard`` reading: the
depth-2 ``TreeObsForRailEnv`` with a 30-step shortest-path predictor, flattened and normalised as
Flatland's ``normalize_observation`` util does (docs/ENVIRONMENTS.md, Flatland)."""

from __future__ import annotations

import math
from itertools import chain
from typing import Any

import numpy as np

from mabl.envs.flatland.rail import DONE, N_STATES

TREE_DEPTH = 2
PREDICTOR_DEPTH = 30
OBSERVATION_RADIUS = 10.0
"""Distances along the tree are divided by this and clipped (Flatland baselines' radius)."""

NODE_FEATURES = 12
TREE_NODES = sum(4**depth for depth in range(TREE_DEPTH + 1))  # 21
TREE_SIZE = TREE_NODES * NODE_FEATURES  # 252
OBS_EXTRAS = N_STATES + 4  # status one-hot, malfunction, distance, deadlocked, time
OBS_DIM = TREE_SIZE + OBS_EXTRAS  # 263


def make_tree_obs(flatland: dict[str, Any]) -> Any:
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


def flatten_trees(obs: dict, arrived: np.ndarray) -> np.ndarray:
    """Every train's normalised tree ``[N, 252]`` from Flatland's per-train trees (zeros once arrived)."""
    n = len(arrived)
    rows: list = []
    has_tree = np.zeros(n, dtype=bool)
    for i in range(n):
        node = obs.get(i)
        if node is None or arrived[i]:
            rows.extend(_MISSING_SUBTREE[0])
        else:
            has_tree[i] = True
            _append_tree(node, 0, rows)
    # fromiter: the rows mix ints, numpy floats and Fractions (speeds), which np.array converts slowly
    trees = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=n * TREE_SIZE)
    return normalise_trees(trees.reshape(n, TREE_NODES, NODE_FEATURES)) * has_tree[:, None]
