"""Experiment reports: the paper's final-performance table and learning curves from run directories.

``mabl report DIR [DIR ...]`` reads run directories written by ``mabl train`` (each holds
``config.json`` and ``metrics.jsonl``) or sweep directories holding such runs at any depth, and
writes ``table.md``, ``summary.json`` and PNG plots (see :func:`write_report`).

Metric definitions
------------------
Per-episode value
    For a task whose episodes carry a ``win`` flag (SMAX/SMAC, ...) the value of an episode is
    ``100 * win`` (0 or 100, so means are win rates in %). For any other task it is the episode's
    ``return``. A task uses the win value only when every run of that task logs ``win`` flags;
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
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mabl.errors import MablError

ALGO_ORDER = ("mabl", "mabl-sg", "dreamer", "mamba", "mappo", "mag")
"""Column order of the tables and legends; algorithms not listed follow, sorted by name."""

PAPER_ALGOS = ("MABL", "Dreamer-v2", "MAPPO", "MAMBA", "MAG")
"""Columns of the paper's Table 1."""

ALGO_TO_PAPER = {"mabl": "MABL", "dreamer": "Dreamer-v2", "mappo": "MAPPO", "mamba": "MAMBA", "mag": "MAG"}
"""Our algorithm names -> the paper's (mabl-sg is not in Table 1; MAG is not implemented here)."""

RUN_FILES = ("config.json", "metrics.jsonl")
"""A directory holding both files is a run directory."""

DEFAULT_WINDOW = 15_000
DEFAULT_EMA = 0.9
DEFAULT_POINTS = 200

MODEL_KEY_ORDER = ("model/loss", "model/kl_agent", "model/kl_global", "model/obs", "model/reward",
                   "model/cont", "model/avail", "model/action")


@dataclass
class PaperRow:
    """One row of the paper's Table 1: values as printed (strings such as ``"83±18"`` or ``"0"``)."""

    task: str
    budget: str
    metric: str
    values: dict[str, str]


def _paper_rows() -> dict[str, PaperRow]:
    win, reward = "win rate %", "reward"
    rows = [
        # task, env-step budget, metric, MABL, Dreamer-v2, MAPPO, MAMBA, MAG
        ("SMAC 2s_vs_1sc", "100k", win, "92±7", "37±40", "98±3", "94±7", "87±23"),
        ("SMAC 3s_vs_4z", "100k", win, "83±18", "4±11", "0", "24±23", "30±32"),
        ("SMAC 3s_vs_5z", "200k", win, "31±30", "14±24", "0", "2±8", "5±13"),
        ("SMAC corridor", "450k", win, "52±31", "5±16", "0", "31±30", "55±27"),
        ("SMAC 3s5z_vs_3s6z", "450k", win, "19±17", "0", "0", "19±27", "16±23"),
        ("Flatland 5 agents", "100k", reward, "51±27", "40±26", "22±22", "29±27", "19±19"),
        ("Flatland 10 agents", "450k", reward, "31±19", "22±20", "18±16", "29±27", "13±14"),
        ("MAMuJoCo Humanoid 2-agent", "200k", reward, "550±90", "304±23", "429±36", "328±27", "423±104"),
        ("MAMuJoCo HumanoidStandup 2-agent", "800k", reward, "106k±29k", "54k±11k", "30k±0.3k", "83k±30k",
         "76k±22k"),
    ]
    return {task: PaperRow(task, budget, metric, dict(zip(PAPER_ALGOS, values)))
            for task, budget, metric, *values in rows}


PAPER_TABLE1: dict[str, PaperRow] = _paper_rows()
"""The paper's Table 1 (SMAC: win rate %, others: reward; mean ± std over the last 15k steps, 3 seeds)."""

_PAPER_TASK_NAMES = {
    "flatland:5_agents": "Flatland 5 agents",
    "flatland:10_agents": "Flatland 10 agents",
    "mamujoco:Humanoid-9|8": "MAMuJoCo Humanoid 2-agent",
    "mamujoco:HumanoidStandup-9|8": "MAMuJoCo HumanoidStandup 2-agent",
}


