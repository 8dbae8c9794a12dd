"""Where a run's tensors live: the compute device (``--device``) and whether the replay keeps a copy of its
rows there (``--schedule.replay_on``), which depends on the replay's row layout (:func:`per_agent_targets`)."""

from __future__ import annotations

import torch

from mabl.algo.registry import algorithm
from mabl.config import RunConfig
from mabl.errors import MablError
from mabl.replay import replay_bytes


def resolve_device(name: str) -> torch.device:
    """The one place a device is chosen. 'auto' = CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MablError(f"--device={name!r} is not a device; use auto, cpu, cuda or cuda:K") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MablError(f"--device={name} but CUDA is not available on this machine; use --device cpu")
    return device


def per_agent_targets(cfg: RunConfig, spec) -> tuple[bool, bool]:
    """Whether the replay keeps rewards, and done/fake, per agent (``--model.reward_target``,
    ``--model.done_target``); a per-agent choice on an env that does not report it is an error."""
    if not algorithm(cfg.algo).world_model:  # (no replay)
        return False, False
    agent_reward = cfg.model.reward_target == "per_agent"
    agent_done = cfg.model.done_target == "per_agent"
    if agent_reward and not spec.per_agent_reward:
        raise MablError(f"--model.reward_target=per_agent needs an env with per-agent rewards; {spec.name} "
                        "reports a team reward only: use --model.reward_target team")
    if agent_done and not spec.per_agent_done:
        raise MablError(f"--model.done_target=per_agent needs an env with per-agent done; {spec.name} "
                        "has none: use --model.done_target team")
    return agent_reward, agent_done


def replay_device(cfg: RunConfig, spec, device: torch.device) -> torch.device | None:
    """Where the replay keeps a copy of its rows (``--schedule.replay_on``); None: host only."""
    where = cfg.schedule.replay_on
    if where == "host" or (where == "auto" and device.type != "cuda"):
        return None
    if where == "auto":
        free, _total = torch.cuda.mem_get_info(device)
        if replay_bytes(spec, cfg.schedule.replay_capacity, *per_agent_targets(cfg, spec)) > free // 4:
            return None
    return device
