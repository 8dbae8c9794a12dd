"""MAG's world model: one local model per agent, each with its own parameters (``--algo mag``).

MAG (Wu et al., AAAI 2023) keeps MAMBA's architecture (agent-level RSSM, a transformer over the
agents' GRU inputs) but, as the MABL paper (§4) describes it, "has one world model per agent, with a
separate set of model parameters per agent". Here every layer of the local models carries the
agent axis in its parameters (weights ``[N, in, out]``, applied to ``[..., N, in]`` as one batched
product), so agent i's rows only ever meet agent i's weights. The one shared part is the
transformer over agents (:class:`~mabl.models.world_model.AgentMixer`): it is the channel through
which the local models interact, as in MAMBA, and it is what makes execution centralized.

The classes mirror the call signatures of the shared building blocks (``SplitLinear.part``,
``LatentHead.from_pre``, ``SplitMLP(*xs)``, ``GRUCell(x, h)``), so the shared methods of
:class:`~mabl.models.world_model.BiLevelWorldModel` and :class:`~mabl.models.world_model.AgentEncoder`
that only call layers (prior step, reward/continuation, avail head, the acting step) run unchanged
on the per-agent layers. Latents are multiplied as dense one-hots (no gather tables).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mabl.config import ModelConfig
from mabl.envs.base import EnvSpec
from mabl.models.distributions import sample_onehot
from mabl.models.nets import INPUT_TRANSFORMS, xavier_init
from mabl.models.world_model import (
    VARIANTS,
    AgentEncoder,
    BiLevelWorldModel,
    Filtered,
    Latent,
    agent_mixer,
)


def _xavier(n_agents: int, in_dim: int, out_dim: int) -> torch.Tensor:
    """``[N, in, out]``: each agent's matrix Xavier-uniform over its own fan-in/fan-out (the shared
    model's initialisation, once per agent)."""
    bound = math.sqrt(6.0 / (in_dim + out_dim))
    return torch.empty(n_agents, in_dim, out_dim).uniform_(-bound, bound)


def _bias(n_agents: int, fan_in: int, out_dim: int) -> torch.Tensor:
    """``[N, out]``: each agent's bias as PyTorch initialises a Linear's, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (the released code's reading, ``--model.bias_init default``; ``zeros`` zeroes them afterwards)."""
    bound = 1.0 / math.sqrt(fan_in)
    return torch.empty(n_agents, out_dim).uniform_(-bound, bound)


def agent_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x [..., N, in] @ weight [N, in, out] -> [..., N, out]``: row ``[..., i, :]`` times agent i's
    matrix, as one batched product with the agents as the batch."""
    lead, (n, d) = x.shape[:-2], x.shape[-2:]
    rows = x.reshape(-1, n, d).transpose(0, 1)  # [N, R, in]
    out = torch.bmm(rows, weight)
    return out.transpose(0, 1).reshape(*lead, n, weight.shape[-1])


class AgentLinear(nn.Module):
    """A Linear layer per agent: ``y[..., i, :] = x[..., i, :] @ W_i + b_i``."""

    def __init__(self, n_agents: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(_xavier(n_agents, in_dim, out_dim))
        self.bias = nn.Parameter(_bias(n_agents, in_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return agent_matmul(x, self.weight) + self.bias


def agent_mlp(n_agents: int, in_dim: int, hidden: int, out_dim: int, layers: int,
              act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """:func:`mabl.models.nets.mlp` with per-agent layers."""
    modules: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        modules += [AgentLinear(n_agents, width, hidden), act()]
        width = hidden
    modules.append(AgentLinear(n_agents, width, out_dim))
    return nn.Sequential(*modules)


class AgentSplitLinear(nn.Module):
    """:class:`~mabl.models.nets.SplitLinear` per agent: a Linear over concatenated inputs, applied
    part by part (:meth:`part`), with one Xavier initialisation over each agent's whole matrix."""

    def __init__(self, n_agents: int, in_dims: list[int], out_dim: int):
        super().__init__()
        self.in_dims = list(in_dims)
        full = _xavier(n_agents, sum(in_dims), out_dim)
        self.weights = nn.ParameterList(nn.Parameter(c.contiguous()) for c in full.split(self.in_dims, dim=1))
        self.bias = nn.Parameter(_bias(n_agents, sum(in_dims), out_dim))

    def part(self, index: int, x: torch.Tensor, bias: bool = False) -> torch.Tensor:
        out = agent_matmul(x, self.weights[index])
        return out + self.bias if bias else out

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = self.part(0, xs[0], bias=True)
        for i, x in enumerate(xs[1:], start=1):
            out = out + self.part(i, x)
        return out


