"""An independent check of ``mabl diagnose``'s global-information probe (:func:`mabl.diagnose.probes.ridge_probe`):
a plain ridge regression written here without the probe's code (normal equations by
``numpy.linalg.solve`` instead of its eigendecomposition, its own standardisation, pooled held-out
R^2), on data with a constructed R^2. At one fixed penalty the two must give the same held-out R^2;
with the penalty grid both must recover the constructed value."""

from __future__ import annotations

import numpy as np
import pytest

from mabl.diagnose.probes import RIDGE_LAMBDAS, ridge_probe


def plain_ridge_r2(x_fit, y_fit, x_test, y_test, lam: float) -> float:
    """Pooled held-out R^2 (``1 - total SSE / total SST``) of ridge regression on features standardised
    with the fit set's mean and std, the target centred on the fit set's mean."""
    mu, sd = x_fit.mean(0), x_fit.std(0)
    sd[sd < 1e-8] = 1.0
    ym = y_fit.mean(0)
    xs = (x_fit - mu) / sd
    coef = np.linalg.solve(xs.T @ xs + lam * np.eye(xs.shape[1]), xs.T @ (y_fit - ym))
    resid = ((y_test - ym - ((x_test - mu) / sd) @ coef) ** 2).sum()
    total = ((y_test - y_test.mean(0)) ** 2).sum()
    return float(1.0 - resid / total)


def plain_ridge_validated(x_fit, y_fit, x_val, y_val, x_test, y_test) -> float:
    """The penalty that minimises the validation SSE (the grid of the probe), refitted on fit + validation."""
    def val_sse(lam):
        mu, sd = x_fit.mean(0), x_fit.std(0)
        sd[sd < 1e-8] = 1.0
        xs = (x_fit - mu) / sd
        coef = np.linalg.solve(xs.T @ xs + lam * np.eye(xs.shape[1]), xs.T @ (y_fit - y_fit.mean(0)))
        return float(((y_val - y_fit.mean(0) - ((x_val - mu) / sd) @ coef) ** 2).sum())

    best = min(RIDGE_LAMBDAS, key=val_sse)
    return plain_ridge_r2(np.concatenate([x_fit, x_val]), np.concatenate([y_fit, y_val]), x_test, y_test, best)


def constructed(n: int, dims: int, seed: int):
    """``y = x w + noise`` with the noise's variance equal to the signal's in every target dimension:
    the best linear read-out explains half the variance (R^2 = 0.5)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dims))
    w = rng.normal(size=(dims, 3))
    y = x @ w + np.sqrt((w ** 2).sum(0)) * rng.normal(size=(n, 3))
    return x, y


def test_plain_ridge_recovers_the_constructed_r2():
    x, y = constructed(3000, 10, 1)
    assert plain_ridge_validated(x[:1200], y[:1200], x[1200:1500], y[1200:1500], x[1500:], y[1500:]) == \
        pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("lam", [1e-2, 10.0, 1e4])
def test_diagnose_probe_equals_the_plain_ridge_at_a_fixed_penalty(lam):
    x, y = constructed(400, 30, 2)  # few samples per feature: the penalty matters
    y[:, 2] *= 0.01  # dimensions of very different variance: pooled R^2 weighs them by it
    ours = ridge_probe(x[:250], y[:250], x[250:], y[250:], lambdas=(lam,))
    assert ours["lambda"] == lam
    assert ours["pooled"] == pytest.approx(plain_ridge_r2(x[:250], y[:250], x[250:], y[250:], lam), abs=1e-9)


def test_diagnose_probe_with_its_grid_recovers_the_constructed_r2():
    x, y = constructed(3000, 10, 3)
    groups = np.repeat(np.arange(75), 20)  # windows of 20 samples, as diagnose passes them
    ours = ridge_probe(x[:1500], y[:1500], x[1500:], y[1500:], groups=groups)
    assert ours["pooled"] == pytest.approx(0.5, abs=0.03)
    plain = plain_ridge_validated(x[:1200], y[:1200], x[1200:1500], y[1200:1500], x[1500:], y[1500:])
    assert ours["pooled"] == pytest.approx(plain, abs=0.01)
