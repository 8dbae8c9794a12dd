"""Categorical latents: balanced KL (value and gradient routing) and straight-through sampling.

Every reference here is written from the definitions (SPEC §1-§2), not from the library:
KL(q || p) = sum_k q_k (log(q_k + 1e-7) - log(p_k + 1e-7)), averaged over the C categoricals.
"""

from __future__ import annotations

import math

import pytest
import torch

from mabl.models.distributions import balanced_kl, categorical_kl, mode_onehot, sample_onehot

EPS = 1e-7


def _softmax_list(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(x - top) for x in row]
    total = sum(exps)
    return [e / total for e in exps]


def _kl_by_loops(q_logits: torch.Tensor, p_logits: torch.Tensor) -> torch.Tensor:
    """Mean-over-categoricals KL, by plain Python loops on floats. Logits ``[B, C, K]`` -> ``[B]``."""
    out = []
    for b in range(q_logits.shape[0]):
        per_cat = []
        for c in range(q_logits.shape[1]):
            q = _softmax_list(q_logits[b, c].tolist())
            p = _softmax_list(p_logits[b, c].tolist())
            per_cat.append(sum(qk * (math.log(qk + EPS) - math.log(pk + EPS)) for qk, pk in zip(q, p)))
        out.append(sum(per_cat) / len(per_cat))
    return torch.tensor(out, dtype=torch.float64)


def _kl_autograd_reference(q_logits: torch.Tensor, p_logits: torch.Tensor) -> torch.Tensor:
    """The same KL as differentiable torch ops (exp / normalise, no library helper). ``[..., C, K]`` -> ``[...]``."""
    q = q_logits.exp() / q_logits.exp().sum(-1, keepdim=True)
    p = p_logits.exp() / p_logits.exp().sum(-1, keepdim=True)
    per_cat = (q * (torch.log(q + EPS) - torch.log(p + EPS))).sum(-1)
    return per_cat.sum(-1) / per_cat.shape[-1]


def test_kl_closed_form_two_classes():
    # q = (1/2, 1/2), p = (1/4, 3/4) in one categorical; a second categorical with q == p adds 0.
    q_logits = torch.log(torch.tensor([[[0.5, 0.5], [0.3, 0.7]]]))
    p_logits = torch.log(torch.tensor([[[0.25, 0.75], [0.3, 0.7]]]))
    first = 0.5 * (math.log(0.5 + EPS) - math.log(0.25 + EPS)) + 0.5 * (math.log(0.5 + EPS) - math.log(0.75 + EPS))
    expected = (first + 0.0) / 2  # averaged over the 2 categoricals, not summed
    for balance in (0.0, 0.2, 0.8, 1.0):
        got = balanced_kl(q_logits, p_logits, balance)
        assert got.shape == (1,)
        assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    per_cat = categorical_kl(q_logits, p_logits)
    assert per_cat.shape == (1, 2)
    assert per_cat[0, 0].item() == pytest.approx(first, rel=1e-5)
    assert per_cat[0, 1].item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("balance", [0.0, 0.3, 0.8, 1.0])
def test_balanced_kl_value_matches_loops(balance):
    torch.manual_seed(0)
    q_logits = torch.randn(5, 4, 4) * 2.0
    p_logits = torch.randn(5, 4, 4) * 2.0
    # A nearly deterministic categorical exercises the +1e-7 inside the logs.
    q_logits[0, 0] = torch.tensor([30.0, -30.0, -30.0, -30.0])
    p_logits[0, 0] = torch.tensor([-30.0, 30.0, -30.0, -30.0])
    expected = _kl_by_loops(q_logits, p_logits)
    got = balanced_kl(q_logits, p_logits, balance)
    assert got.shape == (5,)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    # Without the epsilon that categorical's KL would be ~60; with it, it is log((1+eps)/eps) ~ 16.1.
    assert categorical_kl(q_logits, p_logits)[0, 0].item() == pytest.approx(math.log((1 + EPS) / EPS), rel=1e-4)


def test_kl_is_zero_for_equal_and_positive_otherwise():
    torch.manual_seed(1)
    logits = torch.randn(3, 4, 4)
    assert balanced_kl(logits, logits.clone(), 0.8).abs().max().item() < 1e-6
    other = torch.randn(3, 4, 4)
    assert (balanced_kl(logits, other, 0.8) > 0).all()
    # A constant shift of the logits is the same distribution.
    assert balanced_kl(logits, logits + 3.0, 0.5).abs().max().item() < 1e-6


