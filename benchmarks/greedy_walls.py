"""What a greedy evaluation episode of an untrained actor is on SMAX: the same move for every agent,
into the map's edge, which JaxMARL's walls make lethal (``--smax.walls lethal``) and SMAC's stop
(``--smax.walls stop``, the default).

    python benchmarks/greedy_walls.py [--env smax:3s_vs_4z] [--episodes 6] [--smax.reward smac|jaxmarl] \
        [--smax.state smac|jaxmarl]

Plays ``--episodes`` greedy and stochastic episodes of a freshly initialised MABL actor (quick
preset, seed 0) twice: with lethal walls and with walls that only stop units, at the given reward
and state readings, and prints episode lengths, returns and agent 0's action counts."""

from __future__ import annotations

import argparse
import collections

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="smax:3s_vs_4z")
    parser.add_argument("--episodes", type=int, default=6)
    from mabl.envs.smax import SMAX_OPTIONS

    for option in ("reward", "state"):
        parser.add_argument(f"--smax.{option}", dest=option, choices=SMAX_OPTIONS[option],
                            default=SMAX_OPTIONS[option][0])
    args = parser.parse_args()

    from mabl.algo import build_learner
    from mabl.envs import make_env
    from mabl.presets import build_config
    from mabl.rollout import run_episode

    for walls in ("lethal", "stop"):
        options = {"reward": args.reward, "state": args.state, "walls": walls}
        env = make_env(args.env, seed=0, options=options)
        torch.manual_seed(0)
        overrides = {"env": args.env, **{f"smax.{k}": v for k, v in options.items()}}
        agent = build_learner(env.spec, build_config("quick", overrides), torch.device("cpu"))
        for greedy in (True, False):
            lengths, returns, actions = [], [], collections.Counter()
            for i in range(args.episodes):
                episode = run_episode(env, agent.policy(), 1000 + i, deterministic=greedy)
                lengths.append(episode.length)
                returns.append(round(episode.ret, 2))
                actions.update(episode.rows["action"][:, 0].tolist())
            print(f"walls={walls:<6} {'greedy    ' if greedy else 'stochastic'} lengths {lengths} "
                  f"returns {returns} agent-0 actions {dict(sorted(actions.items()))}")


if __name__ == "__main__":
    main()
