"""Experiment report (mabl.report): window statistics, Markdown, curves, plots and run discovery."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from mabl.errors import MablError
from mabl.report import (
    PAPER_TABLE1,
    ema_smooth,
    final_window_stats,
    find_runs,
    learning_curves,
    markdown_table,
    paper_task,
    plot_curves,
    safe_name,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_run(run_dir: Path, env: str, algo: str, seed: int, episodes, learner=(), steps: int = 100_000,
             tail: str = "") -> Path:
    """Write config.json and metrics.jsonl. ``episodes``: (env_step, return, win or None) tuples;
    ``learner``: (env_step, {key: value}) pairs, written after the episode with the same env_step;
    ``tail``: raw text appended at the end (e.g. a torn line)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"env": env, "algo": algo, "seed": seed, "steps": steps, "preset": "quick"}
    (run_dir / "config.json").write_text(json.dumps(config))
    lines = []
    learner = list(learner)
    for n, (env_step, ret, win) in enumerate(episodes, start=1):
        record = {"kind": "episode", "env_step": env_step, "episode": n, "return": ret, "length": 10, "sps": 1.0}
        if win is not None:
            record["win"] = win
        lines.append(json.dumps(record))
        for step, losses in learner:
            if step == env_step:
                lines.append(json.dumps({"kind": "learner", "env_step": step, "learner_call": 1, **losses}))
    (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines) + tail)
    return run_dir


# Window of seed 0 (final 30000, cut 15000): the episode at exactly 15000 is out -> wins [0, 1, 1].
SEED0 = [(5000, 1.0, True), (15000, 1.0, True), (20000, 0.0, False), (25000, 1.0, True), (30000, 1.0, True)]
# Window of seed 1 (final 31000, cut 16000): the episode at exactly 16000 is out -> wins [1, 0].
SEED1 = [(10000, 0.0, False), (16000, 0.0, False), (17000, 1.0, True), (31000, 0.0, False)]


def test_window_stats_win_rate_pooled_over_seeds(tmp_path):
    make_run(tmp_path / "a", "smax:3s_vs_4z", "mabl", 0, SEED0)
    make_run(tmp_path / "b", "smax:3s_vs_4z", "mabl", 1, SEED1)
    make_run(tmp_path / "c", "smax:3s_vs_4z", "dreamer", 0,
             [(100, 0, True), (200, 0, False), (300, 0, True), (400, 0, True)])
    stats = final_window_stats(find_runs(tmp_path))
    cell = stats[("smax:3s_vs_4z", "mabl")]
    assert cell.metric == "win_rate"
    # pooled wins [0, 1, 1] + [1, 0] = [0, 1, 1, 1, 0]: mean 60 %, population std 100 * sqrt(0.6 * 0.4)
    assert cell.mean == pytest.approx(60.0)
    assert cell.std == pytest.approx(48.98979485566356)
    assert cell.n_episodes == 5
    assert [s.seed for s in cell.seeds] == [0, 1]
    assert [s.mean for s in cell.seeds] == pytest.approx([66.66666666666667, 50.0])
    assert [s.n_episodes for s in cell.seeds] == [3, 2]
    assert [s.final_env_step for s in cell.seeds] == [30000, 31000]
    assert cell.text() == "60.0 ± 49.0"
    # wins [1, 0, 1, 1] -> 75.0 ± 43.30 (std of Bernoulli outcomes in %)
    dreamer = stats[("smax:3s_vs_4z", "dreamer")]
    assert (dreamer.mean, dreamer.n_episodes) == (pytest.approx(75.0), 4)
    assert dreamer.std == pytest.approx(43.30127018922193)
    # a window one step wider takes the boundary episodes in: seed 0 [1, 0, 1, 1], seed 1 [0, 1, 0]
    wider = final_window_stats(find_runs(tmp_path), window=15001)[("smax:3s_vs_4z", "mabl")]
    assert wider.n_episodes == 7
    assert wider.mean == pytest.approx(100 * 4 / 7)
    assert [s.mean for s in wider.seeds] == pytest.approx([75.0, 100 / 3])


