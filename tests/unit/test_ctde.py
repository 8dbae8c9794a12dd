"""Centralized training, decentralized execution (paper §3, SPEC §1):

(a) the policy step never changes or back-propagates into the world model;
(b) the acting path uses only agent i's own observation/action history, never the global state;
(c) the critic, unlike the actor, looks at every agent.
"""

from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mabl.algo.agent import MablAgent
from mabl.envs.base import EnvSpec
from mabl.models.world_model import AgentEncoder, Latent
from mabl.policy import DecentralizedPolicy
from mabl.presets import build_config
from mabl.replay import SequenceReplay

N, OBS, G, A = 3, 7, 9, 5
SPEC = EnvSpec(name="fake", n_agents=N, obs_dim=OBS, state_dim=G, discrete=True, n_actions=A,
               has_action_mask=True, episode_limit=50)


def _agent(seed: int = 0) -> MablAgent:
    torch.manual_seed(seed)
    return MablAgent(SPEC, build_config("debug"), torch.device("cpu"))


def _replay(seed: int = 0) -> SequenceReplay:
    rng = np.random.default_rng(seed)
    replay = SequenceReplay(SPEC, 1000)
    for length, terminated in [(12, True), (9, False), (15, True)]:
        avail = rng.random((length, N, A)) < 0.7
        avail[..., 0] = True
        done = np.zeros(length, bool)
        done[-1] = terminated
        episode = {
            "obs": rng.standard_normal((length, N, OBS)).astype(np.float32),
            "state": rng.standard_normal((length, G)).astype(np.float32),
            "action": rng.integers(0, A, (length, N)),
            "reward": rng.standard_normal(length).astype(np.float32),
            "done": done,
            "avail": avail,
        }
        replay.add_episode(episode, terminated, rng)
    return replay


