"""SMAC's battle reward and global state from SMAX's arrays (mabl.envs.smac_terms), on hand-made
numbers: the expected values are written out from SMAC's formulas (starcraft2.py: reward_battle,
step's scaling, get_state_dict), not recomputed with the code under test."""

from __future__ import annotations

import numpy as np
import pytest

from mabl.envs import smac_terms
from mabl.envs.smac_terms import SMAC_STATE_LAYOUTS, battle_reward, max_battle_reward, smac_state

MARINE, STALKER, ZEALOT = 0, 2, 3


def test_max_reward_is_smacs_pools_kills_and_win():
    # 3s_vs_4z: four zealots of 100 health + 50 shield, 10 per kill, 200 for the win
    assert max_battle_reward([ZEALOT] * 4) == 4 * 150 + 40 + 200
    assert max_battle_reward([MARINE] * 3) == 3 * 45 + 30 + 200


def episode_rewards(healths: list[list[float]], won_at_end: bool, max_reward: float) -> list[float]:
    """Step rewards of an episode given the enemies' health pools after each step (index 0: start)."""
    rewards = []
    for before, after in zip(healths[:-1], healths[1:]):
        before, after = np.asarray(before, np.float32), np.asarray(after, np.float32)
        last = len(rewards) == len(healths) - 2
        rewards.append(float(battle_reward(np, before > 0, before, after, np.bool_(won_at_end and last),
                                           max_reward)))
    return rewards


def test_a_won_episode_that_kills_everything_sums_to_20():
    types = [ZEALOT] * 4
    max_reward = max_battle_reward(types)
    healths = [[150, 150, 150, 150], [120, 150, 150, 150], [0, 150, 150, 150], [0, 60, 150, 150],
               [0, 0, 10, 150], [0, 0, 0, 150], [0, 0, 0, 70], [0, 0, 0, 0]]
    rewards = episode_rewards(healths, won_at_end=True, max_reward=max_reward)
    assert sum(rewards) == pytest.approx(20.0, rel=1e-6)
    scale = max_reward / 20.0
    # by hand: 30 damage; 120 + kill; 90; 60 + kill and 140; 10 + kill; 80; 70 + kill + win on one step
    expected = [30, 120 + 10, 90, 60 + 10 + 140, 10 + 10, 80, 70 + 10 + 200]
    np.testing.assert_allclose(rewards, np.array(expected) / scale, rtol=1e-6)


def test_no_damage_dealt_sums_to_zero():
    healths = [[45, 45, 45]] * 6
    assert sum(episode_rewards(healths, won_at_end=False, max_reward=max_battle_reward([MARINE] * 3))) == 0.0


def test_a_kill_counts_once():
    max_reward = max_battle_reward([MARINE] * 2)
    before = np.array([0.0, 45.0], np.float32)  # enemy 0 died on an earlier step
    alive = np.array([False, True])
    # nothing happens to the living one: the dead one's zero health adds no second kill bonus
    assert battle_reward(np, alive, before, before, np.bool_(False), max_reward) == 0.0
    killed = battle_reward(np, alive, before, np.array([0.0, 0.0], np.float32), np.bool_(False), max_reward)
    assert float(killed) == pytest.approx((45 + 10) / (max_reward / 20))


def test_a_draw_gets_no_win_bonus():
    max_reward = max_battle_reward([MARINE])
    reward = battle_reward(np, np.array([True]), np.array([5.0], np.float32), np.array([0.0], np.float32),
                           np.bool_(False), max_reward)
    assert float(reward) == pytest.approx((5 + 10) / (max_reward / 20))


def test_smac_state_of_a_hand_built_stalkers_and_zealots_battle():
    layout = SMAC_STATE_LAYOUTS["2s3z"]
    # units: ally stalker, ally zealot, enemy zealot, enemy stalker (SMAX order: allies first)
    types = np.array([STALKER, ZEALOT, ZEALOT, STALKER])
    health = np.array([120.0, 60.0, 150.0, 0.0], np.float32)  # the enemy stalker is dead
    alive = health > 0
    cooldown = np.array([0.935, -0.2, 0.43, 0.5], np.float32)
    max_cd = np.array([1.87, 0.86, 0.86, 1.87], np.float32)
    positions = np.array([[8.0, 16.0], [0.0, 32.0], [24.0, 16.0], [20.0, 10.0]], np.float32)
    last = np.zeros((2, 8), np.float32)
    last[0, 5], last[1, 4] = 1.0, 1.0
    state = smac_state(np, layout, 2, health, alive, types, cooldown, max_cd, positions, (32.0, 32.0), last)
    # ally rows: health, cooldown, rel x, rel y, shield, type (stalker 1 0, zealot 0 1)
    ally0 = [80 / 80, 0.5, (8 - 16) / 32, 0.0, 40 / 80, 1, 0]
    ally1 = [60 / 100, 0.0, -0.5, 0.5, 0.0, 0, 1]
    # enemy rows: health, rel x, rel y, shield, type (SMAC's enemy numbering: zealot 1 0, stalker 0 1)
    enemy0 = [1.0, 0.25, 0.0, 1.0, 1, 0]
    enemy1 = [0.0] * 6  # dead: all zeros
    expected = np.array(ally0 + ally1 + enemy0 + enemy1 + list(last.ravel()), np.float32)
    np.testing.assert_allclose(state, expected, atol=1e-6)
    assert state.shape == (smac_terms.smac_state_dim(layout, 2, 2, 8),)


def test_smac_state_size_of_3s_vs_4z_is_smacs_less_the_no_op_column():
    # SMAC: 3 x (health, cooldown, x, y, shield) + 4 x (health, x, y, shield) + 3 x 10 last actions = 61;
    # SMAX's 9 actions have no no-op: 3 fewer
    assert smac_terms.smac_state_dim(SMAC_STATE_LAYOUTS["3s_vs_4z"], 3, 4, 9) == 61 - 3
    # 3m: Terran, no shields, no type bits; SMAC: 3 x 4 + 3 x 3 + 3 x 9 = 48, SMAX: 3 x 8 actions
    assert smac_terms.smac_state_dim(SMAC_STATE_LAYOUTS["3m"], 3, 3, 8) == 48 - 3
