r"""MAG, Models as AGents (Wu et al., AAAI 2023, arXiv 2303.17984): ``--algo mag``.

MAG reverses the roles of policies and models during model rollouts: the N local models are the
decision makers, each one's *action* is its prediction of its agent's next latent state, the
current policies are the *dynamics* that turn those predictions into the next joint action, and a
model-agent's *reward* is the negative error of its prediction. Maximising the model-agents' return
minimises the multi-step (not one-step) prediction error of the interacting models; the paper shows
this is approximately a lower bound of the true return. How the released code realises it, and
what we took from it (docs/ALGORITHM.md, "MAG"):

1. The local models are trained with MAMBA's world-model loss (:func:`world_model_loss`), one
   parameter set per agent (:class:`~mabl.models.mag.LocalWorldModels`).
2. The model-agents' reward is learned: an error predictor ``c_i(z^a_i, h^a_i)`` regresses, from a
   prior (predicted) state of agent i's model, that model's loss at that step on real data
   (:func:`local_model_errors`, :func:`error_predictor_loss`). Its inputs and targets are
   detached: its gradient reaches the error predictor only, and the world-model loss does not
   reach it.
3. At every imagined step the model-agents act by planning (:class:`MagPlanner`): K candidate
   joint predictions are sampled from the local models' priors, each is rolled out P predicted
   states with the current policy as the dynamics, scored by the summed predicted error of all
   local models, and the first state of the cheapest rollout (cost averaged over the batch, one
   candidate for all rows, as the released code; or per row) becomes the imagined next state.
   Rewards, continuation and everything after (MAPPO in imagination) are the shared machinery.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from mabl.actions import one_hot
from mabl.algo.agent import MablAgent
from mabl.algo.guard import apply_unless, params_finite
from mabl.algo.imagination import sample_avail
from mabl.algo.optim import adam
from mabl.algo.world_model_loss import (
    REWARD_LOSSES,
    SequenceBatch,
    action_decoder_error,
    action_input,
    world_model_loss,
)
from mabl.config import RunConfig
from mabl.envs.base import EnvSpec
from mabl.models.actor_critic import Actor
from mabl.models.distributions import categorical_kl, sample_onehot
from mabl.models.mag import ErrorPredictor, LocalWorldModels
from mabl.models.nets import orthogonal_init
from mabl.models.world_model import BiLevelWorldModel, Filtered, Latent


@torch.no_grad()
def local_model_errors(model: BiLevelWorldModel, batch: SequenceBatch, filt: Filtered,
                       target: str = "mag_code") -> torch.Tensor:
    """Each local model's loss at each step, ``[T-1, B, N]``: the terms of :func:`world_model_loss`
    for posterior state j of agent i, unreduced and summed with weight 1 (KL, observation where the
    row is real, reward, continuation, availability, and the action decoder on the rows its mask
    scores). The regression target of the error predictor [MAG-code: loss.py
    get_model_loss_for_m_r_training].

    Rewards, dones and absorbing flags are each agent's own where the rows hold them per agent
    (``[T, B, N]``: Flatland's ``--model.reward_target`` / ``done_target per_agent``), else the
    team's for every agent. ``target`` (``--mag.error_target``): ``mag_code`` = the masked
    smooth-L1 of the observation averaged over its dims and divided by the rows of the batch,
    ``(T-1) B N`` (MAG-code: utils.py rec_loss's per-step output, averaged over dims in loss.py),
    and the action-decoder term on the rows the world-model loss scores (``--model.action_decoder_mask``;
    MAG-code adds it on rows ``[1:]``, absorbing ones masked); ``full_scale`` = the observation
    summed over dims, the world-model loss's own scale, and the action-decoder term on every row
    but an episode's first (earlier mabl)."""
    spec = model.spec
    cut = batch.obs.shape[0] - 1
    n = spec.n_agents
    post = filt.post.map(lambda t: t[:cut])
    heads = model.loss_heads(post, filt.h_a_trans[1:], None if filt.h_g_trans is None else filt.h_g_trans[1:])
    kl = categorical_kl(filt.post_a_logits[:cut].float(), filt.prior_a_logits[:cut].float()).mean(-1)
    fake = batch.fake if batch.fake.dim() == 3 else batch.fake[..., None]  # [T, B, N or 1]
    real = 1.0 - fake[:cut]
    obs_target = model.agent.transform(batch.obs[:cut])
    obs_err = F.smooth_l1_loss(heads["obs"].float(), obs_target, reduction="none")  # [T-1, B, N, O]
    if target == "mag_code":
        obs = obs_err.mean(-1) * real / (cut * batch.obs.shape[1] * n)
    else:
        obs = obs_err.sum(-1) * real
    reward = batch.reward if batch.reward.dim() == 3 else batch.reward[..., None]
    done = batch.done if batch.done.dim() == 3 else batch.done[..., None]
    reward_err = REWARD_LOSSES[model.cfg.reward_loss](heads["reward"].squeeze(-1).float(),
                                                      reward[1:].expand(-1, -1, n), reduction="none")
    cont_err = F.binary_cross_entropy_with_logits(heads["cont"].squeeze(-1).float(),
                                                  (1.0 - done[1:]).expand(-1, -1, n), reduction="none")
    errors = kl + obs + reward_err + cont_err
    if "avail" in heads and batch.avail is not None:
        errors = errors + F.binary_cross_entropy_with_logits(
            heads["avail"].float(), batch.avail[:cut].float(), reduction="none").sum(-1)
    # full_scale: every row of the window but an episode's first, whatever the loss's own mask
    mask = "episode_start" if target == "full_scale" else model.cfg.action_decoder_mask
    action_err, scored, _ = action_decoder_error(model, batch, heads["action"], fake, mask)
    return errors + action_err * scored  # (MAG-code adds it on rows [1:], absorbing ones masked)


def error_predictor_loss(model: BiLevelWorldModel, predictor: ErrorPredictor, batch: SequenceBatch,
                         filt: Filtered, target: str = "mag_code") -> torch.Tensor:
    """Smooth-L1 regression of :func:`local_model_errors` from the prior states of the same steps:
    ``(z ~ prior_j, h^a_j)`` per agent, the kind of state imagination predicts [MAG-code]. Inputs
    and targets carry no gradient (only the predictor learns from this loss)."""
    cut = batch.obs.shape[0] - 1
    errors = local_model_errors(model, batch, filt, target)
    with torch.no_grad():
        z_prior = sample_onehot(filt.prior_a_logits[:cut].detach(), straight_through=False)
    pred = predictor(z_prior, filt.post.h_a[:cut].detach())
    return F.smooth_l1_loss(pred, errors)


class MagPlanner:
    """The model-agents' decision at one imagined step (released MAG code: rnns.py ``MPCPredict``).

    ``K`` candidate next joint states from the priors under the policies' action, each continued
    for ``P - 1`` more prior steps with actions sampled from the current actor (the policies as the
    dynamics, under availability masks sampled from the avail head as in imagination); a candidate's
    cost is the error predictor's output over its P predicted states and all agents. ``choice``
    (``--mag.plan_choice``): ``batch`` = the candidate whose cost averaged over every imagined row
    is lowest gives the next state of every row (MAG-code: ``traj_losses`` is ``[n_trajs]``, one
    ``argmin``); ``per_row`` = each row's cheapest candidate. ``K = 1`` is the plain prior step.
    """

    def __init__(self, model: BiLevelWorldModel, actor: Actor, predictor: ErrorPredictor, candidates: int,
                 horizon: int, choice: str = "batch", empty_avail: str = "keep"):
        self.model, self.actor, self.predictor = model, actor, predictor
        self.candidates, self.horizon, self.choice, self.empty_avail = candidates, horizon, choice, empty_avail

    def policy_action(self, latent: Latent) -> torch.Tensor:
        """What the world model would see of the current actor's action in ``latent``."""
        spec = self.model.spec
        avail_logits = self.model.avail_logits(latent)
        avail = sample_avail(avail_logits, self.empty_avail) if avail_logits is not None else None
        action = self.actor.dist(latent.z_a, latent.h_a, avail).sample()
        return one_hot(action, spec.n_actions) if spec.discrete else action.clamp(-1.0, 1.0)

    def cost(self, latent: Latent) -> torch.Tensor:
        """The model-agents' summed predicted error of a predicted state ``[R, N, .] -> [R]``."""
        return self.predictor(latent.z_a, latent.h_a).sum(-1)

    @torch.no_grad()
    def __call__(self, latent: Latent, action: torch.Tensor) -> Latent:
        k = self.candidates
        if k == 1:
            return self.model.prior_step(latent, action)
        rows = action.shape[0]
        tile = lambda t: t.repeat(k, *([1] * (t.dim() - 1)))  # noqa: E731  candidate-major [K*M, ...]
        first = self.model.prior_step(latent.map(tile), tile(action))  # K samples of the next joint state
        state, total = first, self.cost(first)
        for _ in range(self.horizon - 1):
            state = self.model.prior_step(state, self.policy_action(state))
            total = total + self.cost(state)
        if self.choice == "batch":  # one candidate for every row: the lowest mean cost over rows
            best = total.view(k, rows).mean(1).argmin()
            pick = best * rows + torch.arange(rows, device=best.device)
        else:
            best = total.view(k, rows).argmin(0)  # [M]
            pick = best * rows + torch.arange(rows, device=best.device)
        return first.map(lambda t: t[pick])


def mag_run_config(cfg: RunConfig) -> RunConfig:
    """The config MAG's learner runs with: ``--mag.lr`` > 0 replaces the world model's, the actor's
    and the critic's learning rates (all 5e-4 in MAG-code DreamerLearnerConfig.py); 0 keeps
    ``--model.lr``, ``--policy.actor_lr``, ``--policy.critic_lr``."""
    lr = cfg.mag.lr
    if lr <= 0:
        return cfg
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, lr=lr),
                               policy=dataclasses.replace(cfg.policy, actor_lr=lr, critic_lr=lr))


