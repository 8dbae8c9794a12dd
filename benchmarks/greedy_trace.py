"""What a trained policy's greedy team does, step by step: every agent's action per step, and for
steps where one unit is left, that unit's action mask and action probabilities.

    python benchmarks/greedy_trace.py --run-dir RUN [--episodes 3] [--seed 1000]

Exports the run's newest checkpoint to a policy file in a temporary folder (as ``mabl export``),
plays ``--episodes`` greedy episodes on the run's env with the run's readings (e.g. SMAX's reward and
walls, from its config; episode ``e`` seeded ``--seed`` + e) and
prints, per episode, its length, return and win, the joint action and team reward of every step
(``777:0.2`` = all three agents chose action 7 and the team got 0.2), then the lone survivor's steps.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()

    import mabl
    from mabl.cli import main as cli
    from mabl.config import env_options, from_dict
    from mabl.envs import make_env

    cfg = from_dict(json.loads((Path(args.run_dir) / "config.json").read_text()))
    env_name = cfg.env
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "policy.pt")
        if cli(["export", "--run-dir", args.run_dir, "--out", path]) != 0:
            raise SystemExit(2)
        policy = mabl.load_policy(path)
    env = make_env(env_name, seed=args.seed, options=env_options(cfg))
    for episode in range(args.episodes):
        ts = env.reset(seed=args.seed + episode)
        policy.reset()
        steps, alone, total = [], [], 0.0
        while True:
            actions, info = policy.act(ts.obs, avail=ts.avail, deterministic=True)
            alive = [i for i in range(len(actions)) if ts.avail is not None and ts.avail[i].sum() > 1]
            if len(alive) == 1:
                i = alive[0]
                mask = "".join("1" if a else "0" for a in ts.avail[i])
                probs = " ".join(f"{x:.2f}" for x in info["probs"][i])
                alone.append(f"agent {i}: action {actions[i]}, mask {mask}, p [{probs}]")
            ts = env.step(actions)
            total += ts.reward
            steps.append(f"{''.join(str(a) for a in actions)}:{ts.reward:.3g}")
            if ts.done:
                break
        win = (ts.info or {}).get("win")
        print(f"episode {episode}: {len(steps)} steps, return {total:.2f}, win {win}")
        print("  " + " ".join(steps))
        for line in alone:
            print("  alone: " + line)
    env.close()


if __name__ == "__main__":
    main()
