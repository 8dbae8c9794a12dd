"""Continuous actions (``mabl.actions``): the clipped Gaussian against hand formulas, the action
scaling, PPO on Gaussians, what the world model sees, the decentralized acting path, the exported
file, and model-free MAPPO learning a continuous target on a small fake env."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mabl.actions import gaussian, normalize_action, to_env_action
from mabl.algo import build_learner
from mabl.algo.imagined_ppo import ppo_actor_loss
from mabl.algo.mappo import Mappo, clipped_surrogate_loss
from mabl.algo.world_model_loss import action_input
from mabl.envs.base import EnvSpec, TimeStep
from mabl.errors import MablError
from mabl.policy import load_policy, save_policy
from mabl.presets import build_config
from mabl.replay import SequenceReplay
from mabl.rollout import run_episode

N, D, OBS = 2, 3, 4
LOW, HIGH = -0.4, 0.4
SPEC = EnvSpec("fake-continuous", n_agents=N, obs_dim=OBS, state_dim=N * OBS, discrete=False, action_dim=D,
               action_low=LOW, action_high=HIGH, episode_limit=4)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TargetEnv:
    """Agent i observes a target ``t_i`` in [-1, 1]^D (padded with a 1); the team reward is
    ``-mean_i ||normalised(a_i) - t_i||^2``. Episodes last 4 steps (truncated at the limit)."""

    spec = SPEC

    def __init__(self):
        self.rng = np.random.default_rng(0)
        self.t = 0
        self.target = np.zeros((N, D), np.float32)

    def _obs(self) -> TimeStep:
        obs = np.concatenate([self.target, np.ones((N, 1), np.float32)], axis=1)
        return TimeStep(obs=obs, state=obs.flatten(), avail=None, info={})

    def reset(self, seed: int | None = None) -> TimeStep:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t = 0
        self.target = self.rng.uniform(-0.8, 0.8, (N, D)).astype(np.float32)
        return self._obs()

    def step(self, actions: np.ndarray) -> TimeStep:
        assert actions.shape == (N, D) and actions.dtype == np.float32
        assert (actions >= LOW).all() and (actions <= HIGH).all()
        unit = (actions - LOW) / (HIGH - LOW) * 2 - 1
        reward = -float(((unit - self.target) ** 2).sum(-1).mean())
        self.t += 1
        step = self._obs()
        step.reward, step.truncated = reward, self.t >= SPEC.episode_limit
        return step

    def close(self) -> None:
        pass


def test_action_scaling_by_hand():
    u = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.25, 1.0, 7.0])
    executed = to_env_action(u, LOW, HIGH)
    # clip to [-1, 1], then -1 -> -0.4, 0 -> 0, 1 -> 0.4 linearly
    expected = torch.tensor([-0.4, -0.4, -0.2, 0.0, 0.1, 0.4, 0.4])
    torch.testing.assert_close(executed, expected)
    torch.testing.assert_close(normalize_action(executed, LOW, HIGH), u.clamp(-1, 1))
    torch.testing.assert_close(to_env_action(torch.tensor([0.0]), 0.0, 1.0), torch.tensor([0.5]))
    stored = torch.tensor([[LOW, 0.0, HIGH]])
    torch.testing.assert_close(action_input(stored, SPEC), torch.tensor([[-1.0, 0.0, 1.0]]))


def test_gaussian_log_prob_and_entropy_by_hand():
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(5, N, D, generator=gen)
    log_std = torch.tensor([-0.3, 0.1, -1.2])
    u = torch.randn(5, N, D, generator=gen)
    dist = gaussian(mean, log_std)
    std = log_std.exp()
    by_hand = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(dist.log_prob(u), by_hand)
    entropy = (0.5 * math.log(2 * math.pi * math.e) + log_std).sum()
    torch.testing.assert_close(dist.entropy(), entropy.expand(5, N))


@pytest.mark.parametrize("loss_fn", ["imagination", "model_free"])
def test_ppo_loss_on_gaussians_by_hand(loss_fn):
    gen = torch.Generator().manual_seed(1)
    mean = torch.randn(6, N, D, generator=gen, requires_grad=True)
    log_std = torch.full((D,), -0.5)
    u = torch.randn(6, N, D, generator=gen)
    old = torch.randn(6, N, generator=gen) - 3.0
    adv = torch.randn(6, N, generator=gen)
    clip, beta = 0.2, 0.01
    std = log_std.exp()
    new = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    ratio = (new - old).exp()
    entropy = (0.5 * math.log(2 * math.pi * math.e) + log_std).sum()
    expected = -torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).mean() - beta * entropy
    if loss_fn == "imagination":
        loss, ent = ppo_actor_loss(gaussian(mean, log_std), u, old, adv, clip, beta)
    else:
        loss, ent, _, _ = clipped_surrogate_loss(gaussian(mean, log_std), u, old, adv, clip, beta)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(ent, entropy)


def _filled_replay(agent, env, episodes: int = 4) -> SequenceReplay:
    replay = SequenceReplay(env.spec, 500)
    rng = np.random.default_rng(0)
    for seed in range(episodes):
        episode = run_episode(env, agent.policy(), seed)
        assert episode.rows["action"].dtype == np.float32 and episode.rows["action"].shape == (4, N, D)
        replay.add_episode(episode.rows, episode.terminated, rng)
    return replay


@pytest.mark.parametrize("algo", ["mabl", "mabl-sg", "dreamer", "mamba", "mag"])
def test_world_model_algos_train_on_continuous_actions(algo):
    torch.manual_seed(0)
    cfg = build_config("debug", {"algo": algo, "policy.init_std": 0.7})
    agent = build_learner(SPEC, cfg, torch.device("cpu"))
    assert agent.world_model.avail_head is None  # no action masks, no availability head
    assert float(agent.actor.log_std.detach().exp().mean()) == pytest.approx(0.7)
    env = TargetEnv()
    replay = _filled_replay(agent, env)
    rng = np.random.default_rng(1)
    metrics = agent.train_world_model(replay.sample(3, 4, rng))
    assert math.isfinite(float(metrics["action"])) and float(metrics["action"]) > 0

    # Imagination: the world model is fed the clipped raw sample, PPO keeps the raw sample itself.
    seen = []
    step = agent.world_model.imagine_step

    def spy(latent, action):
        seen.append(action)
        return step(latent, action)

    agent.world_model.imagine_step = spy
    rollout = agent.imagine(replay.sample(3, 4, rng))
    del agent.world_model.imagine_step
    assert rollout.action.shape[1:] == (N, D) and rollout.avail is None
    fed = torch.cat([a.flatten(0, 0) for a in seen])  # [(H-1) * M, N, D]
    torch.testing.assert_close(fed, rollout.action.clamp(-1, 1))
    assert rollout.action.abs().max() > 0 and fed.abs().max() <= 1.0
    dist = agent.actor.dist(rollout.latent.z_a, rollout.latent.h_a)
    torch.testing.assert_close(dist.log_prob(rollout.action), rollout.log_prob)
    out = agent.train_policy(replay.sample(3, 4, rng))
    assert math.isfinite(float(out["actor_loss"]))


def test_decentralized_continuous_policy_acts_on_own_inputs_and_exports(tmp_path):
    torch.manual_seed(0)
    agent = build_learner(SPEC, build_config("debug"), torch.device("cpu"))
    policy = agent.policy()
    assert policy.spec.action_dim == D and policy.spec.n_actions is None
    assert (policy.spec.action_low, policy.spec.action_high) == (LOW, HIGH)
    obs = np.random.default_rng(0).normal(size=(N, OBS)).astype(np.float32)
    policy.reset()
    action, info = policy.act(obs, deterministic=True)
    assert action.shape == (N, D) and action.dtype == np.float32
    # deterministic = the mean, clipped and scaled; the same as the training-time actor's mean
    torch.testing.assert_close(torch.from_numpy(action), to_env_action(torch.from_numpy(info["mean"]), LOW, HIGH))
    with torch.no_grad():
        mean = agent.actor(policy.z, policy.h)
    np.testing.assert_allclose(info["mean"], mean.numpy(), rtol=0, atol=0)
    # agent 0's action never moves when agent 1's observation changes; agent 1's does (the greedy
    # latent is a mode of few categoricals in the debug preset, so one change may keep it: try several)
    changed = []
    for scale in (5.0, -5.0, 20.0, -20.0):
        other = obs.copy()
        other[1] += scale * np.random.default_rng(int(scale) + 50).normal(size=OBS).astype(np.float32)
        policy.reset()
        action2, _ = policy.act(other, deterministic=True)
        np.testing.assert_array_equal(action[0], action2[0])
        changed.append(not np.array_equal(action[1], action2[1]))
    assert any(changed)
    # stochastic actions stay inside the bounds
    policy.reset()
    for _ in range(20):
        sampled, _ = policy.act(obs * 10)
        assert (sampled >= LOW).all() and (sampled <= HIGH).all()
    with pytest.raises(MablError, match="continuous actions"):
        policy.act(obs, avail=np.ones((N, D), bool))

    path = tmp_path / "policy.pt"
    save_policy(str(path), agent.world_model.agent, agent.actor, SPEC, agent.cfg.model, agent.cfg.policy.hidden)
    loaded = load_policy(str(path))
    loaded.reset()
    policy.reset()
    for _ in range(3):
        a1, i1 = policy.act(obs, deterministic=True)
        a2, i2 = loaded.act(obs, deterministic=True)
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(i1["std"], i2["std"])


def test_model_free_mappo_learns_a_continuous_target():
    torch.manual_seed(0)
    cfg = build_config("debug", {"algo": "mappo", "mappo.lr": 3e-3, "mappo.hidden": 32, "mappo.epochs": 4,
                                 "mappo.n_envs": 4, "mappo.rollout_steps": 64})
    learner = Mappo(SPEC, cfg, torch.device("cpu"))
    envs = [TargetEnv() for _ in range(4)]
    seeds = iter(range(10_000))
    probe = TargetEnv()

    def error() -> float:  # squared distance of the greedy (mean) action to the target, fresh targets
        total = 0.0
        for seed in range(20):
            step = probe.reset(seed + 5000)
            with torch.no_grad():
                mean = learner.actor(torch.from_numpy(step.obs))
            total += float(((mean.clamp(-1, 1).numpy() - probe.target) ** 2).sum(-1).mean())
        return total / 20

    start = error()
    episodes, batch = learner.collect(envs, lambda: next(seeds))
    assert batch.action.dtype == torch.float32 and batch.action.shape[-1] == D
    # PPO keeps the raw samples; the env (and the episode rows) got them clipped and scaled
    first = episodes[0].rows["action"]
    torch.testing.assert_close(torch.from_numpy(first), to_env_action(batch.action[: len(first), 0], LOW, HIGH))
    for _ in range(40):
        learner.update(learner.collect(envs, lambda: next(seeds))[1])
    assert error() < 0.5 * start
