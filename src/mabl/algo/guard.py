"""Divergence guard: a learner update whose loss or gradient norm is not finite is not applied.

Every optimizer step of every learner (world model, actor, critic; model-based and model-free)
goes through :meth:`UpdateGuard.step`. It checks the loss and the gradient norm on the device and
hands the result to Adam as its ``found_inf`` flag: torch's fused Adam kernel then leaves the
parameters, both moments and the step count exactly as they were (tested), all without reading a
value back to the host. (Optimizers without the fused kernel restore a snapshot with
``torch.where``, also on the device.)

The guard counts on the device: skipped updates in the current learner call, the current run of
consecutive skipped updates (carried across calls and checkpoints), the longest run in this call,
and which loss terms were non-finite in skipped updates. The trainer reads these once per learner
call, together with the metrics (:meth:`UpdateGuard.counters`), and stops the run with one line
(:func:`divergence_message`) once a run reaches ``--max-skipped-updates``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def apply_unless(optimizer: torch.optim.Optimizer, bad: torch.Tensor) -> None:
    """``optimizer.step()``, unless ``bad`` (a bool tensor on the device) is True; no host read."""
    fused = all(group.get("fused") for group in optimizer.param_groups)
    if fused:  # the kernel skips the update and undoes its step increment when found_inf != 0
        optimizer.found_inf = bad.float()
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
        return
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved = [p.detach().clone() for p in params]
    state = {id(p): {k: v.clone() for k, v in optimizer.state[p].items() if isinstance(v, torch.Tensor)}
             for p in params if p in optimizer.state}
    optimizer.step()
    with torch.no_grad():
        for p, old in zip(params, saved):
            p.copy_(torch.where(bad, old, p))
            for key, value in state.get(id(p), {}).items():
                current = optimizer.state[p][key]
                current.copy_(torch.where(bad.to(current.device), value, current))


class UpdateGuard:
    """The divergence guard of one learner (``name``: "world model", "actor", "critic")."""

    def __init__(self, name: str, device: torch.device | str, hint: str):
        self.name, self.hint = name, hint
        """``hint``: what to try when this learner diverges (ends the stop line)."""
        self.device = torch.device(device)
        self.terms: list[str] = []
        """The values checked per update (loss, its parts, grad_norm), named at the first update."""
        self.run = torch.zeros((), device=self.device)
        """Consecutive skipped updates up to now (carried across learner calls)."""
        self.new_call()

    def new_call(self) -> None:
        """Reset the per-learner-call counts (the run of consecutive skips goes on)."""
        self.skipped = torch.zeros((), device=self.device)
        self.max_run = torch.zeros((), device=self.device)
        self.bad_terms = torch.zeros(len(self.terms), device=self.device)

    def step(self, optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter], loss: torch.Tensor,
             grad_clip: float, terms: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Backward ``loss``, clip the gradient norm at ``grad_clip``, and step ``optimizer`` unless the
        loss or the gradient norm is not finite. ``terms``: the loss's named parts (scalars),
        recorded when the update is skipped. Returns (gradient norm, skipped flag), device tensors."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(list(params), grad_clip)
        bad = ~(torch.isfinite(loss) & torch.isfinite(grad_norm))
        apply_unless(optimizer, bad)
        self.record(bad, {"loss": loss.detach(), **(terms or {}), "grad_norm": grad_norm.detach()})
        return grad_norm, bad

    @torch.no_grad()
    def record(self, bad: torch.Tensor, values: dict[str, torch.Tensor]) -> None:
        """Count one update (``bad``: skipped) and, when skipped, which of ``values`` were non-finite."""
        if list(values) != self.terms:
            if self.terms:
                raise ValueError(f"{self.name} guard: terms {list(values)} differ from {self.terms}")
            self.terms = list(values)
            self.bad_terms = torch.zeros(len(self.terms), device=self.device)
        values = list(values.values())
        badf = bad.float()
        self.skipped += badf
        self.run = (self.run + 1.0) * badf
        self.max_run = torch.maximum(self.max_run, self.run)
        nonfinite = ~torch.isfinite(torch.stack([v.float().reshape(()) for v in values]))
        self.bad_terms += nonfinite.float() * badf

    def counters(self) -> torch.Tensor:
        """``[skipped, max_run, run, *bad_terms]`` of this learner call, one device tensor."""
        return torch.cat([torch.stack([self.skipped, self.max_run, self.run]), self.bad_terms])

    def state_dict(self) -> dict:
        return {"run": self.run.cpu()}

    def load_state_dict(self, state: dict | None) -> None:
        if state is not None:
            self.run = state["run"].to(self.device).clone()
        self.new_call()


def params_finite(modules: Iterable[nn.Module]) -> torch.Tensor:
    """A device bool: every parameter (and floating buffer) of ``modules`` is finite."""
    flags = [torch.isfinite(t).all() for m in modules for t in [*m.parameters(), *m.buffers()]
             if t.is_floating_point()]
    return torch.stack(flags).all() if flags else torch.ones((), dtype=torch.bool)


def read_guard(guard: UpdateGuard, values: list[float]) -> dict:
    """:meth:`UpdateGuard.counters` as read on the host -> plain numbers and the non-finite terms."""
    skipped, max_run, run, *bad = values
    return {"skipped": int(skipped), "max_run": int(max_run), "run": int(run),
            "terms": [t for t, count in zip(guard.terms, bad) if count > 0]}


def divergence_message(guard: UpdateGuard, report: dict, limit: int, env_step: int, learner_call: int) -> str:
    """The one line that stops a diverging run: which learner, which loss term, when, what to try."""
    parts = [t for t in report["terms"] if t not in ("loss", "grad_norm")]
    what = ("loss term " + ", ".join(parts) if parts else f"the {guard.name} loss" if "loss" in report["terms"]
            else "the gradient norm")
    return (f"training diverged: {report['max_run']} consecutive {guard.name} updates were skipped because "
            f"{what} became non-finite (env step {env_step}, learner call {learner_call}; "
            f"--max-skipped-updates {limit}); no non-finite update was applied and the last checkpoint is "
            f"intact; {guard.hint}")
