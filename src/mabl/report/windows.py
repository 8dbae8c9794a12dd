"""``mabl report --bins W`` and ``--loss-terms``: a run's own log in windows of env steps, printed.

``--bins W`` prints, per run and per window ``(end - W, end]`` of env steps, the training episodes
that end in it, their mean return, the percentage won (where the env defines wins) and their mean
length. ``--loss-terms`` prints, per window, the mean of each world-model loss term
(``model/<term>``) the learner logged over the learner calls in the window and its share of the mean
total ``model/loss``: whether, e.g., the reward head has any say in what the world model learns
(SMAX's team reward is at most about 2 per episode, so its term is a tiny share unless
``--model.reward_scale`` raises it). Both read only ``metrics.jsonl`` (archived runs too).
"""

from __future__ import annotations

import math

import numpy as np

from mabl.errors import MablError
from mabl.report.runs import RunData

LOSS_TERMS = ("kl_agent", "kl_global", "obs", "reward", "cont", "avail", "action")
"""The world-model loss terms the learners log as ``model/<term>`` (mabl's; a model without a
global level has no ``kl_global``; SPEC section 2)."""


def window_ends(width: float, last: float) -> list[float]:
    """Right edges ``width, 2 width, ...`` of the windows that cover ``(0, last]``."""
    if width <= 0:
        raise MablError(f"--bins={width:g} must be > 0 env steps")
    ends, edge = [], width
    while edge - width < last:
        ends.append(edge)
        edge += width
    return ends


def episode_windows(run: RunData, width: float, end: float | None = None) -> list[dict[str, float]]:
    """One dict per window ``(k * width, (k + 1) * width]`` up to ``end`` (default: the run's last
    episode): ``end``, ``episodes``, ``return``, ``win`` (percent; NaN without win flags or episodes) and
    ``length`` (NaN where the log holds no lengths or the window no episodes)."""
    rows = []
    for edge in window_ends(width, float(run.final_env_step if end is None else end)):
        inside = (run.env_step > edge - width) & (run.env_step <= edge)
        n = int(inside.sum())
        row = {"end": edge, "episodes": float(n), "return": float(np.nanmean(run.returns[inside])) if n else math.nan,
               "win": math.nan, "length": math.nan}
        if n and run.win is not None:
            row["win"] = 100.0 * float(run.win[inside].mean())
        if n and run.lengths is not None:
            row["length"] = float(np.nanmean(run.lengths[inside]))
        rows.append(row)
    return rows


def loss_term_means(learner: list[dict], end: float, width: float) -> dict[str, float] | None:
    """Mean ``model/loss`` and ``model/<term>`` over the learner lines with ``end - width < env_step <= end``;
    None when no line with a ``model/loss`` falls in the window. A term the model does not log is NaN."""
    rows = [r for r in learner if end - width < r.get("env_step", -math.inf) <= end and "model/loss" in r]
    if not rows:
        return None
    out = {"calls": float(len(rows)), "loss": float(np.mean([r["model/loss"] for r in rows]))}
    for term in LOSS_TERMS:
        values = [r[f"model/{term}"] for r in rows if f"model/{term}" in r]
        out[term] = float(np.mean(values)) if values else math.nan
    return out


def _reward_scale(config: dict) -> float | str:
    """The run's ``model.reward_scale`` as it trained (an older config without the field reads as the
    value that version used: :mod:`mabl.config_migration`); a partial config: its own value, if any."""
    from mabl.config import from_dict

    try:
        return from_dict(config).model.reward_scale
    except MablError:
        return (config.get("model") or {}).get("reward_scale", "not in the config")


def _header(run: RunData) -> str:
    return f"== {run.run_dir} ({run.label}, {run.env}, seed {run.seed}, {len(run.env_step)} episodes)"


def format_episode_windows(run: RunData, width: float, end: float | None = None) -> str:
    lines = [_header(run), f"{'window':>17} {'episodes':>8} {'return':>7} {'win %':>6} {'length':>6}"]
    for row in episode_windows(run, width, end):
        window = f"{row['end'] - width:.0f}-{row['end']:.0f}"
        lines.append(f"{window:>17} {row['episodes']:>8.0f} {row['return']:>7.3f} {row['win']:>6.1f} "
                     f"{row['length']:>6.1f}")
    return "\n".join(lines)


def format_loss_terms(run: RunData, width: float, ends: list[float] | None = None) -> str:
    """The loss-term table of ``run``: windows ending at ``ends`` (default: every window up to the last
    learner call)."""
    if ends is None:
        last = max((r.get("env_step", 0) for r in run.learner), default=0)
        ends = window_ends(width, float(last))
    scale = _reward_scale(run.config)
    lines = [_header(run) + f", model.reward_scale {scale}",
             f"{'window':>17} {'calls':>5} {'loss':>7} " + " ".join(f"{t:>16}" for t in LOSS_TERMS)]
    for end in ends:
        window = f"{end - width:.0f}-{end:.0f}"
        m = loss_term_means(run.learner, end, width)
        if m is None:
            lines.append(f"{window:>17}  (no world-model learner call in the window)")
            continue
        cells = [f"{'-':>16}" if math.isnan(m[t]) else f"{m[t]:>8.4f} ({100 * m[t] / m['loss']:>4.1f}%)"
                 for t in LOSS_TERMS]
        lines.append(f"{window:>17} {m['calls']:>5.0f} {m['loss']:>7.3f} " + " ".join(cells))
    return "\n".join(lines)
