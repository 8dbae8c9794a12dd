"""MAPPO in imagination (SPEC §4): the clipped surrogate and its gradient by hand, advantage
normalisation, and the learner's minibatch / entropy-decay schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mabl.algo.agent import MablAgent
from mabl.algo.imagination import Imagined
from mabl.algo.imagined_ppo import ENTROPY_COEF_MAX, ImaginedPpo, adapted_entropy_coef, normalized_advantage, ppo_actor_loss
from mabl.envs.base import EnvSpec
from mabl.errors import MablError
from mabl.models.actor_critic import MASKED_LOGIT, Actor, AttentionCritic, masked_logits
from mabl.models.world_model import Latent
from mabl.presets import build_config
from mabl.replay import SequenceReplay

N, A, C, K = 2, 4, 4, 4


def _log_softmax_list(row: list[float]) -> list[float]:
    top = max(row)
    log_total = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - log_total for x in row]


def _ppo_inputs(seed: int):
    gen = torch.Generator().manual_seed(seed)
    rows = 12
    avail = torch.rand(rows, N, A, generator=gen) < 0.7
    avail[..., 1] = True
    logits = masked_logits(torch.randn(rows, N, A, generator=gen) * 1.5, avail)
    action = torch.full((rows, N), 1, dtype=torch.long)
    for r in range(rows):
        for i in range(N):
            choices = avail[r, i].nonzero().flatten()
            action[r, i] = choices[torch.randint(0, len(choices), (1,), generator=gen)]
    log_prob = logits.log_softmax(-1).gather(-1, action[..., None])[..., 0]
    # Old log-probs chosen so the ratio covers both sides of the clip range.
    log_ratio = torch.tensor([-0.7, -0.25, -0.1, 0.0, 0.1, 0.25, 0.7, -0.05, 0.05, 0.4, -0.4, 0.15])
    old_log_prob = log_prob - log_ratio[:, None]
    advantage = torch.randn(rows, N, generator=gen)
    advantage[::2, 0] = advantage[::2, 0].abs()
    advantage[1::2, 0] = -advantage[1::2, 0].abs()
    return logits, action, old_log_prob.detach(), advantage, avail


@pytest.mark.parametrize("clip,entropy_coef", [(0.2, 1e-3), (0.1, 0.5), (0.3, 0.0)])
def test_ppo_actor_loss_matches_hand_computation(clip, entropy_coef):
    logits, action, old_log_prob, advantage, avail = _ppo_inputs(0)
    loss, entropy = ppo_actor_loss(logits, action, old_log_prob, advantage, clip, entropy_coef)
    surrogate_sum, entropy_sum, count = 0.0, 0.0, 0
    for r in range(logits.shape[0]):
        for i in range(N):
            logp = _log_softmax_list(logits[r, i].tolist())
            ratio = math.exp(logp[int(action[r, i])] - old_log_prob[r, i].item())
            adv = advantage[r, i].item()
            clipped = min(max(ratio, 1 - clip), 1 + clip)
            surrogate_sum += min(ratio * adv, clipped * adv)
            entropy_sum += -sum(math.exp(lp) * lp for lp in logp if math.exp(lp) > 0)
            count += 1
    expected_entropy = entropy_sum / count
    expected = -surrogate_sum / count - entropy_coef * expected_entropy
    assert entropy.item() == pytest.approx(expected_entropy, rel=1e-5)
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    # Masked actions carry no probability and no entropy: entropy is at most log(#available).
    bound = sum(math.log(int(avail[r, i].sum())) for r in range(logits.shape[0]) for i in range(N)) / count
    assert entropy.item() <= bound + 1e-6


def test_ppo_actor_loss_gradient_is_zero_where_clipped():
    clip = 0.2
    logits0, action, old_log_prob, advantage, _ = _ppo_inputs(1)
    logits = logits0.clone().requires_grad_()
    loss, _ = ppo_actor_loss(logits, action, old_log_prob, advantage, clip, 0.0)
    loss.backward()
    rows = logits.shape[0]
    count = rows * N
    with torch.no_grad():
        probs = logits0.softmax(-1)
        ratio = torch.exp(logits0.log_softmax(-1).gather(-1, action[..., None])[..., 0] - old_log_prob)
    n_clipped = n_free = 0
    for r in range(rows):
        for i in range(N):
            rho, adv = ratio[r, i].item(), advantage[r, i].item()
            flat = (adv > 0 and rho > 1 + clip) or (adv < 0 and rho < 1 - clip)
            if flat:
                expected = torch.zeros(A)
                n_clipped += 1
            else:
                # d(-rho A / count)/dlogits = -(A / count) rho (onehot(a) - softmax)
                onehot = torch.zeros(A)
                onehot[action[r, i]] = 1.0
                expected = -(adv / count) * rho * (onehot - probs[r, i])
                n_free += 1
            torch.testing.assert_close(logits.grad[r, i], expected, rtol=1e-4, atol=1e-7)
    assert n_clipped >= 2 and n_free >= 2


def test_normalized_advantage():
    gen = torch.Generator().manual_seed(2)
    returns = torch.randn(10, N, generator=gen) * 3 + 1
    value = torch.randn(10, N, generator=gen)
    raw = normalized_advantage(returns, value, False)
    torch.testing.assert_close(raw, returns - value)
    diff = [r - v for r, v in zip(returns.flatten().tolist(), value.flatten().tolist())]
    mean = sum(diff) / len(diff)
    std = math.sqrt(sum((d - mean) ** 2 for d in diff) / (len(diff) - 1))  # unbiased, as torch.std
    expected = torch.tensor([(d - mean) / (std + 1e-4) for d in diff]).view(10, N)
    torch.testing.assert_close(normalized_advantage(returns, value, True), expected, rtol=1e-5, atol=1e-6)


def _imagined(rows: int, deter: int, gen: torch.Generator) -> Imagined:
    z = lambda: torch.randint(0, K, (rows, N, C), generator=gen)  # noqa: E731 (class indices, like imagine())
    h_a = torch.randn(rows, N, deter, generator=gen)
    h_a[:, :, 0] = torch.arange(rows, dtype=torch.float32)[:, None]  # a row tag, read back by a hook
    avail = torch.rand(rows, N, A, generator=gen) < 0.7
    avail[..., 0] = True
    return Imagined(
        latent=Latent(z(), h_a, z(), torch.randn(rows, N, deter, generator=gen)),
        action=torch.zeros(rows, N, dtype=torch.long),
        log_prob=torch.full((rows, N), -math.log(2.0)),
        avail=avail,
        value=torch.randn(rows, N, generator=gen),
        returns=torch.randn(rows, N, generator=gen),
        reward=torch.randn(rows, generator=gen),
    )


@pytest.mark.parametrize("rows,minibatch,epochs", [(70, 32, 3), (64, 32, 2), (5, 32, 1)])
def test_learner_update_schedule_and_entropy_decay(rows, minibatch, epochs):
    cfg = build_config("debug", {"policy.entropy_decay": 0.9, "policy.minibatch": minibatch,
                                 "policy.epochs": epochs, "policy.entropy": 0.01})
    deter, hidden = cfg.model.deter, cfg.policy.hidden
    torch.manual_seed(0)
    actor = Actor(C * K, K, deter, hidden, A)
    critic = AttentionCritic(C * K, K, deter, hidden, cfg.policy.attn_heads, N)
    learner = ImaginedPpo(actor, critic, cfg.policy)
    assert learner.entropy_coef == 0.01

    seen: list[list[int]] = []
    coefs: list[float] = []

    def record(_module, inputs, _output):
        seen.append(inputs[1][:, 0, 0].round().long().tolist())  # the row tags of this minibatch
        coefs.append(learner.entropy_coef)

    handle = actor.register_forward_hook(record)
    metrics = learner.update(_imagined(rows, deter, torch.Generator().manual_seed(1)),
                             generator=torch.Generator().manual_seed(2))
    handle.remove()

    steps = epochs * math.ceil(rows / minibatch)
    assert len(seen) == steps
    assert learner.entropy_coef == pytest.approx(0.01 * 0.9**steps, rel=1e-12)
    # The coefficient decays after each actor step: step s used 0.01 * 0.9**s.
    assert coefs == pytest.approx([0.01 * 0.9**s for s in range(steps)], rel=1e-12)
    per_epoch = math.ceil(rows / minibatch)
    for e in range(epochs):
        batches = seen[e * per_epoch : (e + 1) * per_epoch]
        assert [len(b) for b in batches[:-1]] == [minibatch] * (per_epoch - 1)
        assert sorted(sum(batches, [])) == list(range(rows))  # every row exactly once per epoch
    if epochs > 1 and rows > 5:
        assert seen[0] != seen[per_epoch]  # reshuffled each epoch
    for opt in (learner.actor_opt, learner.critic_opt):
        for state in opt.state.values():
            assert int(state["step"]) == steps
    assert set(metrics) == {"actor_loss", "critic_loss", "entropy", "actor_skipped", "critic_skipped"}
    assert all(math.isfinite(float(v)) for v in metrics.values())
    assert float(metrics["actor_skipped"]) == float(metrics["critic_skipped"]) == 0.0  # the divergence guard


def test_masked_logits():
    logits = torch.tensor([[0.5, 1.0, -2.0]])
    out = masked_logits(logits, torch.tensor([[True, False, True]]))
    assert out.tolist() == [[0.5, MASKED_LOGIT, -2.0]]
    assert masked_logits(logits, None) is logits
    # a row with nothing available: all equal (uniform, log-prob -log A as log_softmax gives)
    empty = masked_logits(logits, torch.tensor([[False, False, False]]))
    assert empty.tolist() == [[0.0, 0.0, 0.0]]


def test_imagined_rows_are_consistent_with_the_actor_and_critic():
    """At the first PPO step the new log-probs equal the stored ones (ratio 1): the compact latents
    (class indices) give the same actor logits as the one-hot ones, under the stored mask."""
    spec = EnvSpec(name="fake", n_agents=N, obs_dim=5, state_dim=6, discrete=True, n_actions=A,
                   has_action_mask=True, episode_limit=50)
    cfg = build_config("debug")
    torch.manual_seed(0)
    agent = MablAgent(spec, cfg, torch.device("cpu"))
    rng = np.random.default_rng(0)
    replay = SequenceReplay(spec, 200)
    for length in (10, 12):
        avail = np.ones((length, N, A), bool)
        avail[:, :, 3] = rng.random((length, N)) < 0.5
        replay.add_episode({"obs": rng.standard_normal((length, N, 5)).astype(np.float32),
                            "state": rng.standard_normal((length, 6)).astype(np.float32),
                            "action": rng.integers(0, A, (length, N)),
                            "reward": rng.standard_normal(length).astype(np.float32),
                            "done": np.eye(1, length, length - 1, dtype=bool)[0],
                            "avail": avail}, True, rng)
    rows = replay.sample(cfg.policy.batch_size, cfg.model.seq_len, rng)
    torch.manual_seed(1)
    out = agent.imagine(rows)
    starts = (cfg.model.seq_len - 2) * cfg.policy.batch_size
    total = (cfg.policy.horizon - 1) * starts
    assert out.action.shape == (total, N) and out.returns.shape == (total, N) and out.reward.shape == (total,)
    assert out.latent.z_a.shape == (total, N, C) and out.latent.z_a.dtype == torch.long
    # Every sampled action is available under the mask it was sampled with (a mask sampled empty is
    # kept, SPEC §3: any action there).
    assert out.avail.gather(-1, out.action[..., None])[..., 0][out.avail.any(-1)].all()
    with torch.no_grad():
        logits = agent.actor(out.latent.z_a, out.latent.h_a, out.avail)
        log_prob = logits.log_softmax(-1).gather(-1, out.action[..., None])[..., 0]
        value = agent.critic(*out.latent)
    torch.testing.assert_close(log_prob, out.log_prob, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(value, out.value, rtol=1e-5, atol=1e-5)


def test_adapted_entropy_coef_moves_geometrically_toward_the_target_within_its_range():
    assert adapted_entropy_coef(0.01, 0.2, 0.5, 0.1, 1e-3) == pytest.approx(0.01 * math.exp(0.1 * 0.3), rel=1e-12)
    assert adapted_entropy_coef(0.01, 0.9, 0.5, 0.1, 1e-3) == pytest.approx(0.01 * math.exp(-0.1 * 0.4), rel=1e-12)
    assert adapted_entropy_coef(0.01, 0.5, 0.5, 0.1, 1e-3) == 0.01
    assert adapted_entropy_coef(0.9, 0.0, 50.0, 1.0, 1e-3) == ENTROPY_COEF_MAX
    assert adapted_entropy_coef(2e-3, 50.0, 0.1, 1.0, 1e-3) == 1e-3  # never below the floor (--policy.entropy)


@pytest.mark.parametrize("target", [10.0, 1e-6])
def test_learner_entropy_coef_follows_the_target_instead_of_decaying(target):
    rate = 0.05
    cfg = build_config("debug", {"policy.entropy_decay": 0.5, "policy.minibatch": 16, "policy.epochs": 2,
                                 "policy.entropy": 0.01, "policy.target_entropy": target,
                                 "policy.entropy_rate": rate})
    deter, hidden = cfg.model.deter, cfg.policy.hidden
    torch.manual_seed(0)
    learner = ImaginedPpo(Actor(C * K, K, deter, hidden, A),
                           AttentionCritic(C * K, K, deter, hidden, cfg.policy.attn_heads, N), cfg.policy)
    coefs: list[float] = []
    handle = learner.actor.register_forward_hook(lambda *_: coefs.append(learner.entropy_coef))
    learner.update(_imagined(40, deter, torch.Generator().manual_seed(1)), generator=torch.Generator().manual_seed(2))
    handle.remove()
    coefs.append(learner.entropy_coef)
    assert len(coefs) == 2 * math.ceil(40 / 16) + 1
    if target > math.log(A):  # every policy is below the target: the bonus rises every step
        ratios = [b / a for a, b in zip(coefs, coefs[1:])]
        # a policy's entropy H lies in [0, log A], so each step's factor exp(rate (target - H)) lies in this range
        lo, hi = math.exp(rate * (target - math.log(A))), math.exp(rate * target)
        assert all(1 < lo * (1 - 1e-9) <= r <= hi * (1 + 1e-9) for r in ratios)
    else:  # every policy is above the target: the bonus stays at its floor, --policy.entropy (no 0.5 decay)
        assert coefs == [0.01] * len(coefs)


def test_target_entropy_must_not_be_negative():
    with pytest.raises(MablError, match="policy.target_entropy"):
        build_config("debug", {"policy.target_entropy": -0.1})


@pytest.mark.parametrize("minibatch", [1000, 16])
def test_critic_and_actor_loss_values_of_an_update_by_hand(minibatch):
    """The imagination critic loss is ``0.5 * mean (V - R)^2`` over a minibatch's rows and agents, and
    the update reports its mean over the minibatches; with both learning rates 0 nothing moves, so
    every minibatch's loss is known: a critic whose output is the constant v (last layer zeroed,
    bias v) scores 0.5 (v - R)^2 per row and agent. At the rollout's own policy the PPO ratio is 1, so the
    actor loss is -mean(A) - beta * entropy = -beta * entropy (normalised advantages have mean 0)."""
    cfg = build_config("debug", {"policy.minibatch": minibatch, "policy.epochs": 2, "policy.entropy": 0.05})
    deter, hidden = cfg.model.deter, cfg.policy.hidden
    torch.manual_seed(0)
    actor = Actor(C * K, K, deter, hidden, A)
    critic = AttentionCritic(C * K, K, deter, hidden, cfg.policy.attn_heads, N)
    v = 0.35
    with torch.no_grad():
        last = [m for m in critic.out.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.zero_()
        last.bias.fill_(v)
    learner = ImaginedPpo(actor, critic, cfg.policy)
    for opt in (learner.actor_opt, learner.critic_opt):  # (the config refuses 0; the optimizers take it)
        for group in opt.param_groups:
            group["lr"] = 0.0
    batch = _imagined(64, deter, torch.Generator().manual_seed(3))
    with torch.no_grad():  # the rollout's log-probs are the actor's own: ratio 1 at every step
        logits = actor(batch.latent.z_a, batch.latent.h_a, batch.avail)
        batch = batch._replace(log_prob=logits.log_softmax(-1).gather(-1, batch.action[..., None])[..., 0])
        entropy = float(torch.distributions.Categorical(logits=logits).entropy().mean())
    metrics = learner.update(batch, generator=torch.Generator().manual_seed(4))
    returns = batch.returns.double().numpy()
    # minibatches of equal size (64 rows = 4 x 16 or 1 x 64): the mean over them is the mean over all rows
    assert float(metrics["critic_loss"]) == pytest.approx(0.5 * ((v - returns) ** 2).mean(), rel=1e-5)
    assert float(metrics["entropy"]) == pytest.approx(entropy, rel=1e-5)
    coef = cfg.policy.entropy * np.mean([cfg.policy.entropy_decay ** s for s in range(2 * math.ceil(64 / minibatch))])
    assert float(metrics["actor_loss"]) == pytest.approx(-coef * entropy, rel=1e-4, abs=1e-6)