def test_window_stats_return_metric(tmp_path):
    make_run(tmp_path / "s0", "mpe:simple_spread", "mabl", 0, [(1000, -10.0, None), (2000, -4.0, None),
                                                               (3000, -8.0, None)])
    make_run(tmp_path / "s1", "mpe:simple_spread", "mabl", 1, [(1000, -20.0, None), (1500, -8.0, None),
                                                               (2500, -2.0, None)])
    cell = final_window_stats(find_runs(tmp_path), window=1500)[("mpe:simple_spread", "mabl")]
    # seed 0: > 1500 -> [-4, -8]; seed 1: > 1000 (1000 itself out) -> [-8, -2]; pooled [-4, -8, -8, -2]
    assert cell.metric == "return"
    assert cell.mean == pytest.approx(-5.5)
    assert cell.std == pytest.approx(2.598076211353316)  # sqrt(27 / 4)
    assert [s.mean for s in cell.seeds] == pytest.approx([-6.0, -5.0])
    assert cell.n_episodes == 4
    assert cell.text() == "-5.50 ± 2.60"  # returns between 1 and 10 in size: two decimals
    with pytest.raises(MablError):
        final_window_stats(find_runs(tmp_path), window=0)


def test_small_returns_keep_three_decimals(tmp_path):
    # SMAX returns are of order 1: one decimal would print 0.659 and 0.528 as 0.7 and 0.5
    make_run(tmp_path / "s0", "mpe:simple_spread", "mabl", 0, [(1000, 0.70, None), (2000, 0.73, None)])
    make_run(tmp_path / "s1", "mpe:simple_spread", "mabl", 1, [(1000, 0.60, None), (2000, 0.598, None)])
    make_run(tmp_path / "big", "mpe:simple_tag", "mabl", 0, [(1000, 120.0, None), (2000, 130.0, None)])
    stats = final_window_stats(find_runs(tmp_path))
    small = stats[("mpe:simple_spread", "mabl")]
    # pooled [0.70, 0.73, 0.60, 0.598]: mean 0.657, population std sqrt(mean of squared deviations)
    values = [0.70, 0.73, 0.60, 0.598]
    mean = sum(values) / 4
    std = (sum((v - mean) ** 2 for v in values) / 4) ** 0.5
    assert small.text() == f"{mean:.3f} ± {std:.3f}" == "0.657 ± 0.059"
    assert stats[("mpe:simple_tag", "mabl")].text() == "125.0 ± 5.0"
    lines = markdown_table(stats).splitlines()
    assert any(line.startswith("| mpe:simple_spread | mabl | 2 | 0, 1 | 0.715, 0.599 |") for line in lines)


def test_markdown_table(tmp_path):
    for algo in ("mappo", "foo", "mabl-sg", "ippo", "mabl"):
        make_run(tmp_path / algo / "s0", "smax:3s_vs_4z", algo, 0, SEED0)
        make_run(tmp_path / algo / "s1", "smax:3s_vs_4z", algo, 1, SEED1)
    make_run(tmp_path / "mpe", "mpe:simple_spread", "mabl", 0, [(1000, -3.0, None), (2000, -5.0, None)])
    md = markdown_table(final_window_stats(find_runs(tmp_path)))
    lines = md.splitlines()
    assert "| Task | Metric | mabl | mabl-sg | mappo | ippo | foo |" in lines
    assert "| smax:3s_vs_4z | win rate % | 60.0 ± 49.0 | 60.0 ± 49.0 | 60.0 ± 49.0 | 60.0 ± 49.0 | 60.0 ± 49.0 |" in lines
    assert "| mpe:simple_spread | return | -4.00 ± 1.00 | — | — | — | — |" in lines
    # per-seed means
    assert any(line.startswith("| smax:3s_vs_4z | mabl | 2 | 0, 1 | 66.7, 50.0 | 3, 2 | 30k, 31k | 5 |")
               for line in lines)
    # the paper's row beside ours; mpe has no paper row
    paper_line = next(line for line in lines if line.startswith("| smax:3s_vs_4z | SMAC 3s_vs_4z |"))
    assert "100k / 100k" in paper_line
    assert "60.0 ± 49.0 (paper 83±18)" in paper_line  # mabl -> MABL
    assert "— (paper 4±11)" in paper_line  # no dreamer runs
    assert "60.0 ± 49.0 (paper 0)" in paper_line  # mappo -> MAPPO
    assert "(paper 30±32)" in paper_line  # MAG
    assert not any(line.startswith("| mpe:simple_spread | ") and "paper" in line for line in lines)
    assert "env_step > final − 15000" in md and "ddof=0" in md and "pooled" in md
    assert "SMAX" in md and "not directly comparable" in md
    assert "Paper" not in markdown_table(final_window_stats(find_runs(tmp_path)), paper=None)


