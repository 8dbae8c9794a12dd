"""Paired speed comparison of ``--compile`` against eager mode for the world-model update, in one
process.

Two learners are built from the same seed, one with ``compile=True``; after one warm-up update
each (the compiled one compiles then: minutes on a 2-core CPU, cached on disk for later runs),
they are updated alternately on the same sampled windows (the order flips every pair). Prints
the median times and the median paired ratio eager/compiled (> 1: compiled is faster).

    python benchmarks/ab_compile.py [--map 3s_vs_4z|corridor] [--fp32] [--pairs 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from mabl.algo.agent import MablAgent
from mabl.bench import MAP_SIZES, fill_random_episodes
from mabl.envs.base import EnvSpec
from mabl.presets import build_config
from mabl.replay import SequenceReplay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", default="3s_vs_4z", choices=tuple(MAP_SIZES))
    parser.add_argument("--fp32", action="store_true", help="without bf16 autocast")
    parser.add_argument("--pairs", type=int, default=20)
    args = parser.parse_args()
    n, a, o, g = MAP_SIZES[args.map]
    spec = EnvSpec(name=f"bench:{args.map}", n_agents=n, obs_dim=o, state_dim=g, discrete=True, n_actions=a,
                   has_action_mask=True, episode_limit=200)
    agents = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        agents[compiled] = MablAgent(spec, build_config("paper", {"amp": not args.fp32, "compile": compiled}),
                                     torch.device("cpu"))
    rng = np.random.default_rng(0)
    replay = fill_random_episodes(SequenceReplay(spec, 20_000), MAP_SIZES[args.map], rng)
    start = time.perf_counter()
    for agent in agents.values():
        agent.train_world_model(replay.sample(40, 20, rng))
    print(f"warm-up, compilation included: {time.perf_counter() - start:.0f} s", flush=True)
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(args.pairs):
        rows = replay.sample(40, 20, rng)
        for compiled in ((False, True) if i % 2 else (True, False)):
            start = time.perf_counter()
            agents[compiled].train_world_model(rows)
            times[compiled].append(time.perf_counter() - start)
    ratios = [e / c for e, c in zip(times[False], times[True])]
    print(f"world-model update ({args.map}, {'fp32' if args.fp32 else 'bf16 autocast'}, {args.pairs} pairs): "
          f"eager median {statistics.median(times[False]) * 1e3:.0f} ms, compiled median "
          f"{statistics.median(times[True]) * 1e3:.0f} ms, paired ratio eager/compiled median "
          f"{statistics.median(ratios):.3f} (range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
