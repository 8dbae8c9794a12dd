"""``mabl diagnose``'s measures of the world model: open-loop prediction errors, the reward head by reward
size, KL and usage of the latents, and imagination's returns against the observed ones."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from mabl.diagnose.data import posterior_starts

LARGEST = 0.02
"""``mabl diagnose``'s reward-head block: the fraction of rows counted as the largest rewards."""


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation, None when either side is constant (or fewer than 2 samples)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if len(a) < 2 or a.std() < 1e-12 or b.std() < 1e-12:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def open_loop_masks(fake: np.ndarray, last: np.ndarray, context: int, horizon: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Which open-loop predictions have a real target, from the window's row flags ``[L, B]``.

    The roll starts at the posterior of step C-1 (observation row C) and step k uses the action of
    row C+k-1 and predicts row C+k's observation. Returns ``(transition [H, B], observation [H, B])``:
    the transition out of row C+k-1 (its reward and continuation) is real when rows C .. C+k-1 are
    real and none of C .. C+k-2 ended its episode; the observation of row C+k also needs row C+k real
    and row C+k-1 not the episode's last (so an episode's final transition still counts, not what follows).
    """
    fake, last = np.asarray(fake, bool), np.asarray(last, bool)
    batch = fake.shape[1]
    trans, obs = np.zeros((horizon, batch), bool), np.zeros((horizon, batch), bool)
    alive = np.ones(batch, bool)  # the episode of row C has not ended before row C+k-1
    for k in range(1, horizon + 1):
        row = context + k - 1
        alive &= ~fake[row]
        trans[k - 1] = alive
        obs[k - 1] = alive & ~last[row] & ~fake[row + 1]
        alive &= ~last[row]
    return trans, obs


def open_loop_stats(pred: dict[str, np.ndarray], target: dict[str, np.ndarray], trans: np.ndarray,
                    obs_mask: np.ndarray) -> list[dict[str, Any]]:
    """Per step k: observation MSE (mean over agents and features, model input space), reward MAE and
    correlation, continuation Brier score and accuracy, action-mask accuracy (None without masks), and
    how many windows each is over. Arrays are ``[H, B, ...]``; ``cont`` predictions may have a trailing
    agent axis (each agent's probability is scored against the team's target)."""
    out = []
    for k in range(trans.shape[0]):
        t, o = trans[k], obs_mask[k]
        entry: dict[str, Any] = {"k": k + 1, "obs_error": None, "reward_error": None, "reward_corr": None,
                                 "cont_brier": None, "cont_accuracy": None, "avail_accuracy": None,
                                 "n_transitions": int(t.sum()), "n_obs": int(o.sum())}
        if o.any():
            entry["obs_error"] = float(((pred["obs"][k][o] - target["obs"][k][o]) ** 2).mean())
            if pred.get("avail") is not None:
                entry["avail_accuracy"] = float(((pred["avail"][k][o] > 0.5) == target["avail"][k][o]).mean())
        if t.any():
            r_pred, r_true = pred["reward"][k][t], target["reward"][k][t]
            entry["reward_error"] = float(np.abs(r_pred - r_true).mean())
            entry["reward_corr"] = _corr(r_pred, r_true)
            c_pred = pred["cont"][k][t].reshape(int(t.sum()), -1)
            c_true = target["cont"][k][t]  # the team's [n] or, with per-agent done, each agent's [n, N]
            c_true = np.broadcast_to(c_true.reshape(c_true.shape[0], -1), c_pred.shape)
            entry["cont_brier"] = float(((c_pred - c_true) ** 2).mean())
            entry["cont_accuracy"] = float(((c_pred > 0.5) == (c_true > 0.5)).mean())
        out.append(entry)
    return out


def reward_by_size(pred: np.ndarray, real: np.ndarray, top: float = LARGEST) -> dict[str, Any] | None:
    """The reward head's predictions ``pred`` against the real rewards ``real`` (1-D, the env's units):
    pooled (mean absolute error, correlation) and in three groups of rows, each with its count, mean
    real and mean predicted reward: ``zero`` (real reward 0), ``largest`` (the ``top`` fraction of the
    rows, at least one, with the largest positive rewards: on SMAX the win bonus) and ``other`` (the
    remaining nonzero rows). A group without rows is None. None without rows."""
    if len(real) == 0:
        return None
    positive = np.flatnonzero(real > 0)
    n_large = min(len(positive), max(1, round(top * len(real))))
    large = np.zeros(len(real), bool)
    large[positive[np.argsort(-real[positive], kind="stable")[:n_large]]] = True
    zero = real == 0

    def group(sel: np.ndarray) -> dict[str, Any] | None:
        if not sel.any():
            return None
        return {"n": int(sel.sum()), "real_mean": float(real[sel].mean()), "pred_mean": float(pred[sel].mean())}

    return {"n": len(real), "top": top, "mae": float(np.abs(pred - real).mean()), "corr": _corr(pred, real),
            "zero": group(zero), "largest": group(large), "other": group(~zero & ~large)}


def usage_stats(counts: np.ndarray) -> dict[str, float]:
    """From how often each class of each categorical was sampled, ``counts [C, K]``: the fraction of
    classes never used and the fraction of categoricals that only ever took one class (collapsed)."""
    used = np.asarray(counts) > 0
    return {"unused_class_fraction": float(1.0 - used.mean()),
            "collapsed_fraction": float((used.sum(-1) <= 1).mean())}


def latent_level_stats(post_logits: torch.Tensor, prior_logits: torch.Tensor, sample: torch.Tensor,
                       mask: torch.Tensor) -> dict[str, Any]:
    """One level's KL(posterior || prior) (mean over categoricals, then over the masked rows), its
    posterior entropy per categorical (nats; at most log K) and the class usage of its samples.

    ``*_logits [..., C, K]``, ``sample [..., C*K]`` one-hot, ``mask [...]`` bool."""
    from mabl.models.distributions import categorical_kl

    n_cat, n_classes = post_logits.shape[-2:]
    post = post_logits[mask].float().reshape(-1, n_cat, n_classes)
    prior = prior_logits[mask].float().reshape(-1, n_cat, n_classes)
    kl = categorical_kl(post, prior)  # [M, C]
    log_q = torch.log_softmax(post, -1)
    entropy = -(log_q.exp() * log_q).sum(-1)  # [M, C]
    counts = sample[mask].float().reshape(-1, n_cat, n_classes).sum(0)
    return {"kl": float(kl.mean()), "entropy_mean": float(entropy.mean()),
            "entropy_per_categorical": [float(v) for v in entropy.mean(0)], "max_entropy": math.log(n_classes),
            **usage_stats(counts.cpu().numpy())}


def _obs_prediction(model, latent) -> torch.Tensor:
    """The observation decoder's output ``[..., N, O]`` (model input space) for states ``latent``."""
    return model.obs_decoder_out(torch.relu(model.obs_decoder_body(latent.z_a, latent.h_a)))


