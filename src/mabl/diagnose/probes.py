"""``mabl diagnose``'s linear probes: ridge regression with the penalty chosen by cross-validation, the
per-agent probe features, the fit/score split of the windows and the spread over window draws."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from mabl.errors import MablError

STACK = 4
"""Observations stacked for the raw-observation reference probe (the current one and 3 before it)."""

RIDGE_LAMBDAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)
"""Ridge penalties tried by cross-validation inside the fit half (features standardised on the fit half).
Paper-size agent features (1,280 standardised dims) fitted on ~800 samples chose 1e4, the former top
of the grid, so it reaches 1e6."""

CV_FOLDS = 5
"""Folds of the cross-validation that picks the ridge penalty inside the fit half. Folds are blocks of
whole windows (a window's steps are strongly correlated) in the order the fit windows are given: a
random order for ``split="random"``, data order for ``split="data_order"``."""

SPLITS = ("random", "data_order")
"""How the windows are divided between fitting and scoring the probes: a random half fits
(the default), or the earlier half in data order fits and the later half scores."""


def ridge_probe(x_fit: np.ndarray, y_fit: np.ndarray, x_score: np.ndarray, y_score: np.ndarray,
                lambdas: tuple[float, ...] = RIDGE_LAMBDAS, groups: np.ndarray | None = None,
                folds: int = CV_FOLDS) -> dict[str, Any]:
    """Linear read-out of ``y`` from ``x``: ridge regression fitted on ``(x_fit, y_fit)``, scored on
    ``(x_score, y_score)`` by R^2 per target dimension (``1 - SSE / SST``, SST about the score set's own
    mean). Dimensions with no variance on the score set get None and are left out of the mean.
    ``pooled`` is ``1 - sum(SSE) / sum(SST)`` over the scored dimensions: the share of the target's
    total held-out variance the probe explains. The mean of per-dimension R^2 can be dragged far
    below zero by one dimension that is nearly constant on the score set (a small SST turns a small
    error into R^2 of -20); the pooled value weighs each dimension by its variance and is not.

    Features are standardised and targets centred with the fit set's statistics. Lambda is chosen from
    ``lambdas`` by ``folds``-fold cross-validation inside the fit set (:func:`cv_folds`: ``groups``, e.g.
    the window of each sample, never straddle two folds), the criterion being the held-out squared
    error summed over folds, each target dimension weighted by its inverse variance on the fit set;
    then the model is refitted on the whole fit set. The score set plays no part in choosing lambda.
    """
    x_fit, y_fit = np.asarray(x_fit, np.float64), np.asarray(y_fit, np.float64)
    x_score, y_score = np.asarray(x_score, np.float64), np.asarray(y_score, np.float64)
    if len(x_fit) < 4 or len(x_score) < 2:
        return {"mean": None, "pooled": None, "per_dim": [None] * y_fit.shape[1], "dims_scored": 0, "lambda": None,
                "samples_fit": len(x_fit), "samples_score": len(x_score)}
    fold = cv_folds(len(x_fit), groups, folds)
    var = y_fit.var(0)
    weight = np.where(var > 1e-12, 1.0 / np.maximum(var, 1e-12), 0.0)
    cv_error = np.zeros(len(lambdas))
    for k in np.unique(fold):
        held = fold == k
        for i, (sse, _, _) in enumerate(_ridge_errors(x_fit[~held], y_fit[~held], x_fit[held], y_fit[held], lambdas)):
            cv_error[i] += float((sse * weight).sum())
    best = lambdas[int(np.argmin(cv_error))]
    sse, sst, scored = _ridge_errors(x_fit, y_fit, x_score, y_score, [best])[0]
    per_dim = _r2(sse, sst, scored)
    pooled = float(1.0 - sse[scored].sum() / sst[scored].sum()) if scored.any() else None
    return {"mean": _mean_r2(per_dim), "pooled": pooled,
            "per_dim": [None if math.isnan(v) else float(v) for v in per_dim],
            "dims_scored": int(np.isfinite(per_dim).sum()), "lambda": best,
            "samples_fit": len(x_fit), "samples_score": len(x_score)}


def cv_folds(n: int, groups: np.ndarray | None = None, folds: int = CV_FOLDS) -> np.ndarray:
    """Fold index ``[n]`` of each sample: the distinct ``groups`` in order of first appearance (each
    sample its own group when None) cut into ``min(folds, #groups)`` contiguous blocks of near-equal
    size, every sample in its group's fold. With fewer than 2 groups, the samples themselves are cut."""
    groups = np.arange(n) if groups is None else np.asarray(groups)
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    if len(first) < 2:
        return cv_folds(n, None, folds)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))  # group -> position of first appearance
    k = min(folds, len(first))
    return (rank[inverse.reshape(-1)] * k) // len(first)


