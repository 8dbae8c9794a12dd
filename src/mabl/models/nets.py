"""Small building blocks shared by every network."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """``layers`` hidden Linear layers of width ``hidden`` with ``act`` after each, then a linear output."""
    modules: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), act()]
        width = hidden
    modules.append(nn.Linear(width, out_dim))
    return nn.Sequential(*modules)


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform on every weight matrix (GRU cells included), zero biases (released code).

    :class:`SplitLinear` layers initialise themselves over their whole concatenated matrix and are
    left as they are (initialising each part alone would use the wrong fan-in).
    """
    split_params = {id(p) for m in module.modules() if isinstance(m, SplitLinear) for p in m.parameters()}
    for name, param in module.named_parameters():
        if id(param) in split_params:
            continue
        if param.dim() >= 2:
            nn.init.xavier_uniform_(param)
        elif "bias" in name:
            nn.init.zeros_(param)


class _OneHotMatmul(torch.autograd.Function):
    """``z @ table`` for a latent ``z [R, C*K]`` with at most one non-zero per categorical, given by
    its flat class indices ``[R, C]`` and their values ``[R, C]`` (1 for a one-hot sample, 0 for
    the all-zero initial state); ``table`` is the weight stored as ``[C*K, out]``.

    Forward: a weighted sum of C table rows (embedding-bag gather) instead of a C*K-wide matmul.
    Backward: exactly the dense gradients, ``dz = g @ table.T`` (the straight-through path) and
    ``dtable = z.T @ g``. Only the forward's cost differs, not its value.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, table: torch.Tensor, index: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(table, index, value)
        device = table.device.type
        # Under autocast the backward matmuls run in the autocast dtype, as autocast's own linear does.
        ctx.compute_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else table.dtype
        return F.embedding_bag(index, table, mode="sum", per_sample_weights=value)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        table, index, value = ctx.saved_tensors
        dtype = ctx.compute_dtype
        grad = grad.to(dtype)
        grad_z = (grad @ table.to(dtype).t()).to(table.dtype) if ctx.needs_input_grad[0] else None
        grad_table = None
        if ctx.needs_input_grad[1]:
            dense = _scratch((index.shape[0], table.shape[0]), dtype, grad.device).zero_()
            grad_table = (dense.scatter_(1, index, value.to(dtype)).t() @ grad).to(table.dtype)
        return grad_z, grad_table, None, None


_SCRATCH: dict[tuple, torch.Tensor] = {}


def _scratch(shape: tuple[int, int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A reused buffer for the dense one-hot of the weight gradient.

    Freshly allocated multi-MB CPU tensors cost far more than their arithmetic here (measured
    32-40 ms to zero a new [6000, 1024] tensor inside a PPO epoch, 0.3 ms to re-zero a kept one).
    The buffer is dead once the matmul that reads it returns, and backward passes run one at a
    time, so one buffer per shape is safe. Only a few shapes occur per run; the cache is cleared
    when it grows past a handful of entries.
    """
    if torch.compiler.is_compiling():  # a compiled graph manages its own buffers (and must not mutate globals)
        return torch.empty(shape, dtype=dtype, device=device)
    key = (shape, dtype, device)
    buf = _SCRATCH.get(key)
    if buf is None:
        if len(_SCRATCH) >= 8:
            _SCRATCH.clear()
        buf = _SCRATCH[key] = torch.empty(shape, dtype=dtype, device=device)
    return buf


def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) log(1 + |x|)``: squashes large magnitudes, near identity around 0 (DreamerV3)."""
    return torch.sign(x) * torch.log1p(x.abs())


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


INPUT_TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"none": identity, "symlog": symlog}
"""``model.input_transform``: applied to observations and states wherever the world model reads them."""


def latent_index(z: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class index per categorical ``[..., C]`` (int64) of a one-hot latent ``[..., C*K]``."""
    return z.detach().unflatten(-1, (-1, n_classes)).argmax(-1)


def onehot_matmul(z: torch.Tensor, table: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``z @ table`` (table ``[C*K, out]``) for a categorical latent given as one-hot floats
    ``[..., C*K]`` (gradients flow to them, straight-through; an all-zero categorical contributes
    zero) or as class indices ``[..., C]`` (int)."""
    if z.is_floating_point():
        groups = z.detach().reshape(-1, z.shape[-1] // n_classes, n_classes)
        value, index = groups.max(-1)  # [R, C]: the non-zero entry's value (0 if none) and class
        flat_z = z.reshape(-1, z.shape[-1])
        lead = z.shape[:-1]
    else:
        lead, index = z.shape[:-1], z.reshape(-1, z.shape[-1])
        value = torch.ones(index.shape, dtype=table.dtype, device=z.device)
        flat_z = z.new_zeros(0)
    flat_index = index + torch.arange(index.shape[-1], device=z.device) * n_classes
    out = _OneHotMatmul.apply(flat_z, table, flat_index, value.to(table.dtype))
    return out.view(*lead, table.shape[1])


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
        self.bias = nn.Parameter(torch.zeros(out_dim))

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


class SplitMLP(nn.Module):
    """An MLP whose first layer is a :class:`SplitLinear` over several inputs (e.g. ``z, h``)."""

    def __init__(self, in_dims: list[int], hidden: int, out_dim: int, layers: int,
                 act: type[nn.Module] = nn.ReLU, onehot: dict[int, int] | None = None):
        super().__init__()
        self.first = SplitLinear(in_dims, hidden, onehot)
        self.act = act()
        self.rest = mlp(hidden, hidden, out_dim, layers - 1, act)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.rest(self.act(self.first(*xs)))


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
