"""Report statistics: the final-window table metric, grouping by (task, algorithm), and learning
curves (EMA, interpolation onto a step grid, min-max bands over seeds). Definitions: :mod:`mabl.report`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mabl.errors import MablError
from mabl.report.runs import RunData, algo_rank

DEFAULT_WINDOW = 15_000
DEFAULT_EMA = 0.9
DEFAULT_POINTS = 200

MODEL_KEY_ORDER = ("model/loss", "model/kl_agent", "model/kl_global", "model/obs", "model/reward",
                   "model/cont", "model/avail", "model/action")


# ----------------------------------------------------------------------------------------- grouping
def _cells(runs: Sequence[RunData]) -> dict[tuple[str, str], list[RunData]]:
    cells: dict[tuple[str, str], list[RunData]] = {}
    for run in sorted(runs, key=lambda r: (r.env, algo_rank(r.label), r.seed, str(r.run_dir))):
        cells.setdefault((run.env, run.label), []).append(run)
    return cells


METRICS = ("auto", "return")
"""``auto``: win rate where every run of a task logs wins, else arrived % where every run logs
Flatland's ``arrived_fraction``, else return; ``return``: always the return."""


def task_metrics(runs: Sequence[RunData], metric: str = "auto") -> dict[str, str]:
    """Per task: ``"win_rate"`` when every run of the task logs win flags, else ``"arrived"`` when
    every run logs arrived fractions (Flatland; the paper's Table 1 reports the percentage of trains
    that arrive), else ``"return"``; ``metric="return"`` gives ``"return"`` for every task."""
    if metric not in METRICS:
        raise MablError(f"metric '{metric}' is not one of {', '.join(METRICS)}")
    if metric == "return":
        return {run.env: "return" for run in runs}
    logged: dict[str, set[str]] = {}
    for run in runs:
        has = {"win_rate"} if run.win is not None else set()
        has |= {"arrived"} if run.arrived is not None else set()
        logged[run.env] = logged[run.env] & has if run.env in logged else has
    return {task: "win_rate" if "win_rate" in has else "arrived" if "arrived" in has else "return"
            for task, has in logged.items()}


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
    wall_s: float | None = None
    """Training wall-clock / CPU seconds up to the run's last learner line (None: not logged)."""
    cpu_s: float | None = None


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

    @property
    def digits(self) -> int:
        """Decimals of this cell's numbers: one for win rates (%); for returns, by the mean's size
        (3 below 1, 2 below 10, else 1) so that returns of order 1 (SMAX's) are not rounded away."""
        if self.metric in ("win_rate", "arrived"):
            return 1
        size = abs(self.mean)
        return 3 if size < 1 else 2 if size < 10 else 1

    def text(self) -> str:
        return f"{self.mean:.{self.digits}f} ± {self.std:.{self.digits}f}"


def window_mask(env_step: np.ndarray, window: int) -> np.ndarray:
    """Episodes in the final window: ``env_step > env_step[-1] - window`` (strict)."""
    env_step = np.asarray(env_step)
    return env_step > env_step[-1] - window


def final_window_stats(runs: Sequence[RunData], window: int = DEFAULT_WINDOW, metric: str = "auto"
                       ) -> dict[tuple[str, str], CellStats]:
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
    metrics = task_metrics(runs, metric)
    stats: dict[tuple[str, str], CellStats] = {}
    for (task, algo), cell_runs in _cells(runs).items():
        metric = metrics[task]
        pooled, seeds = [], []
        for run in cell_runs:
            values = run.values(metric)[window_mask(run.env_step, window)]
            pooled.append(values)
            seeds.append(SeedStats(seed=run.seed, run_dir=str(run.run_dir), mean=float(np.mean(values)),
                                   n_episodes=int(values.size), final_env_step=run.final_env_step, steps=run.steps,
                                   wall_s=run.time_s("wall_s"), cpu_s=run.time_s("cpu_s")))
        values = np.concatenate(pooled)
        stats[(task, algo)] = CellStats(task=task, algo=algo, metric=metric, window=int(window),
                                        mean=float(np.mean(values)), std=float(np.std(values, ddof=0)),
                                        n_episodes=int(values.size), seeds=seeds)
    return stats


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
    """Per (task, algo): the episode metric (win rate %, arrived % or return)."""
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


def learning_curves(runs: Sequence[RunData], ema: float = DEFAULT_EMA, points: int = DEFAULT_POINTS,
                    metric: str = "auto") -> Curves:
    """Learning and world-model loss curves per (task, algorithm); rules in the module docstring.

    Metric curves: per seed, EMA of the per-episode values (``s_0 = x_0``, ``s_k = ema s_{k-1} +
    (1 - ema) x_k``) at the episodes' end steps, linearly interpolated onto ``points`` steps from
    0 to the smallest final episode step among the cell's seeds; mean, min and max over seeds.
    Loss curves: the same EMA over learner lines of each ``model/*`` key, on ``points`` steps
    spanning the range every seed that logs the key covers.
    """
    ema_smooth([], ema)  # validate ema and points up front, even for an empty run list
    step_grid(1.0, points)
    metrics = task_metrics(runs, metric)
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
