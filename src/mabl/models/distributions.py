"""Categorical latents: sampling with straight-through gradients, and the balanced KL (SPEC §1-§2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

KL_EPS = 1e-7
"""Added inside every log of the categorical KL, as in the released code."""


def sample_onehot(
    logits: torch.Tensor, straight_through: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Sample one class per categorical from ``logits [..., C, K]``; return ``[..., C*K]``.

    The forward value is an exact one-hot sample of softmax(logits), drawn by inverse CDF (one
    uniform number per categorical rather than K Gumbel numbers). With ``straight_through`` the
    gradient flows as if the output were the probabilities: ``onehot + probs - sg(probs)``
    (DreamerV2; no unimix, as the released code).
    """
    probs = logits.float().softmax(-1)
    shape = probs.shape[:-1] + (1,)
    # (torch.compile cannot trace an explicit generator argument, so pass one only when given.)
    if generator is None:
        uniform = torch.rand(shape, device=probs.device)
    else:
        uniform = torch.rand(shape, device=probs.device, generator=generator)
    index = (probs.detach().cumsum(-1) < uniform).sum(-1).clamp_max(probs.shape[-1] - 1)
    onehot = F.one_hot(index, probs.shape[-1]).to(probs.dtype)
    if straight_through and logits.requires_grad:
        onehot = onehot + probs - probs.detach()
    return onehot.flatten(-2)


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
    """

    @staticmethod
    def forward(ctx, q_logits: torch.Tensor, p_logits: torch.Tensor, balance: float) -> torch.Tensor:
        q = q_logits.float().softmax(-1)
        p = p_logits.float().softmax(-1)
        log_ratio = (q + KL_EPS).log() - (p + KL_EPS).log()
        ctx.save_for_backward(q, p, log_ratio)
        ctx.balance = balance
        ctx.dtypes = (q_logits.dtype, p_logits.dtype)
        return (q * log_ratio).sum(-1).mean(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        q, p, log_ratio = ctx.saved_tensors
        g = (grad / q.shape[-2])[..., None, None]  # mean over the categoricals
        grad_q = grad_p = None
        if ctx.needs_input_grad[0]:
            u = log_ratio + q / (q + KL_EPS)
            grad_q = ((1.0 - ctx.balance) * g * q * (u - (q * u).sum(-1, keepdim=True))).to(ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            v = -q / (p + KL_EPS)
            grad_p = (ctx.balance * g * p * (v - (p * v).sum(-1, keepdim=True))).to(ctx.dtypes[1])
        return grad_q, grad_p, None


def balanced_kl(q_logits: torch.Tensor, p_logits: torch.Tensor, balance: float) -> torch.Tensor:
    """KL balancing (DreamerV2): ``(1-b) KL(q || sg(p)) + b KL(sg(q) || p)``.

    Logits are ``[..., C, K]``; the result is ``[...]``, **averaged** over the C categoricals
    (the released code's reduction, 1/C of DreamerV2's sum). The two terms have the same value;
    balancing only changes which network each gradient reaches. Computed in one fused autograd
    function; :func:`categorical_kl` is the plain definition.
    """
    return _BalancedKL.apply(q_logits, p_logits, float(balance))
