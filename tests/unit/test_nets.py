"""Building blocks: the one-hot gather matmul and the split first layers equal their dense versions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mabl.models.distributions import sample_onehot
from mabl.models.nets import LatentHead, SplitLinear, SplitMLP, sinusoidal_encoding, xavier_init
from mabl.models.onehot import latent_index, onehot_matmul, onehot_weight_grad

C, K = 4, 4  # categoricals x classes (debug-like)


def _random_onehot(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    index = torch.randint(0, K, (*shape, C), generator=generator)
    return F.one_hot(index, K).float().flatten(-2)


def test_onehot_matmul_float_values_and_gradients_straight_through():
    torch.manual_seed(0)
    logits0 = torch.randn(2, 3, C, K)
    weight0 = torch.randn(5, C * K)
    upstream = torch.randn(2, 3, 5)

    # Library path: straight-through sample -> gather matmul.
    logits = logits0.clone().requires_grad_()
    weight = weight0.clone().requires_grad_()
    z = sample_onehot(logits, generator=torch.Generator().manual_seed(11))
    out = onehot_matmul(z, weight.t(), K)
    (upstream * out).sum().backward()

    # Dense reference: the same sample (same generator seed), plain matmul.
    logits_ref = logits0.clone().requires_grad_()
    weight_ref = weight0.clone().requires_grad_()
    z_ref = sample_onehot(logits_ref, generator=torch.Generator().manual_seed(11))
    out_ref = z_ref @ weight_ref.T
    (upstream * out_ref).sum().backward()

    assert out.shape == (2, 3, 5)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits.grad, logits_ref.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weight.grad, weight_ref.grad, rtol=1e-5, atol=1e-6)
    assert logits.grad.abs().max() > 1e-3


def test_onehot_matmul_gradient_wrt_onehot_leaf():
    gen = torch.Generator().manual_seed(1)
    z0 = _random_onehot((7,), gen)
    weight0 = torch.randn(3, C * K, generator=gen)
    upstream = torch.randn(7, 3, generator=gen)

    z = z0.clone().requires_grad_()
    weight = weight0.clone().requires_grad_()
    (upstream * onehot_matmul(z, weight.t(), K)).sum().backward()

    # d/dz sum(u * (z W^T)) = u W ; d/dW = u^T z  (written out, no autograd)
    torch.testing.assert_close(z.grad, upstream @ weight0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weight.grad, upstream.T @ z0, rtol=1e-5, atol=1e-6)


def test_onehot_matmul_int_indices():
    gen = torch.Generator().manual_seed(2)
    index = torch.randint(0, K, (2, 5, C), generator=gen)
    weight0 = torch.randn(6, C * K, generator=gen)
    weight = weight0.clone().requires_grad_()
    out = onehot_matmul(index, weight.t(), K)
    assert out.shape == (2, 5, 6)
    # By hand: the sum over categoricals of the weight column of the chosen class.
    expected = torch.zeros(2, 5, 6)
    for a in range(2):
        for b in range(5):
            for c in range(C):
                expected[a, b] += weight0[:, c * K + index[a, b, c]]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    upstream = torch.randn(2, 5, 6, generator=gen)
    (upstream * out).sum().backward()
    dense = F.one_hot(index, K).float().flatten(-2)
    torch.testing.assert_close(weight.grad, upstream.flatten(0, 1).T @ dense.flatten(0, 1), rtol=1e-5, atol=1e-6)
    # Index form and one-hot form agree.
    torch.testing.assert_close(onehot_matmul(dense, weight0.t(), K), out.detach(), rtol=1e-6, atol=1e-6)


def test_latent_index_roundtrip():
    gen = torch.Generator().manual_seed(3)
    index = torch.randint(0, K, (4, 3, C), generator=gen)
    onehot = F.one_hot(index, K).float().flatten(-2)
    assert torch.equal(latent_index(onehot, K), index)


def _full_weight_grad(layer: SplitLinear) -> torch.Tensor:
    """The per-part weight gradients assembled like ``layer.weight`` (one-hot parts are stored [C*K, out])."""
    return torch.cat([w.grad.t() if i in layer.onehot else w.grad for i, w in enumerate(layer.weights)], dim=1)


def _split_and_dense(in_dims, out_dim, onehot, seed):
    torch.manual_seed(seed)
    layer = SplitLinear(in_dims, out_dim, onehot)
    with torch.no_grad():
        layer.bias.normal_()  # non-zero bias so it is checked too
    gen = torch.Generator().manual_seed(seed + 100)
    xs = []
    for i, d in enumerate(in_dims):
        if i in onehot:
            assert d == C * K
            xs.append(_random_onehot((2, 3), gen))
        else:
            xs.append(torch.randn(2, 3, d, generator=gen))
    return layer, xs


@pytest.mark.parametrize("onehot", [{}, {1: K}, {0: K, 2: K}])
def test_split_linear_equals_linear_over_concatenation(onehot):
    in_dims = [C * K if 0 in onehot else 3, C * K, C * K if 2 in onehot else 5]
    layer, xs = _split_and_dense(in_dims, 6, onehot, seed=4)
    out = layer(*xs)
    expected = F.linear(torch.cat(xs, -1), layer.weight, layer.bias)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)

    # Weight gradients equal the dense layer's.
    upstream = torch.randn_like(out)
    layer.zero_grad()
    (upstream * layer(*xs)).sum().backward()
    grad_split = _full_weight_grad(layer), layer.bias.grad.clone()
    w = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_()
    (upstream * F.linear(torch.cat(xs, -1), w, b)).sum().backward()
    torch.testing.assert_close(grad_split[0], w.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_split[1], b.grad, rtol=1e-5, atol=1e-5)


def test_split_linear_parts_sum_to_forward():
    layer, xs = _split_and_dense([3, C * K, 5], 6, {1: K}, seed=5)
    parts = [layer.part(i, x) for i, x in enumerate(xs)]
    torch.testing.assert_close(sum(parts) + layer.bias, layer(*xs), rtol=1e-5, atol=1e-5)
    # part(i, bias=True) adds the bias exactly once.
    with_bias = layer.part(0, xs[0], bias=True) + parts[1] + parts[2]
    torch.testing.assert_close(with_bias, layer(*xs), rtol=1e-5, atol=1e-5)
    # Each part is its own slice of the weight: x_i @ W[:, slice_i].T
    torch.testing.assert_close(parts[2], xs[2] @ layer.weight[:, 3 + C * K :].T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(parts[1], xs[1] @ layer.weight[:, 3 : 3 + C * K].T, rtol=1e-5, atol=1e-5)


def test_split_linear_init_bound():
    torch.manual_seed(6)
    layer = SplitLinear([10, 6], 8)
    bound = math.sqrt(6.0 / (16 + 8))
    assert layer.weight.shape == (8, 16)
    assert layer.weight.abs().max().item() <= bound
    # PyTorch's default Linear bias over the whole fan-in (released code leaves biases as they are).
    assert layer.bias.abs().max().item() <= 1.0 / math.sqrt(16) and layer.bias.abs().max().item() > 0


@pytest.mark.parametrize("zero_bias", [False, True])
def test_xavier_init_bias_reading(zero_bias):
    """--model.bias_init: 'default' keeps every bias as PyTorch drew it (nonzero, within its fan-in
    bound); 'zeros' zeroes them all, SplitLinear and GRU biases included. Weights are Xavier either way."""
    torch.manual_seed(3)
    net = torch.nn.ModuleDict({"split": SplitLinear([10, 6], 8), "gru": torch.nn.GRUCell(8, 12),
                               "lin": torch.nn.Linear(12, 5)})
    xavier_init(net, zero_bias=zero_bias)
    bounds = {"split.bias": 1 / math.sqrt(16), "gru.bias_ih": 1 / math.sqrt(12), "gru.bias_hh": 1 / math.sqrt(12),
              "lin.bias": 1 / math.sqrt(12)}
    params = dict(net.named_parameters())
    for name, bound in bounds.items():
        if zero_bias:
            assert torch.equal(params[name], torch.zeros_like(params[name])), name
        else:
            assert 0 < params[name].abs().max().item() <= bound, name
    lin_bound = math.sqrt(6.0 / (12 + 5))
    assert params["lin.weight"].abs().max().item() <= lin_bound


def test_latent_head_shape_and_composition():
    torch.manual_seed(7)
    head = LatentHead([5, C * K], 12, C, K, onehot={1: K})
    gen = torch.Generator().manual_seed(8)
    h = torch.randn(3, 2, 5, generator=gen)
    z = _random_onehot((3, 2), gen)
    logits = head(h, z)
    assert logits.shape == (3, 2, C, K)
    pre = F.linear(torch.cat([h, z], -1), head.first.weight, head.first.bias)
    expected = (torch.relu(pre) @ head.out.weight.T + head.out.bias).view(3, 2, C, K)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_split_mlp_composition():
    torch.manual_seed(9)
    net = SplitMLP([C * K, 5], 12, 3, 2, torch.nn.ELU, {0: K})
    gen = torch.Generator().manual_seed(10)
    z = _random_onehot((4,), gen)
    h = torch.randn(4, 5, generator=gen)
    x = F.elu(F.linear(torch.cat([z, h], -1), net.first.weight, net.first.bias))
    linears = [m for m in net.rest if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2  # layers=2: split first layer, one hidden, one output
    x = F.elu(linears[0](x))
    expected = linears[1](x)
    torch.testing.assert_close(net(z, h), expected, rtol=1e-5, atol=1e-5)


def test_sinusoidal_encoding_values():
    table = sinusoidal_encoding(3, 6)
    for pos in range(3):
        for i in range(3):
            angle = pos / (10000 ** (2 * i / 6))
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_onehot_weight_grad_sparse_and_dense_forms_equal_the_definition(dtype):
    """Both forms of ``Z^T g`` (sparse CSR on the CPU, dense scatter + matmul on GPUs) against an
    explicit loop over rows and categoricals, including all-zero categoricals (value 0)."""
    gen = torch.Generator().manual_seed(0)
    rows, cats, classes, out = 37, 4, 5, 6
    index = torch.randint(0, classes, (rows, cats), generator=gen) + torch.arange(cats) * classes
    value = (torch.rand(rows, cats, generator=gen) < 0.8).float()  # some categoricals all-zero
    grad = torch.randn(rows, out, generator=gen).to(dtype)
    expected = torch.zeros(cats * classes, out)
    for r in range(rows):
        for c in range(cats):
            expected[index[r, c]] += value[r, c] * grad[r].float()
    for sparse in (True, False):
        got = onehot_weight_grad(index, value, grad, cats * classes, sparse=sparse).float()
        tol = 1e-5 if dtype == torch.float32 or sparse else 5e-2  # dense bf16 rounds its output
        torch.testing.assert_close(got, expected, rtol=tol, atol=tol)