class AgentSplitMLP(nn.Module):
    """:class:`~mabl.models.nets.SplitMLP` per agent."""

    def __init__(self, n_agents: int, in_dims: list[int], hidden: int, out_dim: int, layers: int,
                 act: type[nn.Module] = nn.ReLU, rest_act: type[nn.Module] | None = None):
        super().__init__()
        self.first = AgentSplitLinear(n_agents, in_dims, hidden)
        self.act = act()
        self.rest = agent_mlp(n_agents, hidden, hidden, out_dim, layers - 1, rest_act or act)

    def from_pre(self, pre: torch.Tensor) -> torch.Tensor:
        return self.rest(self.act(pre))

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.from_pre(self.first(*xs))


class AgentLatentHead(nn.Module):
    """:class:`~mabl.models.nets.LatentHead` per agent: logits ``[..., N, C, K]``."""

    def __init__(self, n_agents: int, in_dims: list[int], hidden: int, n_categoricals: int, n_classes: int):
        super().__init__()
        self.first = AgentSplitLinear(n_agents, in_dims, hidden)
        self.out = AgentLinear(n_agents, hidden, n_categoricals * n_classes)
        self.shape = (n_categoricals, n_classes)

    def from_pre(self, pre: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(pre)).unflatten(-1, self.shape)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.from_pre(self.first(*xs))


