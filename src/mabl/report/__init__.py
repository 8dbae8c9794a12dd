"""Experiment reports: the paper's final-performance table and learning curves from run directories.

``mabl report DIR [DIR ...]`` reads run directories written by ``mabl train`` (each holds
``config.json`` and ``metrics.jsonl``) or sweep directories holding such runs at any depth, and
writes ``table.md``, ``summary.json``, ``marl_eval.json`` and PNG plots (see :func:`write_report`).
Statistics over seeds (IQM, bootstrap intervals) and the marl-eval layout: :mod:`mabl.report.seeds`.

Metric definitions
------------------
Per-episode value
    For a task whose episodes carry a ``win`` flag (SMAX/SMAC, ...) the value of an episode is
    ``100 * win`` (0 or 100, so means are win rates in %). For a task whose episodes log Flatland's
    ``arrived_fraction`` it is ``100 * arrived_fraction`` (arrived %, the paper's Flatland metric).
    For any other task it is the episode's ``return``. A task uses the win value only when every
    run of that task logs ``win`` flags (the arrived value: every run logs ``arrived_fraction``);
    within such a run an episode line without ``win`` counts as a loss.

Final performance (the paper's Table 1 metric, paper §4 / SPEC §6: "mean ± std over the last 15k
env steps, over 3 seeds")
    For each run, ``final = env_step`` of its last episode line (the cumulative env steps at the
    end of its last logged episode). The run's window holds the episodes whose end step satisfies
    ``env_step > final - window`` (strictly greater; ``window = 15000`` by default): an episode
    that ends exactly at ``final - window`` is outside, the last episode is always inside.
    The episodes in the windows of all seeds (runs) of a (task, algorithm) cell are **pooled**: the
    cell's mean and std are the mean and the population standard deviation (``ddof=0``) of those
    per-episode values. For win tasks this is the std of 0/100 Bernoulli outcomes, e.g. wins
    ``[1, 0, 1, 1]`` give ``75.0 ± 43.3``. Seeds with more episodes in the window weigh more. The
    mean over each seed's own window episodes is reported too (per-seed means).

Learning curves
    Per run, the per-episode values in episode order are smoothed with an exponential moving
    average whose factor is the weight of the past: ``s_0 = x_0``, ``s_k = ema * s_{k-1} + (1 -
    ema) * x_k`` (``ema = 0`` is no smoothing). Each run's smoothed series, placed at the episodes'
    end steps, is linearly interpolated (``numpy.interp``) onto the cell's grid: ``points`` evenly
    spaced env steps from 0 to the smallest final episode step among the cell's seeds, both
    included. Before a run's first episode the interpolation holds the first smoothed value. The
    curve is the mean over seeds at each grid step, with the min and max over seeds as a band.

World-model loss curves
    For every ``model/*`` key of the learner lines (``model/loss``, ``model/kl_agent``, ...;
    model-free MAPPO has none), per run the values in learner-call order are smoothed with the
    **same EMA** and interpolated onto a grid of ``points`` steps from the latest first learner
    step to the earliest last learner step among the cell's seeds that log that key (the span all
    of them cover); mean, min and max over those seeds.

Input tolerance
    A final ``metrics.jsonl``/``eval.jsonl`` line that is not valid JSON (a run killed mid-write) is
    ignored. Runs whose ``metrics.jsonl`` is empty, has no episode lines, has an invalid line
    before its last one, or whose ``config.json`` is unreadable are skipped and listed with the
    reason in the summary.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mabl.errors import MablError
from mabl.report.markdown import markdown_table
from mabl.report.paper import ALGO_TO_PAPER, PAPER_ALGOS, PAPER_TABLE1, PaperRow, paper_task
from mabl.report.plots import WrittenPlots, _atomic_write_text, _import_matplotlib, plot_curves, safe_name
from mabl.report.runs import ALGO_ORDER, RunData, SkippedRun, base_algo, find_runs, load_run, order_algos
from mabl.report.seeds import DEFAULT_REPS, SeedInterval, marl_eval_json, seed_intervals
from mabl.report.stats import (
    DEFAULT_EMA,
    DEFAULT_POINTS,
    DEFAULT_WINDOW,
    CellStats,
    Curve,
    Curves,
    SeedStats,
    ema_smooth,
    final_window_stats,
    learning_curves,
    step_grid,
    task_metrics,
    window_mask,
)

__all__ = [
    "ALGO_ORDER", "ALGO_TO_PAPER", "DEFAULT_EMA", "DEFAULT_POINTS", "DEFAULT_WINDOW", "PAPER_ALGOS", "PAPER_TABLE1",
    "CellStats", "Curve", "Curves", "PaperRow", "RunData", "SeedInterval", "SeedStats", "SkippedRun", "WrittenPlots",
    "ema_smooth", "final_window_stats", "find_runs", "learning_curves", "load_run", "markdown_table",
    "marl_eval_json", "order_algos", "paper_task", "plot_curves", "safe_name", "seed_intervals", "step_grid",
    "task_metrics", "window_mask", "write_report",
]


def _json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats replaced by None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _interval_fields(iv) -> dict[str, Any]:
    if iv is None:
        return {}
    return {"iqm": iv.iqm, "iqm_ci95": list(iv.iqm_ci), "seed_mean": iv.mean, "seed_mean_ci95": list(iv.mean_ci)}


def write_report(paths: str | os.PathLike | Iterable[str | os.PathLike], out_dir: str | os.PathLike,
                 window: int = DEFAULT_WINDOW, ema: float = DEFAULT_EMA, points: int = DEFAULT_POINTS,
                 plots: bool = True, metric: str = "auto", reps: int = DEFAULT_REPS) -> dict[str, Any]:
    """Read the runs under ``paths`` and write ``table.md``, ``summary.json``, ``marl_eval.json`` and
    the PNG plots into ``out_dir`` (created if needed; each file written to a temporary name and renamed).

    Returns the summary (the content of ``summary.json``): the rules, per cell ``mean``, ``std``,
    ``n_episodes``, per-seed means and (with rliable installed) ``iqm``, ``iqm_ci95``, ``seed_mean``,
    ``seed_mean_ci95`` over seeds (:mod:`mabl.report.seeds`), the runs read, the skipped runs with
    reasons and the written files. Raises :class:`MablError` when no usable run is found or (with ``plots``) matplotlib is
    missing; the latter is checked before anything is written.
    """
    if plots:
        _import_matplotlib()
    skipped: list[SkippedRun] = []
    runs = find_runs(paths, skipped)
    if not runs:
        reasons = "; ".join(f"{s.run_dir}: {s.reason}" for s in skipped[:3])
        raise MablError(f"no usable runs: all {len(skipped)} found were skipped ({reasons})")
    stats = final_window_stats(runs, window, metric)
    curves = learning_curves(runs, ema, points, metric)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = plot_curves(curves, out) if plots else WrittenPlots()

    table_path, summary_path, marl_eval_path = out / "table.md", out / "summary.json", out / "marl_eval.json"
    intervals, intervals_note = {}, None
    try:
        intervals = seed_intervals(stats, reps=reps)
    except MablError as exc:
        intervals_note = f"No intervals over seeds: {exc}."
    _atomic_write_text(table_path, markdown_table(stats, PAPER_TABLE1, skipped, intervals, intervals_note))
    _atomic_write_text(marl_eval_path, json.dumps(_json_safe(marl_eval_json(runs, task_metrics(runs, metric))),
                                                  allow_nan=False) + "\n")

    cells = []
    for cell in stats.values():
        row = paper_task(cell.task)
        palgo = ALGO_TO_PAPER.get(base_algo(cell.algo))
        cells.append({
            "task": cell.task, "algo": cell.algo, "metric": cell.metric,
            "mean": cell.mean, "std": cell.std, "n_episodes": cell.n_episodes,
            "n_seeds": cell.n_seeds,
            "seeds": [{"seed": s.seed, "run_dir": s.run_dir, "mean": s.mean, "n_episodes": s.n_episodes,
                       "final_env_step": s.final_env_step, "steps": s.steps, "wall_s": s.wall_s, "cpu_s": s.cpu_s}
                      for s in cell.seeds],
            **_interval_fields(intervals.get((cell.task, cell.algo))),
            "paper_task": row,
            "paper": PAPER_TABLE1[row].values.get(palgo) if row and palgo else None,
        })
    summary: dict[str, Any] = {
        "window": int(window), "ema": float(ema), "points": int(points),
        "rules": {
            "window": f"per run, episodes with env_step > final - {window}; final = env_step of the run's last episode",
            "value": ("the episode return (--metric return)" if metric == "return"
                      else "100 * win (0 or 100) on tasks that log wins, 100 * arrived_fraction on tasks that log it "
                           "(Flatland), else the episode return"),
            "pooling": "mean and population std (ddof=0) over the window episodes of all seeds of a cell pooled",
            "curves": f"EMA s_k = {ema:g} * s_(k-1) + (1 - {ema:g}) * x_k, s_0 = x_0, per seed; linear interpolation "
                      f"onto {points} steps from 0 to the cell's smallest final episode step; mean/min/max over seeds",
            "losses": "same EMA over learner lines per model/* key, grid over the step range all seeds cover",
            "over_seeds": (f"IQM and mean of the per-seed window means with 95% bootstrap CIs ({reps} resamples, "
                           "seeded): " + (next(iter(intervals.values())).method if intervals else str(intervals_note))),
            "marl_eval": "marl_eval.json: eval.jsonl rounds per seed in marl-eval's raw-data layout",
        },
        "cells": cells,
        "runs": [{"run_dir": str(r.run_dir), "env": r.env, "algo": r.algo, "variant": r.variant, "seed": r.seed,
                  "steps": r.steps,
                  "preset": r.preset, "episodes": int(r.env_step.size), "final_env_step": r.final_env_step,
                  "last_eval": r.eval[-1] if r.eval else None, "notes": r.notes} for r in runs],
        "skipped": [{"run_dir": s.run_dir, "reason": s.reason} for s in skipped],
        "files": {"table": str(table_path), "summary": str(summary_path), "marl_eval": str(marl_eval_path),
                  "plots": [str(p) for p in written]},
        "plot_labels": {p.name: labels for p, labels in written.labels.items()},
    }
    _atomic_write_text(summary_path, json.dumps(_json_safe(summary), indent=2, allow_nan=False) + "\n")
    return _json_safe(summary)
