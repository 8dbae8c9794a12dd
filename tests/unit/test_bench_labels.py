"""``mabl bench speed``: any world-model algorithm, and the ratio to the released learner's numbers
printed as what it is, a ratio to another host's measurement (issue 18, "Honest ratios")."""

from __future__ import annotations

import dataclasses

import pytest

from mabl.algo import MODEL_BASED
from mabl.bench import OTHER_HOST, SpeedResult, bench_speed, format_result
from mabl.errors import MablError


def _result(**changes) -> SpeedResult:
    base = SpeedResult(map="3s_vs_4z", preset="paper", algo="mabl", device="cpu", amp=True, compiled=False, threads=2,
                       model_update_ms=410.0, policy_iteration_ms=6000.0, imagination_ms=1500.0, ppo_ms=4500.0,
                       learner_s_per_episode=48.6, model_updates_per_call=60, policy_iterations_per_call=4,
                       peak_memory_mb=1000.0, model_update_gflop=55.9, imagination_gflop=177.1, ppo_gflop=605.9,
                       matmul_gflops=400.0)
    return dataclasses.replace(base, **changes)


def test_the_ratio_line_says_it_compares_with_another_host():
    text = format_result(_result())
    assert "faster" not in text and "speed-up" in text and "ANOTHER host" in text
    wm, pi, ep = OTHER_HOST["3s_vs_4z"]
    assert (wm, pi, ep) == (820.0, 18000.0, 121.0)
    assert f"{wm / 410.0:.2f}x, {pi / 6000.0:.2f}x, {ep / 48.6:.2f}x" in text  # 2.00x, 3.00x, 2.49x
    assert "1050 ms / 25.1 s" in text  # the same released code on a second host


@pytest.mark.parametrize("changes", [{"device": "cuda:0"}, {"preset": "quick"}, {"algo": "dreamer"}])
def test_no_ratio_where_the_numbers_do_not_apply(changes):
    text = format_result(_result(**changes))
    assert "ANOTHER host" not in text and f"algo={changes.get('algo', 'mabl')}" in text


def test_bench_takes_the_world_model_algorithms_from_mabl_algo():
    assert {"mabl", "mabl-sg", "dreamer", "mamba"} <= set(MODEL_BASED)
    with pytest.raises(MablError, match="mabl, mabl-sg, dreamer, mamba"):
        bench_speed("debug", algo="mappo")


def test_bench_builds_the_learner_of_the_algorithm():
    from mabl.bench import bench_learner
    from mabl.models.world_model import VARIANTS

    bench = bench_learner("debug", algo="mamba", overrides={"model.seq_len": 4})
    assert bench.cfg.algo == "mamba" and bench.cfg.model.seq_len == 4
    assert bench.agent.variant == VARIANTS["mamba"] != VARIANTS["mabl"]
