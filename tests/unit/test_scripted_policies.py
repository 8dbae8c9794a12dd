"""benchmarks/scripted_policies.py's rules, on hand-made SMAX action masks (0-3 move, 4 stop, 5.. attack)."""

from __future__ import annotations

import numpy as np


def test_each_rule_picks_from_the_mask(benchmark_script):
    m = benchmark_script("scripted_policies")
    rng = np.random.default_rng(0)
    can_attack = np.array([1, 1, 1, 1, 1, 0, 1, 1], bool)  # enemies 1 and 2 in range, enemy 0 not
    no_attack = np.array([1, 1, 1, 1, 1, 0, 0, 0], bool)
    dead = np.array([0, 0, 0, 0, 1, 0, 0, 0], bool)  # a dead unit may only stop
    assert m.choose("focus", can_attack, rng) == 6  # the lowest-numbered enemy it may attack
    assert {m.choose("random_attack", can_attack, rng) for _ in range(50)} == {6, 7}
    for rule in ("focus", "random_attack"):
        assert m.choose(rule, no_attack, rng) == 1  # nothing in range: move with action 1
        assert m.choose(rule, dead, rng) == 4
    assert {m.choose("random", can_attack, rng) for _ in range(200)} == {0, 1, 2, 3, 4, 6, 7}
    assert m.choose("random", dead, rng) == 4
