"""How much of the world-model loss is each term? From a run's own learner log, no model needed.

For each run directory (or archived run) and each env-step window ``(end - bin, end]`` this prints
the mean of every ``model/<term>`` the learner logged over the learner calls in the window, and the
term's share of the mean total ``model/loss``. Written to ask whether the reward head has any say in
what the world model learns: on SMAX, whose team reward is at most about 2 per episode, its term is
a tiny share of the loss unless ``--model.reward_scale`` raises it.

    python benchmarks/loss_terms.py RUN [RUN ...] --at 5000,10000,20000 --bin 2500
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from mabl.config import from_dict
from mabl.report.runs import load_run

TERMS = ("kl_agent", "kl_global", "obs", "reward", "cont", "avail", "action")


def window_means(learner: list[dict], end: float, width: float) -> dict[str, float] | None:
    """Mean ``model/loss`` and ``model/<term>`` over the learner lines with ``end - width < env_step <= end``;
    None when no line falls in the window. A term a model does not have (no global level) is NaN."""
    rows = [r for r in learner if end - width < r["env_step"] <= end and "model/loss" in r]
    if not rows:
        return None
    out = {"calls": float(len(rows)), "loss": float(np.mean([r["model/loss"] for r in rows]))}
    for term in TERMS:
        values = [r[f"model/{term}"] for r in rows if f"model/{term}" in r]
        out[term] = float(np.mean(values)) if values else math.nan
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (archived ones too)")
    parser.add_argument("--at", default="5000,10000,20000", help="window ends, comma-separated env steps")
    parser.add_argument("--bin", type=float, default=2500, help="window width in env steps")
    args = parser.parse_args()
    ends = [float(x) for x in args.at.split(",")]
    for path in args.runs:
        run = load_run(path)
        scale = from_dict(run.config).model.reward_scale
        print(f"== {path} ({run.algo}, {run.env}, seed {run.seed}, model.reward_scale {scale})")
        print(f"{'window end':>10} {'calls':>5} {'loss':>7} " + " ".join(f"{t:>16}" for t in TERMS))
        for end in ends:
            m = window_means(run.learner, end, args.bin)
            if m is None:
                print(f"{end:>10.0f}  (no learner call in the window)")
                continue
            cells = []
            for t in TERMS:
                cells.append(f"{'-':>16}" if math.isnan(m[t]) else f"{m[t]:>8.4f} ({100 * m[t] / m['loss']:>4.1f}%)")
            print(f"{end:>10.0f} {m['calls']:>5.0f} {m['loss']:>7.3f} " + " ".join(cells))


if __name__ == "__main__":
    main()