def _mean_r2(per_dim: np.ndarray) -> float | None:
    finite = per_dim[np.isfinite(per_dim)]
    return float(finite.mean()) if len(finite) else None


def _r2(sse: np.ndarray, sst: np.ndarray, scored: np.ndarray) -> np.ndarray:
    r2 = np.full(len(sse), np.nan)
    r2[scored] = 1.0 - sse[scored] / sst[scored]
    return r2


def _ridge_errors(x_fit, y_fit, x_score, y_score, lambdas) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(SSE, SST, scored)`` per target dimension on the score set for each lambda (one
    eigendecomposition for all of them); ``scored``: the dimensions with variance there."""
    mean, std = x_fit.mean(0), x_fit.std(0)
    std[std < 1e-8] = 1.0
    xf, xs = (x_fit - mean) / std, (x_score - mean) / std
    y_mean = y_fit.mean(0)
    eig, vec = np.linalg.eigh(xf.T @ xf)
    proj = vec.T @ (xf.T @ (y_fit - y_mean))
    sst = ((y_score - y_score.mean(0)) ** 2).sum(0)
    scored = sst > 1e-10 * max(1, len(y_score))
    out = []
    for lam in lambdas:
        weights = vec @ (proj / (np.maximum(eig, 0.0) + lam)[:, None])
        out.append((((y_score - y_mean - xs @ weights) ** 2).sum(0), sst, scored))
    return out


def _features(post, model) -> dict[str, torch.Tensor | None]:
    """Per-agent probe features ``[T, B, N, .]``: agent ``[z^a, h^a]`` and global ``[z^g, h^g]`` (None
    without a global level; a shared one broadcast to the agents). Latents are one-hot floats."""
    from mabl.models.world_model import level_features

    both = level_features(*post)
    agent = torch.cat([post.z_a, post.h_a], -1).float()
    glob = None if len(both) == 2 else torch.cat([both[2], both[3]], -1).float()
    return {"agent": agent, "global": glob}


def _stacked_obs(obs: np.ndarray, last_rows: np.ndarray, k: int) -> np.ndarray:
    """Step j's observation and the k-1 before it ``[T, B, N, k*O]``, zeros where a frame lies before
    the window or before the start of step j's episode (``last_rows [L, B]``: row flags; step j = row j+1)."""
    steps = obs.shape[0]
    frames = []
    for d in range(k):
        frame = np.zeros_like(obs)
        for j in range(d, steps):
            # rows j+1-d .. j+1 in one episode: none of rows j+1-d .. j is an episode's last row
            same = ~last_rows[j + 1 - d: j + 1].any(0) if d else np.ones(obs.shape[1], bool)
            frame[j] = obs[j - d] * same[:, None, None]
        frames.append(frame)
    return np.concatenate(frames, -1)


