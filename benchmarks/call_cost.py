"""What one learner call costs under variants of a preset, side by side in one process.

A learner call of the ``steps`` schedule is ``schedule.model_updates`` world-model updates plus
``schedule.policy_iterations`` policy iterations (imagination, then PPO). This script builds one
learner per variant on synthetic replays of a map's sizes (:func:`mabl.bench.bench_learner`), warms
each up, then times the variants in turn, round after round, so that a drift of the machine falls
on all of them alike. It prints the median of each phase and the call they add up to, and each
variant's call relative to the first.

    python benchmarks/call_cost.py --preset quick --threads 1 \
        --variant base= --variant amp=amp:true --variant wm32=model.batch_size:32,policy.epochs:2

A variant is ``NAME=PATH:VALUE,...`` (dotted config paths, as ``mabl train`` flags without the
dashes); ``NAME=`` is the preset itself. ``amp`` is the one flag that is not a config path of the
learner's sizes but is accepted here too.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mabl.bench import bench_learner
from mabl.presets import build_config


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, body = text.partition("=")
    if not name:
        raise SystemExit(f"--variant {text!r}: expected NAME=PATH:VALUE,... (NAME= for the preset itself)")
    pairs = {}
    for item in filter(None, body.split(",")):
        path, sep, value = item.partition(":")
        if not sep:
            raise SystemExit(f"--variant {text!r}: {item!r} is not PATH:VALUE")
        pairs[path] = value
    return name, pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--map", default="3s_vs_4z", help="sizes: 3s_vs_4z or corridor (mabl bench speed's maps)")
    ap.add_argument("--algo", default="mabl")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5, help="timed calls per variant (the median is printed)")
    ap.add_argument("--variant", action="append", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    learners = {}
    for text in args.variant:
        name, pairs = parse_variant(text)
        amp = pairs.pop("amp", "false").lower() in ("1", "true", "yes")
        learners[name] = bench_learner(args.preset, args.map, "cpu", amp, False, args.algo, 0, pairs)
    cfg = build_config(args.preset)
    for b in learners.values():  # warm-up
        b.model_update()
        b.ppo(b.imagination())
    times = {name: {"model": [], "imagination": [], "ppo": [], "call": []} for name in learners}
    for _ in range(args.rounds):
        for name, b in learners.items():
            sched = b.cfg.schedule
            t0 = time.perf_counter()
            for _ in range(sched.model_updates):
                b.model_update()
            t1 = time.perf_counter()
            ppo_s = imag_s = 0.0
            for _ in range(sched.policy_iterations):
                t2 = time.perf_counter()
                rollout = b.imagination()
                t3 = time.perf_counter()
                b.ppo(rollout)
                imag_s += t3 - t2
                ppo_s += time.perf_counter() - t3
            t4 = time.perf_counter()
            row = times[name]
            row["model"].append(t1 - t0)
            row["imagination"].append(imag_s)
            row["ppo"].append(ppo_s)
            row["call"].append(t4 - t0)
    first = None
    print(f"preset {args.preset} ({cfg.schedule.model_updates} model updates + {cfg.schedule.policy_iterations} "
          f"policy iteration(s) per call unless a variant changes them), {args.map} sizes, {args.threads} thread(s), "
          f"medians of {args.rounds} rounds")
    for name, row in times.items():
        med = {k: float(np.median(v)) for k, v in row.items()}
        first = first or med["call"]
        print(f"{name:>10}: call {med['call']:6.2f} s = model {med['model']:5.2f} + imagination "
              f"{med['imagination']:5.2f} + PPO {med['ppo']:5.2f}; x{med['call'] / first:.2f} of the first")


if __name__ == "__main__":
    main()