def reward_head_block(model, filt, batch, step_mask: np.ndarray) -> dict[str, Any] | None:
    """The ``reward_head`` block: the reward heads read as the loss reads them, ``(z_j, h_{j+1})`` with
    ``h_{j+1}`` the transition out of posterior j (mean over agents, the env's units), against the
    reward received, on the steps where ``step_mask`` ``[T, B]`` holds (:func:`reward_by_size`)."""
    cut = filt.post.z_a.shape[0] - 1
    nxt = filt.post.map(lambda t: t[1:])._replace(
        h_a=filt.h_a_trans[1:], h_g=None if filt.h_g_trans is None else filt.h_g_trans[1:])
    pred_reward, _ = model.reward_continuation(filt.post.map(lambda t: t[:cut]), nxt)
    scored = step_mask[:cut]  # posterior j is a real row, after the burn-in
    return reward_by_size((pred_reward / model.cfg.reward_scale).float().cpu().numpy()[scored],
                          _team(batch.reward[1:]).cpu().numpy()[scored])


def open_loop_predictions(model, post, prev_action: torch.Tensor, context: int, horizon: int
                          ) -> dict[str, np.ndarray | None]:
    """Roll the priors from the filtered state of step ``context - 1`` under the data's own actions for
    ``horizon`` steps; the predictions ``[horizon, ...]`` for rows ``context .. context + horizon - 1``:
    ``obs``, team ``reward`` (in the env's units: divided by ``--model.reward_scale``), per-agent ``cont``
    probability, ``avail`` probabilities (None without masks)."""
    latent = post.map(lambda t: t[context - 1])
    preds: dict[str, list] = {"obs": [], "reward": [], "cont": [], "avail": []}
    for k in range(1, horizon + 1):
        nxt = model.prior_step(latent, prev_action[context - 1 + k])
        reward, cont = model.reward_continuation(latent, nxt)
        preds["obs"].append(_obs_prediction(model, nxt))
        preds["reward"].append(reward / model.cfg.reward_scale)
        preds["cont"].append(cont)
        avail_logits = model.avail_logits(nxt)
        preds["avail"].append(None if avail_logits is None else torch.sigmoid(avail_logits))
        latent = nxt
    return {k: None if v[0] is None else torch.stack(v).float().cpu().numpy() for k, v in preds.items()}


