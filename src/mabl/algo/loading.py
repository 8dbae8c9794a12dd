"""One way to rebuild a run's learner from its checkpoint (``mabl eval``, ``export``, ``diagnose``)."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from mabl.algo.registry import algorithm
from mabl.errors import MablError

if TYPE_CHECKING:
    import torch


class LoadedLearner(NamedTuple):
    """A run's learner as of one checkpoint."""

    learner: Any
    cfg: Any
    """The run's config, with the changes :func:`load_learner` was given (the learner was built with it)."""
    spec: Any
    checkpoint: Path
    state: dict
    """The whole checkpoint (replay, counters, RNG states), as read."""


def checkpoint_step(path: str | os.PathLike) -> int:
    """The env step of ``checkpoints/step_<env_step>.pt``."""
    return int(Path(path).stem.split("_")[1])


def load_learner(run_dir: str | os.PathLike, step: int | None = None, device: torch.device | str = "cpu",
                 skip_unusable: bool = False, **changes: Any) -> LoadedLearner:
    """The learner of a run directory rebuilt on ``device`` (no env needed) from its newest checkpoint,
    or the one of env step ``step``; the config fields ``changes`` (e.g. ``compile=False``) replace the
    run's own.

    A checkpoint holding NaN or infinity is refused with one line; with ``skip_unusable`` the newest
    usable one is read instead, each newer one skipped with a line on stderr
    (:func:`mabl.checkpoint.read_checkpoint`, as a resumed run would pick)."""
    import torch

    from mabl.checkpoint import checkpoint_files, latest_checkpoint, load_finite_checkpoint, read_checkpoint
    from mabl.config_migration import from_dict
    from mabl.envs.base import EnvSpec

    if not Path(run_dir).is_dir():
        raise MablError(f"run directory {run_dir} does not exist")
    no_checkpoint = f"run directory {run_dir} has no checkpoint yet (checkpoints/step_*.pt); train it first"
    if step is not None:
        steps = {checkpoint_step(p): p for p in checkpoint_files(run_dir)}
        if not steps:
            raise MablError(no_checkpoint)
        if step not in steps:
            raise MablError(f"run directory {run_dir} has no checkpoint of step {step}; it keeps the newest ones: "
                            f"{', '.join(map(str, sorted(steps)))}")
        path, state = steps[step], load_finite_checkpoint(steps[step])
    elif skip_unusable:
        found = read_checkpoint(run_dir, report=lambda line: print(line, file=sys.stderr))
        if found is None:
            raise MablError(no_checkpoint)
        path, state = found
    else:
        path = latest_checkpoint(run_dir)
        if path is None:
            raise MablError(no_checkpoint)
        state = load_finite_checkpoint(path)  # a checkpoint with NaN or infinite weights is refused
    device = torch.device(device)
    cfg = dataclasses.replace(from_dict(state["config"]), device=str(device), **changes)
    spec = EnvSpec(**state["spec"])
    learner = algorithm(cfg.algo).build(spec, cfg, device)
    try:
        learner.load_state_dict(state["agent"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise MablError(f"checkpoint {path} does not match its own config: {str(exc).splitlines()[0][:160]}") from None
    return LoadedLearner(learner, cfg, spec, path, state)
