"""Products of one-hot categorical latents with weight tables, without materialising the one-hot
matmul: a row gather per categorical in the forward pass, the straight-through gradient and a
scatter-add weight gradient in the backward pass (the same values as ``z @ W``; tested in
tests/unit/test_nets.py)."""

from __future__ import annotations

import warnings
import weakref

import torch
import torch.nn.functional as F

from mabl.actions import one_hot


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
        ctx.compute_dtype = _compute_dtype(table)
        return F.embedding_bag(index, table, mode="sum", per_sample_weights=value)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        table, index, value = ctx.saved_tensors
        dtype = ctx.compute_dtype
        grad = grad.to(dtype)
        grad_z = _straight_through_grad(grad, table) if ctx.needs_input_grad[0] else None
        grad_table = None
        if ctx.needs_input_grad[1]:
            grad_table = onehot_weight_grad(index, value, grad, table.shape[0]).to(table.dtype)
        return grad_z, grad_table, None, None


def _compute_dtype(table: torch.Tensor) -> torch.dtype:
    """The dtype of a one-hot product's backward matmuls: autocast's while it is on (as autocast's
    own linear would use; one-hot is exact in bf16), else the table's."""
    device = table.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else table.dtype


def _straight_through_grad(grad: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``dz = grad @ table.T`` in ``grad``'s dtype, returned in the table's: the dense gradient of
    the one-hot input (the straight-through path)."""
    return (grad @ _cast_cached(table, grad.dtype).t()).to(table.dtype)


SPARSE_ONEHOT_GRAD: bool | None = None
"""How :func:`onehot_weight_grad` forms one-hot table gradients: None picks the sparse product on
the CPU and the dense one elsewhere; True / False force one form everywhere (tests run the GPU's
form on the CPU with False)."""


def onehot_weight_grad(index: torch.Tensor, value: torch.Tensor, grad: torch.Tensor, n_rows: int,
                       sparse: bool | None = None) -> torch.Tensor:
    """``Z^T @ grad`` for the sparse one-hot ``Z [R, n_rows]`` with ``Z[r, index[r, c]] = value[r, c]``:
    the gradient of a gather table ``[n_rows, out]`` from the output gradient ``grad [R, out]``.

    On the CPU, as a sparse (CSR) matrix product in fp32: C nonzeros per row instead of C*K, so
    1/K of the multiply-adds of the dense product, exact fp32 sums whatever the autocast dtype,
    and 2.2x faster than the dense bf16 matmul at the paper's sizes (R = 2,160 rows, 32 x 32
    classes, out 256-1024: 3.4 -> 1.7 ms and 11.9 -> 5.4 ms). Elsewhere (GPU), the dense
    product with a scattered one-hot in ``grad``'s dtype. ``sparse`` (else
    :data:`SPARSE_ONEHOT_GRAD`) overrides the choice.
    """
    if sparse is None:
        sparse = SPARSE_ONEHOT_GRAD if SPARSE_ONEHOT_GRAD is not None else grad.device.type == "cpu"
    if not sparse:
        dense = _scratch((index.shape[0], n_rows), grad.dtype, grad.device).zero_()
        return dense.scatter_(1, index, value.to(grad.dtype)).t() @ grad
    flat = index.reshape(-1)
    order = torch.argsort(flat, stable=True)  # entries grouped by table row (CSR rows of Z^T)
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=grad.device)
    torch.cumsum(torch.bincount(flat, minlength=n_rows), 0, out=crow[1:])
    with warnings.catch_warnings():  # torch warns once that CSR support is "beta"; products are exact
        warnings.simplefilter("ignore")
        z_t = torch.sparse_csr_tensor(crow, order // index.shape[1], value.reshape(-1)[order].float(),
                                      (n_rows, index.shape[0]))
    with torch.autocast(grad.device.type, enabled=False):  # (a backward may run inside autocast; fp32 product)
        return z_t @ grad.float()


_CASTS: dict[tuple[int, torch.dtype], tuple[weakref.ref, int, torch.Tensor]] = {}


def _cast_cached(table: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``table.to(dtype)``, reused while ``table`` is the same object, unmodified (its version
    counter changes with every in-place update, e.g. an optimizer step).

    The recurrent filter multiplies the same weight table at every step, so without this its
    backward casts it ~20 times per update. Like autocast's own weight cache, but also valid
    inside backward.
    """
    if table.dtype == dtype:
        return table
    key = (id(table), dtype)
    hit = _CASTS.get(key)
    if hit is not None and hit[0]() is table and hit[1] == table._version:
        return hit[2]
    if len(_CASTS) >= 64:
        _CASTS.clear()
    cast = table.detach().to(dtype)
    _CASTS[key] = (weakref.ref(table), table._version, cast)
    return cast


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


