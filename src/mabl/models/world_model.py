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

The comparison systems of the paper (SPEC §7) are the same model with parts changed, chosen by
``--algo`` through :class:`Variant`:

- ``dreamer``: no global level. The agent prior reads h^a only; every head and the critic read
  agent features only. ``Latent.z_g`` / ``Latent.h_g`` are None.
- ``mabl-sg``: one global latent per time step shared by all agents: ``z_g [..., D]`` and
  ``h_g [..., deter]`` have no agent axis. Its posterior reads h^g, e_s(s) and the agents'
  posterior samples pooled by a mean over agents of their first-layer projection (permutation
  invariant and independent of N: ``mean_i W z^a_i = W mean_i z^a_i``). Heads and the critic see it
  broadcast to every agent.
- ``mamba``: no global level; the agents' GRU inputs pass through a transformer over the agent
  axis before the agent GRU, so every agent's state depends on every agent's input (centralized
  execution).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from mabl.config import ModelConfig
from mabl.envs.base import EnvSpec
from mabl.models.distributions import mode_onehot, sample_onehot
from mabl.models.nets import (
    INPUT_TRANSFORMS,
    LatentHead,
    SplitLinear,
    SplitMLP,
    fused_split_linears,
    mlp,
    sinusoidal_encoding,
    xavier_init,
)
from mabl.models.onehot import StepTable


@dataclass(frozen=True)
class Variant:
    """Which world model an algorithm uses (SPEC §7)."""

    global_level: str
    """'per_agent' (MABL: N global chains), 'shared' (MABL-SG: one chain) or 'none' (agent level only)."""
    agent_mixer: bool = False
    """A transformer over the agents' GRU inputs (MAMBA); makes execution centralized."""

    @property
    def centralized_execution(self) -> bool:
        return self.agent_mixer


VARIANTS: dict[str, Variant] = {
    "mabl": Variant("per_agent"),
    "mabl-sg": Variant("shared"),
    "dreamer": Variant("none"),
    "mamba": Variant("none", agent_mixer=True),
    "mag": Variant("none", agent_mixer=True),  # MAMBA's parts, per agent: mabl.models.mag.LocalWorldModels
}
"""The model-based algorithms of ``--algo``."""


class Latent(NamedTuple):
    """A bi-level latent state: ``[..., N, D]`` per field (D = C*K for z, deter for h).

    The field order is the feature order of the paper, ``[z^a, h^a, z^g, h^g]``. The global fields
    are None without a global level, and ``[..., D]`` (no agent axis) when it is shared; heads read
    :func:`level_features` of them.
    """

    z_a: torch.Tensor
    h_a: torch.Tensor
    z_g: torch.Tensor | None
    h_g: torch.Tensor | None

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Latent:
        """Apply ``fn`` to every present field (leading-axis operations: slicing, flattening, casts)."""
        return Latent(*(None if t is None else fn(t) for t in self))

    def flatten(self, start: int, end: int) -> Latent:
        return self.map(lambda t: t.flatten(start, end))