def _state_equal(a, b) -> bool:
    """Deep bit-equality of nested optimizer state dicts."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


# ----------------------------------------------------------------------------------------- (a)
def test_policy_training_leaves_world_model_untouched():
    agent = _agent()
    replay = _replay()
    rng = np.random.default_rng(1)
    cfg = agent.cfg
    # One model update first so that the model optimizer has state and the parameters have grads.
    agent.train_world_model(replay.sample(cfg.model.batch_size, cfg.model.seq_len, rng))
    params = {k: v.detach().clone() for k, v in agent.world_model.named_parameters()}
    grads = {k: v.grad.detach().clone() for k, v in agent.world_model.named_parameters()}
    buffers = {k: v.clone() for k, v in agent.world_model.named_buffers()}
    opt_state = copy.deepcopy(agent.model_opt.state_dict())
    actor_before = [p.detach().clone() for p in agent.actor.parameters()]

    metrics = agent.train_policy(replay.sample(cfg.policy.batch_size, cfg.model.seq_len, rng))
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in metrics.values())

    for name, p in agent.world_model.named_parameters():
        assert torch.equal(p, params[name]), name
        assert torch.equal(p.grad, grads[name]), name  # nothing accumulated into the model's grads
    for name, b in agent.world_model.named_buffers():
        assert torch.equal(b, buffers[name]), name
    assert _state_equal(agent.model_opt.state_dict(), opt_state)
    # The policy step did train the actor (the checks above are not vacuous).
    assert any(not torch.equal(p, q) for p, q in zip(agent.actor.parameters(), actor_before))


def test_actor_loss_gradient_does_not_reach_world_model():
    from mabl.algo.imagined_ppo import normalized_advantage, ppo_actor_loss

    agent = _agent(1)
    replay = _replay(1)
    cfg = agent.cfg
    rows = replay.sample(cfg.policy.batch_size, cfg.model.seq_len, np.random.default_rng(2))
    torch.manual_seed(3)
    rollout = agent.imagine(rows)
    logits = agent.actor(rollout.latent.z_a, rollout.latent.h_a, rollout.avail)
    advantage = normalized_advantage(rollout.returns, rollout.value, True)
    loss, _ = ppo_actor_loss(logits, rollout.action, rollout.log_prob, advantage, 0.2, 1e-3)
    loss.backward()
    assert all(p.grad is None for p in agent.world_model.parameters())
    assert all(p.grad is None for p in agent.critic.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.actor.parameters())
    # Imagined rollouts carry no graph at all.
    assert not any(t.requires_grad for t in (*rollout.latent, rollout.value, rollout.returns, rollout.log_prob))


# ----------------------------------------------------------------------------------------- (b)
def test_acting_path_parameters_are_agent_level_only():
    agent = _agent()
    policy = agent.policy()
    acting = {id(p) for p in policy.encoder.parameters()} | {id(p) for p in policy.actor.parameters()}
    allowed = {id(p) for p in agent.world_model.agent.parameters()} | {id(p) for p in agent.actor.parameters()}
    assert acting <= allowed
    centralized = [m for name, m in agent.world_model.named_children() if name != "agent"] + [agent.critic]
    forbidden = {id(p) for m in centralized for p in m.parameters()}
    assert acting.isdisjoint(forbidden)
    names = [name for name, _ in agent.world_model.named_parameters() if not name.startswith("agent.")]
    assert any(name.startswith("state_encoder.") for name in names)
    assert any(name.startswith("global_") for name in names)
    # The encoder's only env input is the observation (OBS wide); its action input is one agent's (A wide).
    first = policy.encoder.obs_encoder[0]
    assert first.in_features == OBS
    assert policy.encoder.agent_input.in_dims[0] == A
    # Neither entry point takes a global state.
    for fn in (DecentralizedPolicy.act, AgentEncoder.step):
        params = inspect.signature(fn).parameters
        assert not any("state" in name for name in params), (fn, list(params))


def _run_policy(policy: DecentralizedPolicy, obs_seq: np.ndarray, avail_seq: np.ndarray, deterministic: bool):
    policy.reset()
    probs = []
    for obs, avail in zip(obs_seq, avail_seq):
        _, info = policy.act(obs, avail, deterministic=deterministic)
        probs.append(info["probs"])
    return np.stack(probs)  # [T, N, A]


@pytest.mark.parametrize("deterministic", [True, False])
def test_agent_probs_do_not_depend_on_other_agents(deterministic):
    agent = _agent(2)
    rng = np.random.default_rng(4)
    steps = 6
    obs = rng.standard_normal((steps, N, OBS)).astype(np.float32)
    avail = np.ones((steps, N, A), bool)
    avail[:, 1, 2] = False

    def policy():
        return DecentralizedPolicy(agent.world_model.agent, agent.actor, SPEC, "cpu", seed=11)

    base = _run_policy(policy(), obs, avail, deterministic)
    others = obs.copy()
    others[:, 1:] = rng.standard_normal((steps, N - 1, OBS)).astype(np.float32) * 3
    other_avail = avail.copy()
    other_avail[:, 2, :3] = False
    changed = _run_policy(policy(), others, other_avail, deterministic)
    np.testing.assert_allclose(changed[:, 0], base[:, 0], rtol=1e-5, atol=1e-6)
    # Agents 1 and 2 saw other inputs: their probabilities moved (so the check can fail).
    assert np.abs(changed[:, 1:] - base[:, 1:]).max() > 1e-3
    # And agent 0's own observations matter to agent 0.
    own = obs.copy()
    own[:, 0] = rng.standard_normal((steps, OBS)).astype(np.float32) * 3
    mine = _run_policy(policy(), own, avail, deterministic)
    assert np.abs(mine[:, 0] - base[:, 0]).max() > 1e-3
    # Unavailable actions get zero probability.
    assert np.all(base[:, 1, 2] == 0.0)


def test_filter_agent_level_does_not_depend_on_other_agents_or_state():
    """The training-time filter runs the same agent-level computation: agent 0's posterior logits
    ignore the global state and the other agents' observations and actions."""
    agent = _agent(3)
    model = agent.world_model
    gen = torch.Generator().manual_seed(5)
    steps, batch = 5, 2
    obs = torch.randn(steps, batch, N, OBS, generator=gen)
    state = torch.randn(steps, batch, G, generator=gen)
    action = F.one_hot(torch.randint(0, A, (steps, batch, N), generator=gen), A).float()
    first = torch.zeros(steps, batch, dtype=torch.bool)
    torch.manual_seed(0)
    with torch.no_grad():
        base = model.observe(obs, state, action, first)
    obs2, action2 = obs.clone(), action.clone()
    obs2[:, :, 1:] = torch.randn(steps, batch, N - 1, OBS, generator=gen)
    action2[:, :, 1:] = action[:, :, 1:].roll(1, -1)
    state2 = torch.randn(steps, batch, G, generator=gen)
    torch.manual_seed(0)
    with torch.no_grad():
        other = model.observe(obs2, state2, action2, first)
    torch.testing.assert_close(other.post_a_logits[:, :, 0], base.post_a_logits[:, :, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(other.post.h_a[:, :, 0], base.post.h_a[:, :, 0], rtol=1e-5, atol=1e-5)
    # The global level of the same agent does see them.
    assert (other.post_g_logits[:, :, 0] - base.post_g_logits[:, :, 0]).abs().max() > 1e-3


# ----------------------------------------------------------------------------------------- (c)
def _latent(m: int, deter: int, gen: torch.Generator) -> Latent:
    z = lambda: F.one_hot(torch.randint(0, 4, (m, N, 4), generator=gen), 4).float().flatten(-2)  # noqa: E731
    return Latent(z(), torch.randn(m, N, deter, generator=gen), z(), torch.randn(m, N, deter, generator=gen))


def test_critic_attends_over_agents_and_actor_does_not():
    agent = _agent(4)
    gen = torch.Generator().manual_seed(6)
    deter = agent.world_model.deter
    latent = _latent(8, deter, gen)
    other = _latent(8, deter, gen)
    # Change agent 2's features only (both levels).
    mixed = Latent(*(torch.cat([t[:, :2], o[:, 2:]], 1) for t, o in zip(latent, other)))
    with torch.no_grad():
        v = agent.critic(*latent)
        v_mixed = agent.critic(*mixed)
        pi = agent.actor(latent.z_a, latent.h_a)
        pi_mixed = agent.actor(mixed.z_a, mixed.h_a)
    assert v.shape == (8, N)
    # Agents 0 and 1 did not change, yet their values did: the critic reads the other agents.
    assert (v_mixed[:, :2] - v[:, :2]).abs().max() > 1e-4
    # The actor of agents 0 and 1 is unchanged.
    torch.testing.assert_close(pi_mixed[:, :2], pi[:, :2])
    # The critic reads the global level too (z^g, h^g of agent 0 only).
    global_only = Latent(latent.z_a, latent.h_a, latent.z_g, latent.h_g.clone())
    global_only.h_g[:, 0] += 1.0
    with torch.no_grad():
        v_global = agent.critic(*global_only)
    assert (v_global[:, 0] - v[:, 0]).abs().max() > 1e-4

