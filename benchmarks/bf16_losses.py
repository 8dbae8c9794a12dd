"""Does bf16 autocast change world-model learning beyond noise? Prints loss terms after N updates.

Same seeds and batches with and without ``--amp``, at the paper preset's sizes for 3s_vs_4z, on
synthetic episodes whose observations follow a hidden random walk (so there is something to learn).

    python benchmarks/bf16_losses.py [--updates 40] [--seeds 0 1] [--set FIELD=VALUE ...]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from mabl.algo.agent import MablAgent
from mabl.bench import MAP_SIZES
from mabl.envs.base import EnvSpec
from mabl.presets import build_config
from mabl.replay import SequenceReplay

TERMS = ("loss", "obs", "reward", "kl_agent", "kl_global")


def synthetic_replay(spec: EnvSpec, rng: np.random.Generator, transitions: int = 5000) -> SequenceReplay:
    n, a, o, g = spec.n_agents, spec.n_actions, spec.obs_dim, spec.state_dim
    replay = SequenceReplay(spec, 4 * transitions)
    while replay.real_rows < transitions:
        length = 60
        walk = np.cumsum(rng.normal(size=(length, 1, 1)), 0)
        obs = np.tanh(walk * np.linspace(-1, 1, o)[None, None]) + 0.1 * rng.normal(size=(length, n, o))
        avail = rng.random((length, n, a)) < 0.7
        avail[..., 0] = True
        replay.add_episode({
            "obs": obs.astype(np.float32), "state": np.repeat(obs[:, 0, :1], g, 1).astype(np.float32),
            "action": rng.integers(0, a, (length, n)), "reward": np.tanh(walk[:, 0, 0]).astype(np.float32),
            "done": np.arange(length) == length - 1, "avail": avail}, terminated=True, rng=rng)
    return replay


def run(amp: bool, seed: int, updates: int, overrides: dict[str, str] | None = None) -> np.ndarray:
    torch.manual_seed(seed)
    n, a, o, g = MAP_SIZES["3s_vs_4z"]
    spec = EnvSpec(name="bench:3s_vs_4z", n_agents=n, obs_dim=o, state_dim=g, discrete=True, n_actions=a,
                   has_action_mask=True, episode_limit=200)
    cfg = build_config("paper", {**(overrides or {}), "amp": amp})
    agent = MablAgent(spec, cfg, torch.device("cpu"))
    replay = synthetic_replay(spec, np.random.default_rng(0))
    history = []
    for i in range(updates):
        metrics = agent.train_world_model(replay.sample(cfg.model.batch_size, cfg.model.seq_len,
                                                        np.random.default_rng(i)))
        history.append([float(metrics[k]) for k in TERMS])
    return np.array(history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="config override of the paper preset, e.g. --set model.bias_init=zeros (repeatable)")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    for seed in args.seeds:
        for amp in (False, True):
            last = run(amp, seed, args.updates, overrides)[-5:].mean(0)
            terms = "  ".join(f"{k} {v:.4f}" for k, v in zip(TERMS, last))
            print(f"seed {seed} {'bf16' if amp else 'fp32'}: mean of the last 5 updates: {terms}")


if __name__ == "__main__":
    main()
