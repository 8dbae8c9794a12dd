r"""World-model loss (paper §3.2, SPEC §2) and THE timestep convention of the project.

Replay rows (what the collector stores; k counts env steps)::

    row k :  o_k, s_k, avail_k   -- observed before acting
             a_k                 -- the joint action taken at row k
             r_k, done_k         -- received after a_k (done_k: the episode terminated, or hit
                                    its time limit under --schedule.time_limit_done terminal)
             fake_k, last_k      -- absorbing row; last row of its episode in the buffer

A window of L rows (k .. k+L-1) is shifted by one into T = L-1 filtering steps j = 0 .. T-1::

    env time      k        k+1        k+2       ...     k+T
    rows        [o,a,r]   [o,a,r]    [o,a,r]           [o,a,r]
                   \         \          \
    step j          j=0       j=1        ...      j=T-1
    obs[j]        o_{k+1}   o_{k+2}                   o_{k+T}
    prev_act[j]   a_k       a_{k+1}                   a_{k+T-1}     (enters h_j)
    reward[j]     r_k       r_{k+1}                   r_{k+T-1}     (received after prev_act[j])
    done[j]       done_k    ...
    first[j]      last_k    ...   (obs[j] starts a new episode: reset, see below)
    fake[j]       fake_{k+1} ...

    posterior j:  (h_j, z_j) from h_j = GRU(prev_act[j], z_{j-1}, h_{j-1}) and obs[j]

An episode start inside a window (row k+e is the last of its episode, so first[e+1] is set)::

    rows          ... k+e-1      k+e (last)      k+e+1 (new episode)   ...
    step j        ... j=e-1      j=e             j=e+1
    obs[j]            o_{k+e}    o_{k+e+1}       o_{k+e+2}
    prev_act[j]       a_{k+e-1}  a_{k+e}         a_{k+e+1}   <- the old episode's last action
    first[j]                                     True

    --model.episode_reset carried_state (released code, rnns.py rollout_representation: the
    carried state times 1 - last after each step):
        h_{e+1} = GRU(prev_act[e+1], z = 0, h = 0)        the stored action is still read
        reward/cont heads of step e read (z_e, h_{e+1}):  the state after the reset (loss.py
                                                          reads post.deter[1:])
        first[0] changes nothing (the state is zero there anyway: released code drops row 0's
        last flag, DreamerMemory.py last[1:])
    --model.episode_reset start_state (earlier mabl):
        h_{e+1} = the acting path's first state (zero previous action, zero state)
        reward/cont heads of step e read the transition out of posterior e with a_{k+e+1}

Losses on the first T-1 posterior states (j = 0 .. T-2; the paper preset: 18 of 19):

    KL (both levels)  prior_j vs posterior_j
    observation       decoder(z^a_j, h^a_j)          -> obs[j]            masked where fake[j]
                                                                          (per agent when fake is [N])
    available actions head(feat^a_j, feat^g_j)       -> avail[j]
    reward            head(z^a_j, h^a_{j+1})         -> reward[j+1]       (h_{j+1} holds a_{k+j+1},
    continuation      head(z^a_j,h^a_{j+1},z^g_j,h^g_{j+1}) -> 1-done[j+1]  the action taken at obs[j])
    action decoder    obs decoder hidden_j            -> prev_act[j]      masked where fake[j] and at j = 0
                                                                          (--model.action_decoder_mask;
                                                                           'episode_start': where first[j])

The masked observation and action-decoder losses are divided by every row they cover, masked ones
included (--model.loss_divisor all_rows; released code, utils.py rec_loss and info_loss: T-1 rows x
B x N for the observation, T-2 x B x N for the decoder, which skips j = 0), or by the unmasked
rows (unmasked_rows).

Where the rows hold reward, done and fake per agent (``[N]``: ``--model.reward_target`` /
``--model.done_target`` per_agent, Flatland's defaults), each agent's reward and continuation heads
learn its own reward[j+1] and 1-done[j+1], and the masks of the observation and action-decoder
losses skip each agent's own absorbed rows (released code on Flatland). The loss of team rows is
unchanged.

``h_{j+1}`` here is ``Filtered.h_*_trans[j+1]``: the transition into step j+1 (across an episode
boundary: out of the zeroed state with carried_state, out of posterior j with start_state).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from mabl.actions import normalize_action, one_hot
from mabl.envs.base import EnvSpec
from mabl.models.distributions import balanced_kl
from mabl.models.world_model import BiLevelWorldModel, Filtered


class SequenceBatch(NamedTuple):
    """Shifted training windows, time-major (see the timeline above)."""

    obs: torch.Tensor  # [T, B, N, O] float
    state: torch.Tensor  # [T, B, G] float
    avail: torch.Tensor | None  # [T, B, N, A] bool
    prev_action: torch.Tensor  # [T, B, N] int64 (discrete) or [T, B, N, D] float
    reward: torch.Tensor  # [T, B] float, or [T, B, N] each agent's own (--model.reward_target per_agent)
    done: torch.Tensor  # [T, B] float (1 = terminated), or [T, B, N] per agent (--model.done_target per_agent)
    fake: torch.Tensor  # [T, B] float (1 = absorbing row), or [T, B, N] per agent (an agent absorbed)
    first: torch.Tensor  # [T, B] bool


def shift_window(rows: dict[str, torch.Tensor], reward_scale: float = 1.0) -> SequenceBatch:
    """Turn ``L`` raw replay rows ``[L, B, ...]`` into ``T = L-1`` filtering steps (timeline above);
    rewards are multiplied by ``reward_scale`` (``--model.reward_scale``)."""
    avail = rows.get("avail")
    return SequenceBatch(
        obs=rows["obs"][1:],
        state=rows["state"][1:],
        avail=None if avail is None else avail[1:],
        prev_action=rows["action"][:-1],
        reward=rows["reward"][:-1].float() * reward_scale,
        done=rows["done"][:-1].float(),
        fake=rows["fake"][1:].float(),
        first=rows["last"][:-1].bool(),
    )


def action_input(action: torch.Tensor, spec: EnvSpec) -> torch.Tensor:
    """What the networks see of a stored action: one-hot ``[..., A]`` (discrete) or the executed
    vector in normalised units ``[-1, 1]`` (continuous, :mod:`mabl.actions`)."""
    if spec.discrete:
        return one_hot(action, spec.n_actions)
    return normalize_action(action, spec.action_low, spec.action_high)


REWARD_LOSSES = {"smooth_l1": F.smooth_l1_loss, "mse": F.mse_loss}
"""The reward head's regression loss per ``--model.reward_loss`` (also MAG's per-step model errors)."""


def _masked_mean(value: torch.Tensor, mask: torch.Tensor, divisor: str, rows: int | None = None) -> torch.Tensor:
    """``sum(value * mask)`` divided by the rows the loss covers, masked ones included (``all_rows``,
    released code; ``rows``, by default every row of ``value``) or by the unmasked ones
    (``unmasked_rows``)."""
    mask = mask.expand_as(value)
    if divisor == "all_rows":
        return (value * mask).sum() / (value.numel() if rows is None else rows)
    return (value * mask).sum() / mask.sum().clamp_min(1.0)


def action_decoder_error(model: BiLevelWorldModel, batch: SequenceBatch, action_out: torch.Tensor,
                         fake: torch.Tensor, mask: str | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The action decoder's per-row error ``[T-1, B, N]``, which rows are scored ``[T-1, B, N or 1]``
    and how many rows the loss covers (the ``all_rows`` divisor), per ``mask`` (by default
    ``--model.action_decoder_mask``): with ``fake_and_window_start`` (released code, loss.py
    ``action[1:-1]``) the rows j = 1 .. T-2, (T-2) B N of them, the absorbing ones not scored; with
    ``episode_start`` the rows j = 0 .. T-2, (T-1) B N, not scored where obs[j] starts an episode.
    ``fake``: ``[T, B, N or 1]``."""
    spec = model.spec
    cut = batch.obs.shape[0] - 1
    action_out = action_out.float()
    if spec.discrete:
        err = F.cross_entropy(action_out.flatten(0, -2), batch.prev_action[:cut].flatten(),
                              reduction="none").view(action_out.shape[:-1])
    else:
        # regression on the executed action in normalised units (the unit-variance Gaussian NLL up to 1/2)
        err = F.mse_loss(action_out, action_input(batch.prev_action[:cut], spec), reduction="none").sum(-1)
    per_step = batch.obs.shape[1] * spec.n_agents
    if (mask or model.cfg.action_decoder_mask) == "fake_and_window_start":  # released code
        scored = 1.0 - fake[:cut]  # [T-1, B, N or 1]
        scored = torch.cat([torch.zeros_like(scored[:1]), scored[1:]])  # not the window's first step
        return err, scored, (cut - 1) * per_step
    # 'episode_start': not where obs[j] starts an episode (its previous action is another episode's)
    return err, (~batch.first[:cut]).float()[..., None], cut * per_step


