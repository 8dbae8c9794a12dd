"""The FLOP counter behind ``mabl bench speed``'s achieved-FLOP/s report, against hand counts."""

import warnings

import torch
import torch.nn.functional as F

from mabl.bench import count_flops, matmul_rate


def test_linear_forward_and_backward_count_three_products():
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(100, 64, requires_grad=True)
    # forward x W^T, backward dx = g W and dW = g^T x: three 100 x 64 x 32 products, 2 FLOPs per multiply-add
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 100 * 64 * 32
    # without an input gradient, backward forms dW only
    x_const = torch.randn(100, 64)
    assert count_flops(lambda: layer(x_const).sum().backward()) == 2 * 2 * 100 * 64 * 32


def test_batched_products_and_bf16_autocast_are_counted():
    a, b = torch.randn(4, 10, 20), torch.randn(4, 20, 30)
    assert count_flops(lambda: torch.bmm(a, b)) == 2 * 4 * 10 * 20 * 30
    layer = torch.nn.Linear(16, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert count_flops(lambda: layer(torch.randn(5, 16))) == 2 * 5 * 16 * 8


def test_sparse_products_count_their_nonzeros_and_gathers_count_nothing():
    rows, cols, out = 50, 64, 32
    index = torch.randint(0, cols, (rows,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sparse = torch.sparse_csr_tensor(torch.arange(rows + 1), index, torch.ones(rows), (rows, cols))
    dense = torch.randn(cols, out)
    assert count_flops(lambda: sparse @ dense) == 2 * rows * out  # one non-zero per row, not 2*rows*cols*out
    assert count_flops(lambda: F.embedding_bag(index[:, None], dense, mode="sum")) == 0


def test_matmul_rate_is_the_product_flops_over_the_best_timed_repeat(monkeypatch):
    """A clock that advances by known amounts: the warm-up call is not timed, then repeats take
    3, 2 and 5 seconds; the rate is 2 * size^3 FLOPs over the best (2 s), and the product was made."""
    import mabl.bench as bench

    ticks = iter([0.0, 100.0, 103.0, 103.0, 105.0, 105.0, 110.0])  # warm-up start; (start, end) of each timed call
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(ticks))
    calls = []
    real_mm = torch.mm
    monkeypatch.setattr(bench.torch, "mm", lambda a, b, out: calls.append(a.shape) or real_mm(a, b, out=out))
    rate = matmul_rate(torch.device("cpu"), torch.float32, size=64, repeats=3)
    assert rate == 2 * 64**3 / 2.0
    assert calls == [(64, 64)] * 4  # one warm-up and three timed products