@pytest.mark.parametrize("balance", [0.0, 0.2, 0.8, 1.0])
def test_balanced_kl_gradient_routing(balance):
    torch.manual_seed(2)
    q0 = torch.randn(3, 2, 4, 4)
    p0 = torch.randn(3, 2, 4, 4)
    weight = torch.rand(3, 2)  # a non-uniform upstream gradient

    q_ref = q0.clone().requires_grad_()
    p_ref = p0.clone().requires_grad_()
    (weight * _kl_autograd_reference(q_ref, p_ref)).sum().backward()

    q = q0.clone().requires_grad_()
    p = p0.clone().requires_grad_()
    (weight * balanced_kl(q, p, balance)).sum().backward()

    # The posterior gets (1-b) of its full gradient, the prior b of its own.
    torch.testing.assert_close(q.grad, (1.0 - balance) * q_ref.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(p.grad, balance * p_ref.grad, rtol=1e-4, atol=1e-7)
    assert q_ref.grad.abs().max() > 1e-3 and p_ref.grad.abs().max() > 1e-3


def test_sample_onehot_shape_and_exactly_one_per_categorical():
    torch.manual_seed(3)
    logits = torch.randn(6, 5, 3, 4)
    sample = sample_onehot(logits)
    assert sample.shape == (6, 5, 12)
    per_cat = sample.view(6, 5, 3, 4)
    assert torch.equal(per_cat.sum(-1), torch.ones(6, 5, 3))
    assert torch.equal((per_cat == 0) | (per_cat == 1), torch.ones_like(per_cat, dtype=torch.bool))


def test_sample_onehot_forward_value_is_exact_onehot_with_straight_through():
    torch.manual_seed(4)
    logits = torch.randn(7, 3, 4, requires_grad=True)
    sample = sample_onehot(logits, straight_through=True)
    values = sample.detach().view(7, 3, 4)
    rounded = values.round()
    assert (values - rounded).abs().max().item() < 1e-6
    assert torch.equal(rounded.sum(-1), torch.ones(7, 3))
    assert sample.requires_grad


def test_sample_onehot_frequencies_match_softmax():
    torch.manual_seed(5)
    n = 20000
    base = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0], [-3.0, 1.0, 1.5, 0.0]])
    probs = [_softmax_list(row) for row in base.tolist()]
    sample = sample_onehot(base.expand(n, 3, 4)).view(n, 3, 4)
    counts = sample.sum(0)  # [3, 4]
    chi2 = 0.0
    for c in range(3):
        for k in range(4):
            expected = n * probs[c][k]
            chi2 += (counts[c, k].item() - expected) ** 2 / expected
            # Per-cell: within 5 standard deviations of the binomial.
            sd = math.sqrt(n * probs[c][k] * (1 - probs[c][k]))
            assert abs(counts[c, k].item() - expected) < 5 * sd + 1
    # 3 independent categoricals x 3 degrees of freedom = 9; P(chi2_9 > 40) ~ 7e-6.
    assert chi2 < 40.0


def test_sample_onehot_frequencies_catch_a_wrong_distribution():
    """The frequency check above can fail: a clearly different distribution is rejected."""
    torch.manual_seed(6)
    n = 20000
    logits = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    wrong = [0.25, 0.25, 0.25, 0.25]
    counts = sample_onehot(logits.expand(n, 1, 4)).view(n, 4).sum(0)
    chi2 = sum((counts[k].item() - n * wrong[k]) ** 2 / (n * wrong[k]) for k in range(4))
    assert chi2 > 40.0


def test_straight_through_gradient_equals_softmax_gradient():
    torch.manual_seed(7)
    logits0 = torch.randn(5, 3, 4)
    weight = torch.randn(5, 12)

    logits = logits0.clone().requires_grad_()
    (weight * sample_onehot(logits)).sum().backward()

    logits_ref = logits0.clone().requires_grad_()
    probs = logits_ref.exp() / logits_ref.exp().sum(-1, keepdim=True)
    (weight * probs.flatten(-2)).sum().backward()

    torch.testing.assert_close(logits.grad, logits_ref.grad, rtol=1e-5, atol=1e-7)
    assert logits.grad.abs().max() > 1e-3


def test_no_straight_through_means_no_gradient():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    assert not sample_onehot(logits, straight_through=False).requires_grad


def test_generator_makes_sampling_reproducible_and_leaves_global_rng_alone():
    logits = torch.randn(200, 4, 4)
    gen_a = torch.Generator().manual_seed(123)
    gen_b = torch.Generator().manual_seed(123)
    gen_c = torch.Generator().manual_seed(124)
    global_state = torch.get_rng_state()
    a = sample_onehot(logits, generator=gen_a)
    b = sample_onehot(logits, generator=gen_b)
    c = sample_onehot(logits, generator=gen_c)
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # Successive draws from one generator differ (it advances).
    assert not torch.equal(sample_onehot(logits, generator=gen_a), a)


def test_mode_onehot_is_argmax():
    logits = torch.tensor([[[0.1, 3.0, -1.0, 0.0], [5.0, 0.0, 0.0, 0.0]]])
    expected = torch.tensor([[0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    assert torch.equal(mode_onehot(logits), expected)
