"""``--amp`` (bf16 autocast of the learner's matrix work) against fp32, at the same weights and inputs.

Stated tolerances (README, "--amp"): every world-model loss term within 2 % of fp32 (relative) and the
world-model gradient's cosine similarity to fp32's above 0.99; the mean imagined lambda-return within
10 % of the mean absolute return (about 1 % of the sampled actions differ: a probability rounded
across the draw's uniform number) and the actor and critic losses on the same imagined rollout within
2 %. Measured at these debug sizes: loss terms within 0.5 %, gradient cosine >= 0.998, mean returns
within 0.7 % (mag: up to 5 % on other seeds).

Learning under bf16 is not identical: the forward pass reads the weights rounded to bf16 (8 bits of
mantissa), so an Adam step smaller than that rounding (e.g. 1e-3 on a weight of 0.5) does not change
the next forward value until several accumulate, and the mean critic loss over one policy update can
differ by several times while the first losses agree (measured here: the first update's mean critic
loss 0.24 in fp32, 0.80 in bf16, dreamer at debug sizes; the third update's 0.075 and 0.082).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mabl.algo import build_learner
from mabl.algo.imagined_ppo import normalized_advantage, ppo_actor_loss
from mabl.envs.base import EnvSpec
from mabl.models.world_model import level_features
from mabl.presets import build_config
from mabl.replay import SequenceReplay

SPEC = EnvSpec("amp-test", n_agents=3, obs_dim=6, state_dim=7, discrete=True, n_actions=4, has_action_mask=True,
               episode_limit=20)
WORLD_MODELS = ["mabl", "mabl-sg", "dreamer", "mamba", "mag"]
LOSS_RTOL = 0.02
GRAD_COSINE = 0.99
RETURN_TOL = 0.1


def _rows(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    replay = SequenceReplay(SPEC, 1000)
    walk = 0.0
    while replay.real_rows < 300:
        length = int(rng.integers(6, 16))
        walk = walk + np.cumsum(rng.normal(size=(length, 1, 1)), 0) * 0.3  # something to predict
        avail = rng.random((length, 3, 4)) < 0.7
        avail[..., 0] = True
        replay.add_episode({"obs": (walk + 0.2 * rng.normal(size=(length, 3, 6))).astype(np.float32),
                            "state": rng.normal(size=(length, 7)).astype(np.float32),
                            "action": rng.integers(0, 4, size=(length, 3)),
                            "reward": (walk[:, 0, 0] * 0.5).astype(np.float32),
                            "done": np.arange(length) == length - 1, "avail": avail},
                           terminated=bool(rng.random() < 0.5), rng=rng)
        walk = walk[-1:]
    return replay.sample(8, 10, rng)


def _pair(algo: str):
    agents = []
    for amp in (False, True):
        torch.manual_seed(0)  # the same initial weights
        agents.append(build_learner(SPEC, build_config("debug", {"algo": algo, "amp": amp, "device": "cpu"}),
                                    torch.device("cpu")))
    return agents


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), 1e-3)


@pytest.mark.parametrize("algo", WORLD_MODELS)
def test_bf16_world_model_loss_and_gradient_match_fp32(algo):
    rows = _rows(0)
    out = []
    for agent in _pair(algo):
        batch = agent.to_batch(rows)
        agent.world_model.train()
        torch.manual_seed(1)  # the same latent samples (up to classes whose probabilities bf16 rounds across)
        with agent.autocast():
            loss, metrics = agent.eager_model_loss(batch)
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in agent.world_model.parameters() if p.grad is not None])
        out.append((float(loss.detach()), {k: float(v) for k, v in metrics.items()}, grad))
    (loss32, terms32, grad32), (loss16, terms16, grad16) = out
    assert loss16 != loss32  # autocast did run in bf16
    assert _rel(loss32, loss16) < LOSS_RTOL, (loss32, loss16)
    assert terms32.keys() == terms16.keys()
    for name in terms32:
        assert _rel(terms32[name], terms16[name]) < LOSS_RTOL, (name, terms32[name], terms16[name])
    assert torch.nn.functional.cosine_similarity(grad32, grad16, 0) > GRAD_COSINE


@pytest.mark.parametrize("algo", WORLD_MODELS)
def test_bf16_imagination_and_policy_losses_match_fp32(algo):
    rows = _rows(1)
    fp32, bf16 = _pair(algo)
    rollouts = []
    for agent in (fp32, bf16):
        torch.manual_seed(2)
        rollouts.append(agent.imagine(rows))
    # a few sampled actions differ (probabilities rounded across a draw's uniform number; MAG's planning
    # the most), and a rollout that took another action has another return: the mean is compared in
    # units of the mean absolute return
    mean32, mean16 = float(rollouts[0].returns.mean()), float(rollouts[1].returns.mean())
    assert abs(mean32 - mean16) / float(rollouts[0].returns.abs().mean()) < RETURN_TOL, (mean32, mean16)
    assert not torch.equal(rollouts[0].returns, rollouts[1].returns)
    ro = rollouts[0]  # both policies' losses on the fp32 rollout, before any update
    advantage = normalized_advantage(ro.returns, ro.value, True)
    losses = []
    for agent in (fp32, bf16):
        with torch.no_grad(), agent.autocast():
            dist = agent.actor.dist(ro.latent.z_a, ro.latent.h_a, ro.avail)
            actor_loss, entropy = ppo_actor_loss(dist, ro.action, ro.log_prob, advantage, 0.2, 0.01)
            value = agent.critic(*level_features(*ro.latent)).float()
        losses.append((float(actor_loss), float(entropy), float(0.5 * (value - ro.returns).pow(2).mean())))
    for name, a, b in zip(("actor", "entropy", "critic"), *losses):
        # the actor loss sits near zero at the rollout's own policy: compare it in units of the entropy term
        scale = max(abs(a), 0.01 * losses[0][1]) if name == "actor" else abs(a)
        assert abs(a - b) / scale < LOSS_RTOL, (name, a, b)
