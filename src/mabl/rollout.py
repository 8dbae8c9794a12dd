"""Playing one episode with a decentralized policy (training collection and evaluation)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mabl.checkpoint import short_reason
from mabl.envs.base import MultiAgentEnv
from mabl.errors import MablError
from mabl.policy import DecentralizedPolicy


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


def run_episode(env: MultiAgentEnv, policy: DecentralizedPolicy, seed: int, deterministic: bool = False,
                first_step: int = 0) -> Episode:
    """Reset with ``seed`` and act until terminated or truncated; rows follow the replay convention
    (``algo/world_model_loss.py``): row k = (o_k, s_k, avail_k, a_k, r_k, done_k).

    An exception of the env or the policy becomes one MablError line naming the env step
    (``first_step`` + the step in the episode); the env's own contract errors (CheckedEnv) pass as
    they are."""

    def where(t: int) -> str:
        return f"at env step {first_step + t} (step {t} of the episode with seed {seed})"

    try:
        step = env.reset(seed=seed)
    except MablError:
        raise
    except Exception as exc:
        raise collection_fault(f"env {env.spec.name}", exc, "at reset " + where(0)) from None
    policy.reset()
    spec = env.spec
    keys = (["obs", "state", "action", "reward", "done"] + (["avail"] if spec.has_action_mask else [])
            + (["agent_reward"] if spec.per_agent_reward else []) + (["agent_done"] if spec.per_agent_done else []))
    rows: dict[str, list] = {k: [] for k in keys}
    total = 0.0
    while True:
        t = len(rows["reward"])
        try:
            action, _ = policy.act(step.obs, step.avail, deterministic=deterministic)
        except Exception as exc:
            raise collection_fault("the policy", exc, where(t)) from None
        rows["obs"].append(step.obs)
        rows["state"].append(step.state)
        if env.spec.has_action_mask:
            rows["avail"].append(step.avail)
        rows["action"].append(action)
        try:
            step = env.step(action)
        except MablError:
            raise
        except Exception as exc:
            raise collection_fault(f"env {env.spec.name}", exc, where(t + 1)) from None
        rows["reward"].append(step.reward)
        rows["done"].append(step.terminated)
        if spec.per_agent_reward:
            rows["agent_reward"].append(step.agent_reward)
        if spec.per_agent_done:
            rows["agent_done"].append(step.agent_done)
        total += step.reward
        if step.done:
            break
    info = step.info or {}
    arrays = {k: np.asarray(v) for k, v in rows.items()}
    arrays["reward"] = arrays["reward"].astype(np.float32)
    win = bool(info["win"]) if "win" in info else None
    return Episode(arrays, bool(step.terminated), total, len(rows["reward"]), win, episode_metrics(info))
