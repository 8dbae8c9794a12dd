"""Small building blocks shared by every network."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mabl.models.onehot import onehot_matmul


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """``layers`` hidden Linear layers of width ``hidden`` with ``act`` after each, then a linear output."""
    modules: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), act()]
        width = hidden
    modules.append(nn.Linear(width, out_dim))
    return nn.Sequential(*modules)


def xavier_init(module: nn.Module, zero_bias: bool = False) -> None:
    """Xavier-uniform on every weight matrix (GRU cells included); biases keep PyTorch's default
    initialisation (released code), or are zeroed with ``zero_bias`` (``--model.bias_init zeros``).

    :class:`SplitLinear` layers initialise their weights over their whole concatenated matrix and are
    left as they are (initialising each part alone would use the wrong fan-in); their bias too,
    unless ``zero_bias``.
    """
    split_params = {id(p) for m in module.modules() if isinstance(m, SplitLinear) for p in m.parameters()}
    for name, param in module.named_parameters():
        if param.dim() >= 2:
            if id(param) not in split_params:
                nn.init.xavier_uniform_(param)
        elif zero_bias and name.rsplit(".", 1)[-1].startswith("bias"):
            nn.init.zeros_(param)


def orthogonal_init(module: nn.Module, gain: float = 1.0) -> None:
    """A (semi-)orthogonal matrix, times ``gain``, in every weight matrix of ``module``; biases and
    1-d parameters are left alone (MAG-code DreamerLearner.py ``initialize_weights(mode='ortho')``
    on the actor). A :class:`SplitLinear`'s parts are drawn as one ``[out, sum(in_dims)]`` matrix."""
    split = [m for m in module.modules() if isinstance(m, SplitLinear)]
    split_params = {id(p) for m in split for p in m.parameters()}
    for param in module.parameters():
        if param.dim() >= 2 and id(param) not in split_params:
            nn.init.orthogonal_(param, gain=gain)
    for layer in split:
        full = nn.init.orthogonal_(torch.empty(layer.bias.shape[0], sum(layer.in_dims)), gain=gain)
        with torch.no_grad():
            for i, (weight, chunk) in enumerate(zip(layer.weights, full.split(layer.in_dims, dim=1))):
                weight.copy_(chunk.t() if i in layer.onehot else chunk)


