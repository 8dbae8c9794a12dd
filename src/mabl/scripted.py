"""``mabl eval --scripted NAME``: scripted SMAX policies, a floor for the learned ones; and
``mabl eval --trace``: what a policy's team does, step by step.

Scripted policies (each agent on its own, from its action mask; SMAX's actions, JaxMARL's layout:
0-3 move, 4 stop, 5.. attack enemy k):

- ``focus``: attack the lowest-numbered enemy it may attack, otherwise move with action 1;
- ``random_attack``: attack a uniformly drawn enemy it may attack, otherwise move with action 1;
- ``random``: a uniform draw among its available actions.

An agent whose mask does not allow action 1 takes its lowest available action instead of moving.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FIRST_ATTACK = 5
"""SMAX's first attack action (after four moves and stop)."""

SCRIPTED = ("focus", "random_attack", "random")


def choose(rule: str, avail: np.ndarray, rng: np.random.Generator) -> int:
    """One agent's action under ``rule`` from its mask ``avail [A]``."""
    allowed = np.flatnonzero(avail)
    attacks = allowed[allowed >= FIRST_ATTACK]
    if rule == "random":
        return int(rng.choice(allowed))
    if len(attacks):
        return int(attacks[0] if rule == "focus" else rng.choice(attacks))
    return 1 if avail[1] else int(allowed[0])


class ScriptedPolicy:
    """A :class:`mabl.policy.DecentralizedPolicy`-like object playing ``rule`` for every agent."""

    def __init__(self, rule: str, seed: int = 0):
        self.rule, self.rng = rule, np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def act(self, obs, avail=None, deterministic: bool = True):
        if avail is None:
            raise ValueError("a scripted SMAX policy reads the action masks; this env has none")
        return np.array([choose(self.rule, row, self.rng) for row in np.asarray(avail)], dtype=np.int64), {}


def trace_episode(env, policy, seed: int, deterministic: bool = True) -> dict[str, Any]:
    """Play one episode; per step the joint action and team reward, and for steps where one unit is
    left (the only agent whose mask allows more than one action) that agent, its mask and, where the
    policy reports them, its action probabilities."""
    step = env.reset(seed=seed)
    policy.reset()
    steps, alone, total = [], [], 0.0
    while True:
        actions, info = policy.act(step.obs, step.avail, deterministic=deterministic)
        actions = np.asarray(actions)
        if step.avail is not None:
            alive = [i for i in range(len(actions)) if np.asarray(step.avail[i]).sum() > 1]
            if len(alive) == 1:
                i = alive[0]
                probs = (info or {}).get("probs")
                alone.append({"step": len(steps), "agent": i, "action": int(actions[i]),
                              "mask": "".join("1" if a else "0" for a in step.avail[i]),
                              "probs": None if probs is None else [float(p) for p in probs[i]]})
        step = env.step(actions)
        total += float(step.reward)
        steps.append({"actions": [int(a) for a in actions.reshape(len(actions), -1)[:, 0]], "reward": float(step.reward)})
        if step.done:
            break
    return {"seed": seed, "length": len(steps), "return": total, "win": (step.info or {}).get("win"), "steps": steps,
            "alone": alone}


def format_trace(episode: dict[str, Any], index: int) -> str:
    """``episode 0 (seed S): L steps, return R, win W``, then every step as ``<actions>:<reward>``
    (``777:0.2`` = three agents chose action 7 and the team got 0.2; actions above 9 are written
    ``[12]``), then the lone survivor's steps."""
    def joint(actions: list[int]) -> str:
        return "".join(str(a) if 0 <= a <= 9 else f"[{a}]" for a in actions)

    lines = [f"episode {index} (seed {episode['seed']}): {episode['length']} steps, return {episode['return']:.2f}, "
             f"win {episode['win']}",
             "  " + " ".join(f"{joint(s['actions'])}:{s['reward']:.3g}" for s in episode["steps"])]
    for a in episode["alone"]:
        probs = "" if a["probs"] is None else ", p [" + " ".join(f"{p:.2f}" for p in a["probs"]) + "]"
        lines.append(f"  alone at step {a['step']}: agent {a['agent']}, action {a['action']}, mask {a['mask']}{probs}")
    return "\n".join(lines)
