"""Statistics over seeds (Agarwal et al., 2021, "Deep RL at the Edge of the Statistical Precipice",
through their ``rliable`` package) and a marl-eval JSON of the runs' evaluations.

Per (task, algorithm) cell the sample is the seeds' own final-window means (:class:`SeedStats.mean`,
the value the paper's Table 1 metric averages): one score per seed, one task.

- IQM: the interquartile mean of those scores, ``rliable.metrics.aggregate_iqm`` (the mean of the
  middle 50 %, ``scipy.stats.trim_mean(x, 0.25)``; with fewer than 4 seeds nothing is trimmed and it
  is the plain mean).
- 95 % confidence intervals of the IQM and of the mean: ``rliable.library.get_interval_estimates``,
  the stratified percentile bootstrap over seeds (one stratum: the cell's task), ``reps`` resamples,
  seeded. Where rliable's bootstrap cannot run (rliable 1.2 passes ``random_state`` to ``arch``,
  which ``arch`` >= 8 refuses) the same resampling is done with numpy (with one task the stratified
  bootstrap is the resampling of seeds with replacement), and the summary says which ran.

With n seeds the bootstrap sees at most n distinct values, so intervals from 3 seeds are wide and
coarse; that is what 3 seeds can tell.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mabl.errors import MablError
from mabl.report.runs import RunData
from mabl.report.stats import CellStats

DEFAULT_REPS = 2000
RLIABLE = "rliable stratified percentile bootstrap"
NUMPY = "percentile bootstrap over seeds with numpy (rliable's bootstrap unusable here: {why})"


@dataclass
class SeedInterval:
    iqm: float
    iqm_ci: tuple[float, float]
    mean: float
    mean_ci: tuple[float, float]
    n_seeds: int
    method: str


def _iqm_and_mean(scores: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores)])


def seed_intervals(stats: dict[tuple[str, str], CellStats], reps: int = DEFAULT_REPS, seed: int = 0
                   ) -> dict[tuple[str, str], SeedInterval]:
    """IQM and mean over seeds with 95 % bootstrap intervals, per cell (see the module docstring).
    Raises a one-line MablError when rliable is not installed."""
    try:
        from rliable import metrics  # noqa: F401
    except ImportError:
        raise MablError("the intervals over seeds need rliable: pip install 'mabl[report]'") from None
    out = {}
    for key, cell in stats.items():
        scores = np.array([[s.mean] for s in cell.seeds], dtype=np.float64)  # [runs, tasks=1]
        point = _iqm_and_mean(scores)
        low, high, method = _bootstrap(scores, reps, seed)
        out[key] = SeedInterval(iqm=float(point[0]), iqm_ci=(float(low[0]), float(high[0])), mean=float(point[1]),
                                mean_ci=(float(low[1]), float(high[1])), n_seeds=len(cell.seeds), method=method)
    return out


def _bootstrap(scores: np.ndarray, reps: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    try:
        import warnings

        from rliable import library

        # rliable 1.2's StratifiedBootstrap draws its resamples with numpy's global np.random.choice,
        # whatever random_state says: seed the global generator for the call and put its state back
        saved = np.random.get_state()
        np.random.seed(seed)
        try:
            with warnings.catch_warnings():  # arch 7 warns that random_state is deprecated (rliable passes it)
                warnings.simplefilter("ignore", FutureWarning)
                _, intervals = library.get_interval_estimates({"cell": scores}, _iqm_and_mean, reps=reps,
                                                              confidence_interval_size=0.95,
                                                              random_state=np.random.RandomState(seed))
        finally:
            np.random.set_state(saved)
        return intervals["cell"][0], intervals["cell"][1], RLIABLE
    except (ImportError, TypeError) as exc:
        why = str(exc).splitlines()[0][:100]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, scores.shape[0], size=(reps, scores.shape[0]))
    stats = np.stack([_iqm_and_mean(scores[idx]) for idx in draws])
    return np.percentile(stats, 2.5, axis=0), np.percentile(stats, 97.5, axis=0), NUMPY.format(why=why)


# -------------------------------------------------------------------------------------- marl-eval
def marl_eval_json(runs: Sequence[RunData], metrics: dict[str, str]) -> dict:
    """The runs' evaluation rounds (``eval.jsonl``) in marl-eval's raw-data layout:
    ``{env: {task: {algo: {"run_<seed>": {"step_<k>": {"step_count": env_step, <metric>: [per
    episode]}, ..., "absolute_metrics": {<metric>: [...]}}}}}}``.

    ``env`` is the family (``smax``), ``task`` the rest of the name (``3s_vs_4z``), all lower case
    (marl-eval lower-cases the names it looks up). Metrics: ``return`` (each episode's return) and,
    on tasks whose table metric is the win rate, ``win_rate`` (each episode's 0/1 win); evaluations
    written before the per-episode values were logged give the round's mean as a 1-element list.
    ``absolute_metrics`` holds the last evaluation round's values (mabl does not re-evaluate the
    best policy with 10x the episodes, marl-eval's absolute metric). Runs without evaluations are
    left out.
    """
    out: dict = {}
    for run in runs:
        if not run.eval:
            continue
        family, _, task = run.env.partition(":")
        per_step = {}
        for k, line in enumerate(run.eval):
            values = {"return": [float(v) for v in line.get("returns", [line.get("mean_return")])]}
            if metrics.get(run.env) == "win_rate":
                wins = line.get("wins", [line.get("win_rate")])
                # (an episode without a win flag counts as a loss, as in the table: mabl.report)
                values["win_rate"] = [float(w) if isinstance(w, (int, float)) else 0.0 for w in wins]
            per_step[f"step_{k}"] = {"step_count": int(line["env_step"]), **values}
        last = dict(per_step[f"step_{len(run.eval) - 1}"])
        last.pop("step_count")
        per_step["absolute_metrics"] = last
        name = re.sub(r"[^0-9a-z_.|+-]", "_", task.lower() or family.lower())
        cell = out.setdefault(family.lower(), {}).setdefault(name, {}).setdefault(run.label.lower(), {})
        cell[f"run_{run.seed}" if f"run_{run.seed}" not in cell else f"run_{run.seed}_{len(cell)}"] = per_step
    return out