def test_wall_and_cpu_time_per_seed(tmp_path):
    """The per-seed table and summary.json give each run's training time from its last learner line
    that logs it; a run without timing lines (an older mabl) shows a dash / null."""
    learner = [(10_000, {"learner_s": 1.0, "wall_s": 1800.0, "cpu_s": 3000.0}),
               (30_000, {"learner_s": 1.0, "wall_s": 5400.0, "cpu_s": 9000.0}),
               (31_000, {"learner_s": 1.0})]
    make_run(tmp_path / "s0", "smax:3s_vs_4z", "mabl", 0, SEED0, learner=learner)
    make_run(tmp_path / "s1", "smax:3s_vs_4z", "mabl", 1, SEED1)
    lines = markdown_table(final_window_stats(find_runs(tmp_path))).splitlines()
    row = next(line for line in lines if line.startswith("| smax:3s_vs_4z | mabl | 2 |"))
    assert row.endswith("| 1.50 / 2.50, — |")
    summary = write_report(tmp_path, tmp_path / "report", plots=False)
    seeds = summary["cells"][0]["seeds"]
    assert [(s["wall_s"], s["cpu_s"]) for s in seeds] == [(5400.0, 9000.0), (None, None)]


def test_paper_task_mapping():
    assert paper_task("smax:3s_vs_4z") == "SMAC 3s_vs_4z"
    assert paper_task("smac:corridor") == "SMAC corridor"
    assert paper_task("smax:3m") is None
    assert paper_task("flatland:10_agents") == "Flatland 10 agents"
    assert paper_task("mamujoco:HumanoidStandup-9|8") == "MAMuJoCo HumanoidStandup 2-agent"
    assert PAPER_TABLE1["MAMuJoCo HumanoidStandup 2-agent"].values["MAPPO"] == "30k±0.3k"
    assert PAPER_TABLE1["SMAC 2s_vs_1sc"].values == {"MABL": "92±7", "Dreamer-v2": "37±40", "MAPPO": "98±3",
                                                     "MAMBA": "94±7", "MAG": "87±23"}
    assert len(PAPER_TABLE1) == 9


def test_ema_matches_hand_loop():
    x = [1.0, 0.0, 0.0, 1.0, 3.0]
    assert ema_smooth(x, 0.5) == pytest.approx([1.0, 0.5, 0.25, 0.625, 1.8125])
    s, expected = x[0], [x[0]]
    for value in x[1:]:
        s = 0.9 * s + 0.1 * value
        expected.append(s)
    assert ema_smooth(x, 0.9) == pytest.approx(expected)
    assert ema_smooth(x, 0.9) == pytest.approx([1.0, 0.9, 0.81, 0.829, 1.0461])
    assert ema_smooth(x, 0.0) == pytest.approx(x)
    with pytest.raises(MablError):
        ema_smooth(x, 1.0)


