"""SMAC's battle reward and global state, computed from SMAX's unit arrays (SPEC §8).

The released MABL code trains on SMAC built with its defaults (``smac/env/starcraft2/starcraft2.py``:
``reward_only_positive=True``, ``reward_death_value=10``, ``reward_win=200``, ``reward_scale_rate=20``,
``state_last_action=True``). JaxMARL's SMAX has its own reward (damage share plus a win bonus of 1,
~2 per episode at most) and its own global state (raw positions in 0-32, no last actions). The
functions here rebuild SMAC's quantities from what SMAX keeps, one step at a time.

Shields. SMAX has none, but its unit health is SMAC's health plus shield (stalker 160 = 80 + 80,
zealot 150 = 100 + 50, marine 45 + 0). SC2 takes damage off the shield first, so a SMAX health pool
``p`` of a unit with SMAC maxima ``(h, s)`` reads as health ``min(p, h)`` and shield ``max(p - h, 0)``.
SMAC's reward counts damage to health and shield together, which is exactly what the pool loses; SMAX
has no shield regeneration, so the pool never grows back (SMAC takes ``abs`` of the sum for that case,
kept here).

Every function takes the array module ``xp`` (``numpy`` or ``jax.numpy``), so the same code runs
inside SMAX's compiled step and in the tests on hand-made arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# SMAC's per-unit maxima, indexed by SMAX's unit-type index (its default ``unit_type_names``: marine,
# marauder, stalker, zealot, zergling, hydralisk); SMAX's own health is their sum.
SMAC_MAX_HEALTH: tuple[float, ...] = (45.0, 125.0, 80.0, 100.0, 35.0, 80.0)
SMAC_MAX_SHIELD: tuple[float, ...] = (0.0, 0.0, 80.0, 50.0, 0.0, 0.0)

REWARD_DEATH_VALUE = 10.0
"""SMAC's ``reward_death_value``: reward per enemy killed."""
REWARD_WIN = 200.0
"""SMAC's ``reward_win``."""
REWARD_SCALE_RATE = 20.0
"""SMAC's ``reward_scale_rate``: a won episode that kills every enemy sums to this."""

_STALKER, _ZEALOT = 2, 3


@dataclass(frozen=True)
class SmacStateLayout:
    """What SMAC's ``get_state`` holds per unit on one map (``smac_maps.py`` and ``get_state_dict``).

    Attributes:
        ally_shield: allies are Protoss (``a_race == "P"``): a shield column after the position.
        enemy_shield: enemies are Protoss: likewise.
        type_bits: SMAC's ``unit_type_bits``: a one-hot unit type at the end of each unit's row.
        ally_type_id: SMAX unit-type index -> SMAC's type column for an ally.
        enemy_type_id: likewise for an enemy. SMAC numbers the two teams differently on
            ``stalkers_and_zealots`` maps (allies: stalker 0, zealot 1; enemies: SC2's ids minus 73,
            zealot 0, stalker 1; ``get_unit_type_id``), and so does this.
    """

    ally_shield: bool
    enemy_shield: bool
    type_bits: int
    ally_type_id: dict[int, int]
    enemy_type_id: dict[int, int]


_MARINES = SmacStateLayout(False, False, 0, {}, {})
_STALKERS = SmacStateLayout(True, True, 0, {}, {})
_STALKERS_AND_ZEALOTS = SmacStateLayout(True, True, 2, {_STALKER: 0, _ZEALOT: 1}, {_ZEALOT: 0, _STALKER: 1})

SMAC_STATE_LAYOUTS: dict[str, SmacStateLayout] = {
    "3m": _MARINES,
    "5m_vs_6m": _MARINES,
    "2s3z": _STALKERS_AND_ZEALOTS,
    "3s5z": _STALKERS_AND_ZEALOTS,
    "3s5z_vs_3s6z": _STALKERS_AND_ZEALOTS,
    "3s_vs_4z": _STALKERS,
    "3s_vs_5z": _STALKERS,
}
"""SMAC's state layout of every SMAX map offered (``smac_maps.py``: race and ``unit_type_bits``)."""


def max_battle_reward(enemy_types: Any) -> float:
    """SMAC's ``max_reward``: the enemies' total max health and shield + 10 per enemy + 200."""
    types = [int(t) for t in enemy_types]
    pools = sum(SMAC_MAX_HEALTH[t] + SMAC_MAX_SHIELD[t] for t in types)
    return pools + REWARD_DEATH_VALUE * len(types) + REWARD_WIN


