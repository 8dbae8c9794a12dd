"""``mabl eval --scripted NAME`` and ``--trace`` (mabl.scripted): the scripted rules on hand-made SMAX
action masks (0-3 move, 4 stop, 5.. attack), and a trace of a hand-made env."""

from __future__ import annotations

import types

import numpy as np
import pytest

from mabl.cli import main
from mabl.scripted import ObsLayout, ScriptedPolicy, choose, format_trace, trace_episode


def test_each_rule_picks_from_the_mask():
    rng = np.random.default_rng(0)
    can_attack = np.array([1, 1, 1, 1, 1, 0, 1, 1], bool)  # enemies 1 and 2 in range, enemy 0 not
    no_attack = np.array([1, 1, 1, 1, 1, 0, 0, 0], bool)
    dead = np.array([0, 0, 0, 0, 1, 0, 0, 0], bool)  # a dead unit may only stop
    assert choose("focus", can_attack, rng) == 6  # the lowest-numbered enemy it may attack
    assert {choose("random_attack", can_attack, rng) for _ in range(50)} == {6, 7}
    for rule in ("focus", "random_attack"):
        assert choose(rule, no_attack, rng) == 1  # nothing in range: move with action 1
        assert choose(rule, dead, rng) == 4
    assert {choose("random", can_attack, rng) for _ in range(200)} == {0, 1, 2, 3, 4, 6, 7}
    assert choose("random", dead, rng) == 4
    actions, _ = ScriptedPolicy("focus").act(None, np.stack([can_attack, no_attack, dead]))
    assert actions.tolist() == [6, 1, 4]


class TwoStepEnv:
    """Two agents; step 1: both alive; step 2: agent 1 dead (may only stop), the episode ends won."""

    def __init__(self):
        self.t = 0

    def _step(self, reward, done, avail, win=None):
        return types.SimpleNamespace(obs=np.zeros((2, 1)), avail=np.array(avail, bool), reward=reward, done=done,
                                     info={"win": win} if win is not None else {})

    def reset(self, seed=None):
        self.t = 0
        return self._step(0.0, False, [[1, 1, 1], [1, 1, 1]])

    def step(self, actions):
        self.t += 1
        if self.t == 1:
            return self._step(0.25, False, [[1, 0, 1], [0, 1, 0]])
        return self._step(1.0, True, [[1, 1, 1], [0, 1, 0]], win=True)


class FixedPolicy:
    def reset(self):
        pass

    def act(self, obs, avail=None, deterministic=True):
        return np.array([2, 1]), {"probs": np.array([[0.1, 0.2, 0.7], [0.0, 1.0, 0.0]])}


def test_trace_records_every_step_and_the_lone_units_mask():
    episode = trace_episode(TwoStepEnv(), FixedPolicy(), seed=5)
    assert episode["length"] == 2 and episode["return"] == pytest.approx(1.25) and episode["win"] is True
    assert [s["actions"] for s in episode["steps"]] == [[2, 1], [2, 1]]
    # only the second step starts with one unit left (agent 0; agent 1's mask allows one action)
    assert episode["alone"] == [{"step": 1, "agent": 0, "action": 2, "mask": "101", "probs": [0.1, 0.2, 0.7]}]
    text = format_trace(episode, 0)
    assert text.splitlines()[0] == "episode 0 (seed 5): 2 steps, return 1.25, win True"
    assert text.splitlines()[1] == "  21:0.25 21:1"
    assert "alone at step 1: agent 0, action 2, mask 101, p [0.10 0.20 0.70]" in text


def test_scripted_refusals_are_one_line(capsys):
    assert main(["eval", "--scripted", "focus", "--env", "mpe:simple_spread"]) == 2
    assert "is not a smax: task" in capsys.readouterr().err
    assert main(["eval", "--policy", "p.pt", "--smax.walls", "lethal"]) == 2
    assert "--smax.* readings go with --scripted" in capsys.readouterr().err


