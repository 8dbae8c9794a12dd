"""Imagined latent trajectories for policy learning (paper §3.3, SPEC §3).

Starts are posterior states of freshly filtered replay windows (both levels, every agent). From
each start the actor acts for H-1 steps in the world model's priors; the world model is frozen and
nothing here needs gradients.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from mabl.actions import one_hot
from mabl.algo.returns import lambda_returns
from mabl.models.actor_critic import Actor, AttentionCritic
from mabl.models.onehot import latent_index
from mabl.models.world_model import BiLevelWorldModel, Latent, level_features


class Imagined(NamedTuple):
    """PPO rows: ``R = (H-1) * M`` rows (steps x starts), each holding all N agents."""

    latent: Latent  # [R, N, .] row states (global: [R, .] when shared, None when absent);
    #                 z as class indices [R, N, C] (compact, see onehot.onehot_matmul)
    action: torch.Tensor  # [R, N] int64, or [R, N, D] raw Gaussian samples (continuous, mabl.actions)
    log_prob: torch.Tensor  # [R, N]
    avail: torch.Tensor | None  # [R, N, A] bool, the sampled mask the action was drawn under
    value: torch.Tensor  # [R, N]  V(row state) at imagination time
    returns: torch.Tensor  # [R, N]  lambda-returns
    reward: torch.Tensor  # [R]    imagined team reward (for logging)


def sample_avail(logits: torch.Tensor, empty_avail: str = "keep") -> torch.Tensor:
    """Sample an availability mask from the avail head's Bernoulli logits ``[..., A]``.

    A row where no action comes out available is kept as it is with ``empty_avail="keep"``
    (released code, rnns.py rollout_policy: every logit is then -1e10 and the actor's action uniform,
    SPEC §3); with ``"most_likely"`` the head's most likely action is made available there
    (``--policy.empty_avail``, earlier mabl).
    """
    avail = torch.bernoulli(torch.sigmoid(logits)).bool()
    if empty_avail == "keep":
        return avail
    empty = ~avail.any(-1, keepdim=True)
    best = one_hot(logits.argmax(-1), logits.shape[-1], torch.bool)
    return avail | (empty & best)


@torch.no_grad()
def imagine(
    model: BiLevelWorldModel,
    actor: Actor,
    critic: AttentionCritic,
    start: Latent,
    horizon: int,
    gamma: float,
    lam: float,
    per_agent_continuation: bool = True,
    target_critic: AttentionCritic | None = None,
    empty_avail: str = "keep",
) -> Imagined:
    """Roll the priors ``horizon`` states from ``start`` (fields ``[M, N, ·]``) and compute returns.

    State k (k = 0 .. H-1) gives V_k; states 0 .. H-2 also act: a_k is sampled (under a mask
    sampled from the avail head when the env has masks; from the Gaussian for continuous actions),
    and the transition gives r_k (reward head, mean over agents) and c_k (continuation probability,
    a soft multiplicative discount: each agent's own in its own return, released code; the mean over
    agents with ``per_agent_continuation=False``). Returns follow SPEC §3 with R_{H-1} = V_{H-1}; the
    rows are states 0 .. H-2. With a ``target_critic`` (``--policy.target_critic``) the returns read
    its values, while ``Imagined.value`` (the advantages' baseline) stays ``critic``'s (released code
    on Flatland). ``empty_avail``: :func:`sample_avail`.
    """
    spec = model.spec
    n_classes = model.cfg.n_classes
    latent = start
    keep: dict[str, list] = {k: [] for k in ("latent", "action", "log_prob", "avail")}
    values, target_values, rewards, conts = [], [], [], []
    for k in range(horizon):
        values.append(critic(*level_features(*latent)))
        if target_critic is not None:
            target_values.append(target_critic(*level_features(*latent)))
        if k == horizon - 1:
            break
        avail_logits = model.avail_logits(latent)
        avail = sample_avail(avail_logits, empty_avail) if avail_logits is not None else None
        dist = actor.dist(latent.z_a, latent.h_a, avail)
        action = dist.sample()
        compact = Latent(latent_index(latent.z_a, n_classes), latent.h_a,
                         None if latent.z_g is None else latent_index(latent.z_g, n_classes), latent.h_g)
        for key, value in zip(keep, (compact, action, dist.log_prob(action), avail)):
            keep[key].append(value)
        # the world model sees what the env would execute: one-hot, or the clipped vector in [-1, 1]
        action_in = one_hot(action, spec.n_actions) if spec.discrete else action.clamp(-1.0, 1.0)
        latent, reward, cont = model.imagine_step(latent, action_in)
        rewards.append(reward)
        conts.append(cont)
    value = torch.stack(values).float()  # [H, M, N]
    reward = torch.stack(rewards).float()[..., None]  # [H-1, M, 1] team reward, broadcast over agents
    continuation = torch.stack(conts).float()  # [H-1, M, N] each agent's own
    if not per_agent_continuation:
        continuation = continuation.mean(-1, keepdim=True)  # [H-1, M, 1] the team's, broadcast
    bootstrap = value if target_critic is None else torch.stack(target_values).float()
    returns = lambda_returns(reward, continuation, bootstrap, gamma, lam)  # [H-1, M, N]

    def rows(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(0, 1)  # [H-1, M, ...] -> [R, ...]

    return Imagined(
        latent=Latent(*(None if field[0] is None else rows(torch.stack(field)) for field in zip(*keep["latent"]))),
        action=rows(torch.stack(keep["action"])),
        log_prob=rows(torch.stack(keep["log_prob"])),
        avail=rows(torch.stack(keep["avail"])) if keep["avail"][0] is not None else None,
        value=rows(value[:-1]),
        returns=rows(returns),
        reward=rows(reward[..., 0]),
    )
