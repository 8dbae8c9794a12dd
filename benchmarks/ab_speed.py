"""Paired speed comparison of the learner at two commits, in one process.

A shared machine's speed can drift by 20-30% from minute to minute, more than most single
optimisations are worth, so two separate ``mabl bench speed`` runs cannot tell them apart. Here the
package at ``--base`` (any git ref) is exported to a temporary directory under another name
(``mabl_base``), both versions build the same agent on the same synthetic replay (the
``mabl bench speed`` sizes), and their updates alternate: base, current, base, current, ... Each
pair sees nearly the same machine, and the median of the per-pair time ratios is robust to drift.

    python benchmarks/ab_speed.py --base HEAD~1 [--phase model|policy] [--map 3s_vs_4z|corridor] [--fp32]

Prints the median times and the median paired ratio base/current (> 1: current is faster).
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]


def export_base(ref: str, into: pathlib.Path) -> None:
    """``src/mabl`` at ``ref`` as package ``mabl_base`` under ``into``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "src/mabl"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    package = into / "mabl_base"
    (into / "src" / "mabl").rename(package)
    for path in package.rglob("*.py"):
        text = path.read_text()
        path.write_text(re.sub(r"\b(from|import) mabl\b", r"\1 mabl_base", text))


def build(package: str, map_name: str, amp: bool, seed: int = 0):
    from mabl.bench import fill_random_episodes  # the working tree's (sys.path is set in main)

    bench = importlib.import_module(f"{package}.bench")
    base = importlib.import_module(f"{package}.envs.base")
    agent_mod = importlib.import_module(f"{package}.algo.agent")
    presets = importlib.import_module(f"{package}.presets")
    replay_mod = importlib.import_module(f"{package}.replay")
    n, a, o, g = bench.MAP_SIZES[map_name]
    spec = base.EnvSpec(name=f"bench:{map_name}", n_agents=n, obs_dim=o, state_dim=g, discrete=True, n_actions=a,
                        has_action_mask=True, episode_limit=200)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    agent = agent_mod.MablAgent(spec, presets.build_config("paper", {"amp": amp}), torch.device("cpu"))
    # the same random episodes as `mabl bench speed`, by the current version's filler (it only calls add_episode)
    replay = fill_random_episodes(replay_mod.SequenceReplay(spec, 20_000), bench.MAP_SIZES[map_name], rng)
    return agent, replay, rng


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git ref to compare the working tree against")
    parser.add_argument("--phase", choices=("model", "policy"), default="model")
    parser.add_argument("--map", default="3s_vs_4z", choices=("3s_vs_4z", "corridor"))
    parser.add_argument("--fp32", action="store_true", help="without bf16 autocast")
    parser.add_argument("--pairs", type=int, default=0, help="timed pairs (default 20 model / 6 policy)")
    args = parser.parse_args()
    pairs = args.pairs or (20 if args.phase == "model" else 6)
    with tempfile.TemporaryDirectory() as tmp:
        export_base(args.base, pathlib.Path(tmp))
        sys.path.insert(0, tmp)
        sys.path.insert(0, str(REPO / "src"))
        runs = {name: build(name, args.map, not args.fp32) for name in ("mabl_base", "mabl")}
        times: dict[str, list[float]] = {name: [] for name in runs}
        for i in range(pairs + 2):  # the first two pairs warm up
            for name, (agent, replay, rng) in runs.items():
                batch = agent.cfg.model.batch_size if args.phase == "model" else agent.cfg.policy.batch_size
                rows = replay.sample(batch, agent.cfg.model.seq_len, rng)
                start = time.perf_counter()
                agent.train_world_model(rows) if args.phase == "model" else agent.train_policy(rows)
                if i >= 2:
                    times[name].append((time.perf_counter() - start) * 1e3)
    base, cur = times["mabl_base"], times["mabl"]
    ratio = [b / c for b, c in zip(base, cur)]
    print(f"{args.phase} ({args.map}, {'fp32' if args.fp32 else 'bf16 autocast'}, {pairs} pairs): "
          f"{args.base} median {statistics.median(base):.0f} ms, working tree median {statistics.median(cur):.0f} ms, "
          f"paired ratio base/current median {statistics.median(ratio):.3f} (range {min(ratio):.2f}-{max(ratio):.2f})")


if __name__ == "__main__":
    main()
