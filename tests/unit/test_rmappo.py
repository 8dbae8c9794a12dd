"""Recurrent MAPPO (``--algo rmappo``): the GRU state recorded at collection and reset at episode
starts against a hand-written GRU, the chunks against a hand loop, the losses with active masks
against direct formulas, and the exported policy (torch and ONNX): decentralized and stateful."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mabl.algo.rmappo import RecurrentBatch, Rmappo, active_agents, chunk_starts, make_chunks
from mabl.checkpoint import atomic_torch_save
from mabl.envs.base import EnvSpec, TimeStep
from mabl.gru_policy import GruPolicy
from mabl.models.gru import GruActor, GruCritic
from mabl.policy import load_policy
from mabl.presets import build_config

N, A, OBS = 2, 3, 3
SPEC = EnvSpec("fake-deaths", n_agents=N, obs_dim=OBS, state_dim=4, discrete=True, n_actions=A, has_action_mask=True,
               episode_limit=7, has_win=True)
CONTINUOUS = EnvSpec("fake-continuous", n_agents=2, obs_dim=5, state_dim=7, discrete=False, action_dim=3,
                     action_low=-0.4, action_high=0.8, episode_limit=20)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def plan(seed: int) -> tuple[int, int]:
    """(episode length 3..7, the step from which agent 1 is dead; 99 = never)."""
    rng = np.random.default_rng(seed + 1000)
    return int(rng.integers(3, 8)), int(rng.choice([1, 2, 99]))


class DeathEnv:
    """Agent i observes the one-hot of its target action (plus the time); from step ``death`` agent 1
    is dead the way SMAX marks it: all-zero observation, one available action. Reward = fraction of
    live agents on target. Episodes of ``plan(seed)[0]`` steps; at the limit 7 they are truncated."""

    spec = SPEC

    def reset(self, seed: int | None = None) -> TimeStep:
        self.rng = np.random.default_rng(seed)
        (self.length, self.death), self.t = plan(seed), 0
        return self._observe(0.0, False, False, None)

    def _observe(self, reward, terminated, truncated, info) -> TimeStep:
        self.target = self.rng.integers(0, A, size=N)
        obs = np.eye(A, dtype=np.float32)[self.target] + np.float32(self.t / 10)
        self.avail = np.ones((N, A), bool)
        if self.t >= self.death:
            obs[1] = 0.0
            self.avail[1] = [True, False, False]
        state = np.array([self.t / 7, self.target[0], self.target[1], float(self.t < self.death)], np.float32)
        return TimeStep(obs, state, self.avail.copy(), reward, terminated, truncated, info)

    def step(self, actions: np.ndarray) -> TimeStep:
        assert self.avail[np.arange(N), actions].all()
        alive = 2 if self.t < self.death else 1
        reward = float((actions[:alive] == self.target[:alive]).mean())
        self.t += 1
        done = self.t >= self.length
        truncated = done and self.length == SPEC.episode_limit
        return self._observe(reward, done and not truncated, truncated, {"win": reward == 1.0} if done else {})

    def close(self) -> None:
        pass


def learner(spec: EnvSpec = SPEC, **flags) -> Rmappo:
    torch.manual_seed(0)
    cfg = build_config("debug", {"algo": "rmappo", "device": "cpu", **flags})
    out = Rmappo(spec, cfg, torch.device("cpu"))
    with torch.no_grad():  # spread the weights beyond their initialisation, so outputs vary with the inputs
        for p in [*out.actor.parameters(), *out.critic.parameters()]:
            p.add_(0.3 * torch.randn_like(p))
    return out


def collected(agent: Rmappo):
    seeds = itertools.count()
    return agent.collect([DeathEnv() for _ in range(agent.cfg.n_envs)], lambda: next(seeds))


# ---- an independent GRU network: plain tensor algebra on the module's parameters ----------------

def hand_net(net, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of a RecurrentAgentNet for rows ``x [R, in]`` of agents ``0..R-1``, ``h [R, H]``."""
    p = dict(net.named_parameters())

    def norm(v, prefix):
        mu, var = v.mean(-1, keepdim=True), v.var(-1, unbiased=False, keepdim=True)
        return (v - mu) / torch.sqrt(var + 1e-5) * p[prefix + ".weight"] + p[prefix + ".bias"]

    v = torch.cat([x, torch.eye(net.n_agents)[: x.shape[0]]], -1)
    v = norm(v, "feature_norm")
    v = norm(torch.relu(v @ p["base.0.weight"].T + p["base.0.bias"]), "base.2")
    v = norm(torch.relu(v @ p["base.3.weight"].T + p["base.3.bias"]), "base.5")
    gi = v @ p["gru.weight_ih_l0"].T + p["gru.bias_ih_l0"]
    gh = h @ p["gru.weight_hh_l0"].T + p["gru.bias_hh_l0"]
    H = h.shape[-1]
    r = torch.sigmoid(gi[:, :H] + gh[:, :H])
    z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
    n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
    h_next = (1 - z) * n + z * h
    return norm(h_next, "gru_norm") @ p["head.weight"].T + p["head.bias"], h_next