def level_features(z_a: torch.Tensor, h_a: torch.Tensor, z_g: torch.Tensor | None = None,
                   h_g: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """Per-agent inputs of a head over both levels: ``(z^a, h^a, z^g, h^g)`` each ``[..., N, .]``.

    Without a global level only ``(z^a, h^a)``; a shared global latent (one fewer axis than
    ``h^a``) is broadcast to every agent.
    """
    if z_g is None:
        return z_a, h_a
    if h_g.dim() < h_a.dim():  # shared: [..., D] -> [..., N, D]
        lead = h_a.shape[:-1]
        z_g = z_g.unsqueeze(-2).expand(*lead, z_g.shape[-1])
        h_g = h_g.unsqueeze(-2).expand(*lead, h_g.shape[-1])
    return z_a, h_a, z_g, h_g


class AgentMixer(nn.Module):
    """MAMBA's communication: self-attention layers over the agent axis of ``[..., N, hidden]``.

    With ``n_agents`` the sinusoidal agent-index table ``[N, hidden]`` is added to the input first
    (MAMBA's ``AttentionEncoder``: ``PositionalEncoding`` before the ``TransformerEncoder``,
    networks/transformer/layers.py; ``--model.agent_index_encoding``). The table is a fixed,
    non-persistent buffer: checkpoints hold no entry for it. Feed-forward width = hidden (MAMBA).
    """

    def __init__(self, hidden: int, layers: int, heads: int, dropout: float, n_agents: int | None = None):
        super().__init__()
        layer = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=hidden, dropout=dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.agent_code: torch.Tensor | None
        if n_agents is None:
            self.agent_code = None
        else:
            self.register_buffer("agent_code", sinusoidal_encoding(n_agents, hidden), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.agent_code is not None:
            x = x + self.agent_code.to(x.dtype)
        return self.encoder(x.reshape(-1, *x.shape[-2:])).view_as(x)


def agent_mixer(spec: EnvSpec, cfg: ModelConfig) -> AgentMixer:
    """The transformer over agents of ``--algo mamba`` / ``mag`` as the config asks."""
    n_agents = spec.n_agents if cfg.agent_index_encoding == "sinusoidal" else None
    return AgentMixer(cfg.hidden, cfg.mixer_layers, cfg.mixer_heads, cfg.mixer_dropout, n_agents)


class Filtered(NamedTuple):
    """Output of :meth:`BiLevelWorldModel.observe` over T steps, every field ``[T, B, N, ...]``.

    ``post`` are the posterior states. ``h_a_trans`` / ``h_g_trans`` at step j are the GRU
    states reached from the posterior of step j-1 with the action of row j (the transition,
    before any episode reset); the reward and continuation heads of step j read them at j+1.
    """

    post: Latent
    h_a_trans: torch.Tensor
    h_g_trans: torch.Tensor | None  # None without a global level (so are the global logits)
    prior_a_logits: torch.Tensor
    post_a_logits: torch.Tensor
    prior_g_logits: torch.Tensor | None
    post_g_logits: torch.Tensor | None


class AgentEncoder(nn.Module):
    """The decentralized part of the world model: what one agent runs at execution time.

    Observation encoder e_o, agent recurrent model and agent posterior. The world model holds one
    (``world_model.agent``) and the exported policy holds one built from the same weights, so the
    training-time and execution-time paths are the same code.
    """

    def __init__(self, spec: EnvSpec, cfg: ModelConfig, mixer: bool = False):
        super().__init__()
        hid, z, k = cfg.hidden, cfg.n_categoricals * cfg.n_classes, cfg.n_classes
        self.deter, self.latent_dim = cfg.deter, z
        self.transform = INPUT_TRANSFORMS[cfg.input_transform]  # on observations (and the state, world model)
        # Encoder: `encoder_layers` Linear layers, ReLU between, linear output [code].
        self.obs_encoder = mlp(spec.obs_dim, hid, hid, cfg.encoder_layers - 1)
        self.agent_input = SplitLinear([spec.action_size, z], hid, {1: k})  # [own previous action, z^a]
        self.mixer = agent_mixer(spec, cfg) if mixer else None
        self.agent_gru = nn.GRUCell(hid, cfg.deter)
        self.agent_posterior = LatentHead([cfg.deter, hid], hid, cfg.n_categoricals, cfg.n_classes)

    def gru_input(self, pre: torch.Tensor) -> torch.Tensor:
        """``ReLU(pre)`` of the agent input layer ``[..., N, hid]``, mixed over agents for MAMBA."""
        x = torch.relu(pre)
        return x if self.mixer is None else self.mixer(x)

    def transition(self, h_a: torch.Tensor, z_a: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Agent recurrent model: ``h^a_t`` from ``(h^a, z^a, a^i)_{t-1}``, all ``[..., N, .]``."""
        x = self.gru_input(self.agent_input(action, z_a))
        return self.agent_gru(x.flatten(0, -2), h_a.flatten(0, -2)).view(*x.shape[:-1], self.deter)

    def start_state(self, n_agents: int) -> torch.Tensor:
        """``h^a`` of an episode's first step ``[N, deter]``: the transition from the zero state with a
        zero previous action (what :meth:`step` computes after a reset)."""
        rows = 1 if self.mixer is None else n_agents  # without the mixer every agent starts alike
        x = self.gru_input(self.agent_input.bias.expand(rows, -1))
        return self.agent_gru(x, x.new_zeros(rows, self.deter)).expand(n_agents, -1)

    def step(
        self, h_a: torch.Tensor, z_a: torch.Tensor, prev_action: torch.Tensor, obs: torch.Tensor,
        deterministic: bool = False, generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h^a_{t-1}, z^a_{t-1}, a_{t-1}, o_t) -> (h^a_t, z^a_t)`` for ``[..., N, ·]`` inputs."""
        h_a = self.transition(h_a, z_a, prev_action)
        logits = self.agent_posterior(h_a, self.obs_encoder(self.transform(obs)))
        if deterministic:
            return h_a, mode_onehot(logits)
        return h_a, sample_onehot(logits, straight_through=False, generator=generator)


class BiLevelWorldModel(nn.Module):
    """All networks of the world model (SPEC §1; the variant's parts only). Losses live in
    ``algo/world_model_loss``."""

    def __init__(self, spec: EnvSpec, cfg: ModelConfig, variant: Variant = VARIANTS["mabl"]):
        super().__init__()
        self.spec, self.cfg, self.variant = spec, cfg, variant
        n, a = spec.n_agents, spec.action_size
        hid, deter = cfg.hidden, cfg.deter
        self.latent_dim = z = cfg.n_categoricals * cfg.n_classes
        self.deter = deter
        cats = (cfg.n_categoricals, cfg.n_classes)
        k = {1: cfg.n_classes}  # which inputs of a SplitLinear are categorical latents

        # The decentralized part (centralized with MAMBA's mixer): e_o, agent recurrent model, agent posterior.
        self.agent = AgentEncoder(spec, cfg, mixer=variant.agent_mixer)
        self.has_global = variant.global_level != "none"
        self.shared_global = variant.global_level == "shared"
        if self.has_global:
            self.state_encoder = mlp(spec.state_dim, hid, hid, cfg.encoder_layers - 1)
            # Recurrent model: GRU(ReLU(Linear([joint action, z^g_{t-1}])), h^g_{t-1}).
            self.global_input = SplitLinear([n * a, z], hid, k)  # the joint action is the same for every agent
            self.global_gru = nn.GRUCell(hid, deter)
            self.global_prior = LatentHead([deter], hid, *cats)
            self.agent_prior = LatentHead([deter, z], hid, *cats, onehot=k)
            self.global_posterior = LatentHead([deter, hid, z], hid, *cats, onehot={2: cfg.n_classes})
        else:
            self.agent_prior = LatentHead([deter], hid, *cats)
        # Heads: MLP in -> 256 ELU 256 ELU -> out [code].
        # Inputs are passed as separate tensors (z^a, h^a[, z^g, h^g]); latents are one-hot parts.
        one_level = [z, deter]
        k1 = {0: cfg.n_classes}
        both = ([z, deter, z, deter], {0: cfg.n_classes, 2: cfg.n_classes}) if self.has_global else (one_level, k1)
        self.reward_head = SplitMLP(one_level, hid, 1, 2, nn.ELU, k1)
        self.cont_head = SplitMLP(both[0], hid, 1, 2, nn.ELU, both[1])
        # (--model.avail_head off: no mask head, imagined actions unmasked; released code on Flatland)
        self.avail_head = SplitMLP(both[0], hid, a, 2, nn.ELU, both[1]) if spec.has_action_mask and cfg.avail_head else None
        self.obs_decoder_body = SplitMLP(one_level, hid, hid, 2, nn.ReLU, k1)  # 3 x (Linear, ReLU), last ReLU below
        self.obs_decoder_out = nn.Linear(hid, spec.obs_dim)
        # Action decoder: Linear ELU [Linear ReLU] Linear (model.action_decoder_layers; 2 in the code).
        layers = cfg.action_decoder_layers
        if cfg.action_decoder_input == "obs_decoder_hidden":
            self.action_decoder = SplitMLP([hid], hid, a, layers, nn.ELU, rest_act=nn.ReLU)
        else:
            self.action_decoder = SplitMLP(both[0], hid, a, layers, nn.ELU, both[1], rest_act=nn.ReLU)
        xavier_init(self, zero_bias=cfg.bias_init == "zeros")

    # ---------------------------------------------------------------- small pieces
    def initial(self, batch_shape: tuple[int, ...], device: torch.device) -> Latent:
        """The zero state every episode (and every training window) starts from."""
        n = self.spec.n_agents
        zeros = lambda *d: torch.zeros(*batch_shape, *d, device=device)  # noqa: E731
        if not self.has_global:
            return Latent(zeros(n, self.latent_dim), zeros(n, self.deter), None, None)
        g = () if self.shared_global else (n,)
        return Latent(zeros(n, self.latent_dim), zeros(n, self.deter), zeros(*g, self.latent_dim), zeros(*g, self.deter))

    def loss_heads(self, post: Latent, h_a_next: torch.Tensor, h_g_next: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Every head the world-model loss reads, from posterior states ``post`` and the transitions
        out of them (``h_*_next``): ``obs`` (reconstruction), ``reward`` and ``cont`` (from
        ``(z_t, h_{t+1})``), ``avail`` (when the env has masks) and ``action`` (decoder output).
        Each equals calling that head alone; their first layers run as one
        :func:`fused_split_linears`, so each latent is multiplied once for all the heads that read it.
        """
        z_a, h_a, z_g, h_g = post
        both = level_features(z_a, h_a, z_g, h_g)
        first: dict[str, tuple[SplitLinear, tuple[torch.Tensor, ...]]] = {
            "obs": (self.obs_decoder_body.first, (z_a, h_a)),
            "reward": (self.reward_head.first, (z_a, h_a_next)),
            "cont": (self.cont_head.first, level_features(z_a, h_a_next, z_g, h_g_next)),
        }
        if self.avail_head is not None:
            first["avail"] = (self.avail_head.first, both)
        if self.cfg.action_decoder_input != "obs_decoder_hidden":
            first["action"] = (self.action_decoder.first, both)
        pre = fused_split_linears(first)
        hidden = torch.relu(self.obs_decoder_body.from_pre(pre["obs"]))
        out = {"obs": self.obs_decoder_out(hidden),
               "reward": self.reward_head.from_pre(pre["reward"]), "cont": self.cont_head.from_pre(pre["cont"])}
        if self.avail_head is not None:
            out["avail"] = self.avail_head.from_pre(pre["avail"])
        out["action"] = self.action_decoder(hidden) if "action" not in pre else self.action_decoder.from_pre(pre["action"])
        return out

    def agent_transition(self, h_a: torch.Tensor, z_a: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Agent recurrent model on own action ``[..., N, A]``: h^a_t from (h^a, z^a, a^i)_{t-1}."""
        return self.agent.transition(h_a, z_a, action)

    def _joint_action(self, pre: torch.Tensor) -> torch.Tensor:
        """The joint-action contribution ``[..., hid]`` placed against ``h^g``: one row per agent chain
        (broadcast, ``[..., 1, hid]``) or the shared chain (``[..., hid]``)."""
        return pre if self.shared_global else pre.unsqueeze(-2)

    def global_transition(self, h_g: torch.Tensor, z_g: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Global recurrent model; ``action [..., N, A]`` is flattened to the joint action."""
        joint = self._joint_action(self.global_input.part(0, action.flatten(-2), bias=True))
        x = torch.relu(joint + self.global_input.part(1, z_g))
        return self.global_gru(x.flatten(0, -2), h_g.flatten(0, -2)).view_as(h_g)

    def agent_prior_logits(self, h_a: torch.Tensor, z_g: torch.Tensor | None) -> torch.Tensor:
        """``p(z^a | h^a[, z^g])`` logits; a shared ``z^g`` is broadcast to the agents."""
        if not self.has_global:
            return self.agent_prior(h_a)
        if self.shared_global:
            z_g = z_g.unsqueeze(-2).expand(*h_a.shape[:-1], z_g.shape[-1])
        return self.agent_prior(h_a, z_g)

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
        episode). At such a step ``--model.episode_reset carried_state`` (released code) zeroes the
        carried GRU states and latents and still feeds ``prev_action[j]``; the transition out of the
        zeroed state is both ``h_j`` and ``h_*_trans[j]``. ``start_state`` puts the acting path's
        first state (zero previous action) in ``h_j`` and keeps ``h_*_trans[j]`` the transition from
        the previous posterior.
        """
        steps, batch, n = obs.shape[:3]
        assert prev_action.shape[:3] == (steps, batch, n), prev_action.shape
        device = obs.device
        agent, has_global = self.agent, self.has_global
        # Work that does not depend on the recurrence: all time steps at once.
        embed_o = agent.obs_encoder(agent.transform(obs))  # [T, B, N, hid]
        pre_agent_act = agent.agent_input.part(0, prev_action, bias=True)  # [T, B, N, hid]
        pre_agent_post = agent.agent_posterior.first.part(1, embed_o, bias=True)  # [T, B, N, hid]
        # The state a reset episode starts from: the acting path's first step (zero previous
        # action, zero latent, zero GRU state).
        h_a_start = agent.start_state(n)  # [N, D]
        if has_global:
            embed_s = self.state_encoder(agent.transform(state))  # [T, B, hid]
            pre_global_act = self._joint_action(self.global_input.part(0, prev_action.flatten(-2), bias=True))
            pre_global_post = self._joint_action(self.global_posterior.first.part(1, embed_s, bias=True))
            zero = torch.zeros(1, self.deter, device=device)
            h_g_start = self.global_gru(torch.relu(self.global_input.bias)[None], zero)  # [1, D]
            g_reset_shape = (batch, 1) if self.shared_global else (batch, 1, 1)

        # The samples of step j are multiplied into the next step's GRU input (and, for z^a, into
        # this step's global posterior) right after they are drawn, one gather for all their
        # readers; StepTable forms the tables' gradients once for all steps.
        k = self.cfg.n_classes
        hid = self.cfg.hidden
        z_a_tables = [agent.agent_input.weights[1]]
        post_reads_z_a = has_global and self.cfg.global_posterior_on == "agent_posterior"
        if post_reads_z_a:
            z_a_tables.append(self.global_posterior.first.weights[2])
        z_a_step = StepTable(torch.cat(z_a_tables, 1) if len(z_a_tables) > 1 else z_a_tables[0], k,
                             [hid] * len(z_a_tables))
        z_g_step = StepTable(self.global_input.weights[1], k) if has_global else None
        # Per-step views taken once: indexing a [T, ...] tensor at every step would give it T
        # full-size zero-padded gradients to sum in backward; unbind's backward stacks them once.
        pre_agent_act, pre_agent_post = pre_agent_act.unbind(0), pre_agent_post.unbind(0)
        if has_global:
            pre_global_act, pre_global_post = pre_global_act.unbind(0), pre_global_post.unbind(0)

        carried = self.cfg.episode_reset == "carried_state"
        prev = self.initial((batch,), device)
        next_a = 0.0  # z @ W of the zero initial latents
        next_g = None if prev.h_g is None else prev.h_g.new_zeros(*prev.h_g.shape[:-1], hid)
        trans_a, trans_g, posts_a, posts_g, states = [], [], [], [], []
        for j in range(steps):  # the recurrence: h_j needs the posterior sample of step j-1
            reset = first[j].view(batch, 1, 1)
            if carried:  # released code: the carried state times (1 - last), the stored action still read
                keep = (~reset).to(prev.h_a.dtype)
                prev = prev.map(lambda t, keep=keep: t * (keep if t.dim() == 3 else keep[..., 0]))
                next_a = next_a * keep
                if has_global:
                    next_g = next_g * (keep if next_g.dim() == 3 else keep[..., 0])
            # Transition from the previous posterior with this row's previous action.
            x_a = agent.gru_input(pre_agent_act[j] + next_a)
            h_a_trans = agent.agent_gru(x_a.flatten(0, 1), prev.h_a.flatten(0, 1)).view(batch, n, -1)
            # 'start_state': the filter continues from the transition unless obs[j] starts a new episode.
            h_a = h_a_trans if carried else torch.where(reset, h_a_start, h_a_trans)
            post_a = agent.agent_posterior.from_pre(pre_agent_post[j] + agent.agent_posterior.first.part(0, h_a))
            z_a, z_a_class = sample_onehot(post_a, return_index=True)
            z_a_proj = z_a_step(z_a, z_a_class)  # ([B, N, hid], [B, N, hid] when the global posterior reads z^a)
            next_a = z_a_proj[0]
            z_g = h_g = None
            if has_global:
                g_reset = first[j].view(g_reset_shape)
                x_g = torch.relu(pre_global_act[j] + next_g)
                h_g_trans = self.global_gru(x_g.flatten(0, -2), prev.h_g.flatten(0, -2)).view_as(prev.h_g)
                h_g = h_g_trans if carried else torch.where(g_reset, h_g_start, h_g_trans)
                g_pre = pre_global_post[j] + self.global_posterior.first.part(0, h_g)
                if post_reads_z_a:
                    g_in = z_a_proj[1]  # [B, N, hid]
                    g_in = g_in.mean(-2) if self.shared_global else g_in  # MABL-SG: mean over agents
                else:  # z^g_{t-1}, zero at an episode start like the rest of the carried state
                    g_in = self.global_posterior.first.part(2, torch.where(g_reset, 0.0, prev.z_g))
                post_g = self.global_posterior.from_pre(g_pre + g_in)
                z_g, z_g_class = sample_onehot(post_g, return_index=True)
                next_g = z_g_step(z_g, z_g_class)
                trans_g.append(h_g_trans)
                posts_g.append(post_g)
            prev = Latent(z_a, h_a, z_g, h_g)
            states.append(prev)
            trans_a.append(h_a_trans)
            posts_a.append(post_a)
        post = Latent(*(None if field[0] is None else torch.stack(field) for field in zip(*states)))  # [T, B, N, .]
        # The priors are not part of the recurrence (only posterior samples feed the next step), so
        # both prior heads run once over all T*B*N rows. Order within a step is unchanged:
        # global prior -> (its sample) -> agent prior, from the same h_j as the posteriors.
        if not has_global:
            return Filtered(post, torch.stack(trans_a), None, self.agent_prior_logits(post.h_a, None),
                            torch.stack(posts_a), None, None)
        prior_g = self.global_prior(post.h_g)
        if self.cfg.agent_prior_on == "global_prior":
            prior_a = self.agent_prior_logits(post.h_a, sample_onehot(prior_g))
        else:
            prior_a = self.agent_prior_logits(post.h_a, post.z_g)
        return Filtered(post, torch.stack(trans_a), torch.stack(trans_g), prior_a, torch.stack(posts_a), prior_g,
                        torch.stack(posts_g))

    # ---------------------------------------------------------------- imagination
    def prior_step(self, latent: Latent, action: torch.Tensor) -> Latent:
        """One step of the priors from ``latent`` under ``action [M, N, A]``: both GRUs, then the
        global prior and the agent prior (conditioned on the global prior's sample), both sampled."""
        h_a = self.agent_transition(latent.h_a, latent.z_a, action)
        z_g = h_g = None
        if self.has_global:
            h_g = self.global_transition(latent.h_g, latent.z_g, action)
            z_g = sample_onehot(self.global_prior(h_g), straight_through=False)
        z_a = sample_onehot(self.agent_prior_logits(h_a, z_g), straight_through=False)
        return Latent(z_a, h_a, z_g, h_g)

    def reward_continuation(self, latent: Latent, next_latent: Latent) -> tuple[torch.Tensor, torch.Tensor]:
        """Team reward ``[...]`` and per-agent continuation probability ``[..., N]`` of the
        transition ``latent -> next_latent`` (``[..., N, .]`` fields).

        Both heads read ``(z_t, h_{t+1})`` as in training. The agents' reward predictions are
        averaged (the team reward); each agent keeps its own continuation (released code: it
        discounts that agent's lambda-return; ``--policy.continuation team_mean`` averages it).
        """
        reward = self.reward_head(latent.z_a, next_latent.h_a).squeeze(-1).mean(-1)
        cont_logit = self.cont_head(*level_features(latent.z_a, next_latent.h_a, latent.z_g, next_latent.h_g))
        return reward, torch.sigmoid(cont_logit).squeeze(-1)

    def imagine_step(self, latent: Latent, action: torch.Tensor) -> tuple[Latent, torch.Tensor, torch.Tensor]:
        """:meth:`prior_step` plus :meth:`reward_continuation` of that step: ``(next, reward [M], cont [M, N])``."""
        next_latent = self.prior_step(latent, action)
        return (next_latent, *self.reward_continuation(latent, next_latent))

    def avail_logits(self, latent: Latent) -> torch.Tensor | None:
        if self.avail_head is None:
            return None
        return self.avail_head(*level_features(*latent))
