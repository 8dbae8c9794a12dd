"""What do scripted policies win on a SMAX map? A floor for the learned ones.

    python benchmarks/scripted_policies.py [--env smax:3m] [--episodes 50] \
        [--smax.reward smac|jaxmarl] [--smax.state smac|jaxmarl] [--smax.walls stop|lethal]

Policies (each agent on its own, from its action mask; SMAX's actions: 0-3 move, 4 stop, 5.. attack
enemy k): ``focus`` attacks the lowest-numbered enemy it may attack, otherwise moves with action 1;
``random_attack`` attacks a uniformly drawn enemy it may attack, otherwise moves with action 1;
``random`` draws uniformly among its available actions. Episodes start from env seeds 1000, 1001, ...
(the same for every policy); wins are the adapter's ``info["win"]``. The ``--smax.*`` readings are
``mabl train``'s (SMAC's by default; docs/ENVIRONMENTS.md); they change the reward and the walls, so
give a learned policy's readings to compare with it.
"""

from __future__ import annotations

import argparse

import numpy as np

FIRST_ATTACK = 5
"""SMAX's first attack action (after four moves and stop)."""


def choose(rule: str, avail: np.ndarray, rng: np.random.Generator) -> int:
    allowed = np.flatnonzero(avail)
    attacks = allowed[allowed >= FIRST_ATTACK]
    if rule == "random":
        return int(rng.choice(allowed))
    if len(attacks):
        return int(attacks[0] if rule == "focus" else rng.choice(attacks))
    return 1 if avail[1] else int(allowed[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="smax:3m")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--policies", default="focus,random_attack,random")
    from mabl.envs.smax import SMAX_OPTIONS

    for option, choices in SMAX_OPTIONS.items():
        parser.add_argument(f"--smax.{option}", dest=option, choices=choices, default=choices[0],
                            help=f"SMAX's {option} reading (default {choices[0]})")
    args = parser.parse_args()
    if not args.env.startswith("smax:"):
        raise SystemExit(f"--env={args.env}: the scripts read SMAX's action layout; give a smax:MAP task")

    from mabl.envs.registry import make_env

    options = {option: getattr(args, option) for option in SMAX_OPTIONS}
    env = make_env(args.env, seed=0, options=options)
    readings = " ".join(f"{k}={v}" for k, v in options.items())
    for rule in args.policies.split(","):
        rng = np.random.default_rng(0)
        wins, returns = 0, []
        for episode in range(args.episodes):
            step = env.reset(seed=1000 + episode)
            total = 0.0
            while not step.done:
                step = env.step(np.array([choose(rule, step.avail[i], rng) for i in range(env.spec.n_agents)]))
                total += float(step.reward)
            wins += bool((step.info or {}).get("win", False))
            returns.append(total)
        print(f"{args.env} ({readings}) {rule:<14} {args.episodes} episodes: win rate {100 * wins / args.episodes:.1f}%, "
              f"mean return {np.mean(returns):.3f}")


if __name__ == "__main__":
    main()
