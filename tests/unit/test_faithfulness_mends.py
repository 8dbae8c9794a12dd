"""The released code's readings that mabl 0.2 made the defaults (SPEC §1, §3, §5), each checked against
an independent computation, with the earlier reading still reachable as a named option."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mabl.algo.agent import MablAgent
from mabl.algo.imagination import imagine
from mabl.envs.base import EnvSpec
from mabl.models.world_model import BiLevelWorldModel, Latent
from mabl.presets import build_config
from mabl.replay import SequenceReplay, stored_episode
from mabl.rollout import Episode

N, A, OBS, G = 3, 4, 5, 6
SPEC = EnvSpec(name="fake", n_agents=N, obs_dim=OBS, state_dim=G, discrete=True, n_actions=A,
               has_action_mask=True, episode_limit=50)


def _episode(length: int, terminated: bool) -> Episode:
    rng = np.random.default_rng(length)
    done = np.zeros(length, bool)
    done[-1] = terminated
    rows = {"obs": rng.standard_normal((length, N, OBS)).astype(np.float32),
            "state": rng.standard_normal((length, G)).astype(np.float32),
            "action": rng.integers(0, A, (length, N)), "reward": np.ones(length, np.float32), "done": done,
            "avail": np.ones((length, N, A), bool)}
    return Episode(rows, terminated, float(length), length, None)


@pytest.mark.parametrize("reading", ["terminal", "truncation"])
def test_time_limit_end_is_stored_as_the_released_code_does(reading):
    replay = SequenceReplay(SPEC, 100)
    rng = np.random.default_rng(0)
    timed_out = _episode(7, terminated=False)
    replay.add_episode(*stored_episode(timed_out, reading), rng)
    assert replay.size == 7  # never absorbing rows after a time-out
    assert replay.data["done"][:7].tolist() == [False] * 6 + [reading == "terminal"]
    assert not timed_out.rows["done"][-1]  # the episode's own rows are not modified
    ended = _episode(5, terminated=True)
    replay.add_episode(*stored_episode(ended, reading), rng)
    assert replay.size == 7 + 5 + 2  # termination: done 1 and two absorbing rows under both readings
    assert replay.data["done"][7:14].tolist() == [False] * 4 + [True] * 3
    assert replay.data["fake"][7:14].tolist() == [False] * 5 + [True] * 2


def test_action_decoder_is_linear_elu_linear_relu_linear():
    cfg = build_config("debug")
    torch.manual_seed(0)
    model = BiLevelWorldModel(SPEC, cfg.model)
    dec = model.action_decoder
    assert [type(m) for m in dec.rest] == [nn.Linear, nn.ReLU, nn.Linear] and isinstance(dec.act, nn.ELU)
    x = torch.randn(7, cfg.model.hidden)
    w1 = dec.first.weight
    hand = dec.rest[2](torch.relu(dec.rest[0](torch.nn.functional.elu(x @ w1.T + dec.first.bias))))
    torch.testing.assert_close(dec(x), hand)
    one = BiLevelWorldModel(SPEC, build_config("debug", {"model.action_decoder_layers": 1}).model).action_decoder
    assert [type(m) for m in one.rest] == [nn.Linear]


@pytest.mark.parametrize("reading", ["per_agent", "team_mean"])
def test_imagined_returns_use_each_agents_own_continuation(reading):
    cfg = build_config("debug", {"policy.continuation": reading})
    torch.manual_seed(0)
    agent = MablAgent(SPEC, cfg, torch.device("cpu"))
    model, critic = agent.world_model, agent.critic
    # Make the continuation head differ strongly between agents: agent i's logit gets + 2i - 2.
    original_cont = model.cont_head.forward
    model.cont_head.forward = lambda *x: original_cont(*x) + torch.tensor([-2.0, 0.0, 2.0])[:, None]
    seen = {"cont": [], "reward": [], "value": []}
    step, critic_forward = model.imagine_step, critic.forward

    def imagine_step(latent, action):
        out = step(latent, action)
        seen["reward"].append(out[1])
        seen["cont"].append(out[2])
        return out

    def values(*features):
        v = critic_forward(*features)
        seen["value"].append(v)
        return v

    model.imagine_step, critic.forward = imagine_step, values
    m, horizon, gamma, lam = 5, cfg.policy.horizon, cfg.policy.gamma, cfg.policy.lam
    gen = torch.Generator().manual_seed(1)
    z = lambda: nn.functional.one_hot(torch.randint(0, 4, (m, N, 4), generator=gen), 4).float().flatten(-2)  # noqa: E731
    start = Latent(z(), torch.randn(m, N, model.deter, generator=gen), z(), torch.randn(m, N, model.deter, generator=gen))
    torch.manual_seed(2)
    out = imagine(model, agent.actor, critic, start, horizon, gamma, lam, reading == "per_agent")
    cont = torch.stack(seen["cont"])  # [H-1, M, N]
    assert cont.shape == (horizon - 1, m, N)
    assert (cont[..., 2] - cont[..., 0]).min() > 0.1  # the agents really differ
    reward, value = torch.stack(seen["reward"]), torch.stack(seen["value"])  # [H-1, M], [H, M, N]
    expected = torch.empty(horizon - 1, m, N)
    for b in range(m):
        for i in range(N):
            c = cont[:, b, i] if reading == "per_agent" else cont[:, b].mean(-1)
            ret = value[horizon - 1, b, i].item()
            for k in range(horizon - 2, -1, -1):  # R_k = r_k + g c_k ((1-l) V_{k+1} + l R_{k+1})
                ret = reward[k, b].item() + gamma * c[k].item() * ((1 - lam) * value[k + 1, b, i].item() + lam * ret)
                expected[k, b, i] = ret
    torch.testing.assert_close(out.returns, expected.flatten(0, 1), rtol=1e-5, atol=1e-5)
