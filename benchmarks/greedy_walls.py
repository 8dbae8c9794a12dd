"""What a greedy evaluation episode of an untrained actor is on SMAX: the same move for every agent,
into a wall, which SMAX makes lethal (``walls_cause_death``, JaxMARL's default, kept by mabl).

    python benchmarks/greedy_walls.py [--env smax:3s_vs_4z] [--episodes 6]

Plays ``--episodes`` greedy and stochastic episodes of a freshly initialised MABL actor (quick
preset, seed 0) twice: with SMAX's lethal walls and with walls that only stop units (SMAC's
behaviour), and prints episode lengths, returns and agent 0's action counts.
"""

from __future__ import annotations

import argparse
import collections

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="smax:3s_vs_4z")
    parser.add_argument("--episodes", type=int, default=6)
    args = parser.parse_args()

    from mabl.algo import build_learner
    from mabl.envs import make_env
    from mabl.envs.smax import _import_jaxmarl
    from mabl.presets import build_config
    from mabl.rollout import run_episode

    jaxmarl = _import_jaxmarl()
    make = jaxmarl.make
    for lethal in (True, False):
        jaxmarl.make = lambda name, _lethal=lethal, **kw: make(name, walls_cause_death=_lethal, **kw)
        env = make_env(args.env, seed=0)
        torch.manual_seed(0)
        agent = build_learner(env.spec, build_config("quick", {"env": args.env}), torch.device("cpu"))
        for greedy in (True, False):
            lengths, returns, actions = [], [], collections.Counter()
            for i in range(args.episodes):
                episode = run_episode(env, agent.policy(), 1000 + i, deterministic=greedy)
                lengths.append(episode.length)
                returns.append(round(episode.ret, 2))
                actions.update(episode.rows["action"][:, 0].tolist())
            print(f"walls_cause_death={lethal!s:5} {'greedy    ' if greedy else 'stochastic'} lengths {lengths} "
                  f"returns {returns} agent-0 actions {dict(sorted(actions.items()))}")
    jaxmarl.make = make


if __name__ == "__main__":
    main()
