"""``mabl diagnose --living``: do units die, and do episodes end, in the world model as they do in the env?

From a real posterior state (step ``context - 1`` of a replay window, the filter having seen ``context``
observations) three courses are followed for ``k = 1 .. H`` steps:

- **real**: the replay's own rows after that state (the policy that collected them);
- **open loop**: the priors rolled under the replay's own actions (``prior_step``, as the ``open_loop``
  block), so the model is asked what happens under actions it did not choose;
- **imagined**: the priors rolled under the run's actor, acting exactly as in training (a mask sampled from
  the availability head, an action sampled from the actor under it; ``algo/imagination.imagine``).

Living units are counted as in ``--by-alive``: a unit is alive where its action mask allows more than one
action (on SMAX a dead unit may only stop); in the model, where the availability head gives more than one
action a probability above 0.5. Survival is the chance that the episode has not terminated by step ``k``:
the product of the continuation head's probabilities over steps ``1 .. k`` (mean over agents and starts)
in the model, the fraction of starts not terminated in the data. A start whose episode was cut by the
time limit before ``k`` (an episode boundary without a termination) is left out of the real and open-loop
survival at ``k``; the real and open-loop living counts at ``k`` are over the starts whose episode still
runs at ``k``. The model never ends an imagined course: its living count is over every start.

Discounted reward sums over ``H`` steps (env units): real and open loop stop at a termination, the
imagined sum is the plain ``sum gamma^(k-1) r_k`` and, weighted by the imagined survival, what the
lambda-return with lambda = 1 adds up. Starts are grouped by the units alive at the start state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mabl.diagnose.data import filter_windows, posterior_starts, sample_windows
from mabl.diagnose.measures import open_loop_predictions
from mabl.diagnose.units import BURN_IN, living_count
from mabl.errors import MablError

CONTEXT = 10
"""Filtering steps before the start state (step ``CONTEXT - 1`` of a window)."""


def predicted_living(p: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``p [..., N, A]``, the availability head's probabilities: :func:`living_count` of ``p > threshold``."""
    return living_count(np.asarray(p) > threshold)


def episode_course(done: np.ndarray, first: np.ndarray, fake: np.ndarray, context: int, horizon: int
                   ) -> dict[str, np.ndarray]:
    """Filtering-step flags ``[T, B]`` (``done[j]``: the transition into step j terminated; ``first[j]``:
    step j starts an episode; ``fake[j]``: step j observes an absorbing row) to what is known of each
    window's episode ``k = 1 .. horizon`` steps after the start step ``context - 1``, arrays ``[H, B]``:
    ``terminated`` (a termination at one of the steps ``1 .. k``), ``known`` (no episode boundary
    without a termination before it at steps ``1 .. k``: a time-limit end censors the course),
    ``running`` (known, not terminated, and step ``k`` observes a real row of the same episode),
    ``before_end`` (no termination at steps ``1 .. k-1``: the transition into step k still counts)."""
    steps = slice(context, context + horizon)
    done_s, first_s, fake_s = (np.asarray(x, bool)[steps] for x in (done, first, fake))
    terminated = np.cumsum(done_s, 0) > 0
    before_end = np.ones_like(terminated)
    before_end[1:] = ~terminated[:-1]
    cut = first_s & before_end
    known = ~(np.cumsum(cut, 0) > 0)
    running = known & ~terminated & ~fake_s
    return {"terminated": terminated, "known": known, "running": running, "before_end": before_end}


def survival(cont: np.ndarray) -> np.ndarray:
    """Continuation probabilities ``[H, M, ...]`` (per agent or the team's) to the probability of not
    having terminated by each step, ``prod_{t <= k} c_t``, averaged over the trailing axes: ``[H, M]``."""
    cont = np.asarray(cont, np.float64)
    return np.cumprod(cont.reshape(cont.shape[0], cont.shape[1], -1), 0).mean(-1)


def discounted_sum(reward: np.ndarray, gamma: float, weight: np.ndarray | None = None) -> np.ndarray:
    """``sum_k gamma^(k-1) w_k r_k`` over the first axis of ``reward [H, M]`` (``w`` 1 where not given)."""
    reward = np.asarray(reward, np.float64)
    w = np.ones_like(reward) if weight is None else np.asarray(weight, np.float64)
    discount = gamma ** np.arange(reward.shape[0])[:, None]
    return (discount * w * reward).sum(0)


