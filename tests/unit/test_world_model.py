"""World-model loss (SPEC §2): every term recomputed by hand from the filter's outputs, the masks, which
posterior states and which targets each term uses, and that every parameter is trained."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mabl.algo.world_model_loss import SequenceBatch, world_model_loss
from mabl.config import ModelConfig
from mabl.envs.base import EnvSpec
from mabl.models.world_model import BiLevelWorldModel, Latent
from mabl.presets import build_config

T, B, N, OBS, G, A = 6, 2, 3, 7, 9, 5
BALANCE = 0.8
EPS = 1e-7


def _spec(mask: bool = True) -> EnvSpec:
    return EnvSpec(name="fake", n_agents=N, obs_dim=OBS, state_dim=G, discrete=True, n_actions=A,
                   has_action_mask=mask, episode_limit=50)


def _model(seed: int = 0, mask: bool = True, **overrides) -> BiLevelWorldModel:
    torch.manual_seed(seed)
    cfg = build_config("debug", {f"model.{k}": v for k, v in overrides.items()})
    return BiLevelWorldModel(_spec(mask), cfg.model)


def _batch(seed: int = 1, mask: bool = True) -> SequenceBatch:
    gen = torch.Generator().manual_seed(seed)
    avail = torch.rand(T, B, N, A, generator=gen) < 0.6
    avail[..., 0] = True
    fake = torch.zeros(T, B)
    fake[2, 1] = 1.0
    first = torch.zeros(T, B, dtype=torch.bool)
    first[3, 0] = True
    done = torch.zeros(T, B)
    done[2, 0] = 1.0
    done[4, 1] = 1.0
    return SequenceBatch(
        obs=torch.randn(T, B, N, OBS, generator=gen),
        state=torch.randn(T, B, G, generator=gen),
        avail=avail if mask else None,
        prev_action=torch.randint(0, A, (T, B, N), generator=gen),
        reward=torch.randn(T, B, generator=gen) * 2.0,
        done=done,
        fake=fake,
        first=first,
    )


def _loss(model, batch, seed=7):
    torch.manual_seed(seed)  # the filter samples latents: same seed, same samples
    return world_model_loss(model, batch, BALANCE)


# ------------------------------------------------------------------ hand-written reference pieces
def _smooth_l1(x: float, y: float) -> float:
    d = abs(x - y)
    return 0.5 * d * d if d < 1.0 else d - 0.5


def _bce_logit(logit: float, target: float) -> float:
    return max(logit, 0.0) - logit * target + math.log1p(math.exp(-abs(logit)))


def _kl_mean(q_logits: torch.Tensor, p_logits: torch.Tensor) -> float:
    q = q_logits.double().exp()
    q = q / q.sum(-1, keepdim=True)
    p = p_logits.double().exp()
    p = p / p.sum(-1, keepdim=True)
    per_cat = (q * ((q + EPS).log() - (p + EPS).log())).sum(-1)  # [..., C]
    return per_cat.mean().item()  # mean over categoricals, then time, batch, agents


def _hand_terms(model: BiLevelWorldModel, batch: SequenceBatch, filt) -> dict[str, float]:
    cut = T - 1
    post = filt.post
    with torch.no_grad():
        terms = {
            "kl_agent": _kl_mean(filt.post_a_logits[:cut], filt.prior_a_logits[:cut]),
            "kl_global": _kl_mean(filt.post_g_logits[:cut], filt.prior_g_logits[:cut]),
        }
        obs_pred = model.obs_decoder_out(torch.relu(model.obs_decoder_body(post.z_a[:cut], post.h_a[:cut])))
        reward_pred = model.reward_head(post.z_a[:cut], filt.h_a_trans[1:]).squeeze(-1)
        cont_logit = model.cont_head(post.z_a[:cut], filt.h_a_trans[1:], post.z_g[:cut], filt.h_g_trans[1:]).squeeze(-1)
        avail_logit = model.avail_head(*(t[:cut] for t in post)) if model.avail_head is not None else None
        hidden = torch.relu(model.obs_decoder_body(post.z_a[:cut], post.h_a[:cut]))
        if model.cfg.action_decoder_input == "obs_decoder_hidden":
            action_logit = model.action_decoder(hidden)
        else:
            action_logit = model.action_decoder(*(t[:cut] for t in post))

    obs_sum, obs_count = 0.0, 0
    reward_sum = cont_sum = avail_sum = action_sum = 0.0
    action_count = 0
    for j in range(cut):
        for b in range(B):
            for i in range(N):
                if batch.fake[j, b] == 0:
                    obs_sum += sum(_smooth_l1(obs_pred[j, b, i, o].item(), batch.obs[j, b, i, o].item()) for o in range(OBS))
                    obs_count += 1
                # Reward and continuation targets: the NEXT row's reward / done (row k+j+1).
                reward_sum += _smooth_l1(reward_pred[j, b, i].item(), batch.reward[j + 1, b].item())
                cont_sum += _bce_logit(cont_logit[j, b, i].item(), 1.0 - batch.done[j + 1, b].item())
                if avail_logit is not None:
                    avail_sum += sum(_bce_logit(avail_logit[j, b, i, a].item(), float(batch.avail[j, b, i, a]))
                                     for a in range(A))
                if model.cfg.action_decoder_mask == "episode_start":
                    scored = not batch.first[j, b]
                else:  # released code: not on absorbing rows, not at the window's first step
                    scored = j > 0 and batch.fake[j, b] == 0
                if scored:
                    row = action_logit[j, b, i].double()
                    target = int(batch.prev_action[j, b, i])
                    action_sum += (torch.logsumexp(row, 0) - row[target]).item()
                    action_count += 1
    rows = cut * B * N
    if model.cfg.loss_divisor == "all_rows":  # released code: every row the loss covers (utils.py)
        obs_div = rows
        action_div = rows if model.cfg.action_decoder_mask == "episode_start" else (cut - 1) * B * N
    else:
        obs_div, action_div = obs_count, action_count
    terms.update(obs=obs_sum / obs_div, reward=reward_sum / rows, cont=cont_sum / rows,
                 action=action_sum / action_div)
    if avail_logit is not None:
        terms["avail"] = avail_sum / rows
    return terms


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("overrides", [{}, {"agent_prior_on": "global_posterior"},
                                       {"action_decoder_input": "both_levels"},
                                       {"action_decoder_mask": "episode_start", "action_decoder_layers": 1},
                                       {"loss_divisor": "unmasked_rows"},
                                       {"action_decoder_mask": "episode_start", "loss_divisor": "unmasked_rows",
                                        "episode_reset": "start_state"}])
def test_every_term_matches_hand_computation(overrides):
    model = _model(**overrides)
    batch = _batch()
    loss, metrics, filt = _loss(model, batch)
    hand = _hand_terms(model, batch, filt)
    assert set(metrics) == set(hand)
    for key, value in hand.items():
        assert metrics[key].item() == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert loss.item() == pytest.approx(sum(hand.values()), rel=1e-4)
    assert math.isfinite(loss.item())


def test_without_action_mask_there_is_no_avail_term():
    model = _model(mask=False)
    assert model.avail_head is None
    batch = _batch(mask=False)
    loss, metrics, filt = _loss(model, batch)
    assert "avail" not in metrics
    hand = _hand_terms(model, batch, filt)
    assert loss.item() == pytest.approx(sum(hand.values()), rel=1e-4)


@pytest.mark.parametrize("mask,overrides", [(True, {}), (False, {}), (True, {"agent_prior_on": "global_posterior"}),
                                            (True, {"action_decoder_input": "both_levels"})])
def test_every_parameter_gets_a_gradient(mask, overrides):
    model = _model(mask=mask, **overrides)
    loss, _, _ = _loss(model, _batch(mask=mask))
    assert torch.isfinite(loss)
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    zero = [name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() == 0]
    nonfinite = [name for name, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert missing == [] and zero == [] and nonfinite == []


def test_obs_term_is_masked_on_fake_rows():
    model = _model()
    batch = _batch()
    j = T - 2  # the last loss step: changing obs[j] changes no other step's obs term
    fake = batch.fake.clone()
    fake[j, 0] = 1.0
    masked = batch._replace(fake=fake)
    obs = batch.obs.clone()
    obs[j, 0] += 5.0
    _, base, _ = _loss(model, masked)
    _, changed, _ = _loss(model, masked._replace(obs=obs))
    assert changed["obs"].item() == pytest.approx(base["obs"].item(), rel=1e-6)
    # The same change on a real row does change the term (the check above can fail).
    _, real_base, _ = _loss(model, batch)
    _, real_changed, _ = _loss(model, batch._replace(obs=obs))
    assert abs(real_changed["obs"].item() - real_base["obs"].item()) > 1e-3
    # The mask is on obs only: reward / continuation terms still see fake rows (faithful).
    fake_all = torch.ones(T, B)
    _, all_fake, _ = _loss(model, batch._replace(fake=fake_all))
    assert all_fake["obs"].item() == 0.0
    assert all_fake["reward"].item() == pytest.approx(real_base["reward"].item(), rel=1e-6)


def test_losses_use_the_first_t_minus_1_posterior_states_only():
    model = _model()
    batch = _batch()
    _, base, base_filt = _loss(model, batch)
    obs, state, avail = batch.obs.clone(), batch.state.clone(), batch.avail.clone()
    obs[T - 1] = torch.randn(B, N, OBS) * 3
    state[T - 1] = torch.randn(B, G) * 3
    avail[T - 1] = ~avail[T - 1]
    avail[T - 1, ..., 1] = True
    fake = batch.fake.clone()
    fake[T - 1] = 1.0
    changed = batch._replace(obs=obs, state=state, avail=avail, fake=fake)
    _, other, other_filt = _loss(model, changed)
    # The last posterior did change ...
    assert (other_filt.post_a_logits[T - 1] - base_filt.post_a_logits[T - 1]).abs().max() > 1e-3
    assert (other_filt.post_g_logits[T - 1] - base_filt.post_g_logits[T - 1]).abs().max() > 1e-3
    # ... but no loss term looks at it.
    for key in base:
        assert other[key].item() == pytest.approx(base[key].item(), rel=1e-6, abs=1e-7), key


@pytest.mark.parametrize("reset", ["carried_state", "start_state"])
def test_reward_and_continuation_before_a_reset_read_the_state_after_it(reset):
    """An episode start at the window's last step: with the released reading (carried_state) the
    reward and continuation heads of the step before read the transition out of the zeroed state
    (loss.py reads post.deter[1:]), so the flag moves those two terms and nothing else; with
    start_state they read the episode's own transition and no term moves."""
    model = _model(episode_reset=reset)
    batch = _batch()
    _, base, _ = _loss(model, batch)
    first = batch.first.clone()
    first[T - 1] = True
    _, other, _ = _loss(model, batch._replace(first=first))
    moved = {key for key in base if abs(other[key].item() - base[key].item()) > 1e-6}
    assert moved == ({"reward", "cont"} if reset == "carried_state" else set())