def paper_task(task: str, paper: dict[str, PaperRow] | None = None) -> str | None:
    """The Table 1 row for one of our task names, or None: ``smax:<map>``/``smac:<map>`` -> ``SMAC <map>``,
    ``flatland:5_agents`` -> ``Flatland 5 agents``, ``mamujoco:Humanoid-9|8`` -> ``MAMuJoCo Humanoid 2-agent``..."""
    paper = PAPER_TABLE1 if paper is None else paper
    family, _, name = task.partition(":")
    row = f"SMAC {name}" if family in ("smax", "smac") else _PAPER_TASK_NAMES.get(task)
    return row if row in paper else None


# ------------------------------------------------------------------------------------------- loading
@dataclass
class RunData:
    """One run directory: its config and its logged episodes (numpy arrays in episode order)."""

    run_dir: Path
    env: str
    algo: str
    seed: int
    steps: int
    preset: str | None
    config: dict[str, Any]
    env_step: np.ndarray
    """int64, cumulative env steps at the end of each episode."""
    returns: np.ndarray
    """float64, each episode's return (NaN where the log holds null)."""
    win: np.ndarray | None
    """bool per episode where the env defines wins, else None."""
    learner: list[dict[str, Any]] = field(default_factory=list)
    eval: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Tolerated problems, e.g. an ignored torn last line."""

    @property
    def task(self) -> str:
        return self.env

    @property
    def final_env_step(self) -> int:
        return int(self.env_step[-1])

    def values(self, metric: str) -> np.ndarray:
        """Per-episode values: ``100 * win`` for ``metric == "win_rate"``, else the returns."""
        if metric == "win_rate":
            if self.win is None:
                raise ValueError(f"run {self.run_dir} logs no win flags")
            return self.win.astype(np.float64) * 100.0
        return self.returns


@dataclass
class SkippedRun:
    run_dir: str
    reason: str


class _SkipRun(Exception):
    """Internal: the run directory cannot be used; the message is the reason."""


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The JSON objects of a JSONL file; True as second item when a torn final line was ignored.

    Raises _SkipRun for an invalid line that is not the last non-empty one.
    """
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise _SkipRun(f"cannot read {path.name}: {exc.strerror or exc}") from None
    lines = [(n, line) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    records, torn = [], False
    for i, (n, line) in enumerate(lines):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            if i == len(lines) - 1:
                torn = True
                break
            raise _SkipRun(f"{path.name} line {n} is not a JSON object") from None
        records.append(record)
    return records, torn


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def load_run(run_dir: str | os.PathLike) -> RunData:
    """Read one run directory. Raises :class:`MablError` (one line) when it cannot be used."""
    try:
        return _load_run(Path(run_dir))
    except _SkipRun as exc:
        raise MablError(f"cannot use run {run_dir}: {exc}") from None


def _load_run(run_dir: Path) -> RunData:
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise _SkipRun("config.json is not readable JSON") from None
    if not isinstance(config, dict):
        raise _SkipRun("config.json is not a JSON object")
    for key in ("env", "algo", "seed"):
        if key not in config:
            raise _SkipRun(f"config.json lacks '{key}'")
    records, torn = _read_jsonl(run_dir / "metrics.jsonl")
    notes = ["ignored a torn last line of metrics.jsonl"] if torn else []
    if not records:
        raise _SkipRun("metrics.jsonl is empty" if not torn else "metrics.jsonl holds only a torn line")
    episodes = [r for r in records if r.get("kind") == "episode"]
    if not episodes:
        raise _SkipRun("metrics.jsonl has no episode lines")
    for r in episodes:
        if isinstance(r.get("env_step"), bool) or not isinstance(r.get("env_step"), (int, float)):
            raise _SkipRun(f"an episode line of metrics.jsonl lacks a numeric env_step (episode {r.get('episode')})")
    env_step = np.array([int(r["env_step"]) for r in episodes], dtype=np.int64)
    returns = np.array([_as_float(r.get("return")) for r in episodes], dtype=np.float64)
    win = None
    if any(r.get("win") is not None for r in episodes):
        win = np.array([bool(r.get("win")) for r in episodes], dtype=bool)
    order = np.argsort(env_step, kind="stable")  # logs are in order already; this guards odd files
    env_step, returns = env_step[order], returns[order]
    if win is not None:
        win = win[order]
    learner = [r for r in records if r.get("kind") == "learner" and isinstance(r.get("env_step"), (int, float))]
    evals: list[dict[str, Any]] = []
    eval_path = run_dir / "eval.jsonl"
    if eval_path.exists():
        try:
            evals, eval_torn = _read_jsonl(eval_path)
            if eval_torn:
                notes.append("ignored a torn last line of eval.jsonl")
        except _SkipRun as exc:
            notes.append(f"ignored eval.jsonl: {exc}")
    try:
        seed = int(config["seed"])
        steps = int(config.get("steps", 0))
    except (TypeError, ValueError):
        raise _SkipRun("config.json has a non-integer seed or steps") from None
    preset = config.get("preset")
    return RunData(run_dir=run_dir, env=str(config["env"]), algo=str(config["algo"]), seed=seed, steps=steps,
                   preset=None if preset is None else str(preset), config=config, env_step=env_step,
                   returns=returns, win=win, learner=learner, eval=evals, notes=notes)


def _is_run_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in RUN_FILES)


