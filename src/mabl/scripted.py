"""``mabl eval --scripted NAME``: scripted SMAX policies, a floor for the learned ones; and
``mabl eval --trace``: what a policy's team does, step by step.

Scripted policies (each agent on its own, from its action mask; SMAX's actions, JaxMARL's layout:
0-3 move, 4 stop, 5.. attack enemy k):

- ``focus``: attack the lowest-numbered enemy it may attack, otherwise move with action 1;
- ``random_attack``: attack a uniformly drawn enemy it may attack, otherwise move with action 1;
- ``random``: a uniform draw among its available actions;
- ``focus_lowest``: attack the enemy it may attack with the lowest health fraction (ties: the
  lowest-numbered), otherwise move with action 1;
- ``kite``: ``focus_lowest``, except that a unit an enemy attacked on the last step, whose own weapon
  cannot fire again within the next env step, steps away from that enemy instead of standing to
  attack (SMAX's weapon cooldown runs down whatever the unit does, so the step costs no shot).

``focus_lowest`` and ``kite`` read the observation (SMAX's ``unit_list`` layout, :class:`ObsLayout`);
``kite`` needs the enemies' last actions in it, which SMAX shows by default (``see_enemy_actions``).
Moves, from SMAX's action decoding: 0 up (+y), 1 right (+x, towards the enemy's spawn), 2 down, 3 left.
An agent whose mask does not allow action 1 takes its lowest available action instead of moving.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FIRST_ATTACK = 5
"""SMAX's first attack action (after four moves and stop)."""

SCRIPTED = ("focus", "random_attack", "random", "focus_lowest", "kite")
READS_OBS = ("focus_lowest", "kite")
"""The rules that read the observation, not only the action mask."""

MOVES = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [-1.0, 0.0]])
"""Direction of moves 0-3 (SMAX's ``_decode_discrete_actions``: a diagonal rotated by 45 degrees)."""

# SMAX's defaults (smax_env.py, ``SMAX.__init__``): six unit types, 7 features per seen unit plus the
# type bits, 4 own features plus the type bits; weapon cooldowns in seconds; an env step is 8 world
# steps of 1/16 s.
_TYPE_BITS = 6
_UNIT_FEATURES = 7 + _TYPE_BITS
_OWN_FEATURES = 4 + _TYPE_BITS
_TYPE_COOLDOWNS = (0.61, 1.07, 1.87, 0.86, 0.5, 0.59)
_SECONDS_PER_ENV_STEP = 8 / 16


class ObsLayout:
    """Where an ally's SMAX ``unit_list`` observation keeps what the rules read.

    The observation is the other allies' features, then the enemies', then the unit's own
    (``get_obs_unit_list``): a seen unit's features are health fraction, position relative to the
    observer over its sight range (x, y), last move (x, y), last action over the largest action
    index, weapon cooldown over the type's cooldown, type bits; all zeros when it is dead or out
    of sight. Own features: health fraction, position over the map size, cooldown fraction, type bits.
    """

    def __init__(self, obs_dim: int, n_actions: int):
        self.n_enemies = n_actions - FIRST_ATTACK
        rest = obs_dim - _OWN_FEATURES - _UNIT_FEATURES * self.n_enemies
        if self.n_enemies < 1 or rest < 0 or rest % _UNIT_FEATURES:
            raise ValueError(f"obs size {obs_dim} with {n_actions} actions is not SMAX's unit_list layout")
        self.n_allies = rest // _UNIT_FEATURES + 1
        self.enemies = (self.n_allies - 1) * _UNIT_FEATURES
        self.own = self.enemies + self.n_enemies * _UNIT_FEATURES

    def enemy_rows(self, obs: np.ndarray) -> np.ndarray:
        """``[M, 13]`` the enemies' features as this ally sees them."""
        return np.asarray(obs[self.enemies : self.own]).reshape(self.n_enemies, _UNIT_FEATURES)

    def attackers(self, obs: np.ndarray, agent: int) -> np.ndarray:
        """Indices of the seen enemies whose last action attacked ally ``agent``.

        An enemy's attack actions are ``5 + k``, k counting the allies from the last one
        (``_world_step``: ``attacked_idx = num_allies - 1 - (action - 5)``); its largest action index
        is ``num_allies + 4``.
        """
        rows = self.enemy_rows(obs)
        action = np.rint(rows[:, 5] * (self.n_allies + FIRST_ATTACK - 1)).astype(int)
        target = self.n_allies - 1 - (action - FIRST_ATTACK)
        return np.flatnonzero((rows[:, 0] > 0) & (action >= FIRST_ATTACK) & (target == agent))

    def cannot_fire_next_step(self, obs: np.ndarray) -> bool:
        """The unit's weapon stays cooling for the whole next env step (0.5 s of game time)."""
        own = np.asarray(obs[self.own :])
        unit_type = int(np.argmax(own[4:]))
        return bool(own[3] > min(1.0, _SECONDS_PER_ENV_STEP / _TYPE_COOLDOWNS[unit_type]))


def _move_or_first(avail: np.ndarray, move: int) -> int:
    return move if avail[move] else int(np.flatnonzero(avail)[0])


def choose(rule: str, avail: np.ndarray, rng: np.random.Generator, obs: np.ndarray | None = None,
           layout: ObsLayout | None = None, agent: int = 0) -> int:
    """One agent's action under ``rule`` from its mask ``avail [A]`` (and, for the rules in
    :data:`READS_OBS`, its observation ``obs`` read through ``layout``; ``agent`` is its index)."""
    allowed = np.flatnonzero(avail)
    attacks = allowed[allowed >= FIRST_ATTACK]
    if rule == "random":
        return int(rng.choice(allowed))
    if rule in READS_OBS:
        if obs is None or layout is None:
            raise ValueError(f"scripted rule {rule} reads the observation")
        if not len(attacks):
            return _move_or_first(avail, 1)
        health = layout.enemy_rows(obs)[:, 0]
        target = min(attacks, key=lambda a: (health[a - FIRST_ATTACK], a))
        if rule == "kite" and layout.cannot_fire_next_step(obs):
            attackers = layout.attackers(obs, agent)
            if len(attackers):
                towards = layout.enemy_rows(obs)[attackers[0], 1:3]
                return _move_or_first(avail, int(np.argmin(MOVES @ towards)))
        return int(target)
    if len(attacks):
        return int(attacks[0] if rule == "focus" else rng.choice(attacks))
    return _move_or_first(avail, 1)


class ScriptedPolicy:
    """A :class:`mabl.policy.DecentralizedPolicy`-like object playing ``rule`` for every agent."""

    def __init__(self, rule: str, seed: int = 0):
        self.rule, self.rng = rule, np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def act(self, obs, avail=None, deterministic: bool = True):
        if avail is None:
            raise ValueError("a scripted SMAX policy reads the action masks; this env has none")
        avail = np.asarray(avail)
        layout = None
        if self.rule in READS_OBS:
            obs = np.asarray(obs)
            layout = ObsLayout(obs.shape[-1], avail.shape[-1])
        return np.array([choose(self.rule, row, self.rng, None if layout is None else obs[i], layout, i)
                         for i, row in enumerate(avail)], dtype=np.int64), {}


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
