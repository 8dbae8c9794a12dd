"""How large are the imagined advantages the actor sees, before PPO's normalisation?

Imagines from the posterior latents of ``--windows`` replay windows of a run's newest checkpoint with
its own actor, critic and config (horizon, gamma, lambda), exactly as a policy iteration does, and
prints the raw advantages' spread (lambda-return minus the critic's value, in the world model's
reward units: env reward x ``--model.reward_scale``) next to the lambda-returns'. With
``--policy.normalize_advantages true`` (SMAC's default in the released code) the actor sees these
divided by their std, so the entropy bonus weighs against advantages of std 1; without it, against
the raw ones printed here.

    python benchmarks/advantage_scale.py --run-dir RUN [--windows 64] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, nargs="+")
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.windows < 4:  # what diagnose.draw_windows accepts
        parser.error(f"--windows must be >= 4, got {args.windows}")

    from mabl import diagnose as dg
    from mabl.algo.imagination import imagine

    print("| run | imagined rows | advantage std | mean abs advantage | lambda-return mean / std | reward scale |")
    print("|---|---|---|---|---|---|")
    for run_dir in args.run_dir:
        loaded = dg.load_run(run_dir)
        if loaded.data is None:
            raise SystemExit(f"{run_dir} holds no replay to imagine from")
        agent, policy = loaded.agent, loaded.cfg.policy
        rng = np.random.default_rng(args.seed)
        torch.manual_seed(args.seed)
        _, windows = dg.sample_windows(loaded.data, 20, min(args.windows, loaded.data.n_rows // 20), rng)
        with torch.no_grad():
            _, _, filt = dg.filter_windows(agent, windows, loaded.cfg.model.reward_scale)
            start = dg.posterior_starts(filt.post, ~np.asarray(windows["fake"], bool)[1:])
            rollout = imagine(agent.world_model, agent.actor, agent.critic, start, policy.horizon, policy.gamma,
                              policy.lam)
        adv = rollout.returns - rollout.value
        print(f"| {run_dir} | {adv.shape[0]} x {adv.shape[1]} | {adv.std():.3f} | {adv.abs().mean():.3f} | "
              f"{rollout.returns.mean():.2f} / {rollout.returns.std():.2f} | {loaded.cfg.model.reward_scale:g} |")


if __name__ == "__main__":
    main()