def _discover(root: Path) -> list[Path]:
    """Run directories at or below ``root`` (a run directory's own subfolders are not searched)."""
    if _is_run_dir(root):
        return [root]
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if here != root and _is_run_dir(here):
            found.append(here)
            dirnames[:] = []
            continue
        dirnames.sort()
    return sorted(found)


def find_runs(paths: str | os.PathLike | Iterable[str | os.PathLike],
              skipped: list[SkippedRun] | None = None) -> list[RunData]:
    """Load the runs in any mix of run and sweep directories, sorted by (env, algo, seed, run_dir).

    Runs are found recursively as directories holding both ``config.json`` and ``metrics.jsonl``;
    the same directory reached twice is read once. Unusable runs (see the module docstring) are
    left out and, when ``skipped`` is given, appended to it. Raises :class:`MablError` when a path
    does not exist, is not a directory or holds no run directory.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    seen: set[Path] = set()
    runs: list[RunData] = []
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise MablError(f"no such run or sweep directory: {root}")
        if not root.is_dir():
            raise MablError(f"{root} is not a directory; pass run or sweep directories")
        found = _discover(root)
        if not found:
            raise MablError(f"no runs under {root}: expected directories holding {' and '.join(RUN_FILES)}")
        for run_dir in found:
            key = run_dir.resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                runs.append(_load_run(run_dir))
            except _SkipRun as exc:
                if skipped is not None:
                    skipped.append(SkippedRun(str(run_dir), str(exc)))
    runs.sort(key=lambda r: (r.env, _algo_rank(r.algo), r.seed, str(r.run_dir)))
    return runs


# ----------------------------------------------------------------------------------------- grouping
def _algo_rank(algo: str) -> tuple[int, str]:
    return (ALGO_ORDER.index(algo), "") if algo in ALGO_ORDER else (len(ALGO_ORDER), algo)


def order_algos(algos: Iterable[str]) -> list[str]:
    """Algorithms in column order: mabl, mabl-sg, dreamer, mamba, mappo, mag, then others by name."""
    return sorted(set(algos), key=_algo_rank)


def _cells(runs: Sequence[RunData]) -> dict[tuple[str, str], list[RunData]]:
    cells: dict[tuple[str, str], list[RunData]] = {}
    for run in sorted(runs, key=lambda r: (r.env, _algo_rank(r.algo), r.seed, str(r.run_dir))):
        cells.setdefault((run.env, run.algo), []).append(run)
    return cells


def task_metrics(runs: Sequence[RunData]) -> dict[str, str]:
    """Per task: ``"win_rate"`` when every run of the task logs win flags, else ``"return"``."""
    metrics: dict[str, str] = {}
    for run in runs:
        has_win = run.win is not None
        metrics[run.env] = "win_rate" if metrics.get(run.env, "win_rate") == "win_rate" and has_win else "return"
    return metrics


# ------------------------------------------------------------------------------------ final window
@dataclass
class SeedStats:
    seed: int
    run_dir: str
    mean: float
    n_episodes: int
    final_env_step: int
    steps: int
    """The run's configured step budget (config ``steps``)."""