def hand_episode(net, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs and entering states over one episode ``xs [L, N, in]`` from a zero state."""
    h = torch.zeros(xs.shape[1], net.hidden)
    outs, entering = [], []
    for x in xs:
        entering.append(h)
        out, h = hand_net(net, x, h)
        outs.append(out)
    return torch.stack(outs), torch.stack(entering)


def hand_chunks(net, xs: torch.Tensor, recorded: torch.Tensor, chunk: int) -> torch.Tensor:
    """Outputs over one episode ``xs [L, N, in]`` run in chunks of ``chunk`` steps, each from the
    state ``recorded[t0]`` of its first step ``t0``."""
    outs = []
    for t, x in enumerate(xs):
        if t % chunk == 0:
            h = recorded[t]
        out, h = hand_net(net, x, h)
        outs.append(out)
    return torch.stack(outs)


def hand_log_probs(logits: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(~avail, -math.inf).log_softmax(-1)


# ---- chunks ------------------------------------------------------------------------------------

def test_chunks_are_cut_from_each_episode_start_as_a_hand_loop_cuts_them():
    lengths, chunk = [3, 12, 10], 5
    T, B = 15, len(lengths)
    gen = torch.Generator().manual_seed(0)
    mask = torch.zeros(T, B, dtype=torch.bool)
    for b, length in enumerate(lengths):
        mask[:length, b] = True
    rnd = lambda *shape: torch.randn(*shape, generator=gen)
    batch = RecurrentBatch(obs=rnd(T, B, N, OBS), state=rnd(T, B, 4), avail=None,
                           action=torch.randint(0, A, (T, B, N), generator=gen), log_prob=rnd(T, B, N),
                           value=rnd(T, B, N), advantage=rnd(T, B, N), returns=rnd(T, B, N), mask=mask,
                           active=mask.unsqueeze(-1).expand(T, B, N).clone(), h_actor=rnd(T, B, N, 8),
                           h_critic=rnd(T, B, N, 8))
    expected = [(0, 0), (0, 1), (5, 1), (10, 1), (0, 2), (5, 2)]
    assert chunk_starts(lengths, chunk) == expected
    cut = make_chunks(batch, chunk)
    assert cut.first.shape == (chunk, len(expected))
    for k, (t0, b) in enumerate(expected):
        for name in ("obs", "state", "action", "log_prob", "advantage", "mask", "active"):
            torch.testing.assert_close(cut.fields[name][:, k], getattr(batch, name)[t0 : t0 + chunk, b], rtol=0, atol=0)
        torch.testing.assert_close(cut.h_actor[k], batch.h_actor[t0, b], rtol=0, atol=0)
        torch.testing.assert_close(cut.h_critic[k], batch.h_critic[t0, b], rtol=0, atol=0)
        assert cut.first[:, k].tolist() == [t0 + i == 0 for i in range(chunk)]
    # the padding of the 3-step episode's chunk is not a real step
    assert cut.fields["mask"][:, 0].tolist() == [True] * 3 + [False] * 2


def test_an_episode_start_inside_a_sequence_zeroes_the_state():
    actor = learner().actor
    gen = torch.Generator().manual_seed(1)
    x, h0 = torch.randn(8, 3, N, OBS, generator=gen), torch.randn(3, N, actor.hidden, generator=gen)
    first = torch.zeros(8, 3, dtype=torch.bool)
    first[5, 1] = True  # column 1 starts a new episode at step 5
    with torch.no_grad():
        out, _ = actor.sequence(x, h0, first)
        head, _ = actor.sequence(x[:5, 1:2], h0[1:2], first[:5, 1:2])
        tail, _ = actor.sequence(x[5:, 1:2], torch.zeros_like(h0[1:2]), torch.zeros(3, 1, dtype=torch.bool))
        whole, _ = actor.sequence(x[:, [0, 2]], h0[[0, 2]], first[:, [0, 2]])
    torch.testing.assert_close(out[:, 1:2], torch.cat([head, tail]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, [0, 2]], whole, atol=1e-5, rtol=0)
    # and the sequence equals the hand-written GRU stepped from h0 (column 0)
    h, outs = h0[0], []
    for t in range(8):
        o, h = hand_net(actor, x[t, 0], h)
        outs.append(o)
    torch.testing.assert_close(out[:, 0], torch.stack(outs).detach(), atol=1e-5, rtol=0)


# ---- collection --------------------------------------------------------------------------------

def test_collection_records_the_carried_state_and_the_active_agents():
    agent = learner()
    episodes, batch = collected(agent)
    assert sum(ep.length for ep in episodes) >= agent.cfg.rollout_steps
    assert batch.obs.shape[0] % agent.rcfg.chunk_length == 0
    for b, ep in enumerate(episodes):
        L = ep.length
        obs = torch.from_numpy(ep.rows["obs"])
        with torch.no_grad():
            logits, entering = hand_episode(agent.actor, obs)
        torch.testing.assert_close(batch.h_actor[:L, b], entering, atol=1e-5, rtol=0)  # zero at t = 0
        assert (batch.h_actor[0, b] == 0).all()
        lp = hand_log_probs(logits, torch.from_numpy(ep.rows["avail"]))
        want = lp.gather(-1, batch.action[:L, b].unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(batch.log_prob[:L, b], want, atol=1e-5, rtol=0)
        death = [plan(s)[1] for s in range(len(episodes))][b]  # episode b was reset with seed b
        assert batch.active[:L, b, 0].all()
        assert batch.active[:L, b, 1].tolist() == [t < death for t in range(L)]
        assert not batch.active[L:, b].any()
        # the critic's values: a pass over the episode's states from a zero state
        with torch.no_grad():
            state = torch.from_numpy(ep.rows["state"]).unsqueeze(1).expand(L, N, 4)
            values, h_critic = hand_episode(agent.critic, state)
        torch.testing.assert_close(batch.value[:L, b], values.squeeze(-1), atol=1e-5, rtol=0)
        torch.testing.assert_close(batch.h_critic[:L, b], h_critic, atol=1e-5, rtol=0)


def test_replaying_the_chunks_from_their_recorded_states_gives_the_collected_log_probs():
    agent = learner(**{"rmappo.chunk_length": 3})
    _, batch = collected(agent)
    cut = make_chunks(batch, 3)
    with torch.no_grad():
        out = agent.actor.policy_sequence(cut.fields["obs"], cut.h_actor, cut.first, cut.fields["avail"])
    lp = out.log_softmax(-1).gather(-1, cut.fields["action"].unsqueeze(-1)).squeeze(-1)
    valid = cut.fields["mask"]
    torch.testing.assert_close(lp[valid], cut.fields["log_prob"][valid], atol=1e-5, rtol=0)


def test_active_agents_rule():
    obs = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]]])
    avail = torch.tensor([[[True, False, False], [True, True, False], [True, False, False]]])
    assert active_agents(obs, avail).tolist() == [[False, True, True]]  # dead: zero obs and one action
    assert active_agents(obs, None).all()


# ---- the losses --------------------------------------------------------------------------------

def huber(e: torch.Tensor, d: float) -> torch.Tensor:
    return torch.where(e.abs() <= d, 0.5 * e * e, d * (e.abs() - 0.5 * d))


@pytest.mark.parametrize("policy_masks, value_masks", [(True, False), (False, True)])
def test_first_minibatch_losses_match_the_direct_formulas(policy_masks, value_masks):
    agent = learner(**{"rmappo.epochs": 1, "mappo.minibatches": 1, "mappo.value_norm": False,
                       "mappo.clip": 0.1, "mappo.entropy": 0.05, "rmappo.chunk_length": 4,
                       "rmappo.policy_active_masks": policy_masks, "rmappo.value_active_masks": value_masks})
    episodes, batch = collected(agent)
    with torch.no_grad():  # move the networks so that the ratios and the value clip are not trivial
        for p in [*agent.actor.parameters(), *agent.critic.parameters()]:
            p.add_(0.2 * torch.randn_like(p))
    surr, ent, pol_w, vloss, v_w = 0.0, 0.0, 0.0, 0.0, 0.0
    live = batch.active
    adv_mean, adv_std = batch.advantage[live].mean(), batch.advantage[live].std(correction=0)
    for b, ep in enumerate(episodes):
        L = ep.length
        with torch.no_grad():  # the moved networks, re-run from the states recorded at each chunk's start
            logits = hand_chunks(agent.actor, torch.from_numpy(ep.rows["obs"]), batch.h_actor[:, b], 4)
            state = torch.from_numpy(ep.rows["state"]).unsqueeze(1).expand(L, N, 4)
            values = hand_chunks(agent.critic, state, batch.h_critic[:, b], 4)
        lp_all = hand_log_probs(logits, torch.from_numpy(ep.rows["avail"]))
        lp = lp_all.gather(-1, batch.action[:L, b].unsqueeze(-1)).squeeze(-1)
        entropy = -(lp_all.exp() * lp_all.nan_to_num(neginf=0.0)).sum(-1)
        adv = (batch.advantage[:L, b] - adv_mean) / (adv_std + 1e-5)
        ratio = (lp - batch.log_prob[:L, b]).exp()
        term = torch.min(ratio * adv, ratio.clamp(0.9, 1.1) * adv)
        w = live[:L, b].float() if policy_masks else torch.ones(L, N)
        surr, ent, pol_w = surr + (term * w).sum(), ent + (entropy * w).sum(), pol_w + w.sum()
        v, old, ret = values.squeeze(-1), batch.value[:L, b], batch.returns[:L, b]
        loss = torch.max(huber(v - ret, 10.0), huber(old + (v - old).clamp(-0.1, 0.1) - ret, 10.0))
        w = live[:L, b].float() if value_masks else torch.ones(L, N)
        vloss, v_w = vloss + (loss * w).sum(), v_w + w.sum()
    metrics = agent.update(batch)
    torch.testing.assert_close(metrics["actor_loss"], -surr / pol_w - 0.05 * ent / pol_w, atol=1e-5, rtol=0)
    torch.testing.assert_close(metrics["entropy"], ent / pol_w, atol=1e-5, rtol=0)
    torch.testing.assert_close(metrics["critic_loss"], vloss / v_w, atol=1e-5, rtol=0)
    assert float(metrics["samples"]) == sum(ep.length for ep in episodes)


def test_update_is_reproducible_and_round_trips_its_state():
    a, b = learner(), learner()
    torch.manual_seed(3)
    ma = a.update(collected(a)[1])
    torch.manual_seed(3)
    mb = b.update(collected(b)[1])
    assert {k: float(v) for k, v in ma.items()} == {k: float(v) for k, v in mb.items()}
    c = learner(**{"mappo.lr": 1e-2})
    c.load_state_dict(a.state_dict())
    for x, y in zip(a.actor.state_dict().values(), c.actor.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert c.actor_opt.state_dict()["param_groups"][0]["lr"] == a.cfg.lr


def test_continuous_actions_learn_a_target():
    """MAMuJoCo-like Gaussian actions (Yu et al.'s ``DiagGaussian``): the greedy action moves to the
    target (the task of test_continuous.py, where mappo learns it)."""
    from test_continuous import SPEC as TARGET
    from test_continuous import TargetEnv

    torch.manual_seed(0)
    cfg = build_config("debug", {"algo": "rmappo", "mappo.lr": 3e-3, "mappo.hidden": 32, "rmappo.epochs": 4,
                                 "mappo.n_envs": 4, "mappo.rollout_steps": 64, "rmappo.chunk_length": 2})
    agent = Rmappo(TARGET, cfg, torch.device("cpu"))
    envs, seeds, probe = [TargetEnv() for _ in range(4)], itertools.count(), TargetEnv()

    def error() -> float:  # squared distance of the greedy (mean) first action to fresh targets
        total = 0.0
        for seed in range(20):
            policy = agent.policy()
            step = probe.reset(seed + 5000)
            mean = policy.act(step.obs, deterministic=True)[1]["mean"]
            total += float(((np.clip(mean, -1, 1) - probe.target) ** 2).sum(-1).mean())
        return total / 20

    start = error()
    _, batch = agent.collect(envs, lambda: next(seeds))
    assert batch.action.dtype == torch.float32 and batch.action.shape[-1] == TARGET.action_dim
    for _ in range(15):
        metrics = agent.update(agent.collect(envs, lambda: next(seeds))[1])
    assert all(math.isfinite(float(v)) for v in metrics.values())
    assert error() < 0.5 * start


# ---- the exported policy -------------------------------------------------------------------------

def _episode(spec: EnvSpec, rng: np.random.Generator, steps: int = 12):
    obs = rng.normal(size=(steps, spec.n_agents, spec.obs_dim)).astype(np.float32) * 2
    if not spec.discrete:
        return obs, [None] * steps
    avail = rng.random((steps, spec.n_agents, spec.n_actions)) < 0.7
    avail[..., 0] = True
    return obs, list(avail)


def _policies(tmp_path, spec: EnvSpec = SPEC):
    agent = learner(spec)
    path = tmp_path / "policy.pt"
    atomic_torch_save(agent.policy_payload(agent_cfg(spec)), path)
    return agent, load_policy(str(path))


def agent_cfg(spec: EnvSpec):
    return build_config("debug", {"algo": "rmappo", "device": "cpu"})


def test_exported_policy_is_decentralized_and_stateful(tmp_path):
    agent, loaded = _policies(tmp_path)
    assert isinstance(loaded, GruPolicy) and not loaded.spec.centralized
    obs, avail = _episode(SPEC, np.random.default_rng(0))
    other = obs.copy()
    other[:, 1] = np.random.default_rng(1).normal(size=other[:, 1].shape)  # agent 1 sees something else
    for policy in (agent.policy(), loaded):
        runs = []
        for episode in (obs, other):
            policy.reset()
            runs.append(np.stack([policy.act(o, a, deterministic=True)[1]["probs"] for o, a in zip(episode, avail)]))
        np.testing.assert_allclose(runs[0][:, 0], runs[1][:, 0], rtol=0, atol=1e-6)  # agent 0 unchanged
        assert np.abs(runs[0][:, 1] - runs[1][:, 1]).max() > 1e-3
        # stateful: the last step's output depends on the earlier steps; reset() clears the memory
        policy.reset()
        fresh = policy.act(obs[-1], avail[-1])[1]["probs"]
        assert np.abs(fresh - runs[0][-1]).max() > 1e-4
        policy.reset()
        np.testing.assert_allclose(policy.act(obs[-1], avail[-1])[1]["probs"], fresh, rtol=0, atol=1e-6)


def test_policy_state_is_the_hand_gru_state(tmp_path):
    _, loaded = _policies(tmp_path)
    obs, avail = _episode(SPEC, np.random.default_rng(2), steps=5)
    loaded.reset()
    with torch.no_grad():
        logits, _ = hand_episode(loaded.actor, torch.from_numpy(obs))
    for t in range(5):
        probs = loaded.act(obs[t], avail[t])[1]["probs"]
        want = hand_log_probs(logits[t], torch.from_numpy(avail[t])).exp().numpy()
        np.testing.assert_allclose(probs, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("spec", [SPEC, CONTINUOUS], ids=["discrete", "continuous"])
def test_onnx_graph_equals_the_torch_policy_and_is_decentralized(spec, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from mabl.onnx_export import export_onnx
    from mabl.onnx_policy import OnnxPolicy

    agent = learner(spec)
    meta = export_onnx(agent, agent_cfg(spec), spec, tmp_path / "p.onnx")
    assert meta["algo"] == "rmappo" and meta["inputs"][:3] == ["obs", "agent", "h"] and meta["outputs"][-1] == "h_next"
    torch_policy, onnx_policy = agent.policy(), OnnxPolicy(str(tmp_path / "p.onnx"))
    obs, avail = _episode(spec, np.random.default_rng(5))
    for policy in (torch_policy, onnx_policy):
        policy.reset()
    for t in range(len(obs)):
        _, want = torch_policy.act(obs[t], avail[t], deterministic=True)
        _, got = onnx_policy.act(obs[t], avail[t], deterministic=True)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-5, err_msg=f"{key} at step {t}")
        np.testing.assert_allclose(onnx_policy.h, torch_policy.h.numpy(), rtol=0, atol=1e-5)
    # one agent row alone (agents=[1]) acts as that agent does within the team
    single = OnnxPolicy(str(tmp_path / "p.onnx"), agents=[1])
    onnx_policy.reset()
    single.reset()
    for t in range(len(obs)):
        _, team = onnx_policy.act(obs[t], avail[t], deterministic=True)
        _, alone = single.act(obs[t][1:], None if avail[t] is None else avail[t][1:], deterministic=True)
        key = "probs" if spec.discrete else "mean"
        np.testing.assert_allclose(alone[key][0], team[key][1], rtol=0, atol=1e-5)
    onnx_policy.reset()
    assert (onnx_policy.h == 0).all()


def test_networks_are_theirs():
    """Feature norm, MLP base of two Linear-ReLU-LayerNorm layers, one GRU with a LayerNorm, head
    gains 0.01 (actor) and 1 (critic), hidden 64 by default."""
    cfg = build_config("paper", {"algo": "rmappo"})
    actor, critic = GruActor(SPEC, cfg.mappo.hidden), GruCritic(SPEC, cfg.mappo.hidden)
    assert actor.hidden == 64 and actor.gru.num_layers == 1 and cfg.rmappo.chunk_length == 10
    assert cfg.rmappo.epochs == 15 and cfg.rmappo.value_active_masks is False
    w = actor.gru.weight_hh_l0  # orthogonal, gain 1: W W^T = I on its 64 columns
    torch.testing.assert_close(w.T @ w, torch.eye(64), atol=1e-4, rtol=0)
    # orthogonal with gain g: the singular values are all g
    assert torch.linalg.svdvals(actor.head.weight).sub(0.01).abs().max() < 1e-5
    assert torch.linalg.svdvals(critic.head.weight).sub(1.0).abs().max() < 1e-5
    assert torch.linalg.svdvals(actor.base[3].weight).sub(math.sqrt(2)).abs().max() < 1e-4
    assert all(float(b.detach().abs().max()) == 0 for n, b in actor.named_parameters() if "bias" in n and "norm" not in n)


@pytest.mark.integration
def test_train_resume_export_and_diagnose_through_the_cli(tmp_path):
    pytest.importorskip("jaxmarl")

    def mabl(*args, check=True):
        proc = subprocess.run([sys.executable, "-m", "mabl", *args], capture_output=True, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=600)
        assert not check or proc.returncode == 0, proc.stderr[-3000:]
        return proc

    def train(run_dir, steps):
        mabl("train", "--algo", "rmappo", "--env", "smax:3m", "--preset", "debug", "--steps", str(steps), "--seed",
             "1", "--checkpoint-every", "100", "--run-dir", str(run_dir), "--progress", "false", "--threads", "1")

    def records(run_dir):
        import json

        from mabl.train import TIMING_KEYS

        return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
                for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    train(tmp_path / "straight", 240)
    train(tmp_path / "resumed", 120)
    train(tmp_path / "resumed", 240)
    assert records(tmp_path / "resumed") == records(tmp_path / "straight")
    out = tmp_path / "policy.pt"
    assert "decentralized" in mabl("export", "--run-dir", str(tmp_path / "straight"), "--out", str(out)).stdout
    assert isinstance(load_policy(str(out)), GruPolicy)
    proc = mabl("diagnose", "--run-dir", str(tmp_path / "straight"), check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "is a rmappo run" in proc.stderr


@pytest.mark.integration
def test_the_dead_rule_is_smax_unit_alive():
    """On SMAX the rule of ``active_agents`` (zero observation, one available action) is exactly
    SMAX's own ``unit_alive`` of the allies, at every step of random-play episodes with deaths."""
    pytest.importorskip("jaxmarl")
    from mabl.envs.registry import make_env

    env = make_env("smax:3m", seed=0)
    inner = env
    while not hasattr(inner, "_env_state"):  # the adapter under the registry's checking wrapper
        inner = inner.env
    rng, deaths = np.random.default_rng(0), 0
    for seed in range(6):
        step = env.reset(seed=seed)
        while True:
            alive = np.asarray(inner._env_state.state.unit_alive)[: env.spec.n_agents]
            got = active_agents(torch.from_numpy(step.obs), torch.from_numpy(step.avail)).numpy()
            np.testing.assert_array_equal(got, alive)
            deaths += int((~alive).sum())
            if step.done:
                break
            actions = np.array([rng.choice(np.flatnonzero(a)) for a in step.avail])
            step = env.step(actions)
    assert deaths > 0  # the check saw dead allies
