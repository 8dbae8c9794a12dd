"""The comparison systems of the paper (SPEC §7) as structures: what each world model has, what
shapes its global level takes, and who may see whose observation at execution time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_ctde import OBS, SPEC, A, G, N, _replay  # the same fake spec and random replay

from mabl.algo.agent import MablAgent
from mabl.algo.world_model_loss import action_input, world_model_loss
from mabl.policy import DecentralizedPolicy, JointPolicy, latent_policy
from mabl.presets import build_config

MODEL_BASED = ["mabl", "mabl-sg", "dreamer", "mamba", "mag"]
CENTRALIZED = ("mamba", "mag")


def _agent(algo: str, seed: int = 0, preset: str = "debug", **overrides) -> MablAgent:
    torch.manual_seed(seed)
    return MablAgent(SPEC, build_config(preset, {"algo": algo, **overrides}), torch.device("cpu"))


def _batch(agent: MablAgent, seed: int = 1):
    cfg = agent.cfg
    return agent.to_batch(_replay(seed).sample(cfg.model.batch_size, cfg.model.seq_len, np.random.default_rng(seed)))


# ------------------------------------------------------------------------------- structure
@pytest.mark.parametrize("algo", ["dreamer", "mamba", "mag"])
def test_agent_level_only_models_have_no_global_parameters(algo):
    agent = _agent(algo)
    model, cfg = agent.world_model, agent.cfg.model
    z = cfg.n_categoricals * cfg.n_classes
    names = [name for name, _ in model.named_parameters()]
    assert not any("global" in name or name.startswith("state_encoder") for name in names), names
    # Nothing in the model reads the global state: its only env inputs are observations and own actions.
    assert all(p.shape[-1] != G for p in model.parameters())
    assert model.agent_prior.first.in_dims == [cfg.deter]  # p(z^a | h^a)
    for head in (model.cont_head, model.avail_head):
        assert head.first.in_dims == [z, cfg.deter]  # agent features only
    assert agent.critic.embed.in_dims == [z, cfg.deter]
    both = _agent(algo, **{"model.action_decoder_input": "both_levels"}).world_model
    assert both.action_decoder.first.in_dims == [z, cfg.deter]
    # Filtering and the loss: one KL term, no global tensors anywhere.
    batch = _batch(agent)
    loss, metrics, filt = world_model_loss(model, batch, cfg.kl_balance)
    assert set(metrics) == {"kl_agent", "obs", "reward", "cont", "avail", "action"}
    assert filt.post.z_g is None and filt.post.h_g is None and filt.h_g_trans is None
    assert filt.prior_g_logits is None and filt.post_g_logits is None
    assert torch.isfinite(loss)


def test_mabl_has_both_levels_per_agent():
    agent = _agent("mabl")
    cfg = agent.cfg.model
    batch = _batch(agent)
    _, metrics, filt = world_model_loss(agent.world_model, batch, cfg.kl_balance)
    steps, b = batch.obs.shape[:2]
    z = cfg.n_categoricals * cfg.n_classes
    assert filt.post.z_g.shape == (steps, b, N, z) and filt.post.h_g.shape == (steps, b, N, cfg.deter)
    assert {"kl_agent", "kl_global"} <= metrics.keys()
    assert agent.critic.embed.in_dims == [z, cfg.deter, z, cfg.deter]


def _kl_mean(q_logits: torch.Tensor, p_logits: torch.Tensor) -> torch.Tensor:
    """Categorical KL(q || p) with +1e-7 in the logs, averaged over categoricals and every row."""
    q, p = q_logits.float().softmax(-1), p_logits.float().softmax(-1)
    return (q * (torch.log(q + 1e-7) - torch.log(p + 1e-7))).sum(-1).mean()


def test_mabl_sg_global_level_has_no_agent_axis():
    agent = _agent("mabl-sg")
    model, cfg = agent.world_model, agent.cfg.model
    z = cfg.n_categoricals * cfg.n_classes
    batch = _batch(agent)
    steps, b = batch.obs.shape[:2]
    torch.manual_seed(0)
    loss, metrics, filt = world_model_loss(model, batch, cfg.kl_balance)
    assert filt.post.z_g.shape == (steps, b, z) and filt.post.h_g.shape == (steps, b, cfg.deter)
    assert filt.h_g_trans.shape == (steps, b, cfg.deter)
    shape = (steps, b, cfg.n_categoricals, cfg.n_classes)
    assert filt.prior_g_logits.shape == shape and filt.post_g_logits.shape == shape
    assert filt.post.z_a.shape == (steps, b, N, z)
    # Exactly one KL term at the global level, over [T-1, B] rows (no agent axis): its value is the
    # plain KL (balancing only routes gradients).
    assert [k for k in metrics if k.startswith("kl")] == ["kl_agent", "kl_global"]
    cut = steps - 1
    torch.testing.assert_close(metrics["kl_global"], _kl_mean(filt.post_g_logits[:cut], filt.prior_g_logits[:cut]))
    # The global parameters exist once; the agent prior reads the shared latent.
    assert model.agent_prior.first.in_dims == [cfg.deter, z]
    assert agent.critic.embed.in_dims == [z, cfg.deter, z, cfg.deter]
    # Imagination keeps the shared latent without an agent axis; the critic sees it broadcast.
    rollout = agent.imagine(_replay(2).sample(agent.cfg.policy.batch_size, cfg.seq_len, np.random.default_rng(2)))
    rows = rollout.action.shape[0]
    assert rollout.latent.z_g.shape == (rows, cfg.n_categoricals)  # compact class indices, no agent axis
    assert rollout.latent.h_g.shape == (rows, cfg.deter)
    assert rollout.value.shape == (rows, N)


def test_mabl_sg_global_posterior_reads_every_agent_and_state():
    """The shared posterior's input pools all agents' posterior samples and the state: changing any
    one agent's observation (or the state) moves it."""
    agent = _agent("mabl-sg", 3)
    model = agent.world_model
    gen = torch.Generator().manual_seed(5)
    steps, b = 4, 2
    obs = torch.randn(steps, b, N, OBS, generator=gen)
    state = torch.randn(steps, b, G, generator=gen)
    prev_action = action_input(torch.randint(0, A, (steps, b, N), generator=gen), agent.spec)
    first = torch.zeros(steps, b, dtype=torch.bool)

    def post_g(o, s):
        torch.manual_seed(0)
        with torch.no_grad():
            return model.observe(o, s, prev_action, first).post_g_logits[0]

    base = post_g(obs, state)
    for j in range(N):
        # It reads agent j's posterior *sample*: a perturbation may leave that one-hot sample as it
        # was, so try a few; one must move the shared posterior.
        moved = []
        for _ in range(5):
            other = obs.clone()
            other[:, :, j] += 3.0 * torch.randn(steps, b, OBS, generator=gen)
            moved.append((post_g(other, state) - base).abs().max().item())
        assert max(moved) > 1e-4, (j, moved)
    assert (post_g(obs, state + 3.0) - base).abs().max() > 1e-4
    # Pooling is a mean over agents, so it does not care which agent holds which sample.
    z = F.one_hot(torch.randint(0, 4, (5, N, 4), generator=gen), 4).float().flatten(-2)
    pooled = model.global_posterior.first.part(2, z).mean(-2)
    torch.testing.assert_close(model.global_posterior.first.part(2, z[:, [2, 0, 1]]).mean(-2), pooled)