@torch.no_grad()
def roll_actor(agent, start, horizon: int) -> dict[str, np.ndarray]:
    """The priors rolled ``horizon`` steps from the latents ``start`` (``[M, N, .]``) under the actor, as
    :func:`mabl.algo.imagination.imagine` acts (mask sampled from the availability head, per
    ``--policy.empty_avail``; action sampled from the actor). Per step ``k = 1 .. H``: ``avail``
    probabilities of state k ``[H, M, N, A]`` (None without masks), team ``reward`` of the transition
    into it in env units ``[H, M]``, continuation ``cont`` ``[H, M, N]``."""
    from mabl.actions import one_hot
    from mabl.algo.imagination import sample_avail

    model, actor, cfg = agent.world_model, agent.actor, agent.cfg
    spec = model.spec
    latent = start
    out: dict[str, list] = {"avail": [], "reward": [], "cont": []}
    for _ in range(horizon):
        logits = model.avail_logits(latent)
        mask = sample_avail(logits, cfg.policy.empty_avail) if logits is not None else None
        action = actor.dist(latent.z_a, latent.h_a, mask).sample()
        action_in = one_hot(action, spec.n_actions) if spec.discrete else action.clamp(-1.0, 1.0)
        latent, reward, cont = model.imagine_step(latent, action_in)
        nxt = model.avail_logits(latent)
        out["avail"].append(None if nxt is None else torch.sigmoid(nxt))
        out["reward"].append(reward / cfg.model.reward_scale)
        out["cont"].append(cont)
    return {k: None if v[0] is None else torch.stack(v).float().cpu().numpy() for k, v in out.items()}


def _mean(x: np.ndarray, mask: np.ndarray) -> float | None:
    return float(np.asarray(x, np.float64)[mask].mean()) if mask.any() else None


def living_windows(agent, windows: dict[str, np.ndarray], context: int = CONTEXT, horizon: int = 30
                   ) -> dict[str, Any]:
    """The block on windows ``[L, B, ...]`` of replay rows (``L = context + horizon + 1``): starts at step
    ``context - 1`` of every window whose row there is real, grouped by their living units."""
    if windows.get("avail") is None:
        raise MablError("--living needs action masks: living units are told apart by them")
    length = np.asarray(windows["fake"]).shape[0]
    if context <= BURN_IN or horizon < 1 or context + horizon > length - 1:
        raise MablError(f"--living: context {context} + horizon {horizon} must fit in {length - 1} filtering "
                        f"steps, context > {BURN_IN}")
    model, gamma = agent.world_model, agent.cfg.policy.gamma
    model.eval()
    with torch.no_grad():
        batch, prev, filt = filter_windows(agent, windows)
        ahead = open_loop_predictions(model, filt.post, prev, context, horizon)
        fake = batch.fake.cpu().numpy().astype(bool)
        fake = fake.any(-1) if fake.ndim == 3 else fake
        done = batch.done.cpu().numpy()
        done = done.any(-1) if done.ndim == 3 else done.astype(bool)
        begin = np.zeros(fake.shape, bool)
        begin[context - 1] = ~fake[context - 1]
        imagined = roll_actor(agent, posterior_starts(filt.post, begin), horizon)
    avail = batch.avail.cpu().numpy().astype(bool)
    course = episode_course(done, batch.first.cpu().numpy(), fake, context, horizon)
    steps = slice(context, context + horizon)
    real_reward = batch.reward.cpu().numpy()
    real_reward = (real_reward.mean(-1) if real_reward.ndim == 3 else real_reward)[steps]
    chosen = begin[context - 1]
    sel = {k: v[:, chosen] for k, v in course.items()}
    real_living = living_count(avail[steps])[:, chosen]
    open_living = predicted_living(ahead["avail"])[:, chosen]
    open_survival = survival(ahead["cont"])[:, chosen]
    real_sum = discounted_sum(real_reward[:, chosen], gamma, sel["before_end"])
    open_sum = discounted_sum(ahead["reward"][:, chosen], gamma, sel["before_end"])
    im_living = predicted_living(imagined["avail"])
    im_survival = survival(imagined["cont"])
    weight = np.ones_like(im_survival)
    weight[1:] = im_survival[:-1]
    im_sum, im_weighted = discounted_sum(imagined["reward"], gamma), discounted_sum(imagined["reward"], gamma, weight)
    at_start = living_count(avail[context - 1])[chosen]
    groups = []
    for alive in sorted(set(at_start.tolist())):
        g = at_start == alive
        whole = sel["known"][-1] & g
        rows = []
        for k in range(horizon):
            run, known = sel["running"][k] & g, sel["known"][k] & g
            rows.append({"k": k + 1, "running": int(run.sum()), "living_real": _mean(real_living[k], run),
                         "living_open_loop": _mean(open_living[k], run), "living_imagined": _mean(im_living[k], g),
                         "known": int(known.sum()), "survival_real": _mean(~sel["terminated"][k], known),
                         "survival_open_loop": _mean(open_survival[k], known),
                         "survival_imagined": _mean(im_survival[k], g)})
        groups.append({"alive_at_start": int(alive), "starts": int(g.sum()),
                       "reward_sum": {"known": int(whole.sum()), "real": _mean(real_sum, whole),
                                      "open_loop": _mean(open_sum, whole), "imagined": _mean(im_sum, g),
                                      "imagined_survival_weighted": _mean(im_weighted, g)},
                       "steps": rows})
    return {"windows": int(chosen.size), "starts": int(chosen.sum()), "context": context, "horizon": horizon,
            "gamma": gamma, "groups": groups}


