"""A wrapper that holds any env to the contract of :mod:`mabl.envs.base`, step by step.

A misbehaving env (a wrong shape, a NaN, an all-False mask row) or a caller's bad action would
otherwise surface far away, as a shape error or a NaN loss deep in the learner. :class:`CheckedEnv`
stops at the first violation with one line naming the env, what was wrong, and when. The checks are
a few numpy reductions over arrays of a few hundred numbers, cheap next to any env step.
"""

from __future__ import annotations

import math
from typing import Any, NoReturn

import numpy as np

from mabl.envs.base import EnvSpec, MultiAgentEnv, TimeStep
from mabl.errors import MablError


class CheckedEnv:
    """Wraps ``env``; validates every ``reset``/``step`` result and every action against its spec.

    Checked on each result: obs ``[N, O]`` and state ``[G]`` float32 and finite; avail ``[N, A]``
    bool with an available action in every row (``None`` without masks); a finite reward; bool
    flags; ``agent_reward`` ``[N]`` float32 finite and ``agent_done`` ``[N]`` bool (never going back to
    False within an episode) exactly where the spec has them; the episode ending by
    ``spec.episode_limit``; ``info["win"]`` at the end when ``spec.has_win``. Checked on each action:
    shape, integer type, ``0 <= a < n_actions`` and availability under the last mask (discrete), or a
    finite ``[N, action_dim]`` array (continuous; bounds are the env's to enforce: adapters clip).
    Also refuses ``step`` outside an episode.
    """

    def __init__(self, env: MultiAgentEnv) -> None:
        self.env = env
        self.spec: EnvSpec = env.spec
        self._t = 0
        self._episode_over = True  # no episode until the first reset
        self._avail: np.ndarray | None = None
        self._agent_done: np.ndarray | None = None  # the last step's, to check that it never goes back

    def reset(self, seed: int | None = None) -> TimeStep:
        timestep = self.env.reset(seed)
        self._t = 0
        self._agent_done = None
        self._check_timestep(timestep, "at reset")
        self._episode_over = False
        return timestep

    def step(self, actions: np.ndarray) -> TimeStep:
        if self._episode_over:
            self._fail("step() was called outside an episode: call reset() first")
        self._check_actions(actions)
        timestep = self.env.step(actions)
        self._t += 1
        self._check_timestep(timestep, f"at step {self._t}")
        limit = self.spec.episode_limit
        if limit and self._t >= limit and not timestep.done:
            self._fail(f"did not end at its episode_limit {limit} (step {self._t})")
        if self.spec.has_win and timestep.done:
            win = (timestep.info or {}).get("win")
            if not isinstance(win, (bool, np.bool_)):
                self._fail(f"ended an episode without a bool info['win'] (got {win!r}) at step {self._t}")
        self._episode_over = timestep.done
        return timestep

    def close(self) -> None:
        self.env.close()

    def _fail(self, what: str) -> NoReturn:
        raise MablError(f"env {self.spec.name} {what}")

    def _check_array(self, value: Any, label: str, shape: tuple[int, ...], where: str) -> None:
        if not isinstance(value, np.ndarray):
            self._fail(f"returned {label} of type {type(value).__name__}, expected a numpy array {where}")
        if value.shape != shape:
            self._fail(f"returned {label} of shape {value.shape}, expected {shape} {where}")
        if value.dtype != np.float32:
            self._fail(f"returned {label} of dtype {value.dtype}, expected float32 {where}")
        finite = np.isfinite(value)
        if not finite.all():
            bad = value[~finite].flat[0]
            self._fail(f"returned a non-finite {label} ({bad}) {where}")

    def _check_timestep(self, timestep: TimeStep, where: str) -> None:
        spec = self.spec
        self._check_array(timestep.obs, "obs", (spec.n_agents, spec.obs_dim), where)
        self._check_array(timestep.state, "state", (spec.state_dim,), where)

        avail = timestep.avail
        if spec.has_action_mask:
            expected = (spec.n_agents, spec.n_actions)
            if not isinstance(avail, np.ndarray) or avail.dtype != np.bool_:
                self._fail(f"returned avail that is not a bool numpy array {where}")
            if avail.shape != expected:
                self._fail(f"returned avail of shape {avail.shape}, expected {expected} {where}")
            empty_rows = np.flatnonzero(~avail.any(axis=1))
            if empty_rows.size:
                self._fail(f"returned avail with no available action for agent {empty_rows[0]} {where}")
        elif avail is not None:
            self._fail(f"returned avail although its spec has no action mask {where}")
        self._avail = avail

        try:
            reward = float(timestep.reward)
        except (TypeError, ValueError):
            self._fail(f"returned a reward of type {type(timestep.reward).__name__} {where}")
        if not math.isfinite(reward):
            self._fail(f"returned a non-finite reward ({reward}) {where}")
        for flag in ("terminated", "truncated"):
            if not isinstance(getattr(timestep, flag), (bool, np.bool_)):
                self._fail(f"returned a non-bool {flag} {where}")
        n = spec.n_agents
        if spec.per_agent_reward:
            self._check_array(timestep.agent_reward, "agent_reward", (n,), where)
        elif timestep.agent_reward is not None:
            self._fail(f"returned agent_reward although its spec has no per-agent reward {where}")
        done = timestep.agent_done
        if spec.per_agent_done:
            if not isinstance(done, np.ndarray) or done.dtype != np.bool_ or done.shape != (n,):
                self._fail(f"returned agent_done that is not a bool numpy array of shape ({n},) {where}")
            if self._agent_done is not None and (self._agent_done & ~done).any():
                agent = int(np.flatnonzero(self._agent_done & ~done)[0])
                self._fail(f"returned agent_done False for agent {agent}, done on an earlier step, {where}")
            self._agent_done = done.copy()
        elif done is not None:
            self._fail(f"returned agent_done although its spec has no per-agent done {where}")

    def _check_actions(self, actions: np.ndarray) -> None:
        spec = self.spec
        where = f"at step {self._t + 1}"
        actions = np.asarray(actions)
        if spec.discrete:
            if actions.shape != (spec.n_agents,):
                self._fail(f"got actions of shape {actions.shape}, expected ({spec.n_agents},) {where}")
            if not np.issubdtype(actions.dtype, np.integer):
                self._fail(f"got actions of dtype {actions.dtype}, expected integers {where}")
            out_of_range = np.flatnonzero((actions < 0) | (actions >= spec.n_actions))
            if out_of_range.size:
                agent = out_of_range[0]
                self._fail(f"got action {actions[agent]} for agent {agent}, outside [0, {spec.n_actions}) {where}")
            if self._avail is not None:
                unavailable = np.flatnonzero(~self._avail[np.arange(spec.n_agents), actions])
                if unavailable.size:
                    agent = unavailable[0]
                    self._fail(f"got unavailable action {actions[agent]} for agent {agent} {where}")
        else:
            expected = (spec.n_agents, spec.action_dim)
            if actions.shape != expected:
                self._fail(f"got actions of shape {actions.shape}, expected {expected} {where}")
            if not np.isfinite(actions).all():
                self._fail(f"got non-finite actions {where}")
