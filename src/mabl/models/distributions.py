"""Categorical latents: sampling with straight-through gradients, and the balanced KL (SPEC §1-§2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

KL_EPS = 1e-7
"""Added inside every log of the categorical KL, as in the released code."""


class _SampleOneHot(torch.autograd.Function):
    """An exact one-hot sample of ``probs [..., K]`` by inverse CDF, with the straight-through
    gradient: backward passes the incoming gradient to ``probs`` unchanged. Also returns the
    sampled class ``[..., 1]`` (int64, no gradient).

    This is ``onehot + probs - sg(probs)`` of DreamerV2 without its two full-size temporaries, and
    its forward value is exactly 0/1 (the sum-and-subtract form is only within rounding of it).
    """

    @staticmethod
    def forward(ctx, probs: torch.Tensor, uniform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the first class whose cumulative probability reaches u (clamped against rounding of the sum)
        index = torch.searchsorted(probs.cumsum(-1), uniform).clamp_max_(probs.shape[-1] - 1)
        ctx.mark_non_differentiable(index)
        return torch.zeros_like(probs).scatter_(-1, index, 1.0), index

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _grad_index: None):
        return grad, None


def sample_onehot(
    logits: torch.Tensor, straight_through: bool = True, generator: torch.Generator | None = None,
    return_index: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Sample one class per categorical from ``logits [..., C, K]``; return ``[..., C*K]`` (and,
    with ``return_index``, the sampled classes ``[..., C]`` int64, so that a gather need not
    recover them from the one-hot).

    The forward value is an exact one-hot sample of softmax(logits), drawn by inverse CDF (one
    uniform number per categorical rather than K Gumbel numbers). With ``straight_through`` the
    gradient flows as if the output were the probabilities (DreamerV2's ``onehot + probs -
    sg(probs)``; no unimix, as the released code).
    """
    probs = F.softmax(logits, -1, dtype=torch.float32)
    shape = probs.shape[:-1] + (1,)
    # (torch.compile cannot trace an explicit generator argument, so pass one only when given.)
    if generator is None:
        uniform = torch.rand(shape, device=probs.device)
    else:
        uniform = torch.rand(shape, device=probs.device, generator=generator)
    if not (straight_through and logits.requires_grad):
        probs = probs.detach()
    sample, index = _SampleOneHot.apply(probs, uniform)
    return (sample.flatten(-2), index.squeeze(-1)) if return_index else sample.flatten(-2)


def mode_onehot(logits: torch.Tensor) -> torch.Tensor:
    """Most likely class per categorical, one-hot, flattened ``[..., C*K]``."""
    return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype).flatten(-2)


def categorical_kl(q_logits: torch.Tensor, p_logits: torch.Tensor) -> torch.Tensor:
    """KL(q || p) per categorical, ``[..., C]``: sum_k q_k (log(q_k+eps) - log(p_k+eps))."""
    q = q_logits.softmax(-1)
    p = p_logits.softmax(-1)
    return (q * ((q + KL_EPS).log() - (p + KL_EPS).log())).sum(-1)


class _BalancedKL(torch.autograd.Function):
    """Forward: KL(q || p) per categorical, averaged over them. Backward: the gradients of
    ``(1-b) KL(q || sg(p)) + b KL(sg(q) || p)``, derived by hand so both sides share one softmax
    and one log per distribution (with the +eps inside the logs, exactly like the unfused form):

        posterior: dKL/dq_k = log(q_k+e) - log(p_k+e) + q_k/(q_k+e)   -> softmax backward, x (1-b)
        prior:     dKL/dp_k = -q_k/(p_k+e)                            -> softmax backward, x b

    The softmax backward ``y * (d - <y, d>)`` ignores constants added to ``d``, so the posterior
    side uses ``q/(q+e) - 1 = -e/(q+e)``. Every large temporary is made once and then updated in
    place: at the paper's sizes (2,160 rows x 32 x 32 per level) this is elementwise work bound
    by memory traffic, and half the passes of the plain form (measured 25-28 ms -> 13-14 ms per
    level on the 2-core CPU, forward + backward).
    """

    @staticmethod
    def forward(ctx, q_logits: torch.Tensor, p_logits: torch.Tensor, balance: float) -> torch.Tensor:
        q = F.softmax(q_logits, -1, dtype=torch.float32)
        p = F.softmax(p_logits, -1, dtype=torch.float32)
        log_ratio = torch.add(q, KL_EPS).log_().sub_(torch.add(p, KL_EPS).log_())
        ctx.save_for_backward(q, p, log_ratio)
        ctx.balance = balance
        ctx.dtypes = (q_logits.dtype, p_logits.dtype)
        return torch.linalg.vecdot(q, log_ratio).mean(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        q, p, log_ratio = ctx.saved_tensors
        g = (grad / q.shape[-2])[..., None, None]  # mean over the categoricals
        grad_q = grad_p = None
        if ctx.needs_input_grad[0]:
            u = torch.add(log_ratio, torch.add(q, KL_EPS).reciprocal_(), alpha=-KL_EPS).mul_(q)  # q * d
            u.addcmul_(q, u.sum(-1, keepdim=True), value=-1.0)  # q * (d - <q, d>)
            grad_q = u.mul_(g * (1.0 - ctx.balance)).to(ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            v = torch.add(p, KL_EPS)
            torch.div(q, v, out=v).mul_(p)  # p * q/(p+e) = -p * d
            v.addcmul_(p, v.sum(-1, keepdim=True), value=-1.0)
            grad_p = v.mul_(g * -ctx.balance).to(ctx.dtypes[1])
        return grad_q, grad_p, None


def balanced_kl(q_logits: torch.Tensor, p_logits: torch.Tensor, balance: float) -> torch.Tensor:
    """KL balancing (DreamerV2): ``(1-b) KL(q || sg(p)) + b KL(sg(q) || p)``.

    Logits are ``[..., C, K]``; the result is ``[...]``, **averaged** over the C categoricals
    (the released code's reduction, 1/C of DreamerV2's sum). The two terms have the same value;
    balancing only changes which network each gradient reaches. Computed in one fused autograd
    function; :func:`categorical_kl` is the plain definition, which a compiled graph uses.
    """
    if torch.compiler.is_compiling():
        forward = categorical_kl(q_logits, p_logits.detach())
        return ((1.0 - balance) * forward + balance * categorical_kl(q_logits.detach(), p_logits)).mean(-1)
    return _BalancedKL.apply(q_logits, p_logits, float(balance))
