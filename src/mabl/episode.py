"""What playing one episode yields (:class:`Episode`, also built by ``mabl.algo.mappo``'s
lockstep collection) and the one-line form of a fault while acting. Imports no policy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mabl.checkpoint import short_reason
from mabl.errors import MablError


@dataclass
class Episode:
    rows: dict[str, np.ndarray]
    """Replay rows ``[L, ...]``: obs, state, action, reward, done (and avail when masked; agent_reward
    ``[L, N]`` and agent_done ``[L, N]`` where the spec has them)."""
    terminated: bool
    ret: float
    length: int
    win: bool | None
    metrics: dict[str, float] | None = None
    """The env's own end-of-episode numbers (``info["metrics"]`` of the final step), e.g. Flatland's
    ``arrived_fraction``; logged next to the return."""


def episode_metrics(info: dict | None) -> dict[str, float] | None:
    """``info["metrics"]`` of a final step as plain floats, or None when the env reports none."""
    metrics = (info or {}).get("metrics")
    return {str(k): float(v) for k, v in metrics.items()} if metrics else None


def collection_fault(who: str, exc: BaseException, where: str) -> MablError:
    """A fault of the env or the policy while acting, as one line naming the step: a MablError
    keeps its message, any other exception becomes its type and first line."""
    reason = str(exc) if isinstance(exc, MablError) else f"{type(exc).__name__}: {short_reason(exc)}"
    return MablError(f"{who} failed {where}: {reason}")


def env_call(env, what: str, seed: int, t: int, arg):
    """``env.reset(seed=arg)`` or ``env.step(arg)`` (``what``) for a learner's own collection; an
    exception other than the env contract's own MablError becomes one line naming the step."""
    try:
        return env.reset(seed=arg) if what == "reset" else env.step(arg)
    except MablError:
        raise
    except Exception as exc:
        raise collection_fault(f"env {env.spec.name}", exc,
                               f"at {what}, step {t} of the episode with seed {seed}") from None
