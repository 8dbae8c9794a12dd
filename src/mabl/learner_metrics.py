"""Reading a learner call's metrics: the means over its updates, with one host sync per call."""

from __future__ import annotations

import torch


def mean_metrics(groups: dict[str, list[dict[str, torch.Tensor]]], tail: list[torch.Tensor] = ()
          ) -> tuple[dict[str, float], list[list[float]]]:
    """Average each metric over the updates of one learner call, and read ``tail`` (1-d tensors),
    all with one host sync per call.

    ``groups``: prefix -> per-update metric dicts. A ``skipped`` metric (1.0 for an update the
    divergence guard skipped) leaves its update out of the means and is reported as a count; a
    metric ending in ``_skipped`` is summed. Returns ``{prefix + key: mean}`` and ``tail`` as lists.
    """
    parts, layout = [], []
    for prefix, metrics in groups.items():
        if not metrics:
            continue
        keys = list(metrics[0])
        table = torch.stack([torch.stack([m[k].float().reshape(()) for k in keys]) for m in metrics])  # [U, K]
        summed = torch.tensor([k == "skipped" or k.endswith("_skipped") for k in keys], device=table.device)
        if "skipped" in keys:  # means over the applied updates only
            ok = table[:, keys.index("skipped")] == 0
            means = torch.where(ok[:, None], table, 0.0).sum(0) / ok.sum()
        else:
            means = table.mean(0)
        parts.append(torch.where(summed, table.sum(0), means))
        layout.append((prefix, keys))
    parts += [t.float() for t in tail]
    if not parts:
        return {}, []
    flat = torch.cat([p.to(parts[0].device) for p in parts]).tolist()
    out: dict[str, float] = {}
    for prefix, keys in layout:
        out.update({prefix + k: v for k, v in zip(keys, flat[: len(keys)])})
        flat = flat[len(keys):]
    lists = []
    for t in tail:
        lists.append(flat[: t.numel()])
        flat = flat[t.numel():]
    return out, lists
