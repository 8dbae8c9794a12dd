"""Training episodes per env-step window, from a run's own log: how many, mean return, win rate, length.

For each run directory (archived runs too) and each window ``(end - bin, end]`` of env steps this
prints the episodes that end in it, their mean return, the percentage won (where the env defines
wins) and the mean episode length. The per-10k tables of docs/REPRODUCTION.md come from it:

    python benchmarks/episode_bins.py docs/reproduction/runs_rs10/smax_3s_vs_4z/dreamer/seed0 --bin 10000
"""

from __future__ import annotations

import argparse

import numpy as np

from mabl.report.runs import RunData, load_run


def bin_rows(run: RunData, width: float, end: float | None = None) -> list[dict[str, float]]:
    """One dict per window ``(k * width, (k + 1) * width]`` up to ``end`` (default: the run's last
    episode): ``end``, ``episodes``, ``return``, ``win`` (percent; NaN without win flags or episodes) and
    ``length`` (NaN where the log holds no lengths or the window no episodes)."""
    if width <= 0:
        raise ValueError(f"--bin must be > 0 env steps, got {width:g}")
    last = float(run.final_env_step if end is None else end)
    rows = []
    edge = width
    while edge - width < last:
        inside = (run.env_step > edge - width) & (run.env_step <= edge)
        n = int(inside.sum())
        row = {"end": edge, "episodes": float(n), "return": float(np.nanmean(run.returns[inside])) if n else np.nan,
               "win": np.nan, "length": np.nan}
        if n and run.win is not None:
            row["win"] = 100.0 * float(run.win[inside].mean())
        if n and run.lengths is not None:
            row["length"] = float(np.nanmean(run.lengths[inside]))
        rows.append(row)
        edge += width
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (archived ones too)")
    parser.add_argument("--bin", type=float, default=10_000, help="window width in env steps")
    parser.add_argument("--end", type=float, default=None,
                        help="last env step to cover (default: each run's last episode), e.g. to compare an "
                             "unfinished run with finished ones over the same steps")
    args = parser.parse_args()
    if args.bin <= 0:
        parser.error(f"--bin must be > 0 env steps, got {args.bin:g}")
    if args.end is not None and args.end <= 0:
        parser.error(f"--end must be > 0 env steps, got {args.end:g}")
    for path in args.runs:
        run = load_run(path)
        print(f"== {path} ({run.algo}, {run.env}, seed {run.seed}, {len(run.env_step)} episodes)")
        print(f"{'window':>17} {'episodes':>8} {'return':>7} {'win %':>6} {'length':>6}")
        for row in bin_rows(run, args.bin, args.end):
            window = f"{row['end'] - args.bin:.0f}-{row['end']:.0f}"
            print(f"{window:>17} {row['episodes']:>8.0f} {row['return']:>7.3f} {row['win']:>6.1f} {row['length']:>6.1f}")


if __name__ == "__main__":
    main()