@dataclass
class CellStats:
    """Final performance of one (task, algorithm) cell; see the module docstring for the rule."""

    task: str
    algo: str
    metric: str
    window: int
    mean: float
    std: float
    n_episodes: int
    seeds: list[SeedStats]

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def text(self) -> str:
        return f"{self.mean:.1f} ± {self.std:.1f}"


def window_mask(env_step: np.ndarray, window: int) -> np.ndarray:
    """Episodes in the final window: ``env_step > env_step[-1] - window`` (strict)."""
    env_step = np.asarray(env_step)
    return env_step > env_step[-1] - window


def final_window_stats(runs: Sequence[RunData], window: int = DEFAULT_WINDOW) -> dict[tuple[str, str], CellStats]:
    """The paper's Table 1 metric per (task, algorithm) cell, keyed by ``(task, algo)``.

    Per run, the episodes with ``env_step > final_env_step - window`` are kept, where
    ``final_env_step`` is the env_step of the run's last episode line (an episode ending exactly at
    ``final_env_step - window`` is excluded). The per-episode value is ``100 * win`` (win rate in %)
    on tasks that log wins, else the return. **All kept episodes of all seeds of the cell are
    pooled**: ``mean`` and ``std`` are the mean and population std (``ddof=0``) of those values
    (for wins: the std of the 0/100 outcomes), ``n_episodes`` their count; ``seeds`` lists each
    seed's own mean over its kept episodes. Cells come in task order, then column order.
    """
    if window <= 0:
        raise MablError(f"window must be positive, not {window}")
    metrics = task_metrics(runs)
    stats: dict[tuple[str, str], CellStats] = {}
    for (task, algo), cell_runs in _cells(runs).items():
        metric = metrics[task]
        pooled, seeds = [], []
        for run in cell_runs:
            values = run.values(metric)[window_mask(run.env_step, window)]
            pooled.append(values)
            seeds.append(SeedStats(seed=run.seed, run_dir=str(run.run_dir), mean=float(np.mean(values)),
                                   n_episodes=int(values.size), final_env_step=run.final_env_step, steps=run.steps))
        values = np.concatenate(pooled)
        stats[(task, algo)] = CellStats(task=task, algo=algo, metric=metric, window=int(window),
                                        mean=float(np.mean(values)), std=float(np.std(values, ddof=0)),
                                        n_episodes=int(values.size), seeds=seeds)
    return stats


# ------------------------------------------------------------------------------------------ markdown
def _fmt_steps(value: int) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1_000:
        return f"{value / 1_000:g}k"
    return str(value)


def _fmt_num(value: float) -> str:
    return f"{value:.1f}"


