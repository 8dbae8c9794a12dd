"""The exported policy's acting path against the training-time filter, and its decentralisation.

README: "Agent i's action probabilities never depend on another agent's observation (tested), and
they equal the training-time actor's (tested)." Both are checked on the exported file
(``save_policy`` -> ``load_policy``, the code a user deploys):

- over a whole episode, the file's recurrent state, sampled latent and action probabilities at every
  step equal what the world model's filter (``BiLevelWorldModel.observe``, the training path)
  computes from the same observations, the actions the policy took and the same uniform numbers
  for the latent draws, with the actor applied to the filter's posteriors;
- for every agent i, its probabilities over an episode are unchanged when every other agent's
  observations and action masks change, while the other agents' probabilities do move and agent
  i's own observations move its own (so a constant policy fails).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mabl.models.world_model as wm
from mabl.algo import build_learner
from mabl.envs.base import EnvSpec
from mabl.models.distributions import _SampleOneHot
from mabl.policy import DecentralizedPolicy, load_policy, save_policy
from mabl.presets import build_config

N, OBS, G, A, T = 3, 6, 8, 5, 25
SPEC = EnvSpec(name="acting", n_agents=N, obs_dim=OBS, state_dim=G, discrete=True, n_actions=A,
               has_action_mask=True, episode_limit=T)
DECENTRALIZED = ["mabl", "mabl-sg", "dreamer"]


def _exported(tmp_path, algo: str, seed: int = 0):
    torch.manual_seed(seed)
    cfg = build_config("debug", {"algo": algo, "device": "cpu"})
    agent = build_learner(SPEC, cfg, torch.device("cpu"))
    path = tmp_path / f"{algo}.pt"
    save_policy(str(path), agent.world_model.agent, agent.actor, SPEC, cfg.model, cfg.policy.hidden, algo)
    return agent, load_policy(str(path), seed=seed)


def _fed_sampler(schedule: list[torch.Tensor | None]):
    """A stand-in for ``sample_onehot`` drawing each categorical by inverse CDF from the given uniform
    numbers, in call order (None, or a call past the end: fresh ``torch.rand`` numbers)."""
    queue = list(schedule)

    def sample(logits, straight_through=True, generator=None, return_index=False):
        probs = F.softmax(logits, -1, dtype=torch.float32).detach()
        shape = probs.shape[:-1] + (1,)
        given = queue.pop(0) if queue else None
        uniform = torch.rand(shape) if given is None else given.reshape(shape)
        onehot, index = _SampleOneHot.apply(probs, uniform)
        return (onehot.flatten(-2), index.squeeze(-1)) if return_index else onehot.flatten(-2)

    return sample


@pytest.mark.parametrize("algo", DECENTRALIZED)
def test_exported_policy_equals_the_training_filter_over_a_whole_episode(tmp_path, monkeypatch, algo):
    agent, policy = _exported(tmp_path, algo)
    model = agent.world_model.eval()
    assert isinstance(policy, DecentralizedPolicy) and not policy.spec.centralized
    cats = agent.cfg.model.n_categoricals
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(T, N, OBS)).astype(np.float32) * 2.0
    avail = rng.random((T, N, A)) < 0.7
    avail[..., 0] = True
    uniforms = [torch.rand(N, cats, generator=torch.Generator().manual_seed(100 + t)) for t in range(T)]

    # the acting path: the exported file, stochastic latents from the uniforms above
    monkeypatch.setattr(wm, "sample_onehot", _fed_sampler(uniforms))
    policy.reset()
    acted = {"h": [], "z": [], "probs": [], "action": []}
    for t in range(T):
        action, info = policy.act(obs[t], avail[t], deterministic=False)
        acted["h"].append(policy.h.clone())
        acted["z"].append(policy.z.clone())
        acted["probs"].append(info["probs"])
        acted["action"].append(action)

    # the training path: the filter over the same episode (one window, batch 1), the same uniforms for
    # z^a; the global level (MABL's) draws its own numbers between them, then the priors
    schedule = [u for t in range(T) for u in ([uniforms[t], None] if model.has_global else [uniforms[t]])]
    monkeypatch.setattr(wm, "sample_onehot", _fed_sampler(schedule))
    actions = np.stack(acted["action"])
    prev = np.zeros((T, N, A), np.float32)
    prev[1:] = np.eye(A, dtype=np.float32)[actions[:-1]]  # the action taken before obs[t] was seen
    first = torch.zeros(T, 1, dtype=torch.bool)
    first[0] = True
    with torch.no_grad():
        filt = model.observe(torch.as_tensor(obs)[:, None], torch.as_tensor(rng.normal(size=(T, 1, G)), dtype=torch.float32),
                             torch.as_tensor(prev)[:, None], first)
        trained_probs = agent.actor(filt.post.z_a[:, 0], filt.post.h_a[:, 0], torch.as_tensor(avail)).softmax(-1)
    for t in range(T):
        torch.testing.assert_close(acted["h"][t], filt.post.h_a[t, 0], rtol=1e-5, atol=1e-5, msg=f"h at step {t}")
        assert torch.equal(acted["z"][t], filt.post.z_a[t, 0]), f"z at step {t}"
        np.testing.assert_allclose(acted["probs"][t], trained_probs[t].numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=f"probs at step {t}")
    # the comparison is not vacuous: the probabilities and the latents move over the episode
    probs = np.stack(acted["probs"])
    assert np.abs(probs[1:] - probs[:-1]).max() > 1e-2
    assert len({tuple(z.flatten().tolist()) for z in acted["z"]}) == T
    assert (probs[~avail] == 0).all()


def _episode_probs(policy, obs: np.ndarray, avail: np.ndarray) -> np.ndarray:
    policy.reset()
    return np.stack([policy.act(o, m, deterministic=True)[1]["probs"] for o, m in zip(obs, avail)])


@pytest.mark.parametrize("algo", DECENTRALIZED)
def test_exported_policy_is_decentralized_for_every_agent(tmp_path, algo):
    _, policy = _exported(tmp_path, algo, seed=3)
    rng = np.random.default_rng(2)
    steps = 8
    obs = rng.normal(size=(steps, N, OBS)).astype(np.float32)
    avail = np.ones((steps, N, A), bool)
    base = _episode_probs(policy, obs, avail)
    assert np.abs(base[1:] - base[:-1]).max() > 1e-3  # not a constant policy
    for i in range(N):
        others = [j for j in range(N) if j != i]
        obs2, avail2 = obs.copy(), avail.copy()
        obs2[:, others] = rng.normal(size=(steps, N - 1, OBS)).astype(np.float32) * 3.0
        avail2[:, others, 1:3] = False
        changed = _episode_probs(policy, obs2, avail2)
        np.testing.assert_allclose(changed[:, i], base[:, i], rtol=1e-5, atol=1e-6, err_msg=f"agent {i}")
        assert np.abs(changed[:, others] - base[:, others]).max() > 1e-3, f"others of agent {i} did not move"
        own = obs.copy()
        own[:, i] = rng.normal(size=(steps, OBS)).astype(np.float32) * 3.0
        assert np.abs(_episode_probs(policy, own, avail)[:, i] - base[:, i]).max() > 1e-3, f"agent {i}'s own"
