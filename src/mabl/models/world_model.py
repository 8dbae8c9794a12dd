"""The bi-level recurrent state-space model of MABL (paper §3.1, SPEC §1).

Per agent i there are two levels, each a (deterministic GRU state h, categorical latent z) pair:

- agent level ``(h^a_i, z^a_i)``: from agent i's own observations and own actions only;
- global level ``(h^g_i, z^g_i)``: one per agent (N of them), informed by the global state and the
  joint action.

Shapes put the agents on a tensor axis: ``[..., N, D]``; weights are shared by all agents. The
global state ``s`` and the joint action are per time step ``[..., G]`` / ``[..., N*A]`` and are
multiplied once, then broadcast to the N global chains.

One filtering step (the order of SPEC §1):
global GRU -> global prior -> agent GRU -> agent prior -> agent posterior -> global posterior.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from mabl.config import ModelConfig
from mabl.envs.base import EnvSpec
from mabl.models.distributions import mode_onehot, sample_onehot
from mabl.models.nets import LatentHead, SplitLinear, SplitMLP, mlp, xavier_init


class Latent(NamedTuple):
    """A bi-level latent state; every field is ``[..., N, D]`` (D = C*K for z, deter for h).

    The field order is the feature order of the paper, ``[z^a, h^a, z^g, h^g]``, so heads over both
    levels are called as ``head(*latent)``.
    """

    z_a: torch.Tensor
    h_a: torch.Tensor
    z_g: torch.Tensor
    h_g: torch.Tensor

    def flatten(self, start: int, end: int) -> Latent:
        return Latent(*(t.flatten(start, end) for t in self))


class Filtered(NamedTuple):
    """Output of :meth:`BiLevelWorldModel.observe` over T steps, every field ``[T, B, N, ...]``.

    ``post`` are the posterior states. ``h_a_trans`` / ``h_g_trans`` at step j are the GRU
    states reached from the posterior of step j-1 with the action of row j (the transition,
    before any episode reset); the reward and continuation heads of step j read them at j+1.
    """

    post: Latent
    h_a_trans: torch.Tensor
    h_g_trans: torch.Tensor
    prior_a_logits: torch.Tensor
    post_a_logits: torch.Tensor
    prior_g_logits: torch.Tensor
    post_g_logits: torch.Tensor


class AgentEncoder(nn.Module):
    """The decentralized part of the world model: what one agent runs at execution time.

    Observation encoder e_o, agent recurrent model and agent posterior. The world model holds one
    (``world_model.agent``) and the exported policy holds one built from the same weights, so the
    training-time and execution-time paths are the same code.
    """

    def __init__(self, spec: EnvSpec, cfg: ModelConfig):
        super().__init__()
        hid, z, k = cfg.hidden, cfg.n_categoricals * cfg.n_classes, cfg.n_classes
        self.deter, self.latent_dim = cfg.deter, z
        # Encoder: `encoder_layers` Linear layers, ReLU between, linear output [code].
        self.obs_encoder = mlp(spec.obs_dim, hid, hid, cfg.encoder_layers - 1)
        self.agent_input = SplitLinear([spec.action_size, z], hid, {1: k})  # [own previous action, z^a]
        self.agent_gru = nn.GRUCell(hid, cfg.deter)
        self.agent_posterior = LatentHead([cfg.deter, hid], hid, cfg.n_categoricals, cfg.n_classes)

    def step(
        self, h_a: torch.Tensor, z_a: torch.Tensor, prev_action: torch.Tensor, obs: torch.Tensor,
        deterministic: bool = False, generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h^a_{t-1}, z^a_{t-1}, a_{t-1}, o_t) -> (h^a_t, z^a_t)`` for ``[..., N, ·]`` inputs."""
        x = torch.relu(self.agent_input(prev_action, z_a))
        h_a = self.agent_gru(x.flatten(0, -2), h_a.flatten(0, -2)).view(*x.shape[:-1], self.deter)
        logits = self.agent_posterior(h_a, self.obs_encoder(obs))
        if deterministic:
            return h_a, mode_onehot(logits)
        return h_a, sample_onehot(logits, straight_through=False, generator=generator)