def test_curve_grid_interpolation_and_seed_bands(tmp_path):
    make_run(tmp_path / "s0", "mpe:simple_spread", "mabl", 0, [(10, 0.0, None), (20, 10.0, None), (40, 20.0, None)],
             learner=[(10, {"model/loss": 4.0, "model/kl_agent": 1.0, "policy/entropy": 0.5}),
                      (20, {"model/loss": 2.0, "model/kl_agent": 1.0}), (40, {"model/loss": 0.0})])
    make_run(tmp_path / "s1", "mpe:simple_spread", "mabl", 1, [(20, 4.0, None), (30, 8.0, None)],
             learner=[(20, {"model/loss": 6.0}), (30, {"model/loss": 2.0})])
    make_run(tmp_path / "p", "mpe:simple_spread", "mappo", 0, [(5, 1.0, None), (15, 3.0, None)],
             learner=[(15, {"policy/actor_loss": 0.1})])
    runs = find_runs(tmp_path)
    curves = learning_curves(runs, ema=0.0, points=5)
    c = curves.metric[("mpe:simple_spread", "mabl")]
    # grid: 0 .. smallest final step (30); before a seed's first episode its first value is held
    assert c.steps == pytest.approx([0.0, 7.5, 15.0, 22.5, 30.0])
    assert c.per_seed[0] == pytest.approx([0.0, 0.0, 5.0, 11.25, 15.0])
    assert c.per_seed[1] == pytest.approx([4.0, 4.0, 4.0, 5.0, 8.0])
    assert c.mean == pytest.approx([2.0, 2.0, 4.5, 8.125, 11.5])
    assert c.min == pytest.approx([0.0, 0.0, 4.0, 5.0, 8.0])
    assert c.max == pytest.approx([4.0, 4.0, 5.0, 11.25, 15.0])
    assert c.seeds == [0, 1] and c.key == "return"

    smoothed = learning_curves(runs, ema=0.5, points=5).metric[("mpe:simple_spread", "mabl")]
    # seed 0 EMA: [0, 5, 12.5] at steps [10, 20, 40]
    assert smoothed.per_seed[0] == pytest.approx(np.interp([0, 7.5, 15, 22.5, 30], [10, 20, 40], [0.0, 5.0, 12.5]))

    # world-model losses: mabl only; grid over the span both seeds cover (20 .. 30), same EMA (0 here)
    assert ("mpe:simple_spread", "mappo") not in curves.losses
    losses = curves.losses[("mpe:simple_spread", "mabl")]
    assert list(losses) == ["model/loss", "model/kl_agent"]
    loss = losses["model/loss"]
    assert loss.steps == pytest.approx([20.0, 22.5, 25.0, 27.5, 30.0])
    assert loss.per_seed[0] == pytest.approx([2.0, 1.75, 1.5, 1.25, 1.0])
    assert loss.per_seed[1] == pytest.approx([6.0, 5.0, 4.0, 3.0, 2.0])
    assert loss.mean == pytest.approx([4.0, 3.375, 2.75, 2.125, 1.5])
    assert losses["model/kl_agent"].seeds == [0]
    assert losses["model/kl_agent"].steps == pytest.approx([10.0, 12.5, 15.0, 17.5, 20.0])


def _sweep(root: Path) -> Path:
    wins = [(1000 * k, 0.0, k % 3 == 0) for k in range(1, 30)]
    loss = [(1000 * k, {"model/loss": 10.0 / k, "model/kl_agent": 1.0, "model/obs": 2.0 / k}) for k in range(5, 30)]
    for seed in (0, 1):
        make_run(root / "smax_3m" / "mabl" / f"seed{seed}", "smax:3m", "mabl", seed, wins, loss)
        make_run(root / "smax_3m" / "mappo" / f"seed{seed}", "smax:3m", "mappo", seed, wins,
                 [(1000 * k, {"policy/actor_loss": 0.1}) for k in range(1, 30)])
    make_run(root / "mpe" / "mabl" / "seed0", "mpe:simple_spread", "mabl", 0,
             [(100 * k, -float(k), None) for k in range(1, 20)])
    make_run(root / "smax_3m" / "dreamer" / "seed0", "smax:3m", "dreamer", 0, [])  # empty metrics: skipped
    return root


def test_write_report_outputs_and_plots(tmp_path):
    from matplotlib.image import imread

    sweep = _sweep(tmp_path / "sweep")
    out = tmp_path / "report"
    summary = write_report([sweep], out, points=50)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["curve_mpe_simple_spread.png", "curve_smax_3m.png", "marl_eval.json", "model_loss_smax_3m.png",
                     "summary.json", "table.md"]  # no temporary files left
    for name in ("curve_smax_3m.png", "curve_mpe_simple_spread.png", "model_loss_smax_3m.png"):
        path = out / name
        data = path.read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 1000
        height, width = imread(path).shape[:2]
        assert (width, height) == ((700, 450) if name.startswith("curve") else (1260, 320))  # 3 loss panels
    assert summary["plot_labels"] == {"curve_mpe_simple_spread.png": ["mabl"], "curve_smax_3m.png": ["mabl", "mappo"],
                                      "model_loss_smax_3m.png": ["mabl"]}
    assert sorted(Path(p).name for p in summary["files"]["plots"]) == [n for n in names if n.endswith(".png")]
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["skipped"] == [{"run_dir": str(sweep / "smax_3m" / "dreamer" / "seed0"),
                                   "reason": "metrics.jsonl is empty"}]
    cell = next(c for c in summary["cells"] if c["task"] == "smax:3m" and c["algo"] == "mabl")
    # episodes ending after 29000 - 15000: steps 15000..29000 -> 15 episodes per seed, wins at k % 3 == 0
    assert cell["n_episodes"] == 30 and cell["metric"] == "win_rate"
    assert cell["mean"] == pytest.approx(100 * 5 / 15)
    assert cell["std"] == pytest.approx(100 * math.sqrt(1 / 3 * 2 / 3))
    assert [s["mean"] for s in cell["seeds"]] == pytest.approx([100 / 3, 100 / 3])
    table = (out / "table.md").read_text()
    assert "33.3 ± 47.1" in table and "metrics.jsonl is empty" in table