def battle_reward(xp: Any, alive_before: Any, health_before: Any, health_after: Any, won: Any,
                  max_reward: float) -> Any:
    """SMAC's scaled step reward (``reward_battle`` + the win bonus, over ``max_reward / 20``).

    Args:
        xp: ``numpy`` or ``jax.numpy``.
        alive_before: ``[M]`` bool, the enemies alive before the step (SMAC's death tracker: an enemy
            that died earlier adds nothing, so a kill counts once).
        health_before, health_after: ``[M]`` the enemies' SMAX health pools around the step.
        won: scalar bool, the step ended the battle with every enemy dead and an ally alive.
        max_reward: :func:`max_battle_reward` of the map.

    Only positive terms (``reward_only_positive``): no penalty for the allies' damage or deaths. An
    enemy killed on the step adds its remaining pool and 10; the win and the last kill can fall on
    the same step.
    """
    killed = alive_before & (health_after <= 0.0)
    damage = xp.where(killed, health_before, health_before - health_after)
    damage = xp.where(alive_before, damage, 0.0)
    raw = xp.abs(xp.sum(damage) + REWARD_DEATH_VALUE * xp.sum(killed)) + xp.where(won, REWARD_WIN, 0.0)
    return raw / (max_reward / REWARD_SCALE_RATE)


def smac_state_dim(layout: SmacStateLayout, n_allies: int, n_enemies: int, n_actions: int) -> int:
    """Length of :func:`smac_state`'s vector."""
    ally = 4 + int(layout.ally_shield) + layout.type_bits
    enemy = 3 + int(layout.enemy_shield) + layout.type_bits
    return n_allies * ally + n_enemies * enemy + n_allies * n_actions


def _type_table(xp: Any, bits: int, ids: dict[int, int]) -> Any:
    """``[n_types, bits]`` one-hot rows of SMAC's type column per SMAX unit type."""
    rows = [[1.0 if ids.get(t) == b else 0.0 for b in range(bits)] for t in range(len(SMAC_MAX_HEALTH))]
    return xp.asarray(rows, dtype=xp.float32).reshape(len(SMAC_MAX_HEALTH), bits)


def smac_state(xp: Any, layout: SmacStateLayout, n_allies: int, health: Any, alive: Any, types: Any,
               cooldown: Any, max_cooldown: Any, positions: Any, map_size: tuple[float, float],
               last_actions: Any) -> Any:
    """SMAC's global state (``get_state`` with ``state_last_action=True``) from SMAX's unit arrays.

    Args:
        xp: ``numpy`` or ``jax.numpy``.
        layout: the map's :class:`SmacStateLayout`.
        n_allies: N; units ``0..N-1`` are the allies, the rest the enemies (SMAX's order).
        health, alive, types, cooldown, positions: SMAX's ``unit_health`` ``[U]``, ``unit_alive``
            ``[U]``, ``unit_types`` ``[U]``, ``unit_weapon_cooldowns`` ``[U]``, ``unit_positions``
            ``[U, 2]``.
        max_cooldown: ``[U]`` SMAX's weapon cooldown of each unit's type (SMAC divides the cooldown by
            the type's maximum; SMAX's cooldowns are in its own time units, so its own maximum).
        map_size: SMAX's ``(map_width, map_height)``; the whole map is playable, so SMAC's
            ``max_distance_x`` is the width and positions are taken relative to the centre over it.
        last_actions: ``[N, A]`` one-hot of the actions the allies took on the step that led here
            (zeros after a reset, as SMAC's ``last_action``).

    Returns:
        ``[smac_state_dim]`` float32: allies ``[health, cooldown, rel_x, rel_y, (shield), (type)]``,
        enemies ``[health, rel_x, rel_y, (shield), (type)]``, then the last actions; a dead unit's
        row is all zeros.
    """
    f32 = xp.float32
    health_max = xp.asarray(SMAC_MAX_HEALTH, dtype=f32)[types]
    shield_max = xp.asarray(SMAC_MAX_SHIELD, dtype=f32)[types]
    hp = xp.minimum(health, health_max) / health_max
    shield = xp.maximum(health - health_max, 0.0) / xp.where(shield_max > 0, shield_max, 1.0)
    cd = xp.clip(cooldown / max_cooldown, 0.0, 1.0)
    centre = xp.asarray([map_size[0] / 2.0, map_size[1] / 2.0], dtype=f32)
    rel = (positions - centre) / xp.asarray(map_size, dtype=f32)

    n = n_allies
    ally_cols = [hp[:n, None], cd[:n, None], rel[:n]]
    enemy_cols = [hp[n:, None], rel[n:]]
    if layout.ally_shield:
        ally_cols.append(shield[:n, None])
    if layout.enemy_shield:
        enemy_cols.append(shield[n:, None])
    if layout.type_bits:
        ally_cols.append(_type_table(xp, layout.type_bits, layout.ally_type_id)[types[:n]])
        enemy_cols.append(_type_table(xp, layout.type_bits, layout.enemy_type_id)[types[n:]])
    allies = xp.concatenate([c.astype(f32) for c in ally_cols], axis=1)
    enemies = xp.concatenate([c.astype(f32) for c in enemy_cols], axis=1)
    allies = xp.where(alive[:n, None], allies, 0.0)
    enemies = xp.where(alive[n:, None], enemies, 0.0)
    return xp.concatenate([allies.reshape(-1), enemies.reshape(-1), last_actions.astype(f32).reshape(-1)])
