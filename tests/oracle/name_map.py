"""Parameter name map: the released MABL code's modules -> ours (``paper`` preset, ``--algo mabl``).

Every released parameter is either copied into exactly one of ours (whole, or a column block of a
``Linear`` weight that ours keeps as one :class:`~mabl.models.nets.SplitLinear` part per input) or
listed in :data:`RELEASED_UNUSED` with the reason it has no counterpart. Every parameter of ours
must be the target of exactly one copy; :func:`check_coverage` fails otherwise.

Layout conventions on our side (``src/mabl/models/nets.py``):

- ``SplitLinear`` parts: a dense input keeps the ``[out, in]`` block of the released weight; a
  categorical-latent input (``onehot``) is stored transposed, ``[C*K, out]``, as a gather table.
- ``nn.GRU`` (released, one layer) and ``nn.GRUCell`` (ours) hold the same four tensors in the
  same gate order (r, z, n); only the ``_l0`` suffix differs.
- The released ``Encoder`` (``vae.py``: ``fc1`` then ``encoder``, ReLU between, linear output) is
  our 4-layer ``mlp`` (indices 0, 2, 4, 6); its ``Decoder`` (``fc1`` = 3 Linear with ReLU, ReLU,
  ``fc2``) is our ``obs_decoder_body`` + ``obs_decoder_out``.

The released feature order, ``get_features() = cat(stoch, deter)`` (``DreamerAgentConfig.py``) and
``cat([agent_feat, global_feat])`` (``loss.py``), is ours: ``(z^a, h^a, z^g, h^g)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

DENSE, ONEHOT = "dense", "onehot"


@dataclass(frozen=True)
class ParamPair:
    """One copy: ``released[:, start:stop]`` (all columns when ``start`` is None), transposed when
    ``transpose`` -> ``ours``."""

    released: str
    ours: str
    start: int | None = None
    stop: int | None = None
    transpose: bool = False

    def take(self, tensor: torch.Tensor) -> torch.Tensor:
        """The block of a released tensor (value or gradient) as our parameter holds it."""
        block = tensor if self.start is None else tensor[:, self.start:self.stop]
        return block.t() if self.transpose else block


def _linear(released: str, ours: str) -> list[ParamPair]:
    return [ParamPair(f"{released}.weight", f"{ours}.weight"), ParamPair(f"{released}.bias", f"{ours}.bias")]


def _gru(released: str, ours: str) -> list[ParamPair]:
    return [ParamPair(f"{released}.{name}_l0", f"{ours}.{name}") for name in
            ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def _split(released: str, ours: str, parts: list[tuple[str, int]]) -> list[ParamPair]:
    """A released ``Linear`` over ``cat(inputs)`` -> our ``SplitLinear`` with one part per input."""
    pairs, col = [], 0
    for i, (kind, width) in enumerate(parts):
        pairs.append(ParamPair(f"{released}.weight", f"{ours}.weights.{i}", col, col + width, kind == ONEHOT))
        col += width
    return pairs + [ParamPair(f"{released}.bias", f"{ours}.bias")]


def _encoder(released: str, ours: str) -> list[ParamPair]:
    return (_linear(f"{released}.fc1", f"{ours}.0") + _linear(f"{released}.encoder.0", f"{ours}.2")
            + _linear(f"{released}.encoder.2", f"{ours}.4") + _linear(f"{released}.encoder.4", f"{ours}.6"))


def _dense3(released: str, ours: str, first: list[tuple[str, int]]) -> list[ParamPair]:
    """A released ``build_model(.., layers=2)`` (``model.0/.2/.4``) -> our ``SplitMLP`` (first, rest.0, rest.2)."""
    return (_split(f"{released}.0", f"{ours}.first", first) + _linear(f"{released}.2", f"{ours}.rest.0")
            + _linear(f"{released}.4", f"{ours}.rest.2"))


def world_model_pairs(n_agents: int, n_actions: int, latent: int, deter: int, hidden: int) -> list[ParamPair]:
    """``DreamerModel`` (``agent/models/DreamerModel.py``) -> ``BiLevelWorldModel``."""
    z, d, h, a = latent, deter, hidden, n_actions
    feat = [(ONEHOT, z), (DENSE, d)]
    both = feat + feat
    return [
        *_encoder("observation_encoder", "agent.obs_encoder"),
        *_encoder("state_encoder", "state_encoder"),
        # observation decoder: fc1 (3 Linear, ReLU) -> ReLU -> fc2
        *_split("observation_decoder.fc1.0", "obs_decoder_body.first", feat),
        *_linear("observation_decoder.fc1.2", "obs_decoder_body.rest.0"),
        *_linear("observation_decoder.fc1.4", "obs_decoder_body.rest.2"),
        *_linear("observation_decoder.fc2", "obs_decoder_out"),
        # global recurrent model: GRU(ReLU(Linear([joint action, z^g]))), prior Linear ReLU Linear on h^g
        *_gru("transition.global_cell", "global_gru"),
        *_split("transition.global_rnn_input_model.0", "global_input", [(DENSE, n_agents * a), (ONEHOT, z)]),
        *_split("transition.global_stochastic_prior_model.dists.0", "global_prior.first", [(DENSE, d)]),
        *_linear("transition.global_stochastic_prior_model.dists.2", "global_prior.out"),
        # agent recurrent model: GRU(ReLU(Linear([own action, z^a]))), prior on [h^a, z^g]
        *_gru("transition.agent_cell", "agent.agent_gru"),
        *_split("transition.agent_rnn_input_model.0", "agent.agent_input", [(DENSE, a), (ONEHOT, z)]),
        *_split("transition.agent_stochastic_prior_model.dists.0", "agent_prior.first", [(DENSE, d), (ONEHOT, z)]),
        *_linear("transition.agent_stochastic_prior_model.dists.2", "agent_prior.out"),
        # posteriors: agent on [h^a, e_o(o)]; global on [h^g, e_s(s), z^a]
        *_split("representation.agent_stochastic_posterior_model.dists.0", "agent.agent_posterior.first",
                [(DENSE, d), (DENSE, h)]),
        *_linear("representation.agent_stochastic_posterior_model.dists.2", "agent.agent_posterior.out"),
        *_split("representation.global_stochastic_posterior_model.dists.0", "global_posterior.first",
                [(DENSE, d), (DENSE, h), (ONEHOT, z)]),
        *_linear("representation.global_stochastic_posterior_model.dists.2", "global_posterior.out"),
        # heads: reward on agent features, continuation and action mask on both levels
        *_dense3("reward_model.model", "reward_head", feat),
        *_dense3("pcont.model", "cont_head", both),
        *_dense3("av_action.model", "avail_head", both),
        # action decoder: q_features (Linear ELU Linear) -> ReLU -> q_action, on the obs decoder's hidden
        *_split("q_features.model.0", "action_decoder.first", [(DENSE, h)]),
        *_linear("q_features.model.2", "action_decoder.rest.0"),
        *_linear("q_action", "action_decoder.rest.2"),
    ]


def actor_pairs(latent: int, deter: int) -> list[ParamPair]:
    """``networks/dreamer/action.py`` ``Actor`` -> ``mabl.models.actor_critic.Actor``."""
    return _dense3("feedforward_model", "net", [(ONEHOT, latent), (DENSE, deter)])


_ATTENTION = ("self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
              "self_attn.out_proj.bias", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
              "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias")


def critic_pairs(latent: int, deter: int) -> list[ParamPair]:
    """``networks/dreamer/critic.py`` ``MADDPGCritic(global_feat=True)`` -> ``AttentionCritic``."""
    feat = [(ONEHOT, latent), (DENSE, deter)]
    return [
        *_split("embed", "embed", feat + feat),
        *[ParamPair(f"_attention_stack.encoder.layers.0.{n}", f"attention.{n}") for n in _ATTENTION],
        *_linear("feedforward_model.0", "out.0"),
        *_linear("feedforward_model.2", "out.2"),
    ]


def mamba_world_model_pairs(n_actions: int, latent: int, deter: int, hidden: int, mixer_layers: int) -> list[ParamPair]:
    """MAMBA's ``DreamerModel`` (jbr-ai-labs/mamba ``agent/models/DreamerModel.py``) -> ours with
    ``--algo mamba``: one level, the agents' GRU inputs through a transformer over the agent axis
    (``rnns.py`` ``RSSMTransition._attention_stack`` -> ``agent.mixer``)."""
    z, d, h, a = latent, deter, hidden, n_actions
    feat = [(ONEHOT, z), (DENSE, d)]
    mixer = [ParamPair(f"transition._attention_stack.encoder.layers.{i}.{n}", f"agent.mixer.encoder.layers.{i}.{n}")
             for i in range(mixer_layers) for n in _ATTENTION]
    return [
        *_encoder("observation_encoder", "agent.obs_encoder"),
        *_split("observation_decoder.fc1.0", "obs_decoder_body.first", feat),
        *_linear("observation_decoder.fc1.2", "obs_decoder_body.rest.0"),
        *_linear("observation_decoder.fc1.4", "obs_decoder_body.rest.2"),
        *_linear("observation_decoder.fc2", "obs_decoder_out"),
        *_gru("transition._cell", "agent.agent_gru"),
        *_split("transition._rnn_input_model.0", "agent.agent_input", [(DENSE, a), (ONEHOT, z)]),
        *mixer,
        *_split("transition._stochastic_prior_model.dists.0", "agent_prior.first", [(DENSE, d)]),
        *_linear("transition._stochastic_prior_model.dists.2", "agent_prior.out"),
        *_split("representation._stochastic_posterior_model.dists.0", "agent.agent_posterior.first",
                [(DENSE, d), (DENSE, h)]),
        *_linear("representation._stochastic_posterior_model.dists.2", "agent.agent_posterior.out"),
        *_dense3("reward_model.model", "reward_head", feat),
        *_dense3("pcont.model", "cont_head", feat),
        *_dense3("av_action.model", "avail_head", feat),
        *_split("q_features.model.0", "action_decoder.first", [(DENSE, h)]),
        *_linear("q_features.model.2", "action_decoder.rest.0"),
        *_linear("q_action", "action_decoder.rest.2"),
    ]


def mamba_critic_pairs(latent: int, deter: int) -> list[ParamPair]:
    """MAMBA's ``AugmentedCritic`` (``networks/dreamer/critic.py``) -> ``AttentionCritic(levels=1)``."""
    return [
        *_split("embed", "embed", [(ONEHOT, latent), (DENSE, deter)]),
        *[ParamPair(f"_attention_stack.encoder.layers.0.{n}", f"attention.{n}") for n in _ATTENTION],
        *_linear("feedforward_model.0", "out.0"),
        *_linear("feedforward_model.2", "out.2"),
    ]


