"""``mabl eval --scripted NAME`` and ``--trace`` (mabl.scripted): the scripted rules on hand-made SMAX
action masks (0-3 move, 4 stop, 5.. attack), and a trace of a hand-made env."""

from __future__ import annotations

import types

import numpy as np
import pytest

from mabl.cli import main
from mabl.scripted import ScriptedPolicy, choose, format_trace, trace_episode


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