def _metric_label(metric: str) -> str:
    return "win rate %" if metric == "win_rate" else "return"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown_table(stats: dict[tuple[str, str], CellStats], paper: dict[str, PaperRow] | None = PAPER_TABLE1,
                   skipped: Sequence[SkippedRun] = ()) -> str:
    """The report as Markdown: the final-performance table (rows = tasks, columns = algorithms,
    cells ``mean ± std``), per-seed means, the paper's Table 1 beside ours for tasks it has,
    skipped runs, and footnotes stating the exact rules. ``paper=None`` leaves the paper out."""
    cells = list(stats.values())
    if not cells:
        return "# MABL report\n\nNo runs.\n"
    window = cells[0].window
    tasks = sorted({c.task for c in cells})
    algos = order_algos(c.algo for c in cells)
    out = ["# MABL report", "", f"## Final performance (last {_fmt_steps(window)} env steps)", ""]
    rows = []
    for task in tasks:
        metric = next(c.metric for c in cells if c.task == task)
        row = [task, _metric_label(metric)]
        for algo in algos:
            cell = stats.get((task, algo))
            row.append(cell.text() if cell else "—")
        rows.append(row)
    out += _table(["Task", "Metric", *algos], rows)
    out += ["", "Cells: mean ± std (population, ddof=0) of the per-episode values pooled over all seeds [1].", ""]

    out += ["## Per-seed means", ""]
    rows = []
    for cell in cells:
        rows.append([cell.task, cell.algo, str(cell.n_seeds),
                     ", ".join(str(s.seed) for s in cell.seeds),
                     ", ".join(_fmt_num(s.mean) for s in cell.seeds),
                     ", ".join(str(s.n_episodes) for s in cell.seeds),
                     ", ".join(_fmt_steps(s.final_env_step) for s in cell.seeds),
                     str(cell.n_episodes)])
    out += _table(["Task", "Algorithm", "Seeds", "Seed ids", "Per-seed means", "Episodes per seed",
                   "Final env step per seed", "Pooled episodes"], rows)
    out.append("")

    compared = [(task, paper_task(task, paper)) for task in tasks] if paper else []
    compared = [(task, row) for task, row in compared if row is not None]
    if compared:
        out += ["## Paper Table 1 alongside", ""]
        rows = []
        for task, row_name in compared:
            prow = paper[row_name]
            budgets = sorted({s.steps for (t, _), c in stats.items() if t == task for s in c.seeds})
            row = [task, prow.task, f"{prow.budget} / {', '.join(_fmt_steps(b) for b in budgets)}", prow.metric]
            for palgo in PAPER_ALGOS:
                ours = [c for (t, a), c in stats.items() if t == task and ALGO_TO_PAPER.get(a) == palgo]
                ours_text = ours[0].text() if ours else "—"
                row.append(f"{ours_text} (paper {prow.values.get(palgo, '—')})")
            rows.append(row)
        out += _table(["Task", "Paper task", "Budget (paper / ours)", "Paper metric", *PAPER_ALGOS], rows)
        out += ["", "Each cell: ours (paper). Ours: mabl→MABL, dreamer→Dreamer-v2, mappo→MAPPO, mamba→MAMBA, "
                "mag→MAG; mabl-sg is not in Table 1.", ""]

    if skipped:
        out += ["## Skipped runs", ""]
        out += _table(["Run directory", "Reason"], [[s.run_dir, s.reason] for s in skipped])
        out.append("")

    out += ["---", "",
            f"[1] Metric: per run, the episodes whose end step satisfies env_step > final − {window}, where final "
            "is the env_step of the run's last episode (an episode ending exactly at final − "
            f"{window} is excluded). Per-episode value: 100 × win (0 or 100) on tasks that log wins, "
            "else the episode return. The windows' episodes of all seeds of a (task, algorithm) cell are "
            "pooled; the cell is their mean ± population std (ddof=0), so for win rates the std is that of "
            "0/100 outcomes and seeds with more episodes weigh more. Per-seed means are each seed's mean over "
            "its own window."]
    if compared:
        out += ["", "[2] Paper: Table 1 of the MABL paper (AAMAS 2024); SMAC win rate %, others reward; mean ± std "
                "over the last 15k steps over 3 seeds, copied as printed, at the paper's budgets."]
        if any(task.startswith("smax:") for task, _ in compared):
            out += ["", "[3] smax:<map> tasks run SMAX (JaxMARL), a stand-in for SMAC, not SMAC itself: "
                    "its units, dynamics and win conditions differ, so its returns and win rates are not "
                    "directly comparable with the paper's SMAC numbers."]
    return "\n".join(out) + "\n"


# -------------------------------------------------------------------------------------------- curves
def ema_smooth(values: Sequence[float] | np.ndarray, ema: float = DEFAULT_EMA) -> np.ndarray:
    """Exponential moving average with ``ema`` the weight of the past:
    ``s_0 = x_0``, ``s_k = ema * s_{k-1} + (1 - ema) * x_k``."""
    if not 0.0 <= ema < 1.0:
        raise MablError(f"ema must be in [0, 1), not {ema}")
    x = np.asarray(values, dtype=np.float64)
    out = np.empty_like(x)
    if x.size == 0:
        return out
    s = x[0]
    for k, value in enumerate(x):
        s = value if k == 0 else ema * s + (1.0 - ema) * value
        out[k] = s
    return out


def step_grid(end: float, points: int = DEFAULT_POINTS, start: float = 0.0) -> np.ndarray:
    """``points`` evenly spaced env steps from ``start`` to ``end``, both included."""
    if points < 2:
        raise MablError(f"points must be at least 2, not {points}")
    return np.linspace(float(start), float(end), int(points))


