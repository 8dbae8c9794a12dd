"""Named presets: overrides applied to the defaults before the user's flags.

- ``paper``: SPEC.md sizes and the paper's per-episode schedule (the defaults).
- ``quick``: smaller networks and a step-based schedule so that a 2-core CPU run shows learning on
  the default task within minutes, and 10x the code's entropy bonus (0.01: on SMAX with JaxMARL's
  reward and walls, with the code's 0.001 the seed-0 default run's actor became near-deterministic,
  entropy ~0.07 nats by 10k steps, and won no episode in 20k; with 0.01 it won 31% at 17.5k-20k;
  seed 1 won none either way; docs/PERFORMANCE.md, "What the default run does"). It is a different
  operating point, not the paper's.
- ``cpu``: the reproduction study's operating point on a 2-core CPU (docs/REPRODUCTION.md): the
  ``quick`` networks with twice its learning per env step (a learner call every 50 env steps), the
  code's entropy bonus, 100k steps, MAPPO with the paper's (Yu et al.) settings. Per env step the
  world model trains on ~7x fewer window rows than ``paper`` and policy learning imagines ~5x fewer
  rows.
- ``debug``: tiny networks and a handful of updates, for tests and smoke runs.

A task's own defaults (:mod:`mabl.envs.task_defaults`: Flatland's) come after the preset.
"""

from __future__ import annotations

from typing import Any

from mabl.config import RunConfig, coerce, replace_path
from mabl.envs.task_defaults import task_defaults
from mabl.errors import MablError

_SMALL: dict[str, Any] = {
    "model.hidden": 128,
    "model.deter": 128,
    "model.n_categoricals": 16,
    "model.n_classes": 16,
    "model.encoder_layers": 2,
    "model.batch_size": 16,
    "policy.hidden": 128,
    "policy.batch_size": 16,
    "policy.epochs": 4,
    "policy.minibatch": 512,
    "schedule.mode": "steps",
    "schedule.model_updates": 10,
    "schedule.policy_iterations": 1,
    "schedule.learning_starts": 500,
    "checkpoint_every": 5_000,
}
"""The networks and per-call learning of ``quick`` and ``cpu``, which differ only in how often they learn."""

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "quick": {
        **_SMALL,
        "schedule.train_every": 100,
        "policy.entropy": 0.01,
        "mappo.n_envs": 4,
        "mappo.rollout_steps": 800,
        "steps": 20_000,
        "eval_every": 5_000,
    },
    "cpu": {
        **_SMALL,
        "schedule.train_every": 50,
        "steps": 100_000,
        "eval_every": 10_000,
    },
    "debug": {
        "model.hidden": 32,
        "model.deter": 32,
        "model.n_categoricals": 4,
        "model.n_classes": 4,
        "model.encoder_layers": 2,
        "model.batch_size": 4,
        "model.seq_len": 8,
        "policy.hidden": 32,
        "policy.attn_heads": 2,
        "policy.batch_size": 4,
        "policy.horizon": 5,
        "policy.epochs": 2,
        "policy.minibatch": 32,
        "schedule.mode": "steps",
        "schedule.train_every": 50,
        "schedule.model_updates": 2,
        "schedule.policy_iterations": 1,
        "schedule.learning_starts": 100,
        "schedule.replay_capacity": 10_000,
        "model.mixer_layers": 1,
        "model.mixer_heads": 2,
        "mappo.n_envs": 2,
        "mappo.rollout_steps": 100,
        "mappo.hidden": 16,
        "mappo.epochs": 2,
        "qmix.hidden": 16,
        "qmix.batch_episodes": 4,
        "qmix.mixing_embed": 8,
        "qmix.hypernet_embed": 16,
        "qmix.target_update_interval": 5,
        "rmappo.epochs": 2,
        "steps": 400,
        "checkpoint_every": 200,
        "eval_every": 0,
        "eval_episodes": 2,
    },
}


DEFAULT_PRESET = "quick"
"""The preset of a `mabl train` without --preset (``RunConfig.preset``'s default)."""


def build_config(preset: str = DEFAULT_PRESET, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults -> preset -> the task's defaults (:mod:`mabl.envs.task_defaults`, e.g. Flatland's
    per-agent rewards) -> ``overrides`` (dotted paths to strings or values), validated (the
    algorithm's own checks too: :func:`mabl.algo.registry.check_config`)."""
    if preset not in PRESETS:
        raise MablError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    cfg = replace_path(RunConfig(), "preset", preset)
    overrides = overrides or {}
    env = str(overrides.get("env", PRESETS[preset].get("env", cfg.env)))
    for path, value in {**PRESETS[preset], **task_defaults(env), **overrides}.items():
        cfg = replace_path(cfg, path, coerce(cfg, path, value))
    from mabl.algo.registry import check_config

    cfg = cfg.validate()
    check_config(cfg)
    return cfg