def test_mamba_transition_is_a_transformer_over_agents():
    agent = _agent("mamba", preset="paper")
    mixer = agent.world_model.agent.mixer
    layers = mixer.encoder.layers
    assert len(layers) == 3
    assert all(layer.self_attn.num_heads == 8 and layer.self_attn.embed_dim == 256 for layer in layers)
    assert all(layer.dropout.p == pytest.approx(0.1) for layer in layers)
    assert not any("global" in name for name, _ in agent.world_model.named_parameters())
    # No other variant has a mixer.
    assert all(_agent(a).world_model.agent.mixer is None for a in ("mabl", "mabl-sg", "dreamer"))


def test_mamba_dropout_only_in_world_model_training():
    agent = _agent("mamba", 1, **{"model.mixer_dropout": 0.5})
    assert not agent.world_model.training  # acting and imagination run without dropout
    agent.train_world_model(_replay(1).sample(agent.cfg.model.batch_size, agent.cfg.model.seq_len,
                                              np.random.default_rng(1)))
    assert not agent.world_model.training
    x = torch.randn(4, N, agent.cfg.model.hidden)
    mixer = agent.world_model.agent.mixer
    torch.testing.assert_close(mixer(x), mixer(x))  # eval: deterministic
    mixer.train()
    assert not torch.allclose(mixer(x), mixer(x))  # train: dropout on


