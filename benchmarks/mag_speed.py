"""World-model update and imagination time (wall and process CPU) of ``--algo mag`` against ``--algo mamba`` (same preset,
SMAC map sizes, random replay), medians of a few repeats after a warm-up.

    PYTHONPATH=src python benchmarks/mag_speed.py --preset paper --map 3s_vs_4z --updates 5 --imaginations 2
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from mabl.algo import build_learner
from mabl.bench import MAP_SIZES, fill_random_episodes
from mabl.envs.base import EnvSpec
from mabl.presets import build_config
from mabl.replay import SequenceReplay


def time_algo(algo: str, preset: str, map_name: str, updates: int, imaginations: int, seed: int = 0) -> dict:
    n, a, o, g = MAP_SIZES[map_name]
    spec = EnvSpec(name=f"bench:{map_name}", n_agents=n, obs_dim=o, state_dim=g, discrete=True, n_actions=a,
                   has_action_mask=True, episode_limit=200)
    cfg = build_config(preset, {"algo": algo, "device": "cpu"})
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    agent = build_learner(spec, cfg, torch.device("cpu"))
    replay = fill_random_episodes(SequenceReplay(spec, 20_000), MAP_SIZES[map_name], rng)

    def update() -> None:
        agent.train_world_model(replay.sample(cfg.model.batch_size, cfg.model.seq_len, rng))

    def imagine() -> None:
        agent.imagine(replay.sample(cfg.policy.batch_size, cfg.model.seq_len, rng))

    update()  # warm-up
    if imaginations:
        imagine()
    times = {"update": [], "imagine": []}
    cpu = {"update": [], "imagine": []}  # process CPU seconds: less moved by other processes on a shared machine
    for name, fn, repeats in (("update", update, updates), ("imagine", imagine, imaginations)):
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    params = sum(p.numel() for p in agent.world_model.parameters())
    return {"algo": algo, "preset": preset, "map": map_name, "threads": torch.get_num_threads(),
            "world_model_params": params, "model_update_ms": 1e3 * float(np.median(times["update"])),
            "model_update_cpu_ms": 1e3 * float(np.median(cpu["update"])),
            "imagination_ms": 1e3 * float(np.median(times["imagine"])) if imaginations else None,
            "imagination_cpu_ms": 1e3 * float(np.median(cpu["imagine"])) if imaginations else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--map", default="3s_vs_4z", choices=sorted(MAP_SIZES))
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--imaginations", type=int, default=2)
    parser.add_argument("--algos", default="mamba,mag")
    args = parser.parse_args()
    for algo in args.algos.split(","):
        print(json.dumps(time_algo(algo, args.preset, args.map, args.updates, args.imaginations)), flush=True)


if __name__ == "__main__":
    main()