def test_reward_and_continuation_targets_are_the_next_row():
    model = _model()
    batch = _batch()
    _, base, _ = _loss(model, batch)
    # reward[0] / done[0] belong to the action taken before obs[0]: never a target.
    reward, done = batch.reward.clone(), batch.done.clone()
    reward[0] += 50.0
    done[0] = 1.0 - done[0]
    _, same, _ = _loss(model, batch._replace(reward=reward, done=done))
    assert same["reward"].item() == pytest.approx(base["reward"].item(), rel=1e-6)
    assert same["cont"].item() == pytest.approx(base["cont"].item(), rel=1e-6)
    # reward[T-1] / done[T-1] are the targets of the last loss step.
    reward, done = batch.reward.clone(), batch.done.clone()
    reward[T - 1] += 50.0
    done[T - 1] = 1.0 - done[T - 1]
    _, moved, _ = _loss(model, batch._replace(reward=reward, done=done))
    assert moved["reward"].item() > base["reward"].item() + 1.0
    assert abs(moved["cont"].item() - base["cont"].item()) > 1e-4
    assert moved["obs"].item() == pytest.approx(base["obs"].item(), rel=1e-6)


def test_previous_action_at_episode_start_is_fed_and_scored():
    """Released code: at an episode start the filter still reads the stored previous action
    (rnns.py) and the action decoder is scored on it (loss.py masks only absorbing rows and the
    window's first step): the decoder can see what it is asked for."""
    model = _model()
    batch = _batch()
    _, base, base_filt = _loss(model, batch)
    assert bool(batch.first[3, 0])
    prev_action = batch.prev_action.clone()
    prev_action[3, 0] = (prev_action[3, 0] + 1) % A
    _, other, other_filt = _loss(model, batch._replace(prev_action=prev_action))
    assert (other_filt.post.h_a[3, 0] - base_filt.post.h_a[3, 0]).abs().max() > 1e-4  # fed
    torch.testing.assert_close(other_filt.post.h_a[:3], base_filt.post.h_a[:3])
    assert abs(other["action"].item() - base["action"].item()) > 1e-5  # scored
    assert abs(other["kl_agent"].item() - base["kl_agent"].item()) > 1e-7


