"""Evaluation: reproducible env seeds per (run seed, episode, ...) and the summary of a policy's episodes
(``mabl eval`` and the trainer's evaluation rounds)."""

from __future__ import annotations

import numpy as np

from mabl.rollout import run_episode


def episode_seed(seed: int, *index: int) -> int:
    """Independent, reproducible env seed for (run seed, episode index, ...)."""
    return int(np.random.SeedSequence([seed, *index]).generate_state(1)[0])


def evaluate_policy(env, policy, episodes: int, seeds: list[int], deterministic: bool = True) -> dict:
    """Play ``episodes`` episodes; mean return, mean length and win rate (where the env has wins), and
    the per-episode ``returns``, ``lengths`` and ``wins``."""
    results = [run_episode(env, policy, seed, deterministic=deterministic) for seed in seeds[:episodes]]
    out = {"episodes": len(results), "mean_return": float(np.mean([r.ret for r in results])),
           "mean_length": float(np.mean([r.length for r in results]))}
    wins = [r.win for r in results if r.win is not None]
    if wins:
        out["win_rate"] = float(np.mean(wins))
    for key in sorted({k for r in results for k in (r.metrics or {})}):
        out[f"mean_{key}"] = float(np.mean([r.metrics[key] for r in results if r.metrics and key in r.metrics]))
    # the per-episode values too, so statistics over episodes need no re-run (mabl.report)
    out["returns"] = [float(r.ret) for r in results]
    out["lengths"] = [int(r.length) for r in results]
    if wins:
        out["wins"] = [None if r.win is None else bool(r.win) for r in results]
    return out
