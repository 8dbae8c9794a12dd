"""What docs/ENVIRONMENTS.md states about two envs, asserted: Humanoid's observation magnitudes under
each ``--mamujoco.contact_forces`` reading, and what a greedy untrained actor does against SMAX's
lethal walls."""

from __future__ import annotations

import numpy as np
import pytest


def _obs_magnitudes(reading: str, steps: int) -> np.ndarray:
    from mabl.envs import make_env

    env = make_env("mamujoco:Humanoid-9|8", seed=0, options={"contact_forces": reading})
    rng = np.random.default_rng(0)
    timestep, magnitudes = env.reset(0), []
    for _ in range(steps):
        timestep = env.step(rng.uniform(-0.4, 0.4, (2, 9)).astype(np.float32))
        magnitudes.append(np.abs(timestep.obs))
        if timestep.done:
            timestep = env.reset()
    env.close()
    return np.stack(magnitudes)


def test_v5_contact_forces_are_the_large_observations():
    pytest.importorskip("mujoco")
    v5, zero = _obs_magnitudes("v5", 2000), _obs_magnitudes("zero", 2000)
    assert v5.max() > 1000 and zero.max() < 200  # v5: up to ~3,000; zeroed: up to ~120
    assert (v5.max(axis=0) > 10).sum() > 2 * (zero.max(axis=0) > 10).sum()


def _greedy_lengths(walls: str, episodes: int) -> tuple[list[int], list[float]]:
    import torch

    from mabl.algo import build_learner
    from mabl.envs import make_env
    from mabl.presets import build_config
    from mabl.rollout import run_episode

    options = {"reward": "jaxmarl", "state": "smac", "walls": walls}
    env = make_env("smax:3s_vs_4z", seed=0, options=options)
    torch.manual_seed(0)
    overrides = {"env": "smax:3s_vs_4z", **{f"smax.{k}": v for k, v in options.items()}}
    agent = build_learner(env.spec, build_config("quick", overrides), torch.device("cpu"))
    runs = [run_episode(env, agent.policy(), 1000 + i, deterministic=True) for i in range(episodes)]
    return [r.length for r in runs], [r.ret for r in runs]


def _one_way(walls: str) -> list[tuple[int, bool]]:
    """Length and win of an episode (seed 1000) in which every living unit keeps taking move ``a``, for a = 0..3."""
    from mabl.envs import make_env

    env = make_env("smax:3s_vs_4z", seed=0, options={"reward": "jaxmarl", "state": "smac", "walls": walls})
    out = []
    for move in range(4):
        timestep, length = env.reset(seed=1000), 0
        while not timestep.done:
            timestep = env.step(np.array([move if timestep.avail[i][move] else 4 for i in range(3)]))
            length += 1
        out.append((length, bool((timestep.info or {}).get("win"))))
    env.close()
    return out


def test_lethal_walls_end_a_team_that_keeps_moving_one_way():
    pytest.importorskip("jaxmarl")
    lethal, stop = _one_way("lethal"), _one_way("stop")
    assert all(length <= 15 and not win for length, win in lethal)  # every direction: the team is lost
    assert all(length > 15 for length, _ in stop) and max(length for length, _ in stop) == 200  # the time limit


def test_greedy_untrained_episodes_are_shorter_with_lethal_walls():
    pytest.importorskip("jaxmarl")
    lethal, _ = _greedy_lengths("lethal", 3)
    stop, _ = _greedy_lengths("stop", 3)
    assert max(lethal) < min(stop)