@dataclass
class Curve:
    """One series of one (task, algorithm) cell on an env-step grid, over its seeds."""

    task: str
    algo: str
    key: str
    """``"win_rate"``, ``"return"`` or a learner key such as ``"model/loss"``."""
    steps: np.ndarray
    mean: np.ndarray
    min: np.ndarray
    max: np.ndarray
    per_seed: np.ndarray
    """(n_seeds, points): each seed's smoothed, interpolated series."""
    seeds: list[int]


@dataclass
class Curves:
    ema: float
    points: int
    metric: dict[tuple[str, str], Curve]
    """Per (task, algo): the episode metric (win rate % or return)."""
    losses: dict[tuple[str, str], dict[str, Curve]]
    """Per (task, algo) with world-model losses: ``model/*`` key -> curve."""


def _seed_curve(task: str, algo: str, key: str, grid: np.ndarray, series: list[tuple[int, np.ndarray, np.ndarray]],
                ema: float) -> Curve:
    per_seed = np.stack([np.interp(grid, x, ema_smooth(y, ema)) for _, x, y in series])
    return Curve(task=task, algo=algo, key=key, steps=grid, mean=per_seed.mean(axis=0), min=per_seed.min(axis=0),
                 max=per_seed.max(axis=0), per_seed=per_seed, seeds=[seed for seed, _, _ in series])


def _loss_keys(runs: Sequence[RunData]) -> list[str]:
    keys = {k for run in runs for r in run.learner for k, v in r.items()
            if k.startswith("model/") and isinstance(v, (int, float)) and not isinstance(v, bool)}
    known = [k for k in MODEL_KEY_ORDER if k in keys]
    return known + sorted(keys - set(known))


def learning_curves(runs: Sequence[RunData], ema: float = DEFAULT_EMA, points: int = DEFAULT_POINTS) -> Curves:
    """Learning and world-model loss curves per (task, algorithm); rules in the module docstring.

    Metric curves: per seed, EMA of the per-episode values (``s_0 = x_0``, ``s_k = ema s_{k-1} +
    (1 - ema) x_k``) at the episodes' end steps, linearly interpolated onto ``points`` steps from
    0 to the smallest final episode step among the cell's seeds; mean, min and max over seeds.
    Loss curves: the same EMA over learner lines of each ``model/*`` key, on ``points`` steps
    spanning the range every seed that logs the key covers.
    """
    ema_smooth([], ema)  # validate ema and points up front, even for an empty run list
    step_grid(1.0, points)
    metrics = task_metrics(runs)
    metric_curves: dict[tuple[str, str], Curve] = {}
    loss_curves: dict[tuple[str, str], dict[str, Curve]] = {}
    for (task, algo), cell_runs in _cells(runs).items():
        metric = metrics[task]
        grid = step_grid(min(run.final_env_step for run in cell_runs), points)
        series = [(run.seed, run.env_step.astype(np.float64), run.values(metric)) for run in cell_runs]
        metric_curves[(task, algo)] = _seed_curve(task, algo, metric, grid, series, ema)
        for key in _loss_keys(cell_runs):
            series = []
            for run in cell_runs:
                pts = [(float(r["env_step"]), float(r[key])) for r in run.learner
                       if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
                       and math.isfinite(r[key])]
                if pts:
                    x, y = np.array(pts).T
                    series.append((run.seed, x, y))
            if not series:
                continue
            end = min(float(x[-1]) for _, x, _ in series)
            start = min(max(float(x[0]) for _, x, _ in series), end)
            loss_curves.setdefault((task, algo), {})[key] = _seed_curve(task, algo, key, step_grid(end, points, start),
                                                                        series, ema)
    return Curves(ema=float(ema), points=int(points), metric=metric_curves, losses=loss_curves)


# --------------------------------------------------------------------------------------------- plots
class WrittenPlots(list):
    """The paths of the written PNGs (a list of :class:`~pathlib.Path`), plus ``labels``: per path,
    the legend labels (algorithms) of the lines drawn in that figure, in drawing order."""

    def __init__(self) -> None:
        super().__init__()
        self.labels: dict[Path, list[str]] = {}