class AgentGRUCell(nn.Module):
    """``nn.GRUCell`` per agent (torch's gate order r, z, n and formula):

    r = s(x W_ir + b_ir + h W_hr + b_hr), u = s(x W_iz + b_iz + h W_hz + b_hz),
    n = tanh(x W_in + b_in + r * (h W_hn + b_hn)), h' = (1 - u) * n + u * h.
    """

    def __init__(self, n_agents: int, in_dim: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        # Xavier over torch's [3H, in] matrices (the shared model's init of its GRU cells)
        self.weight_ih = nn.Parameter(_xavier(n_agents, in_dim, 3 * hidden))
        self.weight_hh = nn.Parameter(_xavier(n_agents, hidden, 3 * hidden))
        self.bias_ih = nn.Parameter(_bias(n_agents, hidden, 3 * hidden))  # torch's GRU: U(+-1/sqrt(H))
        self.bias_hh = nn.Parameter(_bias(n_agents, hidden, 3 * hidden))

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``x [..., N, in]``, ``h [..., N, H]`` -> ``[..., N, H]``."""
        gi = agent_matmul(x, self.weight_ih) + self.bias_ih
        gh = agent_matmul(h, self.weight_hh) + self.bias_hh
        i_r, i_z, i_n = gi.chunk(3, -1)
        h_r, h_z, h_n = gh.chunk(3, -1)
        r = torch.sigmoid(i_r + h_r)
        u = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return n + u * (h.to(n.dtype) - n)


class LocalAgentEncoder(AgentEncoder):
    """The acting part of MAG's local models (e_o, agent recurrent model, agent posterior), one
    parameter set per agent, with MAMBA's shared transformer over agents (centralized execution).

    Same interface as :class:`AgentEncoder` (the acting step :meth:`AgentEncoder.step` and
    :meth:`AgentEncoder.gru_input` are inherited); exported policies rebuild it from the spec.
    """

    def __init__(self, spec: EnvSpec, cfg: ModelConfig, mixer: bool = True):
        nn.Module.__init__(self)
        n = spec.n_agents
        hid, z = cfg.hidden, cfg.n_categoricals * cfg.n_classes
        self.deter, self.latent_dim = cfg.deter, z
        self.transform = INPUT_TRANSFORMS[cfg.input_transform]
        self.obs_encoder = agent_mlp(n, spec.obs_dim, hid, hid, cfg.encoder_layers - 1)
        self.agent_input = AgentSplitLinear(n, [spec.action_size, z], hid)  # [own previous action, z^a]
        self.mixer = agent_mixer(spec, cfg) if mixer else None
        self.agent_gru = AgentGRUCell(n, hid, cfg.deter)
        self.agent_posterior = AgentLatentHead(n, [cfg.deter, hid], hid, cfg.n_categoricals, cfg.n_classes)
        if self.mixer is not None:  # the shared transformer keeps the shared model's init
            xavier_init(self.mixer, zero_bias=cfg.bias_init == "zeros")

    def transition(self, h_a: torch.Tensor, z_a: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.agent_gru(self.gru_input(self.agent_input(action, z_a)), h_a)

    def start_state(self, n_agents: int) -> torch.Tensor:
        """``h^a`` of an episode's first step ``[N, deter]``: each agent's transition from the zero
        state with a zero previous action (differs per agent: their parameters differ)."""
        x = self.gru_input(self.agent_input.bias)
        return self.agent_gru(x, x.new_zeros(n_agents, self.deter))


class LocalWorldModels(BiLevelWorldModel):
    """MAG's N local world models as one module: MAMBA's parts (variant ``mag`` = agent level only,
    transformer over agents), every one of them per agent except the transformer.

    Heads read ``(z^a_i, h^a_i)`` like MAMBA's. The shared methods of the base class that only call
    layers are inherited; :meth:`observe` and :meth:`loss_heads` are written here (the base versions
    use gather tables and fused first layers of shared weights).
    """

    def __init__(self, spec: EnvSpec, cfg: ModelConfig):
        nn.Module.__init__(self)
        self.spec, self.cfg, self.variant = spec, cfg, VARIANTS["mag"]
        n, a, hid, deter = spec.n_agents, spec.action_size, cfg.hidden, cfg.deter
        self.latent_dim = z = cfg.n_categoricals * cfg.n_classes
        self.deter = deter
        self.has_global = self.shared_global = False
        self.agent = LocalAgentEncoder(spec, cfg, mixer=True)
        self.agent_prior = AgentLatentHead(n, [deter], hid, cfg.n_categoricals, cfg.n_classes)
        feat = [z, deter]
        self.reward_head = AgentSplitMLP(n, feat, hid, 1, 2, nn.ELU)
        self.cont_head = AgentSplitMLP(n, feat, hid, 1, 2, nn.ELU)
        # (--model.avail_head off: no mask head, as the shared model; released code on Flatland)
        self.avail_head = AgentSplitMLP(n, feat, hid, a, 2, nn.ELU) if spec.has_action_mask and cfg.avail_head else None
        self.obs_decoder_body = AgentSplitMLP(n, feat, hid, hid, 2, nn.ReLU)
        self.obs_decoder_out = AgentLinear(n, hid, spec.obs_dim)
        layers = cfg.action_decoder_layers  # Linear ELU [Linear ReLU] Linear, as the shared model's
        if cfg.action_decoder_input == "obs_decoder_hidden":
            self.action_decoder = AgentSplitMLP(n, [hid], hid, a, layers, nn.ELU, rest_act=nn.ReLU)
        else:
            self.action_decoder = AgentSplitMLP(n, feat, hid, a, layers, nn.ELU, rest_act=nn.ReLU)
        if cfg.bias_init == "zeros":
            for name, param in self.named_parameters():
                if name.rsplit(".", 1)[-1].startswith("bias"):
                    nn.init.zeros_(param)
        self.planner = None
        """Set by the MAG learner (:class:`mabl.algo.mag.MagPlanner`, not a submodule): chooses the
        next state of every imagined step; None = the plain prior step."""

    def imagine_step(self, latent: Latent, action: torch.Tensor) -> tuple[Latent, torch.Tensor, torch.Tensor]:
        """:meth:`BiLevelWorldModel.imagine_step` with the next state chosen by :attr:`planner`."""
        if self.planner is None:
            return super().imagine_step(latent, action)
        next_latent = self.planner(latent, action)
        return (next_latent, *self.reward_continuation(latent, next_latent))

    def per_agent_parameters(self) -> dict[str, torch.Tensor]:
        """Every parameter that belongs to one local model (leading axis = agent): all but the
        shared transformer over agents."""
        return {name: p for name, p in self.named_parameters() if not name.startswith("agent.mixer.")}

    def loss_heads(self, post: Latent, h_a_next: torch.Tensor, h_g_next: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """What :meth:`BiLevelWorldModel.loss_heads` returns, from the per-agent heads."""
        z_a, h_a = post.z_a, post.h_a
        hidden = torch.relu(self.obs_decoder_body(z_a, h_a))
        out = {"obs": self.obs_decoder_out(hidden), "reward": self.reward_head(z_a, h_a_next),
               "cont": self.cont_head(z_a, h_a_next)}
        if self.avail_head is not None:
            out["avail"] = self.avail_head(z_a, h_a)
        if self.cfg.action_decoder_input == "obs_decoder_hidden":
            out["action"] = self.action_decoder(hidden)
        else:
            out["action"] = self.action_decoder(z_a, h_a)
        return out

    def observe(self, obs: torch.Tensor, state: torch.Tensor, prev_action: torch.Tensor,
                first: torch.Tensor) -> Filtered:
        """:meth:`BiLevelWorldModel.observe` for the local models (same timeline and resets; the
        global state is not read)."""
        steps, batch, n = obs.shape[:3]
        agent = self.agent
        embed_o = agent.obs_encoder(agent.transform(obs))  # [T, B, N, hid]
        pre_act = agent.agent_input.part(0, prev_action, bias=True).unbind(0)
        pre_post = agent.agent_posterior.first.part(1, embed_o, bias=True).unbind(0)
        h_start = agent.start_state(n)  # [N, D]
        carried = self.cfg.episode_reset == "carried_state"
        prev = self.initial((batch,), obs.device)
        trans, posts, states = [], [], []
        for j in range(steps):
            reset = first[j].view(batch, 1, 1)
            if carried:  # zero the carried state, keep the stored action (MAG-code rnns.py rollout_representation)
                prev = prev.map(lambda t, keep=~reset: t * keep.to(t.dtype))
            x = agent.gru_input(pre_act[j] + agent.agent_input.part(1, prev.z_a))
            h_trans = agent.agent_gru(x, prev.h_a)
            h_a = h_trans if carried else torch.where(reset, h_start, h_trans)
            post = agent.agent_posterior.from_pre(pre_post[j] + agent.agent_posterior.first.part(0, h_a))
            prev = Latent(sample_onehot(post), h_a, None, None)
            states.append(prev)
            trans.append(h_trans)
            posts.append(post)
        post = Latent(torch.stack([s.z_a for s in states]), torch.stack([s.h_a for s in states]), None, None)
        return Filtered(post, torch.stack(trans), None, self.agent_prior(post.h_a), torch.stack(posts), None, None)


class ErrorPredictor(nn.Module):
    """MAG's learned model-agent cost [code]: per agent, the local model's one-step loss predicted
    from a predicted state ``(z^a_i, h^a_i)``; an MLP with ``layers`` hidden ELU layers, per agent."""

    def __init__(self, n_agents: int, latent_dim: int, deter: int, hidden: int, layers: int):
        super().__init__()
        self.net = AgentSplitMLP(n_agents, [latent_dim, deter], hidden, 1, layers, nn.ELU)

    def forward(self, z_a: torch.Tensor, h_a: torch.Tensor) -> torch.Tensor:
        """``[..., N, C*K]``, ``[..., N, D]`` -> predicted loss ``[..., N]``."""
        return self.net(z_a, h_a).squeeze(-1).float()
