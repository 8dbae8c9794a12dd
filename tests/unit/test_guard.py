"""Divergence guard (issue 17): a non-finite update is not applied (parameters and Adam state keep
their last finite values), it is counted on the device, and its loss terms are named."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from mabl.algo import build_learner
from mabl.algo.guard import UpdateGuard, divergence_message, read_guard
from mabl.algo.mappo import Mappo
from mabl.envs.base import EnvSpec
from mabl.presets import build_config
from mabl.replay import SequenceReplay

SPEC = EnvSpec("guard-test", n_agents=2, obs_dim=5, state_dim=7, discrete=True, n_actions=3, episode_limit=20)


def _opt_state(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v.clone() for state in opt.state.values() for v in state.values()]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "foreach"])
def test_a_nonfinite_step_changes_nothing_and_later_steps_continue_as_if_it_never_happened(fused):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.01, weight_decay=0.1, fused=fused or None, foreach=not fused)
    guard = UpdateGuard("test", "cpu", "lower the rate")
    x = torch.randn(16, 4)
    guard.step(opt, net.parameters(), net(x).square().mean(), 1.0)  # one finite step: moments exist
    reference_net = copy.deepcopy(net)
    reference_opt = torch.optim.Adam(reference_net.parameters(), lr=0.01, weight_decay=0.1, fused=fused or None,
                                     foreach=not fused)
    reference_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    params, state = [p.detach().clone() for p in net.parameters()], _opt_state(opt)

    for poison in (float("nan"), float("inf")):
        _, skipped = guard.step(opt, net.parameters(), net(x).square().mean() * poison, 1.0)
        assert bool(skipped)
        assert all(torch.equal(a, b) for a, b in zip(net.parameters(), params))
        assert all(torch.equal(a, b) for a, b in zip(_opt_state(opt), state))  # moments and the step count
    # a finite loss whose gradient is infinite is skipped too: d/dw sqrt(w - w0) at w = w0 is inf
    w = next(net.parameters())
    loss = (w[0, 0] - w[0, 0].detach()).sqrt() + net(x).square().mean()
    _, skipped = guard.step(opt, net.parameters(), loss, 1.0)
    assert torch.isfinite(loss) and bool(skipped)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), params))

    # the next finite step equals the step of an optimizer that never saw the bad ones
    guard.step(opt, net.parameters(), net(x).square().mean(), 1.0)
    reference_opt.zero_grad()
    reference_net(x).square().mean().backward()
    torch.nn.utils.clip_grad_norm_(reference_net.parameters(), 1.0)
    reference_opt.step()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), reference_net.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(net.parameters(), params))  # and it did move
    report = read_guard(guard, guard.counters().tolist())
    assert report["skipped"] == 3 and report["run"] == 0 and report["max_run"] == 3
    assert "loss" in report["terms"] and "grad_norm" in report["terms"]


def test_consecutive_runs_carry_across_calls_and_name_the_terms():
    guard = UpdateGuard("world-model", "cpu", "try a lower --model.lr")
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=0.1, fused=True)
    flags = [False, True, True, None, True, True, True]  # None: a new learner call
    for flag in flags:
        if flag is None:
            guard.new_call()
            continue
        obs = p.sum() * (float("nan") if flag else 1.0)
        guard.step(opt, [p], obs + p.square().sum(), 1.0, {"model/obs": obs.detach(), "model/reward": p.sum().detach()})
    report = read_guard(guard, guard.counters().tolist())
    assert report == {"skipped": 3, "max_run": 5, "run": 5, "terms": ["loss", "model/obs", "grad_norm"]}
    line = divergence_message(guard, report, 5, env_step=1234, learner_call=56)
    assert "\n" not in line
    for needle in ("5 consecutive world-model updates", "loss term model/obs", "env step 1234", "learner call 56",
                   "--model.lr"):
        assert needle in line, line


def _rows(spec: EnvSpec, rng: np.random.Generator, batch: int, length: int) -> dict[str, np.ndarray]:
    """Replay windows of random episodes."""
    replay = SequenceReplay(spec, 1000)
    while replay.real_rows < 200:
        steps = int(rng.integers(5, 15))
        replay.add_episode({"obs": rng.normal(size=(steps, spec.n_agents, spec.obs_dim)).astype(np.float32),
                            "state": rng.normal(size=(steps, spec.state_dim)).astype(np.float32),
                            "action": rng.integers(0, spec.n_actions, size=(steps, spec.n_agents)),
                            "reward": rng.normal(size=steps).astype(np.float32),
                            "done": np.arange(steps) == steps - 1}, terminated=True, rng=rng)
    return replay.sample(batch, length, rng)


def _snapshot(agent) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    nets = [agent.world_model, agent.actor, agent.critic]
    opts = [agent.model_opt, agent.ppo.actor_opt, agent.ppo.critic_opt]
    if hasattr(agent, "error_predictor"):  # MAG (--mag.error_updates 0): its predictor steps with every model update
        nets.append(agent.error_predictor)
        opts.append(agent.error_opt)
    return ([t.detach().clone() for m in nets for t in m.state_dict().values()],
            [t for o in opts for t in _opt_state(o)])


@pytest.mark.parametrize("algo", ["mabl", "mag"])
def test_model_based_learners_skip_poisoned_updates(monkeypatch, algo):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = build_config("debug", {"algo": algo, **({"mag.error_updates": 0} if algo == "mag" else {})})
    agent = build_learner(SPEC, cfg, torch.device("cpu"))
    rows = _rows(SPEC, rng, cfg.model.batch_size, cfg.model.seq_len)
    agent.train_world_model(rows)  # a healthy update of each: optimizer state exists
    agent.train_policy(rows)
    before = _snapshot(agent)
    for guard in agent.guards.values():
        guard.new_call()

    eager = agent.model_loss

    def poisoned(batch):
        loss, metrics = eager(batch)
        metrics = {**metrics, "reward": metrics["reward"] * float("nan")}
        return loss + metrics["reward"], metrics

    monkeypatch.setattr(agent, "model_loss", poisoned)
    metrics = agent.train_world_model(rows)
    assert metrics["skipped"].item() == 1.0
    imagine = agent.imagine

    def poisoned_imagine(rows):
        out = imagine(rows)
        return out._replace(returns=out.returns * float("inf"))

    monkeypatch.setattr(agent, "imagine", poisoned_imagine)
    policy = agent.train_policy(rows)
    after = _snapshot(agent)
    assert all(torch.equal(a, b) for a, b in zip(before[0], after[0])), "a network changed"
    assert all(torch.equal(a, b) for a, b in zip(before[1], after[1])), "an optimizer state changed"
    steps = cfg.policy.epochs * math.ceil(policy_rows(agent, rows) / cfg.policy.minibatch)
    assert policy["actor_skipped"].item() == policy["critic_skipped"].item() == steps
    reports = {k: read_guard(g, g.counters().tolist()) for k, g in agent.guards.items()}
    assert reports["model"]["skipped"] == 1 and "model/reward" in reports["model"]["terms"]
    assert reports["critic"]["max_run"] == steps and reports["actor"]["skipped"] == steps
    assert all(bool(v) for v in agent.params_finite().values())


def policy_rows(agent, rows) -> int:
    return agent.imagine(rows).action.shape[0]


def test_model_free_learner_skips_poisoned_updates():
    torch.manual_seed(0)
    cfg = build_config("debug", {"algo": "mappo"})
    learner = Mappo(SPEC, cfg, torch.device("cpu"))
    from mabl.algo.mappo import Batch

    t, b, n = 6, 2, SPEC.n_agents
    batch = Batch(obs=torch.randn(t, b, n, SPEC.obs_dim), state=torch.randn(t, b, SPEC.state_dim), avail=None,
                  action=torch.randint(0, SPEC.n_actions, (t, b, n)), log_prob=torch.full((t, b, n), -1.1),
                  value=torch.zeros(t, b, n), advantage=torch.randn(t, b, n), returns=torch.randn(t, b, n),
                  mask=torch.ones(t, b, dtype=torch.bool))
    learner.update(batch)
    state = copy.deepcopy(learner.state_dict())
    bad = batch._replace(advantage=batch.advantage * float("nan"), returns=batch.returns * float("nan"))
    out = learner.update(bad)
    steps = cfg.mappo.epochs * cfg.mappo.minibatches
    assert out["actor_skipped"].item() == out["critic_skipped"].item() == steps
    after = learner.state_dict()
    for key in ("actor", "critic"):
        assert all(torch.equal(v, after[key][k]) for k, v in state[key].items()), key
    for key in ("mean", "mean_sq", "debias"):  # the value normaliser did not take the NaN batch
        assert torch.equal(state["value_norm"][key], after["value_norm"][key])