def safe_name(task: str) -> str:
    """A file-name-safe form of a task name: ``smax:3m`` -> ``smax_3m``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", task).strip("_.")
    return name or "task"


_MATPLOTLIB_MISSING = "mabl report needs matplotlib: pip install 'mabl[report]'"


def _import_matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MablError(_MATPLOTLIB_MISSING) from None
    return Figure, FigureCanvasAgg


def _atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # a report is for reading: not mkstemp's owner-only mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _colors(algos: Sequence[str]) -> dict[str, str]:
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
               "tab:gray", "tab:olive", "tab:cyan"]
    others = [a for a in algos if a not in ALGO_ORDER]
    colors = {a: palette[i] for i, a in enumerate(ALGO_ORDER)}
    colors.update({a: palette[(len(ALGO_ORDER) + i) % len(palette)] for i, a in enumerate(others)})
    return colors


def _draw(ax, curves: Sequence[Curve], colors: dict[str, str]) -> list[str]:
    labels = []
    for curve in curves:
        color = colors[curve.algo]
        ax.plot(curve.steps, curve.mean, color=color, label=curve.algo, linewidth=1.6)
        ax.fill_between(curve.steps, curve.min, curve.max, color=color, alpha=0.2, linewidth=0)
        labels.append(curve.algo)
    ax.grid(True, alpha=0.3)
    ax.set_xlabel("env steps")
    return labels


def plot_curves(curves: Curves, out_dir: str | os.PathLike) -> WrittenPlots:
    """Write ``curve_<task>.png`` per task and ``model_loss_<task>.png`` per task with world-model
    losses into ``out_dir`` (task names made file-safe by :func:`safe_name`).

    Curve figures: x = env steps, y = win rate % or return; one line per algorithm (mean over
    seeds) with a shaded min–max band over seeds. Loss figures: one panel per ``model/*`` key,
    lines likewise. Returns the written paths; ``.labels`` maps each path to its legend labels.
    Needs matplotlib (Agg canvas, no pyplot state); raises :class:`MablError` without it.
    """
    Figure, FigureCanvasAgg = _import_matplotlib()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = WrittenPlots()
    tasks = sorted({task for task, _ in curves.metric} | {task for task, _ in curves.losses})
    colors = _colors(order_algos(algo for _, algo in [*curves.metric, *curves.losses]))
    used: set[str] = set()

    def file_for(prefix: str, task: str) -> Path:
        base = f"{prefix}_{safe_name(task)}"
        name, n = base, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        return out / f"{name}.png"

    def save(fig, path: Path, labels: list[str]) -> None:
        FigureCanvasAgg(fig)
        _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
        written.append(path)
        written.labels[path] = labels

    def cell_order(items):
        return sorted(items, key=lambda c: _algo_rank(c.algo))

    for task in tasks:
        metric_curves = cell_order(c for (t, _), c in curves.metric.items() if t == task)
        if metric_curves:
            fig = Figure(figsize=(7, 4.5))
            ax = fig.add_subplot(1, 1, 1)
            labels = _draw(ax, metric_curves, colors)
            metric = metric_curves[0].key
            ax.set_ylabel("win rate %" if metric == "win_rate" else "return")
            if metric == "win_rate":
                ax.set_ylim(-2, 102)
            ax.set_title(f"{task}: {_metric_label(metric)}, EMA {curves.ema:g}, mean and min–max over seeds")
            ax.legend(loc="best")
            fig.tight_layout()
            save(fig, file_for("curve", task), labels)

        cells = {algo: keyed for (t, algo), keyed in curves.losses.items() if t == task and keyed}
        if cells:
            keys = [k for k in MODEL_KEY_ORDER if any(k in keyed for keyed in cells.values())]
            keys += sorted({k for keyed in cells.values() for k in keyed} - set(keys))
            ncols = min(4, len(keys))
            nrows = math.ceil(len(keys) / ncols)
            fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows))
            labels: list[str] = []
            for i, key in enumerate(keys):
                ax = fig.add_subplot(nrows, ncols, i + 1)
                drawn = _draw(ax, cell_order(keyed[key] for keyed in cells.values() if key in keyed), colors)
                labels += [a for a in drawn if a not in labels]
                ax.set_title(key, fontsize=10)
                if i == 0:
                    ax.legend(loc="best", fontsize=8)
            fig.suptitle(f"{task}: world-model losses, EMA {curves.ema:g}, mean and min–max over seeds")
            fig.tight_layout()
            save(fig, file_for("model_loss", task), order_algos(labels))
    return written


# -------------------------------------------------------------------------------------------- report
def _json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats replaced by None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_report(paths: str | os.PathLike | Iterable[str | os.PathLike], out_dir: str | os.PathLike,
                 window: int = DEFAULT_WINDOW, ema: float = DEFAULT_EMA, points: int = DEFAULT_POINTS,
                 plots: bool = True) -> dict[str, Any]:
    """Read the runs under ``paths`` and write ``table.md``, ``summary.json`` and the PNG plots into
    ``out_dir`` (created if needed; each file written to a temporary name and renamed).

    Returns the summary (the content of ``summary.json``): the rules, per cell ``mean``, ``std``,
    ``n_episodes`` and per-seed means, the runs read, the skipped runs with reasons and the written
    files. Raises :class:`MablError` when no usable run is found or (with ``plots``) matplotlib is
    missing; the latter is checked before anything is written.
    """
    if plots:
        _import_matplotlib()
    skipped: list[SkippedRun] = []
    runs = find_runs(paths, skipped)
    if not runs:
        reasons = "; ".join(f"{s.run_dir}: {s.reason}" for s in skipped[:3])
        raise MablError(f"no usable runs: all {len(skipped)} found were skipped ({reasons})")
    stats = final_window_stats(runs, window)
    curves = learning_curves(runs, ema, points)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = plot_curves(curves, out) if plots else WrittenPlots()

    table_path, summary_path = out / "table.md", out / "summary.json"
    _atomic_write_text(table_path, markdown_table(stats, PAPER_TABLE1, skipped))

    cells = []
    for cell in stats.values():
        row = paper_task(cell.task)
        palgo = ALGO_TO_PAPER.get(cell.algo)
        cells.append({
            "task": cell.task, "algo": cell.algo, "metric": cell.metric,
            "mean": cell.mean, "std": cell.std, "n_episodes": cell.n_episodes,
            "n_seeds": cell.n_seeds,
            "seeds": [{"seed": s.seed, "run_dir": s.run_dir, "mean": s.mean, "n_episodes": s.n_episodes,
                       "final_env_step": s.final_env_step, "steps": s.steps} for s in cell.seeds],
            "paper_task": row,
            "paper": PAPER_TABLE1[row].values.get(palgo) if row and palgo else None,
        })
    summary: dict[str, Any] = {
        "window": int(window), "ema": float(ema), "points": int(points),
        "rules": {
            "window": f"per run, episodes with env_step > final - {window}; final = env_step of the run's last episode",
            "value": "100 * win (0 or 100) on tasks that log wins, else the episode return",
            "pooling": "mean and population std (ddof=0) over the window episodes of all seeds of a cell pooled",
            "curves": f"EMA s_k = {ema:g} * s_(k-1) + (1 - {ema:g}) * x_k, s_0 = x_0, per seed; linear interpolation "
                      f"onto {points} steps from 0 to the cell's smallest final episode step; mean/min/max over seeds",
            "losses": "same EMA over learner lines per model/* key, grid over the step range all seeds cover",
        },
        "cells": cells,
        "runs": [{"run_dir": str(r.run_dir), "env": r.env, "algo": r.algo, "seed": r.seed, "steps": r.steps,
                  "preset": r.preset, "episodes": int(r.env_step.size), "final_env_step": r.final_env_step,
                  "last_eval": r.eval[-1] if r.eval else None, "notes": r.notes} for r in runs],
        "skipped": [{"run_dir": s.run_dir, "reason": s.reason} for s in skipped],
        "files": {"table": str(table_path), "summary": str(summary_path), "plots": [str(p) for p in written]},
        "plot_labels": {p.name: labels for p, labels in written.labels.items()},
    }
    _atomic_write_text(summary_path, json.dumps(_json_safe(summary), indent=2, allow_nan=False) + "\n")
    return _json_safe(summary)
