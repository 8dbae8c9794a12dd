"""``--algo qmix`` (QMIX as pymarl runs it): the mixer's monotonicity and layout, the double-Q targets,
the masking of unavailable actions and of padding, the epsilon schedule, the target-update timing, the
episode replay, the exported policy (torch and ONNX), the refusals; and one end-to-end
train / resume / export run through the CLI (integration)."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mabl.algo import build_learner
from mabl.algo.qmix import EpisodeRecord, EpisodeReplay, epsilon_at, pad_batch, td_targets
from mabl.checkpoint import atomic_torch_save
from mabl.config import QmixConfig
from mabl.envs.base import EnvSpec
from mabl.errors import MablError
from mabl.models.qmix import QMixer
from mabl.policy import load_policy
from mabl.presets import build_config

SPEC = EnvSpec(name="qmix-test", n_agents=3, obs_dim=5, state_dim=7, discrete=True, n_actions=4,
               has_action_mask=True, episode_limit=10)


def _learner(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    cfg = build_config("debug", {"algo": "qmix", "device": "cpu", **overrides})
    return build_learner(SPEC, cfg, torch.device("cpu")), cfg


def _record(rng: np.random.Generator, length: int, terminated: bool) -> EpisodeRecord:
    n, a = SPEC.n_agents, SPEC.n_actions
    avail = rng.random((length + 1, n, a)) < 0.6
    avail[..., 0] = True
    action = np.stack([[rng.choice(np.flatnonzero(avail[t, i])) for i in range(n)] for t in range(length)])
    return EpisodeRecord(rng.normal(size=(length + 1, n, SPEC.obs_dim)).astype(np.float32),
                         rng.normal(size=(length + 1, SPEC.state_dim)).astype(np.float32), avail,
                         action.astype(np.int64), rng.normal(size=length).astype(np.float32), terminated)


# ---------------------------------------------------------------- the mixer
@pytest.mark.parametrize("layers", [1, 2])
def test_the_mixer_is_monotonic_in_every_agents_q(layers):
    """dQ_tot/dq_i >= 0 at random states and Q-values, with hypernetwork weights spread so that their
    raw outputs take both signs (without the abs, some derivatives here are negative)."""
    torch.manual_seed(layers)
    mixer = QMixer(4, 6, embed=8, hypernet_layers=layers, hypernet_embed=16)
    with torch.no_grad():
        for p in mixer.parameters():
            p.mul_(3.0)
    q = (torch.randn(256, 4) * 5).requires_grad_(True)
    state = torch.randn(256, 6) * 3
    grad, = torch.autograd.grad(mixer(q, state).sum(), q)
    assert (grad >= 0).all()
    assert (grad > 0).float().mean() > 0.5  # not monotonic by being flat
    raw_w1 = mixer.hyper_w1(state)
    assert (raw_w1 < 0).any() and (raw_w1 > 0).any()  # the abs is what makes it monotonic


def test_the_mixer_matches_the_formula_with_pymarls_weight_layout():
    """Q_tot = sum_e w2_e ELU(sum_i q_i W1[i, e] + b1_e) + V(s), with W1[i, e] = |hyper_w1(s)[i * E + e]|
    (pymarl's ``view(-1, n_agents, embed_dim)``), computed by loops."""
    torch.manual_seed(3)
    n, g, e = 3, 5, 4
    mixer = QMixer(n, g, embed=e, hypernet_layers=1, hypernet_embed=8)
    q, state = torch.randn(n), torch.randn(g)
    with torch.no_grad():
        raw_w1 = (mixer.hyper_w1.weight @ state + mixer.hyper_w1.bias).tolist()
        b1 = (mixer.hyper_b1.weight @ state + mixer.hyper_b1.bias).tolist()
        w2 = (mixer.hyper_w2.weight @ state + mixer.hyper_w2.bias).tolist()
        v = mixer.value(state).item()
        got = mixer(q, state).item()
    total = v
    for k in range(e):
        pre = b1[k] + sum(q[i].item() * abs(raw_w1[i * e + k]) for i in range(n))
        total += abs(w2[k]) * (pre if pre > 0 else math.expm1(pre))
    assert got == pytest.approx(total, abs=1e-5)


# ---------------------------------------------------------------- targets and the loss
def _sum_mixer(q, state):
    return q.sum(-1)


def test_double_q_targets_on_a_hand_made_batch():
    """T = 2 steps, 1 episode, 2 agents, 3 actions, gamma 0.5, a sum mixer. Rows 1 and 2 are the next
    steps; the live network prefers an unavailable action at row 1 for agent 0 (never picked)."""
    live = torch.zeros(3, 1, 2, 3)
    target = torch.zeros(3, 1, 2, 3)
    avail = torch.ones(3, 1, 2, 3, dtype=torch.bool)
    live[1, 0, 0] = torch.tensor([1.0, 9.0, 2.0])
    avail[1, 0, 0, 1] = False  # live's best available for agent 0 at row 1: action 2
    target[1, 0, 0] = torch.tensor([5.0, 100.0, 3.0])
    live[1, 0, 1] = torch.tensor([0.0, 4.0, 1.0])  # agent 1: action 1
    target[1, 0, 1] = torch.tensor([7.0, -2.0, 6.0])
    live[2, 0, 0] = torch.tensor([3.0, 0.0, 0.0])  # row 2: agent 0 action 0, agent 1 action 2
    target[2, 0, 0] = torch.tensor([10.0, 20.0, 30.0])
    live[2, 0, 1] = torch.tensor([0.0, 0.0, 8.0])
    target[2, 0, 1] = torch.tensor([1.0, 2.0, 4.0])
    reward = torch.tensor([[1.0], [2.0]])
    state = torch.zeros(2, 1, 4)
    not_done = torch.zeros(2, 1)
    # double Q: the target network's value of the live network's pick
    y = td_targets(live, target, avail, reward, not_done, state, _sum_mixer, 0.5, double_q=True)
    assert y[:, 0].tolist() == pytest.approx([1.0 + 0.5 * (3.0 + -2.0), 2.0 + 0.5 * (10.0 + 4.0)])
    # plain Q-learning: the target network's own max over the available actions (100 is unavailable)
    y = td_targets(live, target, avail, reward, not_done, state, _sum_mixer, 0.5, double_q=False)
    assert y[:, 0].tolist() == pytest.approx([1.0 + 0.5 * (5.0 + 7.0), 2.0 + 0.5 * (30.0 + 4.0)])
    # a terminated last step does not bootstrap
    done = torch.tensor([[0.0], [1.0]])
    y = td_targets(live, target, avail, reward, done, state, _sum_mixer, 0.5, double_q=True)
    assert y[:, 0].tolist() == pytest.approx([1.0 + 0.5 * 1.0, 2.0])


def test_pad_batch_marks_termination_and_real_steps_only():
    rng = np.random.default_rng(0)
    eps = [_record(rng, 4, True), _record(rng, 2, False), _record(rng, 3, True)]
    b = pad_batch(eps, torch.device("cpu"))
    assert b.obs.shape == (5, 3, 3, 5) and b.action.shape == (4, 3, 3) and b.mask.shape == (4, 3)
    assert b.mask.T.tolist() == [[True] * 4, [True, True, False, False], [True, True, True, False]]
    # terminated: 1 on the last step of a terminated episode only; the truncated one bootstraps everywhere
    assert b.terminated.T.tolist() == [[0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 1, 0]]
    np.testing.assert_array_equal(b.obs[:3, 1].numpy(), eps[1].obs)  # rows 0..L: the final next step is kept
    assert b.avail[3:, 1].all() and (b.reward[2:, 1] == 0).all()


def test_padding_never_enters_the_loss():
    """The loss of a batch with episodes of different lengths = the squared TD errors of the real steps,
    summed per episode (each episode on its own, no padding) and divided by their count; garbage
    written into the padded rows changes nothing."""
    learner, _ = _learner()
    rng = np.random.default_rng(1)
    eps = [_record(rng, 6, True), _record(rng, 2, False), _record(rng, 4, False)]
    with torch.no_grad():
        loss, metrics = learner.loss(pad_batch(eps, learner.device))
        sums = [learner.loss(pad_batch([ep], learner.device))[0].item() * len(ep.reward) for ep in eps]
    assert metrics["samples"].item() == 12
    assert loss.item() == pytest.approx(sum(sums) / 12, rel=1e-5)
    batch = pad_batch(eps, learner.device)
    poisoned = batch._replace(obs=batch.obs.clone(), state=batch.state.clone(), reward=batch.reward.clone(),
                              action=batch.action.clone(), avail=batch.avail.clone())
    for i, ep in enumerate(eps):
        n = len(ep.reward)
        poisoned.obs[n + 1:, i] = 1e4
        poisoned.state[n + 1:, i] = -1e4
        poisoned.reward[n:, i] = 1e6
        poisoned.action[n:, i] = 3
        poisoned.avail[n + 1:, i, :, 1:] = False
    with torch.no_grad():
        assert learner.loss(poisoned)[0].item() == pytest.approx(loss.item(), rel=1e-6)


# ---------------------------------------------------------------- acting
def test_the_epsilon_schedule_is_pymarls_linear_one():
    c = QmixConfig()
    assert [epsilon_at(c, t) for t in (0, 10_000, 25_000, 50_000, 200_000)] == pytest.approx(
        [1.0, 1.0 - 0.95 * 0.2, 0.525, 0.05, 0.05])


class _Env:
    """A scripted 3-agent env: episodes of ``length`` steps, action 3 never available to agent 0."""

    def __init__(self, length: int = 5, truncate: bool = False):
        self.spec, self.length, self.truncate, self.t = SPEC, length, truncate, 0
        self.rng = np.random.default_rng(0)

    def _step(self, reward: float = 0.0, end: bool = False):
        from mabl.envs.base import TimeStep

        avail = np.ones((3, 4), bool)
        avail[0, 3] = False
        return TimeStep(self.rng.normal(size=(3, 5)).astype(np.float32), np.zeros(7, np.float32), avail, reward,
                        terminated=end and not self.truncate, truncated=end and self.truncate, info={"win": False})

    def reset(self, seed=None):
        self.t = 0
        return self._step()

    def step(self, actions):
        assert actions.shape == (3,)
        self.t += 1
        return self._step(1.0, self.t == self.length)


def test_collect_stores_one_epsilon_greedy_episode_and_counts_env_steps():
    learner, _ = _learner()
    seeds = iter(range(100))
    env = _Env(length=5)
    for k in range(3):
        episodes, _ = learner.collect([env], lambda: next(seeds))
        assert len(episodes) == 1 and episodes[0].length == 5 and episodes[0].ret == 5.0
        assert learner.epsilon == epsilon_at(learner.cfg, 5 * k)  # the env steps before this episode
    assert learner.env_steps == 15 and learner.episodes == 3 and len(learner.replay) == 3
    stored = learner.replay.slots[0]
    assert stored.obs.shape == (6, 3, 5) and stored.action.shape == (5, 3) and stored.terminated
    assert (stored.action[:, 0] != 3).all()
    truncated, _ = _learner()
    truncated.collect([_Env(length=5, truncate=True)], lambda: 0)
    assert not truncated.replay.slots[0].terminated  # a time-limit end bootstraps


def test_epsilon_greedy_explores_available_actions_only_and_is_greedy_at_zero():
    learner, _ = _learner()
    q = torch.tensor([[0.0, 1.0, 5.0, 2.0], [3.0, 0.0, 0.0, 1.0]])
    avail = torch.tensor([[True, True, False, True], [True, True, True, True]])
    torch.manual_seed(0)
    greedy = learner._epsilon_greedy(q, avail, 0.0)
    assert greedy.tolist() == [3, 0]  # agent 0's best (action 2) is unavailable
    draws = torch.stack([learner._epsilon_greedy(q, avail, 1.0) for _ in range(2000)])
    counts = torch.stack([(draws[:, i, None] == torch.arange(4)).float().mean(0) for i in range(2)])
    assert counts[0, 2] == 0 and counts[0, [0, 1, 3]].sub(1 / 3).abs().max() < 0.05
    assert counts[1].sub(0.25).abs().max() < 0.05


def test_policy_is_greedy_over_available_actions_and_keeps_its_state_until_reset():
    learner, _ = _learner()
    with torch.no_grad():
        for p in learner.agent.parameters():
            p.add_(0.5 * torch.randn_like(p))
    policy = learner.policy()
    rng = np.random.default_rng(3)
    obs = rng.normal(size=(3, 5)).astype(np.float32)
    avail = np.ones((3, 4), bool)
    avail[1, :2] = False
    policy.reset()
    first, info = policy.act(obs, avail, deterministic=True)
    q = info["q"]
    masked = np.where(avail, q, -np.inf)
    np.testing.assert_array_equal(first, masked.argmax(-1))
    want = np.exp(masked - masked.max(-1, keepdims=True))
    np.testing.assert_allclose(info["probs"], want / want.sum(-1, keepdims=True), atol=1e-6)
    assert (info["probs"][1, :2] == 0).all()
    _, again = policy.act(obs, avail, deterministic=True)  # same obs, but the GRU state and last action moved on
    assert not np.allclose(again["q"], q)
    policy.reset()
    _, fresh = policy.act(obs, avail, deterministic=True)
    np.testing.assert_array_equal(fresh["q"], q)


def test_sampled_actions_follow_the_softmax_of_the_available_q_values():
    learner, _ = _learner()
    policy = learner.policy()
    policy.generator = torch.Generator().manual_seed(0)
    obs = np.random.default_rng(4).normal(size=(3, 5)).astype(np.float32)
    avail = np.ones((3, 4), bool)
    avail[2, 0] = False
    draws, probs = [], None
    for _ in range(3000):
        policy.reset()
        action, info = policy.act(obs, avail)
        draws.append(action)
        probs = info["probs"]
    freq = np.stack([(np.asarray(draws)[:, i, None] == np.arange(4)).mean(0) for i in range(3)])
    assert freq[2, 0] == 0 and np.abs(freq - probs).max() < 0.04


def test_an_agents_action_reads_only_its_own_observation():
    learner, _ = _learner()
    team, other = learner.policy(), learner.policy()
    rng = np.random.default_rng(5)
    for _ in range(6):
        obs = rng.normal(size=(3, 5)).astype(np.float32)
        changed = obs.copy()
        changed[1:] = rng.normal(size=(2, 5)) * 5
        avail = np.ones((3, 4), bool)
        _, mine = team.act(obs, avail, deterministic=True)
        _, theirs = other.act(changed, avail, deterministic=True)
        np.testing.assert_array_equal(theirs["q"][0], mine["q"][0])
        assert not np.allclose(theirs["q"][1:], mine["q"][1:])


def test_the_exported_policy_acts_as_the_live_one(tmp_path):
    learner, cfg = _learner()
    path = tmp_path / "policy.pt"
    atomic_torch_save(learner.policy_payload(cfg), path)
    live, loaded = learner.policy(), load_policy(str(path))
    assert type(loaded).__name__ == "QmixPolicy" and not loaded.spec.centralized
    rng = np.random.default_rng(6)
    for _ in range(5):
        obs = rng.normal(size=(3, 5)).astype(np.float32)
        avail = rng.random((3, 4)) < 0.7
        avail[:, 0] = True
        a, x = live.act(obs, avail, deterministic=True)
        b, y = loaded.act(obs, avail, deterministic=True)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(x["q"], y["q"], atol=1e-6)


def test_the_onnx_graph_acts_as_the_pytorch_policy(tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from mabl.onnx_export import export_onnx
    from mabl.onnx_policy import OnnxPolicy

    learner, cfg = _learner()
    with torch.no_grad():
        for p in learner.agent.parameters():
            p.add_(0.5 * torch.randn_like(p))
    meta = export_onnx(learner, cfg, SPEC, tmp_path / "p.onnx")
    assert meta["algo"] == "qmix" and "h" in meta["inputs"] and "agent" in meta["inputs"]
    torch_policy, onnx_policy = learner.policy(), OnnxPolicy(str(tmp_path / "p.onnx"))
    alone = OnnxPolicy(str(tmp_path / "p.onnx"), agents=[2])
    rng = np.random.default_rng(7)
    seen = set()
    for t in range(20):
        obs = rng.normal(size=(3, 5)).astype(np.float32) * 2
        avail = rng.random((3, 4)) < 0.6
        avail[:, 0] = True
        want_action, want = torch_policy.act(obs, avail, deterministic=True)
        got_action, got = onnx_policy.act(obs, avail, deterministic=True)
        _, single = alone.act(obs[2:], avail[2:], deterministic=True)
        np.testing.assert_array_equal(got_action, want_action, err_msg=f"step {t}")
        np.testing.assert_allclose(got["probs"], want["probs"], atol=1e-5)
        np.testing.assert_allclose(onnx_policy.h, torch_policy.h.numpy(), atol=1e-5)
        np.testing.assert_allclose(single["probs"][0], want["probs"][2], atol=1e-5)
        seen.update(got_action.tolist())
    assert len(seen) > 1


# ---------------------------------------------------------------- learning steps and state
def _fill(learner, n: int, seed: int = 2) -> None:
    rng = np.random.default_rng(seed)
    for k in range(n):
        learner.replay.add(_record(rng, 3 + k % 4, k % 2 == 0))


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("unit, first, expected", [("episodes", 1, [3, 6, 9]), ("updates", 5, [7, 10, 13])])
def test_target_networks_are_copied_when_due(unit, first, expected):
    """Interval 3, one gradient step after each of 10 episodes from episode index ``first`` (the index
    of the episode just collected; 0 is the run's first). 'episodes' (pymarl): checked after each step
    with that index: 3 - 0 >= 3, then every 3rd: copies at 3, 6, 9. 'updates' (EPyMARL), steps after
    episodes 5..14: the 3rd, 6th and 9th gradient steps, after episodes 7, 10, 13."""
    learner, _ = _learner(**{"qmix.target_update_interval": "3", "qmix.target_update_unit": unit})
    _fill(learner, 4)
    copied = []
    for episode in range(first, first + 10):
        learner.episodes = episode + 1  # (collect counts episodes; the index just collected is episodes - 1)
        before = {k: v.clone() for k, v in learner.target_agent.state_dict().items()}
        metrics = learner.update(None)
        assert metrics["q_skipped"].item() == 0
        if _equal(learner.agent, learner.target_agent) and _equal(learner.mixer, learner.target_mixer):
            copied.append(episode)
        else:
            assert all(torch.equal(before[k], v) for k, v in learner.target_agent.state_dict().items())
    assert copied == expected


def test_no_step_before_the_replay_holds_a_batch():
    learner, _ = _learner()  # debug: batch_episodes 4
    _fill(learner, 3)
    before = [p.clone() for p in learner.agent.parameters()]
    assert set(learner.update(None)) == {"samples"}
    assert all(torch.equal(a, b) for a, b in zip(before, learner.agent.parameters()))
    _fill(learner, 1)
    metrics = learner.update(None)
    assert metrics["samples"].item() > 0 and np.isfinite(metrics["loss"].item())
    assert not all(torch.equal(a, b) for a, b in zip(before, learner.agent.parameters()))


def test_a_non_finite_step_is_skipped_by_the_divergence_guard():
    """A NaN reward in every sampled episode makes the loss NaN: RMSprop's step is not applied (weights
    and its running averages unchanged), the step is counted as skipped, the guard's run grows."""
    learner, _ = _learner()
    _fill(learner, 4)
    learner.update(None)  # one good step first, so the optimizer has state to protect
    for ep in learner.replay.slots:
        ep.reward[0] = np.nan
    weights = [p.clone() for p in learner.params]
    averages = [learner.optimizer.state[p]["square_avg"].clone() for p in learner.params]
    metrics = learner.update(None)
    assert metrics["q_skipped"].item() == 1 and not np.isfinite(metrics["loss"].item())
    assert all(torch.equal(a, b) for a, b in zip(weights, learner.params))
    assert all(torch.equal(a, learner.optimizer.state[p]["square_avg"]) for a, p in zip(averages, learner.params))
    assert learner.guards["q"].run.item() == 1


def test_the_replay_is_a_ring_and_survives_its_state_dict():
    replay = EpisodeReplay(3)
    rng = np.random.default_rng(8)
    eps = [_record(rng, 2 + k, k % 2 == 1) for k in range(5)]
    for ep in eps:
        replay.add(ep)
    assert [len(e.reward) for e in replay.slots] == [5, 6, 4] and replay.pos == 2  # 4 and 5 overwrote 0 and 1
    assert [len(e.reward) for e in replay.sample(3, rng)] == [5, 6, 4]  # exactly n stored: slot order
    picked = replay.sample(2, np.random.default_rng(0))
    assert len({len(e.reward) for e in picked}) == 2  # distinct episodes
    copy = EpisodeReplay(3)
    copy.load_state_dict(replay.state_dict())
    assert copy.pos == 2
    for a, b in zip(copy.slots, replay.slots):
        assert a.terminated == b.terminated
        for key in ("obs", "state", "avail", "action", "reward"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    with pytest.raises(ValueError, match="capacity 3 != 4"):
        EpisodeReplay(4).load_state_dict(replay.state_dict())


def test_a_learner_restored_from_its_state_dict_continues_identically():
    a, _ = _learner(seed=0)
    _fill(a, 6)
    for _ in range(3):
        a.update(None)
    buffer = io.BytesIO()  # through a file, as a checkpoint (weights_only: plain tensors and data)
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b, _ = _learner(seed=1)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    for _ in range(3):
        la, lb = a.update(None)["loss"].item(), b.update(None)["loss"].item()
        assert la == lb
    assert _equal(a.agent, b.agent) and _equal(a.target_mixer, b.target_mixer)


# ---------------------------------------------------------------- refusals
def test_continuous_actions_are_refused_in_one_line():
    with pytest.raises(MablError, match="--algo qmix needs discrete actions; mamujoco:Ant-2x4") as info:
        build_config("debug", {"algo": "qmix", "env": "mamujoco:Ant-2x4"})
    assert "\n" not in str(info.value)
    continuous = EnvSpec(name="cont", n_agents=2, obs_dim=3, state_dim=4, discrete=False, action_dim=2)
    with pytest.raises(MablError, match="needs discrete actions; cont has continuous ones"):
        build_learner(continuous, build_config("debug", {"algo": "qmix"}), torch.device("cpu"))


def test_bad_qmix_values_are_one_line():
    with pytest.raises(MablError, match=r"--qmix.hypernet_layers=3 is not allowed; choose one of 1, 2"):
        build_config("debug", {"algo": "qmix", "qmix.hypernet_layers": "3"})
    with pytest.raises(MablError, match=r"--qmix.batch_episodes=0 must be > 0"):
        build_config("debug", {"algo": "qmix", "qmix.batch_episodes": "0"})
    with pytest.raises(MablError, match=r"--qmix.epsilon_finish=1.5 must be in \[0, 1\]"):
        build_config("debug", {"algo": "qmix", "qmix.epsilon_finish": "1.5"})


# ---------------------------------------------------------------- end to end (CLI)
def _mabl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mabl", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _train(run_dir, steps: int) -> None:
    proc = _mabl("train", "--algo", "qmix", "--env", "smax:3m", "--preset", "debug", "--steps", str(steps), "--seed",
                 "1", "--checkpoint-every", "100", "--run-dir", str(run_dir), "--progress", "false", "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]


def _records(run_dir) -> list[dict]:
    timing = ("sps", "learner_s", "wall_s", "cpu_s")
    return [{k: v for k, v in json.loads(line).items() if k not in timing}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.integration
def test_train_resume_export_and_diagnose_through_the_cli(tmp_path):
    """Train N then resume to 2N == 2N straight (the replay, its generator, epsilon's clock and the
    target networks are in the checkpoint); export torch and ONNX, evaluate both; diagnose refuses."""
    pytest.importorskip("jaxmarl")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(straight, 300)
    _train(resumed, 150)
    _train(resumed, 300)
    lines = _records(straight)
    assert lines == _records(resumed)
    learner = [r for r in lines if r["kind"] == "learner"]
    assert learner and all(np.isfinite(r["policy/loss"]) for r in learner)
    episodes = [r for r in lines if r["kind"] == "episode"]
    assert learner[0]["env_step"] == episodes[3]["env_step"]  # the first step once 4 episodes (debug batch) are in
    out = _mabl("export", "--run-dir", str(straight), "--out", str(tmp_path / "p.pt"))
    assert out.returncode == 0 and "decentralized policy" in out.stdout
    results = []
    for policy in ("p.pt", "p.onnx"):
        if policy.endswith(".onnx"):
            if _mabl("export", "--run-dir", str(straight), "--out", str(tmp_path / policy), "--format",
                     "onnx").returncode:
                continue  # (no onnx extra installed)
        proc = _mabl("eval", "--policy", str(tmp_path / policy), "--episodes", "2", "--json")
        assert proc.returncode == 0, proc.stderr
        results.append(json.loads(proc.stdout)["returns"])
    assert all(np.allclose(r, results[0], atol=1e-4) for r in results)
    proc = _mabl("diagnose", "--run-dir", str(straight))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "is a qmix run (model-free: no world model" in proc.stderr
