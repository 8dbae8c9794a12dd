"""benchmarks/loss_terms.py: which learner lines fall in a window, and the means it takes of them."""

from __future__ import annotations

import math

import pytest


def line(step: int, loss: float, reward: float, with_global: bool = True) -> dict:
    out = {"kind": "learner", "env_step": step, "model/loss": loss, "model/reward": reward}
    for term in ("kl_agent", "obs", "cont", "avail", "action"):
        out[f"model/{term}"] = loss / 10
    if with_global:
        out["model/kl_global"] = 0.5
    return out


def test_window_is_half_open_and_means_are_over_its_calls(benchmark_script):
    m = benchmark_script("loss_terms")
    learner = [line(100, 2.0, 0.1), line(200, 4.0, 0.3), line(300, 8.0, 0.0), line(301, 100.0, 9.0)]
    w = m.window_means(learner, end=300, width=200)  # (100, 300]: the calls at 200 and 300
    assert w["calls"] == 2 and w["loss"] == pytest.approx(6.0) and w["reward"] == pytest.approx(0.15)
    assert w["obs"] == pytest.approx(0.6) and w["kl_global"] == pytest.approx(0.5)
    assert m.window_means(learner, end=50, width=40) is None


def test_a_term_the_model_lacks_is_nan(benchmark_script):
    m = benchmark_script("loss_terms")
    w = m.window_means([line(10, 1.0, 0.0, with_global=False)], end=10, width=10)
    assert math.isnan(w["kl_global"]) and w["kl_agent"] == pytest.approx(0.1)