def test_plot_labels_match_algorithms(tmp_path):
    runs = find_runs(_sweep(tmp_path / "sweep"))
    written = plot_curves(learning_curves(runs, points=20), tmp_path / "plots")
    assert [p.name for p in written] == ["curve_mpe_simple_spread.png", "curve_smax_3m.png", "model_loss_smax_3m.png"]
    labels = {p.name: v for p, v in written.labels.items()}
    assert labels["curve_smax_3m.png"] == ["mabl", "mappo"]
    assert set(labels["curve_smax_3m.png"]) == {r.algo for r in runs if r.env == "smax:3m"}
    assert labels["model_loss_smax_3m.png"] == ["mabl"]
    assert safe_name("smax:3m") == "smax_3m" and safe_name("mamujoco:Humanoid-9|8") == "mamujoco_Humanoid-9_8"


def test_missing_matplotlib_is_a_one_line_error(tmp_path, monkeypatch):
    sweep = _sweep(tmp_path / "sweep")
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MablError, match=r"^mabl report needs matplotlib: pip install 'mabl\[report\]'$"):
        write_report([sweep], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked before anything is written
    summary = write_report([sweep], tmp_path / "out", plots=False)
    assert summary["files"]["plots"] == [] and (tmp_path / "out" / "table.md").exists()


def test_discovery(tmp_path):
    sweep = tmp_path / "sweep"
    make_run(sweep / "smax_3m" / "mabl" / "seed0", "smax:3m", "mabl", 0, SEED0)
    make_run(sweep / "smax_3m" / "mabl" / "seed1", "smax:3m", "mabl", 1, SEED1,
             tail='{"kind": "episode", "env_step": 32000, "ret')  # killed mid-write
    make_run(sweep / "smax_3m" / "mamba" / "seed0", "smax:3m", "mamba", 0, [])  # empty
    make_run(sweep / "smax_3m" / "mamba" / "seed1", "smax:3m", "mamba", 1, [],
             tail='{"kind": "learner", "env_step": 10}\n')  # no episode lines
    make_run(sweep / "smax_3m" / "mamba" / "seed2", "smax:3m", "mamba", 2, SEED0[:2],
             tail='not json\n{"kind": "episode", "env_step": 9, "return": 0}\n')  # corrupt inside
    (sweep / "notes").mkdir()
    (sweep / "notes" / "config.json").write_text("{}")  # no metrics.jsonl: not a run
    extra = make_run(tmp_path / "single", "mpe:simple_spread", "dreamer", 3, [(50, 1.0, None)])

    skipped = []
    runs = find_runs([sweep, extra, sweep / "smax_3m"], skipped)  # overlapping paths: each run read once
    assert [(r.env, r.algo, r.seed) for r in runs] == [("mpe:simple_spread", "dreamer", 3), ("smax:3m", "mabl", 0),
                                                       ("smax:3m", "mabl", 1)]
    torn = runs[2]
    assert torn.env_step.tolist() == [10000, 16000, 17000, 31000]  # the torn line is ignored
    assert torn.win.tolist() == [False, False, True, False] and torn.notes
    assert runs[0].win is None and runs[0].returns.tolist() == [1.0] and runs[0].steps == 100_000
    reasons = {Path(s.run_dir).name: s.reason for s in skipped}
    assert reasons == {"seed0": "metrics.jsonl is empty", "seed1": "metrics.jsonl has no episode lines",
                       "seed2": "metrics.jsonl line 3 is not a JSON object"}

    for bad, pattern in [(tmp_path / "nope", "no such run or sweep directory"), (tmp_path / "empty", "no runs under"),
                         (extra / "config.json", "is not a directory")]:
        if bad.name == "empty":
            bad.mkdir()
        with pytest.raises(MablError, match=pattern) as info:
            find_runs([sweep, bad])
        assert "\n" not in str(info.value) and str(bad) in str(info.value)

    only_bad = tmp_path / "only_bad"
    make_run(only_bad / "r", "smax:3m", "mabl", 0, [])
    with pytest.raises(MablError, match="no usable runs"):
        write_report(only_bad, tmp_path / "out", plots=False)


def test_return_metric_on_a_win_task(tmp_path):
    """--metric return: the table and curves use returns where wins are logged, and the paper's
    win-rate row is not set beside a return."""
    sweep = tmp_path / "sweep"
    make_run(sweep / "a" / "seed0", "smax:3s_vs_4z", "mabl", 0, SEED0)
    make_run(sweep / "b" / "seed1", "smax:3s_vs_4z", "mabl", 1, [(10000, 0.5, False), (31000, 0.25, False)])
    auto = final_window_stats(find_runs(sweep), 15_000)
    assert auto[("smax:3s_vs_4z", "mabl")].metric == "win_rate"
    stats = final_window_stats(find_runs(sweep), 15_000, metric="return")
    cell = stats[("smax:3s_vs_4z", "mabl")]
    # seed 0's window (final 30000): returns 0, 1, 1; seed 1's (final 31000): 0.25
    assert cell.metric == "return" and math.isclose(cell.mean, (0 + 1 + 1 + 0.25) / 4)
    curves = learning_curves(find_runs(sweep), 0.9, 5, metric="return")
    assert curves.metric[("smax:3s_vs_4z", "mabl")].key == "return"
    table = markdown_table(stats)
    assert "| smax:3s_vs_4z | return |" in table and "Paper Table 1 alongside" not in table
    assert "Paper Table 1 alongside" in markdown_table(auto)
    with pytest.raises(MablError, match="metric 'wins' is not one of auto, return"):
        final_window_stats(find_runs(sweep), 15_000, metric="wins")


def test_flatland_is_compared_with_the_paper_in_arrived_percent(tmp_path):
    """Table 1's Flatland numbers are the percentage of trains that arrive, not a shaped return."""
    def flatland_run(run_dir: Path, algo: str, episodes) -> None:
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps({"env": "flatland:5_agents", "algo": algo, "seed": 0,
                                                         "steps": 100_000}))
        lines = [json.dumps({"kind": "episode", "env_step": step, "episode": n, "return": ret, "length": 500,
                             "arrived_fraction": arrived})
                 for n, (step, ret, arrived) in enumerate(episodes, start=1)]
        (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")

    # window 15000 of final 30000: the episodes at 20000, 25000, 30000 -> arrived 0.4, 0.6, 1.0
    flatland_run(tmp_path / "mabl", "mabl", [(10000, 5.0, 0.0), (20000, 12.5, 0.4), (25000, 31.0, 0.6),
                                             (30000, 52.0, 1.0)])
    flatland_run(tmp_path / "mappo", "mappo", [(30000, 3.0, 0.2)])
    stats = final_window_stats(find_runs(tmp_path), 15_000)
    cell = stats[("flatland:5_agents", "mabl")]
    assert cell.metric == "arrived"
    assert cell.mean == pytest.approx(100 * (0.4 + 0.6 + 1.0) / 3)
    assert cell.std == pytest.approx(100 * np.std([0.4, 0.6, 1.0]))
    assert cell.text() == "66.7 ± 24.9"
    table = markdown_table(stats)
    assert "| flatland:5_agents | arrived % | 66.7 ± 24.9 | 20.0 ± 0.0 |" in table
    paper_row = next(line for line in table.splitlines() if line.startswith("| flatland:5_agents | Flatland 5 agents"))
    assert "| arrived % | 66.7 ± 24.9 (paper 51±27) | — (paper 40±26) | 20.0 ± 0.0 (paper 22±22) |" in paper_row
    # the shaped return is never set beside the paper's arrived %
    returns = markdown_table(final_window_stats(find_runs(tmp_path), 15_000, metric="return"))
    window_returns = [12.5, 31.0, 52.0]
    assert f"| flatland:5_agents | return | {np.mean(window_returns):.1f} ± {np.std(window_returns):.1f} |" in returns
    assert "Paper Table 1 alongside" not in returns
