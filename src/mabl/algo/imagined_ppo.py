"""MAPPO on imagined trajectories (SPEC §4), the policy learner of the world-model algorithms:
clipped surrogate, entropy bonus, value regression."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from mabl.algo.guard import UpdateGuard
from mabl.algo.imagination import Imagined
from mabl.algo.optim import adam
from mabl.algo.ppo_loss import ppo_actor_loss
from mabl.config import PolicyConfig
from mabl.models.actor_critic import Actor, AttentionCritic
from mabl.models.world_model import level_features

ENTROPY_COEF_MAX = 1.0


def adapted_entropy_coef(coef: float, entropy: float, target: float, rate: float, floor: float) -> float:
    """``--policy.target_entropy``: the coefficient after one actor step whose policy had ``entropy``
    (nats): ``coef * exp(rate * (target - entropy))``, clipped to ``[floor, ENTROPY_COEF_MAX]``. Below the
    target the bonus grows geometrically; above it, it shrinks back, never below ``floor`` (the run's
    ``--policy.entropy``), so a policy more random than the target is left to the fixed bonus."""
    return min(ENTROPY_COEF_MAX, max(floor, coef * math.exp(rate * (target - entropy))))


def normalized_advantage(returns: torch.Tensor, value: torch.Tensor, normalize: bool) -> torch.Tensor:
    """``A = R - V``; optionally ``(A - mean) / (std + 1e-4)`` over the whole imagined batch."""
    advantage = returns - value
    if normalize:
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-4)
    return advantage


class ImaginedPpo:
    """Holds the actor/critic optimizers and the entropy coefficient (decaying, or following
    ``--policy.target_entropy``)."""

    def __init__(self, actor: Actor, critic: AttentionCritic, cfg: PolicyConfig):
        self.actor, self.critic, self.cfg = actor, critic, cfg
        self.actor_opt = adam(actor.parameters(), lr=cfg.actor_lr, weight_decay=cfg.actor_weight_decay)
        self.critic_opt = adam(critic.parameters(), lr=cfg.critic_lr)
        self.entropy_coef = cfg.entropy
        # --policy.target_critic K: the copy whose values the imagined returns read, replaced after every
        # K-th critic step. The counter starts at 1 and counts every minibatch, as DreamerLearner's cur_update.
        self.target_critic: AttentionCritic | None = None
        self.update_count = 1
        if cfg.target_critic:
            self.target_critic = copy.deepcopy(critic).requires_grad_(False)
        device = next(actor.parameters()).device
        self.guards = {
            "actor": UpdateGuard("actor", device, f"try a lower --policy.actor_lr (now {cfg.actor_lr:g}), or check the "
                                 "world model's losses (an exploding world model feeds the actor)"),
            "critic": UpdateGuard("critic", device, f"try a lower --policy.critic_lr (now {cfg.critic_lr:g}), or "
                                  "check the world model's reward loss (imagined returns feed the critic)"),
        }

    def update(self, batch: Imagined, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``epochs`` passes over shuffled minibatches; per minibatch one actor then one critic step.

        Returns the mean losses over the applied steps (a step the divergence guard skipped does not
        count) and ``actor_skipped`` / ``critic_skipped``, the number of skipped steps."""
        cfg = self.cfg
        advantage = normalized_advantage(batch.returns, batch.value, cfg.normalize_advantages)
        rows = batch.action.shape[0]
        device = batch.action.device
        sums = {"actor_loss": 0.0, "critic_loss": 0.0, "entropy": 0.0}
        applied = {"actor": 0.0, "critic": 0.0}
        count = 0
        for _ in range(cfg.epochs):
            order = torch.randperm(rows, device=device, generator=generator)
            for index in order.split(cfg.minibatch):
                avail = None if batch.avail is None else batch.avail[index]
                latent = batch.latent.map(lambda t, i=index: t[i])
                dist = self.actor.dist(latent.z_a, latent.h_a, avail)  # new policy under the stored mask
                actor_loss, entropy = ppo_actor_loss(
                    dist, batch.action[index], batch.log_prob[index], advantage[index],
                    cfg.clip, self.entropy_coef)
                ok_actor = ~self._step("actor", self.actor_opt, self.actor, actor_loss, {"policy/entropy": entropy})
                if cfg.target_entropy > 0:  # one host sync per actor step, only with this option
                    self.entropy_coef = adapted_entropy_coef(self.entropy_coef, float(entropy.detach()),
                                                             cfg.target_entropy, cfg.entropy_rate, cfg.entropy)
                else:
                    self.entropy_coef *= cfg.entropy_decay
                value = self.critic(*level_features(*latent))
                critic_loss = 0.5 * (value - batch.returns[index]).pow(2).mean()
                ok_critic = ~self._step("critic", self.critic_opt, self.critic, critic_loss)
                self.update_count += 1
                if self.target_critic is not None and self.update_count % cfg.target_critic == 0:
                    self.target_critic.load_state_dict(self.critic.state_dict())
                for key, v, ok in zip(sums, (actor_loss, critic_loss, entropy), (ok_actor, ok_critic, ok_actor)):
                    sums[key] = sums[key] + torch.where(ok, v.detach(), 0.0)
                applied["actor"] = applied["actor"] + ok_actor.float()
                applied["critic"] = applied["critic"] + ok_critic.float()
                count += 1
        out = {k: v / applied["critic" if k == "critic_loss" else "actor"] for k, v in sums.items()}
        return {**out, **{f"{k}_skipped": count - v for k, v in applied.items()}}

    def _step(self, learner: str, optimizer: torch.optim.Optimizer, module: nn.Module, loss: torch.Tensor,
              terms: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """One guarded step (:mod:`mabl.algo.guard`); returns the device flag 'skipped'."""
        return self.guards[learner].step(optimizer, module.parameters(), loss, self.cfg.grad_clip, terms)[1]

    def state_dict(self) -> dict:
        state = {"actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                 "entropy_coef": self.entropy_coef}
        if self.target_critic is not None:
            state.update(target_critic=self.target_critic.state_dict(), update_count=self.update_count)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.entropy_coef = float(state["entropy_coef"])
        if self.target_critic is not None:
            self.target_critic.load_state_dict(state["target_critic"])
            self.update_count = int(state["update_count"])