# A hand-made 3m observation (3 allies, 3 enemies; 13 features per seen unit, 10 own features):
# [ally rows 0-25 | enemy rows 26-64 | own 65-74].
def _obs_3m(enemy_health, enemy_rel, enemy_last_action, own_cooldown):
    obs = np.zeros(75)
    for k in range(3):
        row = 26 + 13 * k
        obs[row] = enemy_health[k]
        obs[row + 1 : row + 3] = enemy_rel[k]
        obs[row + 5] = enemy_last_action[k] / 7.0  # an enemy's largest action index on 3m is 3 + 5 - 1
        obs[row + 7] = 1.0 if enemy_health[k] > 0 else 0.0  # marine bit
    obs[65] = 0.4  # own health
    obs[68] = own_cooldown
    obs[69] = 1.0  # own type: marine
    return obs


def test_obs_layout_sizes_of_two_maps():
    layout = ObsLayout(75, 8)  # 3m: 2 * 13 + 3 * 13 + 10 = 75, 5 moves + 3 attacks
    assert (layout.n_allies, layout.n_enemies, layout.enemies, layout.own) == (3, 3, 26, 65)
    layout = ObsLayout(4 * 13 + 6 * 13 + 10, 11)  # 5m_vs_6m
    assert (layout.n_allies, layout.n_enemies, layout.enemies, layout.own) == (5, 6, 52, 130)
    with pytest.raises(ValueError, match="not SMAX's unit_list layout"):
        ObsLayout(76, 8)


def test_focus_lowest_takes_the_weakest_enemy_in_range():
    rng, layout = np.random.default_rng(0), ObsLayout(75, 8)
    avail = np.array([1, 1, 1, 1, 1, 0, 1, 1], bool)  # enemies 1 and 2 in range
    # enemy 0 is the weakest but out of range; of the two in range enemy 2 has less health
    obs = _obs_3m([0.1, 0.8, 0.5], [(0.9, 0), (0.5, 0), (0.5, 0.1)], [0, 0, 0], 0.0)
    assert choose("focus_lowest", avail, rng, obs, layout, 0) == 7
    assert choose("focus", avail, rng) == 6  # focus would take enemy 1
    tie = _obs_3m([0.1, 0.5, 0.5], [(0.9, 0), (0.5, 0), (0.5, 0.1)], [0, 0, 0], 0.0)
    assert choose("focus_lowest", avail, rng, tie, layout, 0) == 6  # equal health: the lowest number
    no_attack = np.array([1, 1, 1, 1, 1, 0, 0, 0], bool)
    assert choose("focus_lowest", no_attack, rng, obs, layout, 0) == 1
    with pytest.raises(ValueError, match="reads the observation"):
        choose("kite", avail, rng)


def test_kite_steps_away_only_when_shot_at_and_its_weapon_is_cooling():
    rng, layout = np.random.default_rng(0), ObsLayout(75, 8)
    avail = np.array([1, 1, 1, 1, 1, 0, 1, 1], bool)
    # enemy 2 (to the right, a little up) last attacked ally 1: SMAX's enemy action 5 + (3 - 1 - 1) = 6
    shot_at_1 = [0, 0, 6]
    cooling = _obs_3m([0.0, 0.8, 0.5], [(0, 0), (0.5, 0), (0.5, 0.1)], shot_at_1, own_cooldown=1.0)
    assert layout.attackers(cooling, 1).tolist() == [2] and layout.attackers(cooling, 0).tolist() == []
    assert choose("kite", avail, rng, cooling, layout, 1) == 3  # away from (0.5, 0.1): left
    assert choose("kite", avail, rng, cooling, layout, 0) == 7  # ally 0 is not shot at: attacks
    # the weapon fires within the next step (0.5 s of a marine's 0.61 s cooldown is 0.82): it attacks
    ready = _obs_3m([0.0, 0.8, 0.5], [(0, 0), (0.5, 0), (0.5, 0.1)], shot_at_1, own_cooldown=0.8)
    assert choose("kite", avail, rng, ready, layout, 1) == 7
    # an attacker above it: the step away is down (move 2)
    above = _obs_3m([0.0, 0.8, 0.5], [(0, 0), (0.5, 0), (0.1, 0.5)], shot_at_1, own_cooldown=1.0)
    assert choose("kite", avail, rng, above, layout, 1) == 2
    actions, _ = ScriptedPolicy("kite").act(np.stack([cooling, cooling, cooling]), np.stack([avail] * 3))
    assert actions.tolist() == [7, 3, 7]