@pytest.mark.parametrize("algo", MODEL_BASED)
def test_same_sample_budget_per_policy_iteration(algo):
    """Every world-model variant imagines the same number of rows from the same replay windows."""
    agent = _agent(algo, 4)
    cfg = agent.cfg
    rows = _replay(4).sample(cfg.policy.batch_size, cfg.model.seq_len, np.random.default_rng(4))
    metrics = agent.train_policy(rows)
    starts = (cfg.model.seq_len - 2) * cfg.policy.batch_size  # the first T-1 of T = L-1 posterior states
    assert int(metrics["imagined_rows"]) == (cfg.policy.horizon - 1) * starts
    assert all(torch.isfinite(v).all() for v in metrics.values())


# ------------------------------------------------------------------------------- execution
def _run_policy(policy, obs_seq: np.ndarray) -> np.ndarray:
    policy.reset()
    return np.stack([policy.act(obs, None, deterministic=True)[1]["probs"] for obs in obs_seq])  # [T, N, A]


@pytest.mark.parametrize("algo", MODEL_BASED)
def test_who_sees_whose_observation(algo):
    """Agent 0's action probabilities never move when other agents' observations change in mabl,
    mabl-sg and dreamer (decentralized execution); in mamba and mag they do (centralized execution)."""
    agent = _agent(algo, 6)
    policy = agent.policy()
    assert isinstance(policy, JointPolicy if algo in CENTRALIZED else DecentralizedPolicy)
    assert policy.spec.centralized == (algo in CENTRALIZED)
    rng = np.random.default_rng(7)
    steps = 5
    obs = rng.standard_normal((steps, N, OBS)).astype(np.float32)
    others = obs.copy()
    others[:, 1:] = rng.standard_normal((steps, N - 1, OBS)).astype(np.float32) * 3
    base, changed = _run_policy(policy, obs), _run_policy(policy, others)
    # Agents 1.. saw other inputs: their own probabilities moved (the comparison below can fail).
    assert np.abs(changed[:, 1:] - base[:, 1:]).max() > 1e-3
    moved = np.abs(changed[:, 0] - base[:, 0]).max()
    if algo in CENTRALIZED:
        assert np.allclose(changed[0, 0], base[0, 0], atol=1e-6)  # step 0: nobody has communicated yet
        assert moved > 1e-3
    else:
        assert moved < 1e-6


def test_latent_policy_refuses_to_mislabel_execution():
    mamba = _agent("mamba")
    with pytest.raises(TypeError):
        DecentralizedPolicy(mamba.world_model.agent, mamba.actor, SPEC)
    mabl = _agent("mabl")
    with pytest.raises(TypeError):
        JointPolicy(mabl.world_model.agent, mabl.actor, SPEC)
    assert isinstance(latent_policy(mabl.world_model.agent, mabl.actor, SPEC), DecentralizedPolicy)
