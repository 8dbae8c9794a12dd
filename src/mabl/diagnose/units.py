"""Optional ``mabl diagnose`` blocks about units and the actor's targets (flags ``--by-alive``,
``--advantages``, ``--attack-masks``), each on its own window draw of the run's replay:

- **by_alive**: the critic's value and the imagined lambda-return of posterior states against the
  observed discounted return from the same row, grouped by how many units are alive (a unit is alive
  where its action mask allows more than one action; on SMAX a dead unit may only stop). Where is the
  critic optimistic? The replay holds older policies' episodes, so the observed returns are not the
  current policy's alone.
- **advantages**: the spread of the raw imagined advantages (lambda-return minus the critic's value, in
  the world model's reward units: env reward x ``model.reward_scale``) before PPO's normalisation, next
  to the lambda-returns'. With ``policy.normalize_advantages`` the actor sees these divided by their
  std, so the entropy bonus weighs against advantages of std 1; without it, against these.
- **attack_masks** (SMAX): may a unit attack in imagination where the env allowed no attack? The
  action-availability head, filtered (posterior) and open loop (prior, k steps after the context, under
  the replay's own actions), as ``P(attack) = 1 - prod over enemies (1 - p_attack)``: the probability
  that a sampled mask (imagination samples each action's availability, SPEC section 3) allows some
  attack; split by whether the env allowed an attack and whether the unit was the team's last alive.

Rows as everywhere in diagnose: non-overlapping windows, steps ``j >= BURN_IN`` whose row is real.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mabl.diagnose.data import discounted_returns, filter_windows, posterior_starts, sample_windows
from mabl.diagnose.measures import imagine_from, open_loop_predictions
from mabl.errors import MablError

FIRST_ATTACK = 5
"""SMAX's action layout (JaxMARL): 0-3 move, 4 stop, 5.. attack enemy 0, 1, ..."""

BURN_IN = 4
"""As :data:`mabl.diagnose.BURN_IN` (filtering steps before a state counts)."""