class MagAgent(MablAgent):
    """The MAG learner: :class:`MablAgent` with per-agent local models, an error predictor, and
    planned imagination. Same schedule, MAPPO, checkpoints and (joint) exported policy as ``mamba``.

    The error predictor learns ``--mag.error_updates`` steps per learner call after the world-model
    updates, each on fresh windows filtered by the updated model (MAG-code DreamerLearner.py
    ``step``: ``m_r_predictor_epochs``), or (``error_updates 0``) one step with every world-model
    update on its windows. Learning rates: :func:`mag_run_config`; the actor is initialised
    orthogonally with ``--mag.actor_init orthogonal`` (MAG-code ``initialize_weights(self.actor)``)."""

    def __init__(self, spec: EnvSpec, cfg: RunConfig, device: torch.device):
        super().__init__(spec, mag_run_config(cfg), device)
        m = cfg.model
        if cfg.mag.actor_init == "orthogonal":
            orthogonal_init(self.actor)
        self.error_predictor = ErrorPredictor(spec.n_agents, self.world_model.latent_dim, m.deter, m.hidden,
                                              cfg.mag.error_layers).to(device)
        self.error_opt = adam(self.error_predictor.parameters(), lr=cfg.mag.error_lr)
        # imagination's imagine_step takes its next state from the planner (LocalWorldModels.imagine_step)
        self.world_model.planner = MagPlanner(self.world_model, self.actor, self.error_predictor,
                                              cfg.mag.candidates, cfg.mag.plan_horizon, cfg.mag.plan_choice,
                                              cfg.policy.empty_avail)

    @property
    def interleaved(self) -> bool:
        """The error predictor steps with every world-model update (``--mag.error_updates 0``)."""
        return self.cfg.mag.error_updates == 0

    def build_world_model(self) -> LocalWorldModels:
        return LocalWorldModels(self.spec, self.cfg.model)

    def eager_model_loss(self, batch: SequenceBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The world-model loss; interleaved, plus the error predictor's regression on the same
        filtered windows.

        Then the returned loss has the world-model loss's value (the metric every algorithm reports)
        and both losses' gradients: ``L_wm + (L_err - sg(L_err))``; the two touch disjoint parameters.
        """
        loss, metrics, filt = world_model_loss(self.world_model, batch, self.cfg.model.kl_balance)
        if not self.interleaved:
            return loss, metrics
        err = error_predictor_loss(self.world_model, self.error_predictor, batch, filt, self.cfg.mag.error_target)
        metrics["error_predictor"] = err.detach()
        return loss + (err - err.detach()), metrics

    def train_world_model(self, rows) -> dict[str, torch.Tensor]:
        """One world-model update (Alg. 1 lines 6-7); interleaved, one error-predictor step on the
        same batch.

        The divergence guard (:mod:`mabl.algo.guard`) covers both: when the world-model step is
        skipped, or the error predictor's loss is not finite, the predictor's step is skipped too
        (decided on the device)."""
        if not self.interleaved:
            return super().train_world_model(rows)
        self.error_opt.zero_grad(set_to_none=True)
        metrics = super().train_world_model(rows)
        bad = metrics["skipped"].bool() | ~torch.isfinite(metrics["error_predictor"])
        apply_unless(self.error_opt, bad)
        return metrics

    def after_world_model(self, sample) -> list[dict[str, torch.Tensor]]:
        """``--mag.error_updates`` error-predictor steps, each on fresh windows ``sample()`` filtered
        by the (frozen, eval-mode) world model; a step whose loss is not finite is skipped."""
        metrics = []
        for _ in range(self.cfg.mag.error_updates):
            batch = self.to_batch(sample())
            self.error_opt.zero_grad(set_to_none=True)
            with self.autocast():
                with torch.no_grad():
                    filt = self.world_model.observe(batch.obs, batch.state,
                                                    action_input(batch.prev_action, self.spec), batch.first)
                err = error_predictor_loss(self.world_model, self.error_predictor, batch, filt, self.cfg.mag.error_target)
            err.backward()
            apply_unless(self.error_opt, ~torch.isfinite(err))
            metrics.append({"error_predictor": err.detach()})
        return metrics

    def params_finite(self) -> dict[str, torch.Tensor]:
        return {**super().params_finite(), "error predictor": params_finite([self.error_predictor])}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "error_predictor": self.error_predictor.state_dict(),
                "error_opt": self.error_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.error_predictor.load_state_dict(state["error_predictor"])
        self.error_opt.load_state_dict(state["error_opt"])
