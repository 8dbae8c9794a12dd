"""The rail as the adapter reads it: transitions and valid moves per cell and direction, MAMBA's
decision cells and the moves of its 3 actions, and the two deadlock rules (docs/ENVIRONMENTS.md,
Flatland)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

N_ACTIONS = 5
DO_NOTHING, MOVE_LEFT, MOVE_FORWARD, MOVE_RIGHT, STOP_MOVING = range(N_ACTIONS)
"""Flatland's actions (``RailEnvActions``)."""

# TrainState values (flatland.envs.step_utils.states), fixed by Flatland's API.
WAITING, READY_TO_DEPART, MALFUNCTION_OFF_MAP, MOVING, STOPPED, MALFUNCTION, DONE = range(7)
N_STATES = 7

STEP = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]])
"""Row/column offsets of the four directions N, E, S, W (Flatland's Grid4 order)."""

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

    rows = np.arange(height)[:, None, None, None] + STEP[out_dir, 0]
    cols = np.arange(width)[None, :, None, None] + STEP[out_dir, 1]
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    lands_on_rail = on_rail[np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1), out_dir]
    return transitions, allowed & inside & lands_on_rail




def decision_cells(transitions: np.ndarray, targets: Sequence[tuple[int, int]]) -> np.ndarray:
    """MAMBA's decision cells ``[H, W, 4]`` bool: where a train facing that way acts itself.

    As MAMBA's ``GreedyChecker.reinit_greedy`` (jbr-ai-labs/mamba, env/flatland/GreedyChecker.py
    L44-78): every direction of a switch (a cell with more than two transition bits, crossings
    included) or of a cell holding a target, and every cell and direction with a way out into such
    a cell. Elsewhere trains are driven forward.
    """
    height, width = transitions.shape[:2]
    special = transitions.sum(axis=(2, 3)) > 2
    for row, col in targets:
        special[row, col] = True
    padded = np.zeros((height + 2, width + 2), dtype=bool)
    padded[1:-1, 1:-1] = special
    decision = np.repeat(special[:, :, None], 4, axis=2)
    for way in range(4):
        row, col = 1 + STEP[way]
        ahead = padded[row : row + height, col : col + width]  # the cell one step that way is special
        decision |= transitions[:, :, :, way] & ahead[:, :, None]
    return decision


def way_actions(transitions: np.ndarray) -> np.ndarray:
    """Flatland's action for MAMBA's "leftmost" and "rightmost" ways ``[H, W, 4, 2]``.

    As MAMBA's ``FlatlandWrapper.transform_action`` (env/flatland/Flatland.py L112-148): the ways
    out of a cell facing ``d`` listed left, forward, right; action 0 takes the first, action 1 the
    second (the first where there is one way out); with none of the three (a dead end, whose only
    way is back) both are MOVE_FORWARD, which Flatland turns into the reversal.
    """
    facing = np.arange(4)
    ways = np.stack([transitions[:, :, facing, (facing + turn) % 4] for turn in (-1, 0, 1)], axis=-1)  # [H, W, 4, 3]
    moves = np.array([MOVE_LEFT, MOVE_FORWARD, MOVE_RIGHT])
    first = np.where(ways.any(axis=-1), moves[np.argmax(ways, axis=-1)], MOVE_FORWARD)
    last = np.where(ways.any(axis=-1), moves[2 - np.argmax(ways[..., ::-1], axis=-1)], MOVE_FORWARD)
    return np.stack([first, last], axis=-1)


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


DEADLOCK_RULES = ("mamba", "rings_move")
"""``mamba``: MAMBA's ``DeadlockChecker``; ``rings_move``: the same without rings of 3+ trains."""


def new_deadlocks(cells: Sequence[tuple[int, int]], on_grid: Sequence[bool], deadlocked: Sequence[bool],
                  exits: Callable[[int], Sequence[tuple[int, int]]], rule: str) -> set[int]:
    """The on-grid trains that are deadlocked now and were not: the greatest set of trains whose
    every way out (``exits(i)``, the cells train ``i`` can move into) is held by a member or by an
    already deadlocked train. Such trains wait on each other for ever (no Flatland train reverses).

    ``rule="mamba"`` is MAMBA's ``DeadlockChecker.update_deadlocks`` (env/flatland/DeadlockChecker.py
    L31-110): a depth-first search marks trains with a free way out, or a way into a train that may
    still move, as free and every other blocked train as deadlocked, cycles of blocked trains
    included. ``rule="rings_move"`` leaves out trains on a ring of three or more trains each
    blocked by the next (Flatland only forbids head-on swaps, so such a ring may move on
    together), and whoever waits behind them.
    """
    holder = {cell: i for i, cell in enumerate(cells) if on_grid[i]}
    blockers: dict[int, list[int]] = {}  # trains whose every way out is held, and by whom
    for i in range(len(cells)):
        if not on_grid[i] or deadlocked[i]:
            continue
        held = [holder.get(exit_cell) for exit_cell in exits(i)]
        if held and None not in held:
            blockers[i] = held
    stuck = {i for i in blockers if not (rule == "rings_move" and _on_ring(i, blockers))}
    changed = True
    while changed:  # drop trains with a blocker that may still move, until none is left
        changed = False
        for i in list(stuck):
            if any(b not in stuck and not deadlocked[b] for b in blockers[i]):
                stuck.discard(i)
                changed = True
    return stuck
