"""``mabl export --format onnx``: one agent's execution path as an ONNX graph.

The graph is what one agent runs at execution time, with its recurrent state as explicit inputs
and outputs, so that any ONNX runtime can act without mabl or PyTorch (:mod:`mabl.onnx_policy` is
a numpy + onnxruntime runner). The batch axis ``B`` is free: one agent (B = 1) or all agents of a
team at once as independent rows (agents never mix inside the graph).

World-model algorithms (``mabl``, ``mabl-sg``, ``dreamer``): observation encoder, agent GRU step,
agent posterior, actor. Inputs::

    obs [B, O] float32            the agent's observation
    prev_action [B, A] float32    its previous action as the world model saw it: one-hot (discrete)
                                  or clip(u, -1, 1) of the raw Gaussian sample (continuous); zeros
                                  at an episode's start
    h [B, deter], z [B, C*K]      its recurrent state h^a and latent z^a; zeros at an episode's start
    noise [B, C] float32          one uniform number in [0, 1) per categorical of z^a
    deterministic [1] float32     1: z^a is each categorical's most likely class (the PyTorch
                                  policy's deterministic path); 0: z^a is sampled by inverse CDF
                                  with ``noise`` (the first class whose cumulative probability
                                  reaches the number, as mabl samples)
    avail [B, A] float32          discrete tasks with action masks only: 1 available, 0 not

Outputs: ``probs [B, A]`` (discrete; masked actions get probability 0) or ``mean [B, D]`` and
``std [D]`` (continuous, normalised units), then ``h_next``, ``z_next``. Sampling of z^a is done
from the uniform ``noise`` input rather than a random op inside the graph, so the caller owns the
random numbers (reproducible with any RNG) and the graph is a pure function. The action itself is
drawn by the caller from ``probs`` or ``mean``/``std``.

``mappo``: its MLP actor; inputs ``obs [B, O]``, ``agent [B, N]`` (one-hot agent index, which
the actor reads) and ``avail`` when masked; outputs ``probs`` or ``mean``/``std``. No state.

``rmappo`` (export kind ``gru``): its recurrent actor; inputs ``obs``, ``agent`` as for ``mappo``,
``h [B, hidden]`` (the agent's GRU state; zeros at an episode's start) and ``avail`` when masked;
outputs ``probs`` or ``mean``/``std``, then ``h_next``.
``qmix``: one agent's step of its recurrent Q-network (:class:`mabl.qmix_policy.QmixStep`): inputs
``obs``, ``prev_action`` (one-hot), ``agent`` (one-hot index), ``h`` and ``avail`` when masked;
outputs ``probs`` (softmax of the masked Q-values; greedy = its argmax), ``q``, ``h_next``.

``mamba`` and ``mag`` mix all agents' inputs in their recurrent model (centralized execution): refused.

The graph's metadata (``metadata_props["mabl"]``, JSON) holds the format, version, algorithm,
sizes, action bounds, mask semantics and the names above.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mabl.actions import action_std
from mabl.checkpoint import current_umask
from mabl.envs.base import EnvSpec
from mabl.errors import MablError
from mabl.models.actor_critic import MASKED_LOGIT
from mabl.models.nets import INPUT_TRANSFORMS, SplitLinear, SplitMLP

GRAPHS = ("latent", "mlp", "gru", "qmix")
"""The export kinds (:data:`mabl.algo.registry.EXPORT_KINDS`) with an ONNX graph: ``latent`` =
:class:`AgentStep` (one agent's recurrent step), ``mlp`` = :class:`MlpStep`, ``gru`` =
:class:`mabl.gru_policy.GruStep`, ``qmix`` = :class:`mabl.qmix_policy.QmixStep`."""

ONNX_FORMAT = "mabl-onnx-policy"
ONNX_VERSION = 1
OPSET = 18


def plain_split_linear(layer: SplitLinear, *xs: torch.Tensor) -> torch.Tensor:
    """``layer(*xs)`` with plain matrix products (one-hot parts as ``z @ table``, not gathers)."""
    out = layer.bias
    for i, (x, w) in enumerate(zip(xs, layer.weights)):
        out = out + (x @ w if i in layer.onehot else F.linear(x, w))
    return out


def plain_split_mlp(net: SplitMLP, *xs: torch.Tensor) -> torch.Tensor:
    return net.rest(net.act(plain_split_linear(net.first, *xs)))


class AgentStep(nn.Module):
    """One agent's step of a world-model policy (module docstring), in plain exportable ops."""

    def __init__(self, encoder, actor, spec: EnvSpec, input_transform: str, n_categoricals: int, n_classes: int):
        super().__init__()
        self.encoder, self.actor = encoder, actor
        self.transform = INPUT_TRANSFORMS[input_transform]
        self.masked = spec.discrete and spec.has_action_mask
        self.continuous = not spec.discrete
        self.shape = (n_categoricals, n_classes)
        self.register_buffer("classes", torch.arange(n_classes), persistent=False)

    def forward(self, obs, prev_action, h, z, noise, deterministic, avail=None):
        enc = self.encoder
        h_next = enc.agent_gru(torch.relu(plain_split_linear(enc.agent_input, prev_action, z)), h)
        embed = enc.obs_encoder(self.transform(obs))
        logits = enc.agent_posterior.out(torch.relu(plain_split_linear(enc.agent_posterior.first, h_next, embed)))
        logits = logits.unflatten(-1, self.shape)  # [B, C, K]
        probs = torch.softmax(logits, -1)
        sampled = (probs.cumsum(-1) < noise.unsqueeze(-1)).sum(-1).clamp(max=self.shape[1] - 1)
        index = torch.where(deterministic > 0.5, logits.argmax(-1), sampled)
        z_next = (index.unsqueeze(-1) == self.classes).float().flatten(-2)
        out = plain_split_mlp(self.actor.net, z_next, h_next).float()
        if self.continuous:
            return out, action_std(self.actor.log_std), h_next, z_next
        if self.masked:
            out = torch.where(avail > 0.5, out, torch.full_like(out, MASKED_LOGIT))
        return torch.softmax(out, -1), h_next, z_next


class MlpStep(nn.Module):
    """The MAPPO MLP actor: LayerNorm(obs ++ one-hot agent) -> MLP -> probs or mean/std."""

    def __init__(self, actor, spec: EnvSpec):
        super().__init__()
        self.actor = actor
        self.masked = spec.discrete and spec.has_action_mask
        self.continuous = not spec.discrete

    def forward(self, obs, agent, avail=None):
        out = self.actor.net(self.actor.norm(torch.cat([obs, agent], -1)))
        if self.continuous:
            return out, action_std(self.actor.log_std)
        if self.masked:
            out = torch.where(avail > 0.5, out, torch.full_like(out, MASKED_LOGIT))
        return (torch.softmax(out, -1),)


def _metadata(algo: str, spec: EnvSpec, inputs: list[str], outputs: list[str], extra: dict[str, Any]) -> dict:
    return {
        "format": ONNX_FORMAT, "version": ONNX_VERSION, "algo": algo, "execution": "decentralized",
        "spec": {"name": spec.name, "n_agents": spec.n_agents, "obs_dim": spec.obs_dim, "discrete": spec.discrete,
                 "n_actions": spec.n_actions, "action_dim": spec.action_dim, "action_low": spec.action_low,
                 "action_high": spec.action_high, "has_action_mask": spec.has_action_mask},
        "inputs": inputs, "outputs": outputs,
        "mask": ("avail[b, a] = 1 if action a is available, 0 if not; unavailable actions get probability 0"
                 if spec.discrete and spec.has_action_mask else None),
        "continuous_actions": (None if spec.discrete else
                               "u = mean + std * N(0, 1) (or mean when deterministic); the env action is "
                               "action_low + (clip(u, -1, 1) + 1) * (action_high - action_low) / 2; "
                               "prev_action of the next step is clip(u, -1, 1)"),
        **extra,
    }


EXPORTER = "auto"
"""Which torch exporter writes the graph: "torchscript" (torch's older exporter: a fraction of a
second for these small graphs), "dynamo" (``torch.onnx.export(dynamo=True)``, torch's default since
2.9: seconds, it traces with ``torch.export``), or "auto": torchscript where this torch still has it,
else dynamo. Both are tested against the PyTorch policy."""


def _to_onnx(module: nn.Module, args: tuple, names: list[str], outputs: list[str], exporter: str):
    """The ONNX ModelProto of ``module`` on example ``args``, with a dynamic batch axis."""
    import onnx

    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the exporters log progress and notes on optional packages
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # (the torchscript exporter is deprecated in favour of dynamo)
            if exporter in ("auto", "torchscript"):
                try:
                    buffer = io.BytesIO()
                    torch.onnx.export(module, args, buffer, input_names=names, output_names=outputs,
                                      opset_version=OPSET, dynamo=False,
                                      dynamic_axes={n: {0: "batch"} for n in [*names, *outputs]
                                                    if n not in ("deterministic", "std")})
                    return onnx.load_model_from_string(buffer.getvalue())
                except Exception:
                    if exporter == "torchscript":
                        raise
            batch = torch.export.Dim("batch", min=1, max=1 << 16)
            dynamic = {name: ({0: batch} if name != "deterministic" else None) for name in names}
            program = torch.onnx.export(module, args, input_names=names, output_names=outputs,
                                        dynamic_shapes=dynamic, opset_version=OPSET, dynamo=True,
                                        external_data=False, verbose=False)
            return program.model_proto
    finally:
        quiet.setLevel(level)


def export_onnx(agent, cfg, spec: EnvSpec, out: str | os.PathLike) -> dict:
    """Write the ONNX graph of ``agent``'s decentralized policy to ``out``; returns its metadata."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs onnx and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError:
        raise MablError("--format onnx needs the onnx extra: pip install 'mabl[onnx]' (onnx, onnxruntime, "
                        "onnxscript)") from None
    from mabl.algo.registry import algorithm

    algo = cfg.algo
    entry = algorithm(algo)
    if entry.centralized_policy or entry.export not in GRAPHS:  # mamba, mag (registry entries)
        raise MablError(f"{algo}'s policy is joint (its recurrent model mixes every agent's input over a transformer), "
                        "so it has no per-agent ONNX graph; export it with --format torch")
    b = 2  # example batch; the batch axis is exported as dynamic
    masked = spec.discrete and spec.has_action_mask
    if entry.export == "mlp":
        module = MlpStep(agent.actor, spec).eval()
        names = ["obs", "agent"] + (["avail"] if masked else [])
        args = [torch.zeros(b, spec.obs_dim), torch.eye(spec.n_agents)[:1].expand(b, -1).contiguous()]
        extra: dict[str, Any] = {}
    elif entry.export == "gru":
        from mabl.gru_policy import GruStep

        module = GruStep(agent.actor, spec).eval()
        names = ["obs", "agent", "h"] + (["avail"] if masked else [])
        args = [torch.zeros(b, spec.obs_dim), torch.eye(spec.n_agents)[:1].expand(b, -1).contiguous(),
                torch.zeros(b, agent.actor.hidden)]
        extra = {"gru_hidden": agent.actor.hidden}
    elif entry.export == "qmix":
        from mabl.qmix_policy import QmixStep

        module = QmixStep(agent.agent, agent.shape, spec).eval()
        names, args = list(module.inputs) + (["avail"] if masked else []), module.example_args(spec, b)
        extra = {"deter": agent.shape.hidden}
    else:
        m = cfg.model
        encoder = agent.world_model.agent
        module = AgentStep(encoder, agent.actor, spec, m.input_transform, m.n_categoricals, m.n_classes).eval()
        names = ["obs", "prev_action", "h", "z", "noise", "deterministic"] + (["avail"] if masked else [])
        args = [torch.zeros(b, spec.obs_dim), torch.zeros(b, spec.action_size), torch.zeros(b, encoder.deter),
                torch.zeros(b, encoder.latent_dim), torch.full((b, m.n_categoricals), 0.5), torch.ones(1)]
        extra = {"deter": encoder.deter, "n_categoricals": m.n_categoricals, "n_classes": m.n_classes,
                 "latent_dim": encoder.latent_dim}
    if masked:
        args.append(torch.ones(b, spec.n_actions))
    outputs = (["mean", "std"] if not spec.discrete else ["probs"]) + {"mlp": [], "gru": ["h_next"]}.get(
        entry.export, ["h_next", "z_next"])
    if entry.export == "qmix":
        outputs = list(module.outputs)
    meta = _metadata(algo, spec, names, outputs, extra)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = _to_onnx(module, tuple(args), names, outputs, EXPORTER)
    entry = model.metadata_props.add()
    entry.key, entry.value = "mabl", json.dumps(meta)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        import onnx

        onnx.save_model(model, tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp made it 0600; the file gets what open() would give it
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return meta

