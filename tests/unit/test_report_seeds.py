"""``mabl report``'s statistics over seeds (IQM, 95 % bootstrap intervals through rliable) and its
marl-eval JSON, on hand-made run directories whose numbers are worked out here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mabl.cli import main
from mabl.report import final_window_stats, find_runs

pytest.importorskip("rliable")


def make_run(run_dir: Path, env: str, algo: str, seed: int, returns: list[float], wins: list[bool] | None = None,
             evals: list[dict] | None = None) -> Path:
    """One episode of length 1000 per return (env steps 1000, 2000, ...)."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"env": env, "algo": algo, "seed": seed, "steps": 10_000}))
    lines = []
    for k, ret in enumerate(returns):
        record = {"kind": "episode", "env_step": 1000 * (k + 1), "episode": k + 1, "return": ret, "length": 1000}
        if wins is not None:
            record["win"] = wins[k]
        lines.append(json.dumps(record) + "\n")
    (run_dir / "metrics.jsonl").write_text("".join(lines))
    if evals is not None:
        (run_dir / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    return run_dir


def _four_seeds(root: Path) -> Path:
    # a window of 2000 steps keeps each seed's last 2 episodes; their means are 0, 10, 20, 100
    for seed, tail in enumerate([(0.0, 0.0), (5.0, 15.0), (20.0, 20.0), (100.0, 100.0)]):
        make_run(root / f"s{seed}", "mamujoco:Humanoid-9|8", "mabl", seed, [999.0, *tail])
    return root


def test_iqm_and_intervals_over_seeds(tmp_path, capsys):
    root = _four_seeds(tmp_path / "runs")
    assert main(["report", str(root), "--out", str(tmp_path / "rep"), "--window", "2000"]) == 0
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    (cell,) = summary["cells"]
    # IQM of 4 scores: drop the lowest and highest quarter (one each), mean of 10 and 20
    assert cell["iqm"] == pytest.approx(15.0)
    assert cell["seed_mean"] == pytest.approx(32.5)
    lo, hi = cell["iqm_ci95"]
    # a bootstrap IQM is the mean of the middle two of four resampled scores: between 0 and 100
    assert 0.0 <= lo <= 15.0 <= hi <= 100.0 and hi - lo > 5
    lo, hi = cell["seed_mean_ci95"]
    assert 0.0 <= lo < 32.5 < hi <= 100.0
    # the paper's pooled metric stays beside it: the mean of the 8 window episodes
    assert cell["mean"] == pytest.approx(np.mean([0, 0, 5, 15, 20, 20, 100, 100]))
    table = (tmp_path / "rep" / "table.md").read_text()
    assert "IQM [95% CI]" in table and "15.0 [" in table


def test_intervals_are_reproducible(tmp_path):
    from mabl.report import seed_intervals

    stats = final_window_stats(find_runs(_four_seeds(tmp_path / "runs")), window=2000)
    first, second = seed_intervals(stats, reps=500), seed_intervals(stats, reps=500)
    assert first == second


def test_marl_eval_json_layout(tmp_path, capsys):
    root = tmp_path / "runs"
    evals = [{"env_step": 1000, "episodes": 2, "mean_return": 1.5, "returns": [1.0, 2.0], "wins": [False, True],
              "win_rate": 0.5},
             {"env_step": 2000, "episodes": 2, "mean_return": 3.0, "returns": [3.0, 3.0], "wins": [True, True],
              "win_rate": 1.0}]
    make_run(root / "a", "smax:3s_vs_4z", "mabl", 0, [1.0, 2.0], [False, True], evals)
    old_style = [{"env_step": 2000, "episodes": 10, "mean_return": 0.5, "win_rate": 0.3}]  # before per-episode lists
    make_run(root / "b", "smax:3s_vs_4z", "mabl", 1, [1.0, 2.0], [False, True], old_style)
    assert main(["report", str(root), "--out", str(tmp_path / "rep")]) == 0
    data = json.loads((tmp_path / "rep" / "marl_eval.json").read_text())
    runs = data["smax"]["3s_vs_4z"]["mabl"]
    assert sorted(runs) == ["run_0", "run_1"]
    assert list(runs["run_0"]) == ["step_0", "step_1", "absolute_metrics"]  # marl-eval reads the last key as absolute
    assert runs["run_0"]["step_0"] == {"step_count": 1000, "return": [1.0, 2.0], "win_rate": [0.0, 1.0]}
    assert runs["run_0"]["absolute_metrics"] == {"return": [3.0, 3.0], "win_rate": [1.0, 1.0]}
    assert runs["run_1"]["step_0"] == {"step_count": 2000, "return": [0.5], "win_rate": [0.3]}


def test_without_rliable_the_report_says_so(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "rliable", None)  # import rliable raises ImportError
    root = _four_seeds(tmp_path / "runs")
    assert main(["report", str(root), "--out", str(tmp_path / "rep"), "--window", "2000"]) == 0
    (cell,) = json.loads((tmp_path / "rep" / "summary.json").read_text())["cells"]
    assert "iqm" not in cell and cell["mean"] == pytest.approx(32.5)
    assert "pip install 'mabl[report]'" in (tmp_path / "rep" / "table.md").read_text()