def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) log(1 + |x|)``: squashes large magnitudes, near identity around 0 (DreamerV3)."""
    return torch.sign(x) * torch.log1p(x.abs())


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


INPUT_TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"none": identity, "symlog": symlog}
"""``model.input_transform``: applied to observations and states wherever the world model reads them."""


class SplitLinear(nn.Module):
    """A Linear layer over the concatenation of several inputs, applied part by part.

    ``SplitLinear([a, b], out)(x_a, x_b)`` equals ``Linear(a + b, out)(cat([x_a, x_b]))`` (one
    Xavier-uniform initialisation over the whole ``[out, a + b]`` matrix), but each input has its
    own parameter and can be multiplied separately with :meth:`part`. That lets the recurrent
    filter multiply the inputs that do not depend on the recurrence (observation and state
    embeddings, actions) for all time steps at once, outside the sequential loop, and multiply a
    part shared by all agents once instead of N times. Parts listed in ``onehot`` (index -> classes
    per categorical) are categorical latents: their weight is stored transposed, ``[C*K, out]``,
    as a gather table (:func:`onehot_matmul`). Separate leaf parameters also let autocast cache
    their low-precision copies.
    """

    def __init__(self, in_dims: list[int], out_dim: int, onehot: dict[int, int] | None = None):
        super().__init__()
        self.in_dims = list(in_dims)
        self.onehot = dict(onehot or {})
        bound = math.sqrt(6.0 / (sum(in_dims) + out_dim))
        full = torch.empty(out_dim, sum(in_dims)).uniform_(-bound, bound)
        chunks = full.split(self.in_dims, dim=1)
        self.weights = nn.ParameterList(
            nn.Parameter(c.t().contiguous() if i in self.onehot else c.contiguous()) for i, c in enumerate(chunks))
        # PyTorch's default Linear bias over the whole fan-in: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        fan_bound = 1.0 / math.sqrt(sum(in_dims))
        self.bias = nn.Parameter(torch.empty(out_dim).uniform_(-fan_bound, fan_bound))

    @property
    def weight(self) -> torch.Tensor:
        """The equivalent ``[out, sum(in_dims)]`` Linear weight (a new tensor; for inspection)."""
        return torch.cat([w.t() if i in self.onehot else w for i, w in enumerate(self.weights)], dim=1)

    def part(self, index: int, x: torch.Tensor, bias: bool = False) -> torch.Tensor:
        """``x @ W_index.T`` (+ bias when asked): the contribution of input ``index``."""
        if index in self.onehot:
            out = onehot_matmul(x, self.weights[index], self.onehot[index])
            return out + self.bias if bias else out
        return F.linear(x, self.weights[index], self.bias if bias else None)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = self.part(0, xs[0], bias=True)
        for i, x in enumerate(xs[1:], start=1):
            out = out + self.part(i, x)
        return out


def fused_split_linears(layers: dict[str, tuple[SplitLinear, tuple[torch.Tensor, ...]]]) -> dict[str, torch.Tensor]:
    """The outputs of several :class:`SplitLinear` layers ``{name: (layer, inputs)}``, each equal to
    ``layer(*inputs)``, with every input tensor that several layers read multiplied once.

    Inputs are grouped by identity (the same tensor object). A categorical latent read by k
    layers becomes one gather over the k tables side by side, and its backward one
    ``[R, k*out] x [k*out, C*K]`` matmul and one dense one-hot instead of k of each (plus k-1
    full-size gradient sums); a dense input becomes one matmul over the stacked weights.
    """
    groups: dict[int, list[tuple[str, int]]] = {}
    tensors: dict[int, torch.Tensor] = {}
    for name, (layer, inputs) in layers.items():
        assert len(inputs) == len(layer.in_dims), (name, len(inputs), layer.in_dims)
        for i, x in enumerate(inputs):
            groups.setdefault(id(x), []).append((name, i))
            tensors[id(x)] = x
    out = {name: layer.bias for name, (layer, _) in layers.items()}
    for key, users in groups.items():
        x = tensors[key]
        if len(users) == 1:
            name, i = users[0]
            parts = [layers[name][0].part(i, x)]
        else:
            weights = [layers[name][0].weights[i] for name, i in users]
            first_layer, first_index = layers[users[0][0]][0], users[0][1]
            if first_index in first_layer.onehot:  # tables [C*K, out]: side by side along out
                wide = onehot_matmul(x, torch.cat(weights, 1), first_layer.onehot[first_index])
            else:  # Linear weights [out, in]: stacked along out
                wide = F.linear(x, torch.cat(weights, 0))
            parts = wide.split([layers[name][0].bias.shape[0] for name, _ in users], -1)
        for (name, _), part in zip(users, parts):
            out[name] = part + out[name]
    return out


class SplitMLP(nn.Module):
    """An MLP whose first layer is a :class:`SplitLinear` over several inputs (e.g. ``z, h``).

    ``act`` follows the first layer; ``rest_act`` (default ``act``) the later hidden layers."""

    def __init__(self, in_dims: list[int], hidden: int, out_dim: int, layers: int,
                 act: type[nn.Module] = nn.ReLU, onehot: dict[int, int] | None = None,
                 rest_act: type[nn.Module] | None = None):
        super().__init__()
        self.first = SplitLinear(in_dims, hidden, onehot)
        self.act = act()
        self.rest = mlp(hidden, hidden, out_dim, layers - 1, rest_act or act)

    def from_pre(self, pre: torch.Tensor) -> torch.Tensor:
        """Finish the MLP from its first layer's output (e.g. from :func:`fused_split_linears`)."""
        return self.rest(self.act(pre))

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.from_pre(self.first(*xs))


class LatentHead(nn.Module):
    """Prior/posterior network: SplitLinear(inputs -> hidden) ReLU Linear(hidden -> C*K) (code).

    Returns logits shaped ``[..., C, K]``. ``from_pre`` finishes the head from an already summed
    first-layer pre-activation (see :class:`SplitLinear`).
    """

    def __init__(self, in_dims: list[int], hidden: int, n_categoricals: int, n_classes: int,
                 onehot: dict[int, int] | None = None):
        super().__init__()
        self.first = SplitLinear(in_dims, hidden, onehot)
        self.out = nn.Linear(hidden, n_categoricals * n_classes)
        self.shape = (n_categoricals, n_classes)

    def from_pre(self, pre: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(pre)).unflatten(-1, self.shape)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.from_pre(self.first(*xs))


def sinusoidal_encoding(n_positions: int, dim: int) -> torch.Tensor:
    """The transformer's sine/cosine position table ``[n_positions, dim]`` (agent-index encoding)."""
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_positions, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table