MAMBA_UNUSED: dict[str, dict[str, str]] = {
    "world_model": {},
    "actor": {},
    "critic": {
        "prior.": "built in critic.py:26 (AugmentedCritic.__init__) but never called in its forward: no gradient, no effect",
    },
}
"""MAMBA's parameters without a counterpart of ours, by prefix, with the reason."""


RELEASED_UNUSED: dict[str, dict[str, str]] = {
    "world_model": {
        "state_decoder.": "built in DreamerModel.py:38 (Decoder of the global features) but its loss is commented "
                          "out in loss.py:45-48 and nothing else calls it: no gradient, no effect",
    },
    "actor": {},
    "critic": {
        "prior.": "built in critic.py:26 (MADDPGCritic.__init__, build_model(in_dim, 1, 3, ..)) but never called in "
                  "its forward: no gradient, no effect",
    },
}
"""Released parameters without a counterpart of ours, by parameter-name prefix, with the reason."""


def _unused(name: str, unused: dict[str, str]) -> bool:
    return any(name.startswith(prefix) for prefix in unused)


def check_coverage(released: nn.Module, ours: nn.Module, pairs: list[ParamPair], unused: dict[str, str]) -> list[str]:
    """Problems of a name map (empty when it is complete and consistent): a released parameter
    neither copied nor listed unused, a parameter of ours not written exactly once, a name that
    does not exist, a block of the wrong shape, or released columns copied twice or left out."""
    rel = dict(released.named_parameters())
    our = dict(ours.named_parameters())
    problems = []
    written: dict[str, int] = {}
    columns: dict[str, list[tuple[int, int]]] = {}
    for pair in pairs:
        if pair.released not in rel:
            problems.append(f"released parameter {pair.released} does not exist")
            continue
        if pair.ours not in our:
            problems.append(f"parameter {pair.ours} of ours does not exist")
            continue
        written[pair.ours] = written.get(pair.ours, 0) + 1
        block = pair.take(rel[pair.released])
        if tuple(block.shape) != tuple(our[pair.ours].shape):
            problems.append(f"{pair.released}{'' if pair.start is None else f'[:, {pair.start}:{pair.stop}]'} "
                            f"{tuple(block.shape)} -> {pair.ours} {tuple(our[pair.ours].shape)}")
        width = rel[pair.released].shape[1] if rel[pair.released].dim() > 1 else 1
        columns.setdefault(pair.released, []).append((pair.start or 0, width if pair.stop is None else pair.stop))
    for name in rel:
        if name not in columns and not _unused(name, unused):
            problems.append(f"released parameter {name} has no counterpart of ours and is not listed as unused")
    for name, spans in columns.items():
        width = rel[name].shape[1] if rel[name].dim() > 1 else 1
        spans = sorted(spans)
        if spans[0][0] != 0 or spans[-1][1] != width or any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
            problems.append(f"released parameter {name}: columns {spans} do not tile 0..{width} exactly once")
    for name in our:
        if written.get(name, 0) != 1:
            problems.append(f"parameter {name} of ours is written {written.get(name, 0)} times")
    return problems


@torch.no_grad()
def copy_weights(released: nn.Module, ours: nn.Module, pairs: list[ParamPair]) -> None:
    """Copy every mapped released parameter into ours (shapes checked by :func:`check_coverage` first)."""
    rel = dict(released.named_parameters())
    our = dict(ours.named_parameters())
    for pair in pairs:
        our[pair.ours].copy_(pair.take(rel[pair.released]))