def _split_probe(features: np.ndarray, target: np.ndarray, mask: np.ndarray, fit_windows: np.ndarray,
                 order: np.ndarray | None = None) -> dict[str, Any]:
    """One probe per agent (agent i's features -> its target), then averaged over agents.

    ``features [T, B, N, F]``, ``target [T, B, N, D]``, ``mask [T, B]``: samples of windows
    ``fit_windows`` (bool ``[B]``) fit, the others score. Samples are taken window by window in
    ``order`` (a permutation of the windows; data order when None), and the cross-validation folds
    that pick lambda are blocks of whole windows in that order (:func:`ridge_probe`). ``per_dim`` is
    the R^2 of each target dimension averaged over the agents that score it; ``mean`` the mean over
    agents of each agent's mean over its scored dimensions, ``pooled`` the mean over agents of each
    agent's pooled R^2 (:func:`ridge_probe`)."""
    order = np.arange(features.shape[1]) if order is None else np.asarray(order)

    def take(windows, agent):
        keep = np.transpose(mask & windows[None, :])[order]  # [B, T] with windows in ``order``
        x = np.transpose(features[:, :, agent], (1, 0, 2))[order][keep]
        y = np.transpose(target[:, :, agent], (1, 0, 2))[order][keep]
        group = np.broadcast_to(order[:, None], keep.shape)[keep]
        return x, y, group

    def fit_score(agent):
        x_fit, y_fit, group = take(fit_windows, agent)
        x_score, y_score, _ = take(~fit_windows, agent)
        return ridge_probe(x_fit, y_fit, x_score, y_score, groups=group)

    per_agent = [fit_score(i) for i in range(features.shape[2])]
    dims = np.array([[np.nan if v is None else v for v in p["per_dim"]] for p in per_agent])  # [N, D]
    scored = np.isfinite(dims).any(0)
    per_dim = np.full(dims.shape[1], np.nan)
    per_dim[scored] = np.nanmean(dims[:, scored], 0)
    means = [p["mean"] for p in per_agent if p["mean"] is not None]
    pooled = [p["pooled"] for p in per_agent if p["pooled"] is not None]
    return {"mean": float(np.mean(means)) if means else None, "pooled": float(np.mean(pooled)) if pooled else None,
            "per_dim": [None if math.isnan(v) else float(v) for v in per_dim],
            "per_agent": [p["mean"] for p in per_agent], "dims_scored": int(scored.sum()),
            "lambda": [p["lambda"] for p in per_agent],
            "samples_fit": sum(p["samples_fit"] for p in per_agent),
            "samples_score": sum(p["samples_score"] for p in per_agent)}


def probe_split(n_windows: int, split: str, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Which of ``n_windows`` windows (in data order) fit the probes (bool ``[B]``), the order the
    probes take them in (:func:`_split_probe`), and a line saying so. ``split="random"``: a random half
    (``rng``) fits, taken in a random order; ``"data_order"``: the earlier half fits, in data order."""
    if split not in SPLITS:
        raise MablError(f"probe split {split!r} is not one of {', '.join(SPLITS)}")
    half = n_windows // 2
    if split == "random":
        order = (rng if rng is not None else np.random.default_rng(0)).permutation(n_windows)
        fit = np.zeros(n_windows, bool)
        fit[order[:half]] = True
        return fit, order, (f"random split of the windows: {half} fit, {n_windows - half} score (disjoint rows); "
                            f"lambda by {CV_FOLDS}-fold cross-validation over the fit windows")
    return (np.arange(n_windows) < half, np.arange(n_windows),
            f"windows in data order: the first {half} fit, the last {n_windows - half} score (disjoint rows); "
            f"lambda by {CV_FOLDS}-fold cross-validation over blocks of the fit windows in data order")


def probe_spread(draws: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """The state probes' ``pooled`` and ``mean`` R^2 over window draws (one dict per draw with the
    probes ``agent``, ``global``, ``obs``, ``stacked``, :func:`diagnose_windows`'s ``probes_only``):
    per feature set the values in draw order and their mean, population std, min and max (None for a
    feature set a model lacks)."""
    out: dict[str, Any] = {"draws": len(draws), "seeds": seeds}
    for name in ("agent", "global", "obs", "stacked"):
        if draws[0][name] is None:
            out[name] = None
            continue
        entry = {}
        for stat in ("pooled", "mean"):
            values = [d[name][stat] for d in draws]
            finite = np.array([v for v in values if v is not None], np.float64)
            entry[stat] = values
            entry[f"{stat}_mean"] = float(finite.mean()) if len(finite) else None
            entry[f"{stat}_std"] = float(finite.std()) if len(finite) else None
            entry[f"{stat}_min"] = float(finite.min()) if len(finite) else None
            entry[f"{stat}_max"] = float(finite.max()) if len(finite) else None
        out[name] = entry
    return out