class BiLevelWorldModel(nn.Module):
    """All networks of the bi-level world model (SPEC §1). Losses live in ``algo/world_model_loss``."""

    def __init__(self, spec: EnvSpec, cfg: ModelConfig):
        super().__init__()
        self.spec = spec
        self.cfg = cfg
        n, a = spec.n_agents, spec.action_size
        hid, deter = cfg.hidden, cfg.deter
        self.latent_dim = z = cfg.n_categoricals * cfg.n_classes
        self.deter = deter
        cats = (cfg.n_categoricals, cfg.n_classes)

        # The decentralized part: e_o, agent recurrent model, agent posterior.
        self.agent = AgentEncoder(spec, cfg)
        self.state_encoder = mlp(spec.state_dim, hid, hid, cfg.encoder_layers - 1)
        # Recurrent models: GRU(ReLU(Linear([action, z_{t-1}])), h_{t-1}).
        k = {1: cfg.n_classes}  # which inputs of a SplitLinear are categorical latents
        self.global_input = SplitLinear([n * a, z], hid, k)  # joint action, same for every agent
        self.global_gru = nn.GRUCell(hid, deter)
        # Priors and posteriors.
        self.global_prior = LatentHead([deter], hid, *cats)
        self.agent_prior = LatentHead([deter, z], hid, *cats, onehot=k)
        self.global_posterior = LatentHead([deter, hid, z], hid, *cats, onehot={2: cfg.n_classes})
        # Heads: MLP in -> 256 ELU 256 ELU -> out [code].
        # Inputs are passed as separate tensors (z^a, h^a[, z^g, h^g]); latents are one-hot parts.
        one_level, two_levels = [z, deter], [z, deter, z, deter]
        k1, k2 = {0: cfg.n_classes}, {0: cfg.n_classes, 2: cfg.n_classes}
        self.reward_head = SplitMLP(one_level, hid, 1, 2, nn.ELU, k1)
        self.cont_head = SplitMLP(two_levels, hid, 1, 2, nn.ELU, k2)
        self.avail_head = SplitMLP(two_levels, hid, a, 2, nn.ELU, k2) if spec.has_action_mask else None
        self.obs_decoder_body = SplitMLP(one_level, hid, hid, 2, nn.ReLU, k1)  # 3 x (Linear, ReLU), last ReLU below
        self.obs_decoder_out = nn.Linear(hid, spec.obs_dim)
        if cfg.action_decoder_input == "obs_decoder_hidden":
            self.action_decoder = SplitMLP([hid], hid, a, 1, nn.ELU)
        else:
            self.action_decoder = SplitMLP(two_levels, hid, a, 1, nn.ELU, k2)
        xavier_init(self)

    # ---------------------------------------------------------------- small pieces
    def initial(self, batch_shape: tuple[int, ...], device: torch.device) -> Latent:
        """The zero state every episode (and every training window) starts from."""
        n = self.spec.n_agents
        zeros = lambda d: torch.zeros(*batch_shape, n, d, device=device)  # noqa: E731
        return Latent(zeros(self.latent_dim), zeros(self.deter), zeros(self.latent_dim), zeros(self.deter))

    def decode_obs(self, z_a: torch.Tensor, h_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Observation reconstruction and the decoder's last hidden layer (action-decoder input)."""
        hidden = torch.relu(self.obs_decoder_body(z_a, h_a))
        return self.obs_decoder_out(hidden), hidden

    def agent_transition(self, h_a: torch.Tensor, z_a: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Agent recurrent model on own action ``[..., N, A]``: h^a_t from (h^a, z^a, a^i)_{t-1}."""
        x = torch.relu(self.agent.agent_input(action, z_a))
        return self.agent.agent_gru(x.flatten(0, -2), h_a.flatten(0, -2)).view_as(h_a)

    def global_transition(self, h_g: torch.Tensor, z_g: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Global recurrent model; ``action [..., N, A]`` is flattened to the joint action."""
        joint = self.global_input.part(0, action.flatten(-2), bias=True).unsqueeze(-2)  # [..., 1, hid]
        x = torch.relu(joint + self.global_input.part(1, z_g))
        return self.global_gru(x.flatten(0, -2), h_g.flatten(0, -2)).view_as(h_g)

    # ---------------------------------------------------------------- filtering
    def observe(
        self,
        obs: torch.Tensor,
        state: torch.Tensor,
        prev_action: torch.Tensor,
        first: torch.Tensor,
    ) -> Filtered:
        """Filter T steps from a zero state (SPEC §2; timeline in ``algo/world_model_loss.py``).

        obs ``[T, B, N, O]``, state ``[T, B, G]``, prev_action ``[T, B, N, A]`` (the action taken
        before obs[j] was seen, one-hot or continuous), first ``[T, B]`` bool (obs[j] starts an
        episode: the state and the previous action are reset to zero before step j).
        """
        steps, batch, n = obs.shape[:3]
        assert prev_action.shape[:3] == (steps, batch, n), prev_action.shape
        device = obs.device
        # Work that does not depend on the recurrence: all time steps at once.
        embed_o = self.agent.obs_encoder(obs)  # [T, B, N, hid]
        embed_s = self.state_encoder(state)  # [T, B, hid]
        pre_agent_act = self.agent.agent_input.part(0, prev_action, bias=True)  # [T, B, N, hid]
        pre_global_act = self.global_input.part(0, prev_action.flatten(-2), bias=True).unsqueeze(2)  # [T, B, 1, hid]
        pre_agent_post = self.agent.agent_posterior.first.part(1, embed_o, bias=True)  # [T, B, N, hid]
        pre_global_post = self.global_posterior.first.part(1, embed_s, bias=True).unsqueeze(2)  # [T, B, 1, hid]

        # The state a reset episode starts from: GRU(ReLU(bias), 0), the same as the acting path's
        # first step (zero previous action, zero latent, zero GRU state).
        zero = torch.zeros(1, self.deter, device=device)
        h_a_start = self.agent.agent_gru(torch.relu(self.agent.agent_input.bias)[None], zero)  # [1, D]
        h_g_start = self.global_gru(torch.relu(self.global_input.bias)[None], zero)

        prev = self.initial((batch,), device)
        trans_a, trans_g, posts_a, posts_g, states = [], [], [], [], []
        for j in range(steps):  # the recurrence: h_j needs the posterior sample of step j-1
            reset = first[j].view(batch, 1, 1)
            # Transition from the previous posterior with this row's previous action.
            x_a = torch.relu(pre_agent_act[j] + self.agent.agent_input.part(1, prev.z_a))
            h_a_trans = self.agent.agent_gru(x_a.flatten(0, 1), prev.h_a.flatten(0, 1)).view(batch, n, -1)
            x_g = torch.relu(pre_global_act[j] + self.global_input.part(1, prev.z_g))
            h_g_trans = self.global_gru(x_g.flatten(0, 1), prev.h_g.flatten(0, 1)).view(batch, n, -1)
            # The filter continues from the transition unless obs[j] starts a new episode.
            h_a = torch.where(reset, h_a_start, h_a_trans)
            h_g = torch.where(reset, h_g_start, h_g_trans)
            post_a = self.agent.agent_posterior.from_pre(pre_agent_post[j] + self.agent.agent_posterior.first.part(0, h_a))
            z_a = sample_onehot(post_a)
            g_pre = pre_global_post[j] + self.global_posterior.first.part(0, h_g)
            if self.cfg.global_posterior_on == "agent_posterior":
                g_latent = z_a
            else:  # z^g_{t-1}, zero at an episode start like the rest of the carried state
                g_latent = torch.where(reset, torch.zeros_like(prev.z_g), prev.z_g)
            post_g = self.global_posterior.from_pre(g_pre + self.global_posterior.first.part(2, g_latent))
            z_g = sample_onehot(post_g)
            prev = Latent(z_a, h_a, z_g, h_g)
            states.append(prev)
            trans_a.append(h_a_trans)
            trans_g.append(h_g_trans)
            posts_a.append(post_a)
            posts_g.append(post_g)
        post = Latent(*(torch.stack(field) for field in zip(*states)))  # [T, B, N, .]
        # The priors are not part of the recurrence (only posterior samples feed the next step), so
        # both prior heads run once over all T*B*N rows. Order within a step is unchanged:
        # global prior -> (its sample) -> agent prior, from the same h_j as the posteriors.
        prior_g = self.global_prior(post.h_g)
        if self.cfg.agent_prior_on == "global_prior":
            prior_a = self.agent_prior(post.h_a, sample_onehot(prior_g))
        else:
            prior_a = self.agent_prior(post.h_a, post.z_g)
        return Filtered(post, torch.stack(trans_a), torch.stack(trans_g), prior_a, torch.stack(posts_a), prior_g,
                        torch.stack(posts_g))

    # ---------------------------------------------------------------- imagination
    def prior_step(self, latent: Latent, action: torch.Tensor) -> Latent:
        """One step of the priors from ``latent`` under ``action [M, N, A]``: both GRUs, then the
        global prior and the agent prior (conditioned on the global prior's sample), both sampled."""
        h_a = self.agent_transition(latent.h_a, latent.z_a, action)
        h_g = self.global_transition(latent.h_g, latent.z_g, action)
        z_g = sample_onehot(self.global_prior(h_g), straight_through=False)
        z_a = sample_onehot(self.agent_prior(h_a, z_g), straight_through=False)
        return Latent(z_a, h_a, z_g, h_g)

    def reward_continuation(self, latent: Latent, next_latent: Latent) -> tuple[torch.Tensor, torch.Tensor]:
        """Team reward and continuation probability of the transition ``latent -> next_latent``.

        Both heads read ``(z_t, h_{t+1})`` as in training; agents' predictions are averaged (the
        team reward; the continuation of the team). Shapes ``[..., N, .] -> [...]``.
        """
        reward = self.reward_head(latent.z_a, next_latent.h_a).squeeze(-1).mean(-1)
        cont_logit = self.cont_head(latent.z_a, next_latent.h_a, latent.z_g, next_latent.h_g)
        return reward, torch.sigmoid(cont_logit).squeeze(-1).mean(-1)

    def imagine_step(self, latent: Latent, action: torch.Tensor) -> tuple[Latent, torch.Tensor, torch.Tensor]:
        """:meth:`prior_step` plus :meth:`reward_continuation` of that step: ``(next, reward [M], cont [M])``."""
        next_latent = self.prior_step(latent, action)
        return (next_latent, *self.reward_continuation(latent, next_latent))

    def avail_logits(self, latent: Latent) -> torch.Tensor | None:
        if self.avail_head is None:
            return None
        return self.avail_head(*latent)
