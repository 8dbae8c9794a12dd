"""Playing one episode with a decentralized policy (training collection and evaluation)."""

from __future__ import annotations

import numpy as np

from mabl.envs.base import MultiAgentEnv
from mabl.episode import Episode, collection_fault, episode_metrics  # noqa: F401  (re-exported)
from mabl.errors import MablError
from mabl.policy import DecentralizedPolicy


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