@pytest.mark.parametrize("mask", ["fake_and_window_start", "episode_start"])
def test_previous_action_at_episode_start(mask):
    """--model.episode_reset start_state (earlier mabl): the action is not fed at an episode start."""
    model = _model(action_decoder_mask=mask, episode_reset="start_state")
    batch = _batch()
    _, base, _ = _loss(model, batch)
    assert bool(batch.first[3, 0])
    # prev_action[3] at an episode start is the old episode's LAST action a_{k+3}: not seen by the
    # reset filter, but it is the action that earned the old episode's final reward[3], predicted at
    # step 2 from the transition h_trans[3]. The released code keeps it as an action-decoder target
    # (it masks only absorbing rows and the window's first step); 'episode_start' does not.
    prev_action = batch.prev_action.clone()
    prev_action[3, 0] = (prev_action[3, 0] + 1) % A
    _, same, _ = _loss(model, batch._replace(prev_action=prev_action))
    for key in ("kl_agent", "kl_global", "obs", "avail") + (("action",) if mask == "episode_start" else ()):
        assert same[key].item() == pytest.approx(base[key].item(), rel=1e-6, abs=1e-7), key
    assert abs(same["reward"].item() - base["reward"].item()) > 1e-5
    if mask != "episode_start":
        assert abs(same["action"].item() - base["action"].item()) > 1e-5
    # Without a reset (batch column 1) the previous action is an action-decoder target.
    prev_action = batch.prev_action.clone()
    prev_action[3, 1] = (prev_action[3, 1] + 1) % A
    _, moved, _ = _loss(model, batch._replace(prev_action=prev_action))
    assert abs(moved["action"].item() - base["action"].item()) > 1e-5


