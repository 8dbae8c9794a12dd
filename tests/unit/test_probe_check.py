"""benchmarks/probe_check.py, the independent probe that ``mabl diagnose``'s is checked against:
its windows never overlap, and its ridge read-out recovers a constructed R^2."""

from __future__ import annotations

import numpy as np
import pytest


def test_windows_are_disjoint_and_inside_the_data(benchmark_script):
    m = benchmark_script("probe_check")
    starts = m.random_windows(1000, 20, 20, np.random.default_rng(0))
    assert len(starts) == 20 and np.all(np.diff(starts) >= 20) and starts[0] >= 0 and starts[-1] + 20 <= 1000
    with pytest.raises(SystemExit, match="windows of 20 rows fit"):
        m.random_windows(100, 20, 6, np.random.default_rng(0))


def test_ridge_recovers_a_known_r2(benchmark_script):
    m = benchmark_script("probe_check")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 10))
    w = rng.normal(size=(10, 2))
    signal = (w ** 2).sum(0)
    y = x @ w + np.sqrt(signal) * rng.normal(size=(3000, 2))  # noise variance = signal variance: R^2 0.5
    r2 = m.ridge_r2(x[:1200], y[:1200], x[1200:1500], y[1200:1500], x[1500:], y[1500:])
    assert r2 == pytest.approx(0.5, abs=0.03)