def _windows(loaded, count: int, length: int, seed: int):
    if loaded.data is None:
        raise MablError(f"{loaded.checkpoint} holds no replay to draw windows from")
    count = min(count, loaded.data.n_rows // length)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    return sample_windows(loaded.data, length, count, rng)


def _step_mask(windows) -> np.ndarray:
    fake = np.asarray(windows["fake"], bool)
    fake = fake.any(-1) if fake.ndim == 3 else fake  # per-agent absorbing rows (Flatland): any agent
    mask = ~fake[1:]
    mask[:BURN_IN] = False
    return mask


def alive_groups(alive: np.ndarray, value: np.ndarray, lam: np.ndarray, observed: np.ndarray) -> list[dict]:
    """Per number of living units ``k`` (ascending): the states, and the mean value, lambda-return,
    observed return and value minus observed return over them (1-D arrays, one entry per state)."""
    out = []
    for k in sorted(set(np.asarray(alive).tolist())):
        m = alive == k
        out.append({"alive": int(k), "states": int(m.sum()), "value": float(value[m].mean()),
                    "lambda_return": float(lam[m].mean()), "observed": float(observed[m].mean()),
                    "value_minus_observed": float(value[m].mean() - observed[m].mean())})
    return out


def living_count(avail: np.ndarray) -> np.ndarray:
    """``avail [..., N, A]`` (bool masks): the units whose mask allows more than one action ``[...]``."""
    return (np.asarray(avail, bool).sum(-1) > 1).sum(-1)


def by_alive(loaded, count: int = 300, length: int = 20, seed: int = 0) -> dict[str, Any]:
    rows, agent = loaded.data.rows if loaded.data is not None else None, loaded.agent
    if rows is None or rows.get("avail") is None:
        raise MablError("--by-alive needs a replay with action masks: living units are told apart by them")
    starts, windows = _windows(loaded, count, length, seed)
    returns, complete = discounted_returns(np.asarray(rows["reward"]), np.asarray(rows["done"]), rows["last"],
                                           loaded.cfg.policy.gamma)
    index = (starts[None, :] + np.arange(length)[:, None])[1:]  # step j's state is row j + 1
    agent.world_model.eval()
    with torch.no_grad():
        _, _, filt = filter_windows(agent, windows)
        mask = _step_mask(windows)
        lam, value, _ = imagine_from(agent, posterior_starts(filt.post, mask))
    keep = mask.reshape(-1)
    observed, done_in_data = returns[index].reshape(-1)[keep], complete[index].reshape(-1)[keep]
    avail = np.asarray(windows["avail"])[1:]
    alive = living_count(avail.reshape(-1, *avail.shape[2:])[keep])
    d = done_in_data
    return {"windows": len(starts), "states": int(len(lam)), "complete_returns": int(d.sum()),
            "groups": alive_groups(alive[d], value[d], lam[d], observed[d])}


def advantage_spread(returns: torch.Tensor, value: torch.Tensor) -> dict[str, float]:
    """Raw advantages ``returns - value`` (any shape): their std and mean absolute value, beside the
    lambda-returns' mean and std."""
    adv = (returns - value).double()
    return {"advantage_std": float(adv.std()), "advantage_mean_abs": float(adv.abs().mean()),
            "lambda_return_mean": float(returns.double().mean()), "lambda_return_std": float(returns.double().std())}


def advantages(loaded, count: int = 64, length: int = 20, seed: int = 0) -> dict[str, Any]:
    from mabl.algo.imagination import imagine

    agent, cfg = loaded.agent, loaded.cfg
    _, windows = _windows(loaded, count, length, seed)
    agent.world_model.eval()
    with torch.no_grad():
        _, _, filt = filter_windows(agent, windows, cfg.model.reward_scale)
        start = posterior_starts(filt.post, ~np.asarray(windows["fake"], bool)[1:])
        rollout = imagine(agent.world_model, agent.actor, agent.critic, start, cfg.policy.horizon, cfg.policy.gamma,
                          cfg.policy.lam)
    return {"windows": int(np.asarray(windows["fake"]).shape[1]), "imagined_rows": list(rollout.returns.shape[:2]),
            "reward_scale": cfg.model.reward_scale, **advantage_spread(rollout.returns, rollout.value)}


ATTACK_GROUPS = ("env_no_attack", "env_attack", "last_unit_env_no_attack", "last_unit_env_attack")


def attack_rates(p: np.ndarray, avail: np.ndarray, ok: np.ndarray) -> dict[str, dict]:
    """``p [.., N, A]`` the head's availability probabilities, ``avail [.., N, A]`` the env's masks,
    ``ok [..]`` the rows to count. Over units alive on those rows (they may move): the mean of
    ``1 - prod(1 - p_attack)`` and the unit-rows counted, in the groups of :data:`ATTACK_GROUPS` (the env
    allowed no attack / some attack, for all living units and for the team's last one); mean None
    where a group is empty."""
    alive = avail[..., :4].any(-1) & ok[..., None]
    last = alive & (alive.sum(-1, keepdims=True) == 1)
    may = avail[..., FIRST_ATTACK:].any(-1)
    p_attack = 1.0 - np.prod(1.0 - p[..., FIRST_ATTACK:], -1)
    masks = (alive & ~may, alive & may, last & ~may, last & may)
    return {name: {"p_attack": float(p_attack[m].mean()) if m.any() else None, "unit_rows": int(m.sum())}
            for name, m in zip(ATTACK_GROUPS, masks)}


def attack_masks(loaded, count: int = 300, length: int = 20, context: int = 10, horizon: int = 8,
                 seed: int = 0) -> dict[str, Any]:
    if not loaded.spec.name.startswith("smax:") or loaded.data is None or loaded.data.rows.get("avail") is None:
        raise MablError(f"--attack-masks reads SMAX's action layout and masks; this is a {loaded.spec.name} run")
    if context <= BURN_IN or horizon < 1 or context + horizon > length - 1:
        raise MablError(f"--attack-masks: context {context} + horizon {horizon} must fit in {length - 1} filtering "
                        f"steps, context > {BURN_IN}")
    model = loaded.agent.world_model
    _, windows = _windows(loaded, count, length, seed)
    model.eval()
    with torch.no_grad():
        batch, prev, filt = filter_windows(loaded.agent, windows)
        filtered = torch.sigmoid(model.avail_logits(filt.post)).float().cpu().numpy()  # [T, B, N, A]
        ahead = open_loop_predictions(model, filt.post, prev, context, horizon)["avail"]
    avail = batch.avail.cpu().numpy().astype(bool)
    real = ~np.asarray(windows["fake"], bool)[1:]
    ok = real.copy()
    ok[:BURN_IN] = False
    sl = slice(context, context + horizon)
    same_episode = ~np.cumsum(batch.first.cpu().numpy()[sl], 0).astype(bool)
    return {"windows": int(real.shape[1]), "context": context,
            "filtered": attack_rates(filtered, avail, ok),
            "open_loop": [attack_rates(ahead[k], avail[sl][k], (real[sl] & same_episode)[k]) for k in range(horizon)]}


def _num(x, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def format_units(blocks: dict[str, Any]) -> str:
    """The blocks present in ``blocks`` (keys ``by_alive``, ``advantages``, ``attack_masks``) as text."""
    lines = []
    if (b := blocks.get("by_alive")) is not None:
        lines += [f"by alive units ({b['windows']} windows, {b['states']} states, {b['complete_returns']} with their "
                  "episode's end in the data)", "  alive  states  value  lambda-return  observed  value - observed"]
        lines += [f"  {g['alive']:5d}  {g['states']:6d}  {g['value']:5.3f}  {g['lambda_return']:13.3f}  "
                  f"{g['observed']:8.3f}  {g['value_minus_observed']:+16.3f}" for g in b["groups"]]
    if (b := blocks.get("advantages")) is not None:
        lines += [f"raw imagined advantages ({b['windows']} windows, {b['imagined_rows'][0]} x {b['imagined_rows'][1]} "
                  f"imagined rows, model reward units, reward scale {b['reward_scale']:g}): std "
                  f"{b['advantage_std']:.3f}, mean |A| {b['advantage_mean_abs']:.3f}; lambda-return mean "
                  f"{b['lambda_return_mean']:.3f}, std {b['lambda_return_std']:.3f}"]
    if (b := blocks.get("attack_masks")) is not None:
        lines += [f"P(a sampled mask lets a living unit attack) ({b['windows']} windows; unit-rows in brackets)",
                  "  rows                  env: no attack   env: attack      last, no attack  last, attack"]

        def row(label: str, rates: dict) -> str:
            return f"  {label:<20}" + "".join(f"  {_num(rates[g]['p_attack']):>6} ({rates[g]['unit_rows']:>5})"
                                              for g in ATTACK_GROUPS)

        lines.append(row("filtered", b["filtered"]))
        lines += [row(f"open loop k = {k + 1}", rates) for k, rates in enumerate(b["open_loop"])]
    return "\n".join(lines)
