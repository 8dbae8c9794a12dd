"""benchmarks/avail_open_loop.py's grouping: which unit-rows count as alive / last unit / attack allowed,
and the probability that independent Bernoulli availabilities allow at least one attack."""

from __future__ import annotations

import numpy as np
import pytest


def test_attack_rates_groups_and_probabilities(benchmark_script):
    m = benchmark_script("avail_open_loop")
    move, stop_only = [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]
    # 2 rows x 3 agents, 5 + 2 actions (two enemies)
    avail = np.array([
        [move + [1, 0], move + [0, 0], stop_only + [0, 0]],  # row 0: two alive, agent 0 may attack
        [move + [0, 0], stop_only + [0, 0], stop_only + [0, 0]],  # row 1: agent 0 is the last unit, no attack
    ], bool)
    p = np.zeros(avail.shape)
    p[0, 0, 5:] = [0.9, 0.5]  # P(some attack) = 1 - 0.1 * 0.5 = 0.95
    p[0, 1, 5:] = [0.2, 0.0]  # 0.2
    p[1, 0, 5:] = [0.5, 0.5]  # 0.75
    p[1, 1, 5:] = [1.0, 1.0]  # dead: never counted
    no_attack, attack, last_no, last_attack = m.attack_rates(p, avail, np.array([True, True]))
    assert no_attack == (pytest.approx((0.2 + 0.75) / 2), 2)
    assert attack == (pytest.approx(0.95), 1)
    assert last_no == (pytest.approx(0.75), 1)
    assert last_attack == (None, 0)
    # rows not ok are left out, and a row's last unit only counts when the others are dead
    assert m.attack_rates(p, avail, np.array([True, False])) == [(pytest.approx(0.2), 1), (pytest.approx(0.95), 1),
                                                                 (None, 0), (None, 0)]
