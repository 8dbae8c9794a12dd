"""Fixed-seed runs before/after each faithfulness mend of mabl 0.2 (docs/REPRODUCTION.md).

Each mend made a released-code reading the default and kept mabl 0.1's reading as an option. This
trains mabl on smax:3m (quick preset, one seed) with the defaults, with each mend reverted alone,
and with all five reverted, then tabulates what the runs logged up to a common env step:

    python benchmarks/mends.py run --out runs/mends            # 7 runs, resumable (mabl train)
    python benchmarks/mends.py run --out runs/mends --smax.reward jaxmarl --smax.state jaxmarl --smax.walls lethal
    python benchmarks/mends.py table --out runs/mends          # Markdown table on stdout

Runs are deterministic given the seed, so a run's first STEP steps do not depend on --steps. One
seed and a few thousand steps show what each reading changes early in learning; they rank nothing.
Note which runs share their random draws: reverting the action decoder's depth changes the number
of weights drawn at initialisation (so every later random draw), the other single reverts do not.
The ``--smax.*`` flags go to every run as they are (the table of docs/REPRODUCTION.md was measured
with JaxMARL's readings, the second command).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

OLD = {
    "time_limit_truncation": ["--schedule.time_limit_done", "truncation"],
    "continuation_team_mean": ["--policy.continuation", "team_mean"],
    "action_decoder_1": ["--model.action_decoder_layers", "1"],
    "action_mask_episode_start": ["--model.action_decoder_mask", "episode_start"],
    "bias_zeros": ["--model.bias_init", "zeros"],
}
RUNS = {"defaults": [], **OLD, "all_old": [flag for pair in OLD.values() for flag in pair]}


def run(args) -> None:
    for name, flags in RUNS.items():
        command = ["mabl", "train", "--env", args.env, "--algo", "mabl", "--preset", "quick", "--steps", str(args.steps),
                   "--seed", str(args.seed), "--eval-every", "5000", "--threads", str(args.threads), "--progress", "false",
                   "--run-dir", str(Path(args.out) / name), *args.smax_flags, *flags]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)


def table(args) -> None:
    step, early = args.step, args.step // 3
    print(f"| run | episodes to {step} | mean return of episodes ending in ({early}, {step}] | wins there | "
          f"return per 500 steps | world-model loss at {step} | actor entropy at {step} |")
    print("|---|---|---|---|---|---|---|")
    for name in RUNS:
        path = Path(args.out) / name / "metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        if not rows or max(r["env_step"] for r in rows) < step:
            print(f"| {name} | not run to {step} steps | | | | | |")
            continue
        episodes = [r for r in rows if r["kind"] == "episode" and r["env_step"] <= step]
        late = [r for r in episodes if r["env_step"] > early]
        learner = [r for r in rows if r["kind"] == "learner" and r["env_step"] <= step][-1]
        bins = []
        for lo in range(0, step, 500):
            b = [r["return"] for r in episodes if lo < r["env_step"] <= lo + 500]
            bins.append(f"{sum(b) / len(b):.2f}" if b else "-")
        print(f"| {name} | {len(episodes)} | {sum(r['return'] for r in late) / len(late):.3f} | "
              f"{sum(bool(r.get('win')) for r in late)} | {' '.join(bins)} | {learner['model/loss']:.3f} | "
              f"{learner['policy/entropy']:.3f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="fixed-seed runs before/after each faithfulness mend")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--env", default="smax:3m")
    r.add_argument("--steps", type=int, default=3000)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=1)
    for option in ("reward", "state", "walls"):
        r.add_argument(f"--smax.{option}", dest=option, help=f"passed to mabl train as --smax.{option}")
    t = sub.add_parser("table")
    t.add_argument("--out", required=True)
    t.add_argument("--step", type=int, default=3000)
    args = p.parse_args(argv)
    args.smax_flags = [flag for option in ("reward", "state", "walls") if getattr(args, option, None)
                       for flag in (f"--smax.{option}", getattr(args, option))]
    {"run": run, "table": table}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