def latent_index(z: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class index per categorical ``[..., C]`` (int64) of a one-hot latent ``[..., C*K]``."""
    return z.detach().unflatten(-1, (-1, n_classes)).argmax(-1)


def onehot_matmul(z: torch.Tensor, table: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``z @ table`` (table ``[C*K, out]``) for a categorical latent given as one-hot floats
    ``[..., C*K]`` (gradients flow to them, straight-through; an all-zero categorical contributes
    zero) or as class indices ``[..., C]`` (int).

    Inside a compiled graph it is the plain dense product: the compiler sees ordinary operators
    (the gather and its sparse backward are eager-mode savings; a GPU multiplies dense one-hots
    cheaply)."""
    if torch.compiler.is_compiling():
        if not z.is_floating_point():
            z = one_hot(z, n_classes, table.dtype).flatten(-2)
        return z @ table
    if z.is_floating_point():
        flat_index, value = _onehot_parts(z, n_classes)
        flat_z = z.reshape(-1, z.shape[-1])
    else:
        flat_index = _table_rows(z.reshape(-1, z.shape[-1]), n_classes)
        value = torch.ones(flat_index.shape, dtype=table.dtype, device=z.device)
        flat_z = z.new_zeros(0)
    lead = z.shape[:-1]
    out = _OneHotMatmul.apply(flat_z, table, flat_index, value.to(table.dtype))
    return out.view(*lead, table.shape[1])


_OFFSETS: dict[tuple, torch.Tensor] = {}


def _table_rows(index: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Table rows ``[..., C]`` of class indices ``[..., C]``: categorical c's classes start at row
    c*K of a ``[C*K, out]`` table (the offsets ``[0, K, 2K, ...]`` are made once per shape)."""
    key = (index.shape[-1], n_classes, index.device)
    if key not in _OFFSETS:
        _OFFSETS[key] = torch.arange(index.shape[-1], device=index.device) * n_classes
    return index + _OFFSETS[key]


def _onehot_parts(z: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat table rows ``[R, C]`` (int64) and values ``[R, C]`` of a one-hot latent ``[..., C*K]``."""
    groups = z.detach().reshape(-1, z.shape[-1] // n_classes, n_classes)
    value, index = groups.max(-1)  # the non-zero entry's value (0 for an all-zero categorical) and class
    return _table_rows(index, n_classes), value


class _StepGather(torch.autograd.Function):
    """One step's ``z @ table`` of a :class:`StepTable`: forward a gather, backward the dense
    straight-through gradient for ``z`` now and the table's share for later (see there).
    ``value`` None means every categorical is one-hot (value 1)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, table: torch.Tensor, index: torch.Tensor, value: torch.Tensor | None,
                owner: StepTable) -> tuple[torch.Tensor, ...]:
        ctx.save_for_backward(index, value)
        ctx.owner = owner
        weights = None if value is None else value.to(table.dtype)
        out = F.embedding_bag(index, table, mode="sum", per_sample_weights=weights)
        return out if owner.splits is None else tuple(out.split(owner.splits, -1))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        index, value = ctx.saved_tensors
        owner = ctx.owner
        grad = torch.cat(grads, -1) if len(grads) > 1 else grads[0]  # one dense gradient for all parts
        grad = grad.to(owner.compute_dtype)
        grad_z = _straight_through_grad(grad, owner.weight) if ctx.needs_input_grad[0] else None
        if ctx.needs_input_grad[1]:
            if value is None:
                value = torch.ones(index.shape, dtype=torch.float32, device=index.device)
            owner.pending.append((index, value, grad))  # the table's share, formed in _StepTableRoot.backward
        return grad_z, None, None, None, None


class _StepTableRoot(torch.autograd.Function):
    """The table as the steps see it. Autograd runs its backward once, after every step's backward
    (they all depend on it); it turns the steps' saved gradients into the table's gradient with
    one product over all steps (:func:`onehot_weight_grad`)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, owner: StepTable) -> torch.Tensor:
        ctx.owner = owner
        ctx.set_materialize_grads(False)  # the steps pass it no gradient (None), only their saved shares
        return table.view_as(table)

    @staticmethod
    def backward(ctx, _none: None):
        owner = ctx.owner
        pending, owner.pending = owner.pending, []
        if not pending:
            return None, None
        index = torch.cat([p[0] for p in pending])
        value = torch.cat([p[1] for p in pending])
        grad = torch.cat([p[2] for p in pending])
        return onehot_weight_grad(index, value, grad, owner.weight.shape[0]).to(owner.weight.dtype), None


class StepTable:
    """``z_j @ table`` at every step j of a recurrent loop, for one-hot latents ``z_j`` that carry a
    straight-through gradient (the filter's own samples feeding the next step).

    Equal to :func:`onehot_matmul` at every step, in value and in every gradient. The difference
    is when the table's gradient is formed: not as one small ``[C*K, R] x [R, out]`` product per
    step (19 per update) but as one over all steps, when the
    backward reaches the table. Make one per forward pass; its backward must run once (no
    ``retain_graph``).

    ``splits`` cuts the output columns into parts, returned as a tuple (the readers of several
    tables side by side): their gradients meet in one tensor in backward, not as full-width
    zero-padded slice gradients.
    """

    def __init__(self, weight: torch.Tensor, n_classes: int, splits: list[int] | None = None):
        self.weight, self.n_classes = weight, n_classes
        self.splits = None if splits is None else list(splits)
        assert splits is None or sum(splits) == weight.shape[1], (splits, weight.shape)
        self.compute_dtype = _compute_dtype(weight)
        self.pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.plain = torch.compiler.is_compiling()  # a compiled graph multiplies plainly (onehot_matmul)
        deferred = weight.requires_grad and torch.is_grad_enabled() and not self.plain
        self.root = _StepTableRoot.apply(weight, self) if deferred else weight

    def __call__(self, z: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """``z @ table`` for a one-hot latent ``z [..., C*K]`` (a tuple of its ``splits`` parts when
        the table has them). ``index [..., C]``, the classes of an exact one-hot ``z`` (as
        :func:`~mabl.models.distributions.sample_onehot` returns them), saves recovering them."""
        if self.plain:
            out = z @ self.weight
            return out if self.splits is None else tuple(out.split(self.splits, -1))
        if index is None:
            flat_index, value = _onehot_parts(z, self.n_classes)
        else:
            flat_index = _table_rows(index.reshape(-1, index.shape[-1]), self.n_classes)
            value = None
        out = _StepGather.apply(z.reshape(-1, z.shape[-1]), self.root, flat_index, value, self)
        lead = z.shape[:-1]
        if isinstance(out, tuple):
            return tuple(part.view(*lead, part.shape[-1]) for part in out)
        return out.view(*lead, self.weight.shape[1])
