"""The PPO losses of both PPO learners: MAPPO on imagined rollouts (:mod:`mabl.algo.imagined_ppo`, SPEC §4)
and model-free MAPPO on real data (:mod:`mabl.algo.mappo`, Yu et al. 2022). The clipped
surrogate of Schulman et al. 2017 (eq. 7) is :func:`clipped_surrogate`; each learner's actor loss
adds its entropy bonus around it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mabl.actions import action_distribution


def clipped_surrogate(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantage: torch.Tensor, clip: float
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``mean min(rho A, clip(rho, 1 - clip, 1 + clip) A)`` over every element, ``rho = exp(log_prob -
    old_log_prob)``. Returns (surrogate, rho, log rho); the objective is maximised, so a loss negates it."""
    log_ratio = log_prob - old_log_prob
    ratio = log_ratio.exp()
    return torch.min(ratio * advantage, ratio.clamp(1.0 - clip, 1.0 + clip) * advantage).mean(), ratio, log_ratio


def ppo_actor_loss(
    policy: torch.Tensor | torch.distributions.Distribution, action: torch.Tensor, old_log_prob: torch.Tensor,
    advantage: torch.Tensor, clip: float, entropy_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``-(mean min(rho A, clip(rho, 1-e, 1+e) A)) - beta * mean entropy``; returns (loss, entropy).

    ``policy``: the action distribution (``log_prob``/``entropy`` per agent), or categorical logits.
    """
    dist = action_distribution(policy, None) if isinstance(policy, torch.Tensor) else policy
    surrogate, _, _ = clipped_surrogate(dist.log_prob(action), old_log_prob, advantage, clip)
    entropy = dist.entropy().mean()
    return -surrogate - entropy_coef * entropy, entropy


def clipped_surrogate_loss(policy: torch.Tensor | torch.distributions.Distribution, action: torch.Tensor,
                           old_log_prob: torch.Tensor, advantage: torch.Tensor, clip: float, entropy_coef: float
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``-mean min(rho A, clip(rho) A) - entropy_coef * mean entropy`` over every (row, agent).

    ``policy``: categorical logits ``[..., N, A]``, or any action distribution (the Gaussian of
    continuous actions). Returns (loss, entropy, approx_kl, clip_fraction); the last two are
    detached diagnostics, approx_kl the non-negative estimator ``mean((rho - 1) - log rho)``.
    """
    if isinstance(policy, torch.Tensor):
        log_probs = policy.log_softmax(-1)
        log_prob = log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1).mean()  # masked actions: exp() is exactly 0
    else:
        log_prob, entropy = policy.log_prob(action), policy.entropy().mean()
    surrogate, ratio, log_ratio = clipped_surrogate(log_prob, old_log_prob, advantage, clip)
    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clip_fraction = ((ratio - 1.0).abs() > clip).float().mean()
    return -surrogate - entropy_coef * entropy, entropy, approx_kl, clip_fraction


def clipped_value_loss(value: torch.Tensor, old_value: torch.Tensor, target: torch.Tensor, clip: float,
                       delta: float) -> torch.Tensor:
    """Mean of ``max(huber(target - v), huber(target - (v_old + clip(v - v_old, +-clip))))`` (Yu et al.)."""
    clipped = old_value + (value - old_value).clamp(-clip, clip)
    return torch.max(F.huber_loss(value, target, reduction="none", delta=delta),
                     F.huber_loss(clipped, target, reduction="none", delta=delta)).mean()