def test_observe_shapes():
    model = _model()
    batch = _batch()
    prev = F.one_hot(batch.prev_action, A).float()
    torch.manual_seed(0)
    filt = model.observe(batch.obs, batch.state, prev, batch.first)
    z, deter, cats = model.latent_dim, model.deter, (4, 4)
    assert tuple(filt.post.z_a.shape) == (T, B, N, z) and tuple(filt.post.h_a.shape) == (T, B, N, deter)
    assert tuple(filt.post.z_g.shape) == (T, B, N, z) and tuple(filt.post.h_g.shape) == (T, B, N, deter)
    for logits in (filt.prior_a_logits, filt.post_a_logits, filt.prior_g_logits, filt.post_g_logits):
        assert tuple(logits.shape) == (T, B, N, *cats)
    onehot = filt.post.z_a.detach().view(T, B, N, *cats)
    assert torch.allclose(onehot.sum(-1), torch.ones(T, B, N, 4))


def test_imagine_step_team_reward_and_continuation():
    model = _model()
    gen = torch.Generator().manual_seed(5)
    m = 4
    z = lambda: F.one_hot(torch.randint(0, 4, (m, N, 4), generator=gen), 4).float().flatten(-2)  # noqa: E731
    latent = Latent(z(), torch.randn(m, N, model.deter, generator=gen), z(), torch.randn(m, N, model.deter, generator=gen))
    action = F.one_hot(torch.randint(0, A, (m, N), generator=gen), A).float()
    with torch.no_grad():
        nxt, reward, cont = model.imagine_step(latent, action)
        h_a = model.agent_transition(latent.h_a, latent.z_a, action)
        h_g = model.global_transition(latent.h_g, latent.z_g, action)
        per_agent_reward = model.reward_head(latent.z_a, h_a)[..., 0]
        per_agent_cont = torch.sigmoid(model.cont_head(latent.z_a, h_a, latent.z_g, h_g))[..., 0]
    assert reward.shape == (m,) and cont.shape == (m, N)  # team reward; each agent's own continuation
    for r in range(m):
        assert reward[r].item() == pytest.approx(sum(per_agent_reward[r].tolist()) / N, rel=1e-5, abs=1e-6)
        for i in range(N):
            assert cont[r, i].item() == pytest.approx(per_agent_cont[r, i].item(), rel=1e-5)
    torch.testing.assert_close(nxt.h_a, h_a)
    torch.testing.assert_close(nxt.h_g, h_g)
    # The joint action reaches every agent's global chain: changing agent 0's action moves agent 2's h^g.
    action2 = action.clone()
    action2[:, 0] = action[:, 0].roll(1, -1)
    with torch.no_grad():
        h_g2 = model.global_transition(latent.h_g, latent.z_g, action2)
        h_a2 = model.agent_transition(latent.h_a, latent.z_a, action2)
    assert (h_g2[:, 2] - h_g[:, 2]).abs().max() > 1e-4
    # ... but not agent 2's own agent-level chain.
    torch.testing.assert_close(h_a2[:, 2], h_a[:, 2])