def fresh_rows(loaded, episodes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Replay rows of ``episodes`` new episodes played by the run's policy as training collects them
    (sampled actions, the run's env and readings; ``train.Trainer``'s collection), oldest first, with
    the absorbing rows a replay adds after a termination. Their real course is the current actor's."""
    from mabl.config import env_options
    from mabl.diagnose.data import episode_rows
    from mabl.envs import make_env
    from mabl.evaluate import episode_seed
    from mabl.rollout import run_episode

    cfg = loaded.cfg
    env = make_env(cfg.env, seed=seed, options=env_options(cfg))
    try:
        played = [run_episode(env, loaded.agent.policy(), episode_seed(seed, 31, i)) for i in range(episodes)]
    finally:
        env.close()
    return episode_rows(env.spec, played, np.random.default_rng(seed))  # rng: the absorbing rows' actions


def living(loaded, count: int = 300, horizon: int = 30, seed: int = 0, fresh: int = 0) -> dict[str, Any]:
    """:func:`living_windows` on ``count`` non-overlapping windows (fewer where the rows are short) of the
    run's own replay, or with ``fresh`` > 0 of that many new episodes of the run's policy
    (:func:`fresh_rows`)."""
    from mabl.diagnose.data import Data

    if horizon < 1:
        raise MablError(f"--living-horizon={horizon} must be >= 1")
    if fresh < 0:
        raise MablError(f"--living-fresh={fresh} must be >= 0 (0: the run's replay)")
    torch.manual_seed(seed)
    if fresh:
        data = Data(fresh_rows(loaded, fresh, seed), loaded.spec, f"{fresh} new episodes of the run's policy")
    else:
        data = loaded.data
    if data is None or data.rows.get("avail") is None:
        raise MablError(f"--living needs rows with action masks; {loaded.checkpoint} has no replay with them")
    length = CONTEXT + horizon + 1
    count = min(count, data.n_rows // length)
    if count < 4:
        raise MablError(f"--living: {data.source} holds {data.n_rows} rows, fewer than 4 windows of {length} rows")
    rng = np.random.default_rng(seed)
    _, windows = sample_windows(data, length, count, rng)
    return {"data": data.source, **living_windows(loaded.agent, windows, CONTEXT, horizon)}


def _num(x, fmt: str = "5.2f") -> str:
    return "    -" if x is None else format(x, fmt)


def format_living(b: dict[str, Any]) -> str:
    """The block as text: per group, the steps 1, 5, 10, 15, 20, 30 ... up to H, and H."""
    shown = sorted({k for k in (1, 5, 10, 15, 20, 30, 50, b["horizon"]) if k <= b["horizon"]})
    lines = [f"living units and survival k steps after a real state ({b.get('data', 'windows')}: {b['windows']} "
             f"windows, {b['starts']} starts, "
             f"context {b['context']}; real = the rows themselves, open = priors under their actions, imag = "
             "priors under the actor)"]
    for g in b["groups"]:
        r = g["reward_sum"]
        lines += [f"  {g['alive_at_start']} alive at the start ({g['starts']} starts): discounted reward over "
                  f"{b['horizon']} steps real {_num(r['real'], '.3f')}, open {_num(r['open_loop'], '.3f')} "
                  f"({r['known']} starts), imag {_num(r['imagined'], '.3f')}, imag x survival "
                  f"{_num(r['imagined_survival_weighted'], '.3f')}",
                  "     k  running  living real   open   imag   survival real   open   imag"]
        for s in g["steps"]:
            if s["k"] in shown:
                lines.append(f"  {s['k']:4d}  {s['running']:7d}  {_num(s['living_real']):>11}  "
                             f"{_num(s['living_open_loop'])}  {_num(s['living_imagined'])}   "
                             f"{_num(s['survival_real'], '13.3f')}  {_num(s['survival_open_loop'], '.3f')}  "
                             f"{_num(s['survival_imagined'], '.3f')}")
    return "\n".join(lines)
