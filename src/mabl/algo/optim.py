"""The optimizer every learner builds."""

from __future__ import annotations

import torch


def adam(params, **kwargs) -> torch.optim.Adam:
    """Adam with torch's fused kernel where it has one (CPU, CUDA): the same update rule in one pass
    over all parameters instead of a sequence of per-tensor-list ops (world-model step with
    clipping measured 30 -> 10 ms on the 2-core CPU; the actor's 1.9 -> 1.0 ms)."""
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, fused=True if fused else None, **kwargs)