def test_global_posterior_input_option():
    """'agent_posterior' (code): q(z^g_t) reads this step's agent posterior sample; 'previous_global'
    (paper §3.1.1): it reads z^g_{t-1} instead, which is zero at the first step of a window."""
    torch.manual_seed(0)
    spec = EnvSpec(name="fake", n_agents=2, obs_dim=5, state_dim=4, discrete=True, n_actions=3, episode_limit=10)
    for option in ("agent_posterior", "previous_global"):
        cfg = ModelConfig(hidden=16, deter=8, n_categoricals=2, n_classes=3, encoder_layers=2,
                           global_posterior_on=option)
        model = BiLevelWorldModel(spec, cfg)
        steps, batch = 3, 2
        obs, state = torch.randn(steps, batch, 2, 5), torch.randn(steps, batch, 4)
        action = torch.nn.functional.one_hot(torch.randint(0, 3, (steps, batch, 2)), 3).float()
        first = torch.zeros(steps, batch, dtype=torch.bool)
        out = model.observe(obs, state, action, first)
        post = out.post
        head = model.global_posterior
        embed_s = model.state_encoder(state[0])[:, None].expand(-1, 2, -1)
        # Step 0 by hand: the latent input is the agent sample (code) or zeros (no previous global latent).
        latent_in = post.z_a[0] if option == "agent_posterior" else torch.zeros_like(post.z_g[0])
        expected = head(post.h_g[0], embed_s, latent_in)
        torch.testing.assert_close(out.post_g_logits[0], expected, rtol=1e-5, atol=1e-5)
        # Step 1 with 'previous_global' reads the step-0 global sample.
        if option == "previous_global":
            embed_s1 = model.state_encoder(state[1])[:, None].expand(-1, 2, -1)
            expected1 = head(post.h_g[1], embed_s1, post.z_g[0])
            torch.testing.assert_close(out.post_g_logits[1], expected1, rtol=1e-5, atol=1e-5)