def world_model_loss(
    model: BiLevelWorldModel, batch: SequenceBatch, kl_balance: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor], Filtered]:
    """``L = KL_agent + KL_global + L_obs + L_reward + L_cont + L_avail + L_action`` (weights 1;
    no KL_global without a global level).

    Returns the loss, detached per-term metrics (tensors; no host sync here) and the filtered
    states (imagination starts from their posteriors).
    """
    spec = model.spec
    prev_action = action_input(batch.prev_action, spec)
    filt = model.observe(batch.obs, batch.state, prev_action, batch.first)
    post = filt.post
    cut = batch.obs.shape[0] - 1  # posterior states j = 0 .. T-2 carry losses
    n_agents = spec.n_agents
    per_agent_fake = batch.fake.dim() == 3  # [T, B, N]: each agent absorbed on its own (--model.done_target)
    fake = batch.fake if per_agent_fake else batch.fake[..., None]  # [T, B, N or 1]
    real = (1.0 - fake[:cut])[..., None]  # [T-1, B, N or 1, 1]

    terms = {"kl_agent": balanced_kl(filt.post_a_logits[:cut], filt.prior_a_logits[:cut], kl_balance).mean()}
    if model.has_global:  # one term per level; MABL-SG's has no agent axis
        terms["kl_global"] = balanced_kl(filt.post_g_logits[:cut], filt.prior_g_logits[:cut], kl_balance).mean()

    h_a_next = filt.h_a_trans[1:]  # the transition into step j+1, j = 0 .. T-2 (timeline above)
    h_g_next = None if filt.h_g_trans is None else filt.h_g_trans[1:]
    heads = model.loss_heads(post.map(lambda t: t[:cut]), h_a_next, h_g_next)  # posterior states j = 0 .. T-2
    obs_target = model.agent.transform(batch.obs[:cut])  # model.input_transform: identity unless 'symlog'
    obs_err = F.smooth_l1_loss(heads["obs"].float(), obs_target, reduction="none").sum(-1, keepdim=True)
    divisor = model.cfg.loss_divisor
    obs_loss = _masked_mean(obs_err, real, divisor)

    # Reward and continuation targets: each agent's own where the rows hold them per agent ([T, B, N]:
    # --model.reward_target / done_target per_agent), else the team's broadcast to every agent.
    reward_pred = heads["reward"].squeeze(-1)  # [T-1, B, N]
    reward = batch.reward if batch.reward.dim() == 3 else batch.reward[..., None]
    reward_target = reward[1:].expand(-1, -1, n_agents)
    reward_loss = REWARD_LOSSES[model.cfg.reward_loss](reward_pred.float(), reward_target)
    cont_logit = heads["cont"].squeeze(-1)
    done = batch.done if batch.done.dim() == 3 else batch.done[..., None]
    cont_target = (1.0 - done[1:]).expand(-1, -1, n_agents)
    cont_loss = F.binary_cross_entropy_with_logits(cont_logit.float(), cont_target)

    terms.update(obs=obs_loss, reward=reward_loss, cont=cont_loss)
    if "avail" in heads and batch.avail is not None:
        # Log-likelihood of the availability vector: independent Bernoullis summed over actions.
        avail_nll = F.binary_cross_entropy_with_logits(
            heads["avail"].float(), batch.avail[:cut].float(), reduction="none").sum(-1)
        terms["avail"] = avail_nll.mean()

    action_err, scored, rows = action_decoder_error(model, batch, heads["action"], fake)
    terms["action"] = _masked_mean(action_err, scored, divisor, rows)

    loss = sum(terms.values())
    metrics = {k: v.detach() for k, v in terms.items()}
    return loss, metrics, filt