def _team(reward: torch.Tensor) -> torch.Tensor:
    """Per-agent rewards ``[..., N]`` (Flatland) -> the team's, their mean (what imagination predicts);
    team rewards ``[L, B]`` as they are."""
    return reward.float().mean(-1) if reward.dim() == 3 else reward


def imagine_from(agent, start) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Imagine from the ``M`` latents ``start`` with the agent's actor and critic (its config's horizon,
    gamma, lambda): the lambda-return and critic value of each start, mean over agents (``[M]``), and every
    imagined reward, all divided by ``--model.reward_scale`` (the env's units)."""
    from mabl.algo.imagination import imagine

    policy, scale = agent.cfg.policy, agent.cfg.model.reward_scale
    n_start = start.z_a.shape[0]
    rollout = imagine(agent.world_model, agent.actor, agent.critic, start, policy.horizon, policy.gamma, policy.lam)
    lam_return = rollout.returns[:n_start].mean(-1).cpu().numpy() / scale
    value = rollout.value[:n_start].mean(-1).cpu().numpy() / scale
    return lam_return, value, rollout.reward / scale


def _imagination(agent, filt, batch, step_mask, returns, returns_complete) -> dict[str, Any]:
    """Imagine from every probe state; compare its lambda-return (mean over agents) and the critic's
    value with the observed discounted return from the same row, where that return is complete. Imagined
    rewards, lambda-returns and values are divided by ``--model.reward_scale`` (the env's units)."""
    policy = agent.cfg.policy
    start = posterior_starts(filt.post, step_mask)
    n_start = int(step_mask.sum())
    if n_start == 0:
        return None
    lam_return, value, imagined_reward = imagine_from(agent, start)
    real_reward = _team(batch.reward[1:])[torch.as_tensor(step_mask[:-1], device=agent.device)]
    out = {"starts": n_start, "horizon": policy.horizon, "gamma": policy.gamma, "lambda": policy.lam,
           "lambda_return_mean": float(lam_return.mean()), "value_mean": float(value.mean()),
           "imagined_reward_mean": float(imagined_reward.mean()), "imagined_reward_std": float(imagined_reward.std()),
           "real_reward_mean": float(real_reward.mean()) if len(real_reward) else None,
           "real_reward_std": float(real_reward.std()) if len(real_reward) > 1 else None}
    if returns is None:
        return out
    # step j's state is row j+1: the observed return from that row on
    observed = np.asarray(returns)[1:].reshape(-1)[step_mask.reshape(-1)]
    complete = np.asarray(returns_complete)[1:].reshape(-1)[step_mask.reshape(-1)]
    out.update({"compared": int(complete.sum()), "incomplete_returns": int((~complete).sum())})
    if complete.any():
        obs_ret, lam, val = observed[complete], lam_return[complete], value[complete]
        out.update({"observed_return_mean": float(obs_ret.mean()),
                    "lambda_return_bias": float((lam - obs_ret).mean()), "lambda_return_corr": _corr(lam, obs_ret),
                    "value_bias": float((val - obs_ret).mean()), "value_corr": _corr(val, obs_ret)})
    return out
