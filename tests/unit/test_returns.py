"""Lambda-returns (SPEC §3) against a plain loop of the recursion and against closed forms."""

from __future__ import annotations

import pytest
import torch

from mabl.algo.returns import lambda_returns


def _loop_returns(reward: list[float], cont: list[float], value: list[float], gamma: float, lam: float) -> list[float]:
    """R_{H-1} = V_{H-1}; R_k = r_k + gamma c_k ((1-lam) V_{k+1} + lam R_{k+1}); returns R_0..R_{H-2}."""
    horizon = len(value)
    ret = [0.0] * horizon
    ret[horizon - 1] = value[horizon - 1]
    for k in range(horizon - 2, -1, -1):
        ret[k] = reward[k] + gamma * cont[k] * ((1 - lam) * value[k + 1] + lam * ret[k + 1])
    return ret[: horizon - 1]


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.5), (1.0, 1.0), (0.5, 0.0)])
def test_matches_loop(gamma, lam):
    torch.manual_seed(0)
    horizon, batch = 7, 4
    reward = torch.randn(horizon - 1, batch, dtype=torch.float64)
    cont = torch.rand(horizon - 1, batch, dtype=torch.float64)
    value = torch.randn(horizon, batch, dtype=torch.float64)
    got = lambda_returns(reward, cont, value, gamma, lam)
    assert got.shape == (horizon - 1, batch)
    for b in range(batch):
        expected = _loop_returns(reward[:, b].tolist(), cont[:, b].tolist(), value[:, b].tolist(), gamma, lam)
        assert got[:, b].tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_lambda_zero_is_one_step_td():
    torch.manual_seed(1)
    horizon, gamma = 6, 0.9
    reward = torch.randn(horizon - 1, dtype=torch.float64)
    cont = torch.rand(horizon - 1, dtype=torch.float64)
    value = torch.randn(horizon, dtype=torch.float64)
    got = lambda_returns(reward, cont, value, gamma, 0.0)
    for k in range(horizon - 1):
        assert got[k].item() == pytest.approx(reward[k].item() + gamma * cont[k].item() * value[k + 1].item())


def test_lambda_one_full_continuation_is_discounted_sum():
    torch.manual_seed(2)
    horizon, gamma = 6, 0.8
    reward = torch.randn(horizon - 1, dtype=torch.float64)
    cont = torch.ones(horizon - 1, dtype=torch.float64)
    value = torch.randn(horizon, dtype=torch.float64)
    got = lambda_returns(reward, cont, value, gamma, 1.0)
    for k in range(horizon - 1):
        expected = sum(gamma ** (i - k) * reward[i].item() for i in range(k, horizon - 1))
        expected += gamma ** (horizon - 1 - k) * value[horizon - 1].item()
        assert got[k].item() == pytest.approx(expected, rel=1e-12)


def test_zero_continuation_cuts_the_bootstrap():
    torch.manual_seed(3)
    horizon, cut = 8, 3
    reward = torch.randn(horizon - 1, dtype=torch.float64)
    cont = torch.rand(horizon - 1, dtype=torch.float64) * 0.5 + 0.5
    cont[cut] = 0.0
    value = torch.randn(horizon, dtype=torch.float64)
    got = lambda_returns(reward, cont, value, 0.99, 0.95)
    assert got[cut].item() == pytest.approx(reward[cut].item(), abs=1e-14)
    # Nothing after the cut reaches the returns up to it.
    reward2, value2 = reward.clone(), value.clone()
    reward2[cut + 1 :] += 10.0
    value2[cut + 1 :] -= 7.0
    got2 = lambda_returns(reward2, cont, value2, 0.99, 0.95)
    torch.testing.assert_close(got2[: cut + 1], got[: cut + 1], rtol=0, atol=1e-12)
    assert (got2[cut + 1 :] - got[cut + 1 :]).abs().min() > 1e-3


def test_team_reward_broadcasts_against_per_agent_values():
    torch.manual_seed(4)
    horizon, batch, agents, gamma, lam = 5, 3, 4, 0.95, 0.7
    reward = torch.randn(horizon - 1, batch, 1, dtype=torch.float64)
    cont = torch.rand(horizon - 1, batch, 1, dtype=torch.float64)
    value = torch.randn(horizon, batch, agents, dtype=torch.float64)
    got = lambda_returns(reward, cont, value, gamma, lam)
    assert got.shape == (horizon - 1, batch, agents)
    for b in range(batch):
        for i in range(agents):
            expected = _loop_returns(reward[:, b, 0].tolist(), cont[:, b, 0].tolist(), value[:, b, i].tolist(), gamma, lam)
            assert got[:, b, i].tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_extra_reward_steps_are_ignored():
    torch.manual_seed(5)
    horizon = 5
    reward = torch.randn(horizon, 2, dtype=torch.float64)
    cont = torch.rand(horizon, 2, dtype=torch.float64)
    value = torch.randn(horizon, 2, dtype=torch.float64)
    full = lambda_returns(reward, cont, value, 0.9, 0.9)
    trimmed = lambda_returns(reward[:-1], cont[:-1], value, 0.9, 0.9)
    assert full.shape == (horizon - 1, 2)
    torch.testing.assert_close(full, trimmed, rtol=0, atol=0)


def test_horizon_two_is_single_target():
    reward = torch.tensor([[1.5]])
    cont = torch.tensor([[0.5]])
    value = torch.tensor([[2.0], [4.0]])
    got = lambda_returns(reward, cont, value, 0.9, 0.95)
    # R_1 = V_1 = 4; R_0 = 1.5 + 0.9 * 0.5 * (0.05 * 4 + 0.95 * 4) = 1.5 + 0.45 * 4
    assert got.shape == (1, 1)
    assert got.item() == pytest.approx(1.5 + 0.45 * 4.0)
