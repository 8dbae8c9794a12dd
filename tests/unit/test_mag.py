"""``--algo mag`` (Wu et al., AAAI 2023) as structures: one parameter set per local model, the
model-agents' learned cost and planning against small-loop re-implementations, and which
parameters each of MAG's objectives reaches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_ctde import OBS, SPEC, A, N, _replay  # the same fake spec and random replay

from mabl.algo import build_learner
from mabl.algo.mag import MagAgent, error_predictor_loss, local_model_errors
from mabl.algo.world_model_loss import action_input, world_model_loss
from mabl.models.mag import AgentGRUCell, AgentLinear, LocalAgentEncoder, LocalWorldModels
from mabl.models.world_model import Latent
from mabl.policy import JointPolicy, load_policy, save_policy
from mabl.presets import build_config


def _agent(seed: int = 0, **overrides) -> MagAgent:
    torch.manual_seed(seed)
    agent = build_learner(SPEC, build_config("debug", {"algo": "mag", **overrides}), torch.device("cpu"))
    assert isinstance(agent, MagAgent) and isinstance(agent.world_model, LocalWorldModels)
    return agent


def _batch(agent: MagAgent, seed: int = 1):
    cfg = agent.cfg
    return agent.to_batch(_replay(seed).sample(cfg.model.batch_size, cfg.model.seq_len, np.random.default_rng(seed)))


def _filter(agent: MagAgent, batch):
    return agent.world_model.observe(batch.obs, batch.state, action_input(batch.prev_action, SPEC), batch.first)


# ------------------------------------------------------------------------------- per-agent layers
def test_agent_layers_equal_one_torch_layer_per_agent():
    torch.manual_seed(0)
    lin = AgentLinear(N, 6, 4)
    x = torch.randn(2, 5, N, 6)
    out = lin(x)
    for i in range(N):
        torch.testing.assert_close(out[..., i, :], x[..., i, :] @ lin.weight[i] + lin.bias[i])
    gru = AgentGRUCell(N, 6, 8)
    with torch.no_grad():
        gru.bias_ih.normal_()
        gru.bias_hh.normal_()
    h = torch.randn(2, 5, N, 8)
    got = gru(x, h)
    for i in range(N):
        ref = torch.nn.GRUCell(6, 8)
        with torch.no_grad():  # torch stores [3H, in]; ours is agent i's [in, 3H]
            ref.weight_ih.copy_(gru.weight_ih[i].t())
            ref.weight_hh.copy_(gru.weight_hh[i].t())
            ref.bias_ih.copy_(gru.bias_ih[i])
            ref.bias_hh.copy_(gru.bias_hh[i])
        expected = ref(x[..., i, :].reshape(-1, 6), h[..., i, :].reshape(-1, 8)).view(2, 5, 8)
        torch.testing.assert_close(got[..., i, :], expected)


def test_every_local_model_parameter_has_an_agent_axis_and_only_the_mixer_is_shared():
    agent = _agent()
    model = agent.world_model
    per_agent = model.per_agent_parameters()
    shared = {name for name, _ in model.named_parameters()} - set(per_agent)
    assert shared and all(name.startswith("agent.mixer.") for name in shared)
    assert all(p.shape[0] == N for p in per_agent.values()), {k: tuple(p.shape) for k, p in per_agent.items()}
    assert all(p.shape[0] == N for p in agent.error_predictor.parameters())
    # Distinct draws per agent (not N copies of one initialisation).
    w = model.agent.agent_gru.weight_ih
    assert not torch.equal(w[0], w[1])


def test_changing_agent_1s_model_leaves_agent_0s_predictions_unchanged():
    agent = _agent(2)
    model = agent.world_model
    cfg = agent.cfg.model
    gen = torch.Generator().manual_seed(3)
    obs = torch.randn(6, N, OBS, generator=gen)
    h = torch.randn(6, N, cfg.deter, generator=gen)
    h_next = torch.randn(6, N, cfg.deter, generator=gen)
    z = torch.nn.functional.one_hot(torch.randint(0, cfg.n_classes, (6, N, cfg.n_categoricals), generator=gen),
                                    cfg.n_classes).float().flatten(-2)
    act = torch.nn.functional.one_hot(torch.randint(0, A, (6, N), generator=gen), A).float()
    x = torch.randn(6, N, cfg.hidden, generator=gen)
    enc = model.agent

    def outputs() -> dict[str, torch.Tensor]:
        with torch.no_grad():
            out = {"encoder": enc.obs_encoder(obs), "input": enc.agent_input(act, z), "gru": enc.agent_gru(x, h),
                   "posterior": enc.agent_posterior(h, x), "prior": model.agent_prior(h),
                   "error": agent.error_predictor(z, h), "start": enc.start_state(N)[None]}
            out.update(model.loss_heads(Latent(z, h, None, None), h_next, None))
        return out

    before = outputs()
    with torch.no_grad():
        for p in [*model.per_agent_parameters().values(), *agent.error_predictor.parameters()]:
            p[1] += torch.randn(p[1].shape, generator=gen)
    after = outputs()
    for key in before:
        # (the start state is the transition from zero inputs: its agent-0 row reads the shared mixer)
        if key != "start":
            assert torch.equal(before[key][:, 0], after[key][:, 0]), key
        assert not torch.allclose(before[key][:, 1], after[key][:, 1]), key  # the change did reach agent 1


def test_without_the_mixer_the_local_models_filter_independently():
    """The filter too: with the transformer (the one shared, interacting part) taken out, agent 0's
    whole filtered trajectory ignores agent 1's parameters; with it, it does not."""
    agent = _agent(3)
    model = agent.world_model
    batch = _batch(agent)

    def filtered(mixer: bool):
        saved = model.agent.mixer
        model.agent.mixer = saved if mixer else None
        torch.manual_seed(5)
        with torch.no_grad():
            out = _filter(agent, batch)
        model.agent.mixer = saved
        return out

    base = {m: filtered(m) for m in (False, True)}
    with torch.no_grad():
        for p in model.per_agent_parameters().values():
            p[1] += 0.5 * torch.randn_like(p[1])
    new = {m: filtered(m) for m in (False, True)}
    torch.testing.assert_close(new[False].post_a_logits[..., 0, :, :], base[False].post_a_logits[..., 0, :, :],
                               rtol=0, atol=0)
    assert not torch.allclose(new[False].post_a_logits[..., 1, :, :], base[False].post_a_logits[..., 1, :, :])
    assert not torch.allclose(new[True].post_a_logits[..., 0, :, :], base[True].post_a_logits[..., 0, :, :])


# ------------------------------------------------------------------------------- the model-agents' cost
def _smooth_l1(d: float) -> float:
    return 0.5 * d * d if abs(d) < 1.0 else abs(d) - 0.5


def _bce(logit: float, y: float) -> float:
    return -(y * math.log(1.0 / (1.0 + math.exp(-logit))) + (1.0 - y) * math.log(1.0 / (1.0 + math.exp(logit))))


def _per_agent_rows(batch, seed: int = 3):
    """The batch with each agent's own reward, done and absorbing flag (Flatland's rows)."""
    gen = torch.Generator().manual_seed(seed)
    t, b = batch.obs.shape[:2]
    fake = torch.zeros(t, b, N)
    fake[3:, 0, 1] = 1.0  # agent 1 of window 0 absorbed from step 3 on
    done = torch.zeros(t, b, N)
    done[2, 0, 1] = 1.0
    return batch._replace(reward=torch.randn(t, b, N, generator=gen), done=done, fake=fake)


@pytest.mark.parametrize("rows", ["team", "per_agent"])
@pytest.mark.parametrize("overrides", [{}, {"model.action_decoder_mask": "episode_start"},
                                       {"mag.error_target": "full_scale"}])
def test_local_model_errors_match_a_loop_over_steps_windows_and_agents(overrides, rows):
    agent = _agent(4, **overrides)
    model = agent.world_model
    batch = _batch(agent, 2)
    if rows == "per_agent":
        batch = _per_agent_rows(batch)
    target = agent.cfg.mag.error_target
    with torch.no_grad():
        filt = _filter(agent, batch)
        got = local_model_errors(model, batch, filt, target)
        cut = batch.obs.shape[0] - 1
        heads = model.loss_heads(filt.post.map(lambda t: t[:cut]), filt.h_a_trans[1:], None)
    windows = batch.obs.shape[1]
    assert got.shape == (cut, windows, N)
    eps = 1e-7

    def own(x, j, b, i):  # each agent's own value where the rows hold one per agent
        return float(x[j, b, i]) if x.dim() == 3 else float(x[j, b])

    for j in range(cut):
        for b in range(windows):
            for i in range(N):
                q = filt.post_a_logits[j, b, i].double().softmax(-1)
                p = filt.prior_a_logits[j, b, i].double().softmax(-1)
                kl = float((q * ((q + eps).log() - (p + eps).log())).sum(-1).mean())
                real = 1.0 - own(batch.fake, j, b, i)
                per_dim = [_smooth_l1(float(heads["obs"][j, b, i, d] - batch.obs[j, b, i, d])) for d in range(OBS)]
                if target == "mag_code":  # MAG-code: mean over dims / rows of the batch
                    obs = real * sum(per_dim) / OBS / (cut * windows * N)
                else:
                    obs = real * sum(per_dim)
                reward = _smooth_l1(float(heads["reward"][j, b, i, 0]) - own(batch.reward, j + 1, b, i))
                cont = _bce(float(heads["cont"][j, b, i, 0]), 1.0 - own(batch.done, j + 1, b, i))
                avail = sum(_bce(float(heads["avail"][j, b, i, a]), float(batch.avail[j, b, i, a])) for a in range(A))
                logits = heads["action"][j, b, i].double()
                taken = int(batch.prev_action[j, b, i])
                if target == "full_scale" or agent.cfg.model.action_decoder_mask == "episode_start":
                    scored = not bool(batch.first[j, b])  # (full_scale: the earlier target)
                else:  # MAG-code: dis added on rows 1.., absorbing rows masked
                    scored = j > 0 and real > 0
                action = float(torch.logsumexp(logits, 0) - logits[taken]) if scored else 0.0
                expected = kl + obs + reward + cont + avail + action
                assert float(got[j, b, i]) == pytest.approx(expected, rel=1e-4, abs=1e-4), (j, b, i)


def test_mag_learns_on_per_agent_rows():
    """Flatland's rows (reward, done and fake per agent) through a whole world-model update and the
    error predictor's steps (the team-only errors raised on them)."""
    agent = _agent(4, **{"mag.error_updates": 2})
    batch = _per_agent_rows(_batch(agent, 2))
    agent.to_batch = lambda rows: batch
    before = [p.detach().clone() for p in agent.error_predictor.parameters()]
    metrics = agent.train_world_model(None)
    assert torch.isfinite(metrics["loss"]) and not bool(metrics["skipped"])
    out = agent.after_world_model(lambda: None)
    assert len(out) == 2 and all(torch.isfinite(m["error_predictor"]) for m in out)
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.error_predictor.parameters()))


def test_local_model_errors_follow_the_reward_loss_option():
    """Under ``--model.reward_loss mse`` the per-step errors differ from smooth-L1's by exactly the
    reward term's difference: the error predictor regresses the loss the model is trained on."""
    errors = {}
    for loss in ("smooth_l1", "mse"):
        agent = _agent(4, **{"model.reward_loss": loss})
        batch = _batch(agent, 2)
        batch = batch._replace(reward=batch.reward * 5.0)  # errors past 1, where the two losses part
        with torch.no_grad():
            filt = _filter(agent, batch)
            errors[loss] = local_model_errors(agent.world_model, batch, filt)
            pred = agent.world_model.loss_heads(filt.post.map(lambda t: t[:-1]), filt.h_a_trans[1:], None)["reward"]
    d = (pred[..., 0] - batch.reward[1:, :, None]).double()
    huber = torch.where(d.abs() < 1.0, 0.5 * d * d, d.abs() - 0.5)
    assert (d.abs() > 1.0).any()
    torch.testing.assert_close((errors["mse"] - errors["smooth_l1"]).double(), d * d - huber, rtol=1e-4, atol=1e-4)


def test_error_predictor_regresses_the_errors_from_prior_states():
    agent = _agent(5)
    model = agent.world_model
    batch = _batch(agent, 3)
    seen = {}
    forward = agent.error_predictor.forward

    def spy(z, h):
        seen["z"], seen["h"] = z, h
        seen["out"] = forward(z, h)
        return seen["out"]

    agent.error_predictor.forward = spy
    filt = _filter(agent, batch)
    loss = error_predictor_loss(model, agent.error_predictor, batch, filt)
    cut = batch.obs.shape[0] - 1
    torch.testing.assert_close(seen["h"], filt.post.h_a[:cut].detach())
    k = agent.cfg.model.n_classes
    z = seen["z"].unflatten(-1, (-1, k))
    assert torch.equal(z.sum(-1), torch.ones(z.shape[:-1]))  # one-hot samples
    prior_probs = filt.prior_a_logits[:cut].softmax(-1)
    assert bool(((z * prior_probs).sum(-1) > 0).all())  # drawn from the prior (classes it gives mass to)
    target = local_model_errors(model, batch, filt)
    d = (seen["out"] - target).abs()
    expected = torch.where(d < 1.0, 0.5 * d * d, d - 0.5).mean()
    torch.testing.assert_close(loss, expected)


# ------------------------------------------------------------------------------- planning
@pytest.mark.parametrize("choice", ["batch", "per_row"])
def test_planner_picks_the_candidate_with_the_lowest_predicted_error(choice):
    """``batch`` (MAG-code rnns.py MPCPredict): the candidate with the lowest cost averaged over the
    rows, for every row; ``per_row``: each row's cheapest."""
    agent = _agent(6, **{"mag.candidates": 3, "mag.plan_horizon": 4, "mag.plan_choice": choice})
    model = agent.world_model
    batch = _batch(agent, 4)
    with torch.no_grad():
        start = _filter(agent, batch).post.map(lambda t: t[:2].flatten(0, 1))  # M = 2 * B rows
    rows = start.z_a.shape[0]
    action = torch.nn.functional.one_hot(torch.randint(0, A, (rows, N)), A).float()
    calls = []
    step = model.prior_step

    def record(latent, act):
        out = step(latent, act)
        calls.append((latent, act, out))
        return out

    model.prior_step = record
    chosen = agent.world_model.planner(start, action)
    del model.prior_step
    k, horizon = 3, 4
    assert len(calls) == horizon
    first_in, first_act, first = calls[0]
    for c in range(k):  # every candidate starts from its row's state under its row's action
        assert torch.equal(first_act[c * rows:(c + 1) * rows], action)
        assert torch.equal(first_in.h_a[c * rows:(c + 1) * rows], start.h_a)
    for t in range(1, horizon):  # the continuations follow each candidate's own chain
        assert calls[t][0] is calls[t - 1][2]
    assert not torch.equal(first.z_a[:rows], first.z_a[rows:2 * rows])  # the candidates differ
    costs = np.zeros((k, rows))
    with torch.no_grad():
        for m in range(rows):
            for c in range(k):
                r = c * rows + m
                costs[c, m] = sum(float(agent.error_predictor(s.z_a[r:r + 1], s.h_a[r:r + 1]).sum())
                                  for s in (call[2] for call in calls))
    per_row = costs.argmin(0)
    assert len(set(per_row.tolist())) > 1  # the two readings choose differently here
    picked = [int(costs.mean(1).argmin())] * rows if choice == "batch" else per_row.tolist()
    for m, best in enumerate(picked):
        assert torch.equal(chosen.z_a[m], first.z_a[best * rows + m]), m
        assert torch.equal(chosen.h_a[m], first.h_a[best * rows + m]), m


def test_one_candidate_is_the_plain_prior_step():
    agent = _agent(7, **{"mag.candidates": 1})
    model = agent.world_model
    with torch.no_grad():
        start = _filter(agent, _batch(agent)).post.map(lambda t: t[0])
        action = torch.nn.functional.one_hot(torch.randint(0, A, start.z_a.shape[:2]), A).float()
        torch.manual_seed(1)
        planned = model.imagine_step(start, action)
        torch.manual_seed(1)
        model.planner, planner = None, model.planner
        plain = model.imagine_step(start, action)
        model.planner = planner
    for x, y in zip(planned, plain):
        if isinstance(x, Latent):
            assert all(u is None or torch.equal(u, v) for u, v in zip(x, y))
        else:
            assert torch.equal(x, y)


# ------------------------------------------------------------------------------- gradient reach
def test_error_objective_reaches_only_the_error_predictor():
    agent = _agent(8, **{"mag.error_updates": 0})  # interleaved: both objectives in one backward
    model = agent.world_model
    batch = _batch(agent, 5)
    model.train()
    torch.manual_seed(11)
    loss, metrics = agent.eager_model_loss(batch)
    loss.backward()
    mag_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.error_predictor.parameters())
    assert all(p.grad is None for p in [*agent.actor.parameters(), *agent.critic.parameters()])
    model.zero_grad(set_to_none=True)
    torch.manual_seed(11)  # the same filter samples (the loss draws them first)
    wm_loss, _, filt = world_model_loss(model, batch, agent.cfg.model.kl_balance)
    assert float(loss.detach()) == pytest.approx(float(wm_loss.detach()))  # the reported loss is the world model's
    wm_loss.backward(retain_graph=True)
    for name, p in model.named_parameters():  # MAG's objective adds nothing to the models' gradients
        torch.testing.assert_close(mag_grads[name], p.grad, msg=name)
    model.zero_grad(set_to_none=True)
    agent.error_predictor.zero_grad(set_to_none=True)
    error_predictor_loss(model, agent.error_predictor, batch, filt).backward()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is not None for p in agent.error_predictor.parameters())


@pytest.mark.parametrize("error_updates", [60, 0])
def test_each_learner_step_changes_only_its_own_networks(error_updates):
    """MAG-code (DreamerLearner.py step): the world-model updates, then the error predictor's steps
    on fresh windows, then the policy; ``--mag.error_updates 0``: the predictor steps inside each
    world-model update."""
    agent = _agent(9, **{"mag.error_updates": error_updates})
    replay = _replay(6)
    rows = replay.sample(agent.cfg.model.batch_size, agent.cfg.model.seq_len, np.random.default_rng(6))

    def snapshot(module):
        return [p.detach().clone() for p in module.parameters()]

    def same(a, module):
        return all(torch.equal(x, y) for x, y in zip(a, module.parameters()))

    nets = {"world_model": agent.world_model, "error_predictor": agent.error_predictor, "actor": agent.actor,
            "critic": agent.critic}
    before = {k: snapshot(v) for k, v in nets.items()}
    agent.train_world_model(rows)
    changed = {k for k, v in nets.items() if not same(before[k], v)}
    assert changed == ({"world_model", "error_predictor"} if error_updates == 0 else {"world_model"})
    before = {k: snapshot(v) for k, v in nets.items()}
    gen = np.random.default_rng(7)
    drawn = []

    def sample():
        drawn.append(replay.sample(agent.cfg.model.batch_size, agent.cfg.model.seq_len, gen))
        return drawn[-1]

    out = agent.after_world_model(sample)
    assert len(out) == len(drawn) == error_updates  # one fresh draw per step
    changed = {k for k, v in nets.items() if not same(before[k], v)}
    assert changed == (set() if error_updates == 0 else {"error_predictor"})
    before = {k: snapshot(v) for k, v in nets.items()}
    out = agent.train_policy(rows)  # planning in imagination: no gradients into the models
    changed = {k for k, v in nets.items() if not same(before[k], v)}
    assert changed == {"actor", "critic"}
    assert int(out["imagined_rows"]) == (agent.cfg.policy.horizon - 1) * (agent.cfg.model.seq_len - 2) * 4


# ------------------------------------------------------------------------------- execution, checkpoints
def test_exported_policy_is_joint_and_acts_like_the_learner(tmp_path):
    agent = _agent(10)
    path = tmp_path / "mag.pt"
    save_policy(str(path), agent.world_model.agent, agent.actor, SPEC, agent.cfg.model, agent.cfg.policy.hidden, "mag")
    loaded = load_policy(str(path))
    assert isinstance(loaded, JointPolicy) and loaded.spec.centralized
    assert isinstance(loaded.encoder, LocalAgentEncoder)
    live = agent.policy()
    assert isinstance(live, JointPolicy)
    obs = np.random.default_rng(0).standard_normal((4, N, OBS)).astype(np.float32)
    live.reset()
    loaded.reset()
    for o in obs:
        a = live.act(o, None, deterministic=True)[1]["probs"]
        b = loaded.act(o, None, deterministic=True)[1]["probs"]
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_state_dict_round_trip_includes_the_error_predictor():
    agent = _agent(11)
    agent.train_world_model(_replay(7).sample(4, agent.cfg.model.seq_len, np.random.default_rng(7)))
    other = _agent(12)
    other.load_state_dict(agent.state_dict())
    for p, q in zip(agent.error_predictor.parameters(), other.error_predictor.parameters()):
        assert torch.equal(p, q)
    assert other.error_opt.state_dict()["state"].keys() == agent.error_opt.state_dict()["state"].keys()
    assert other.world_model.planner.predictor is other.error_predictor


def test_an_error_predictor_step_with_a_non_finite_loss_is_skipped():
    agent = _agent(10, **{"mag.error_updates": 2})
    replay = _replay(6)
    gen = np.random.default_rng(8)

    def poisoned():
        rows = replay.sample(agent.cfg.model.batch_size, agent.cfg.model.seq_len, gen)
        rows["obs"] = rows["obs"].copy()
        rows["obs"][3] = np.nan
        return rows

    before = [p.detach().clone() for p in agent.error_predictor.parameters()]
    out = agent.after_world_model(poisoned)
    assert all(not torch.isfinite(m["error_predictor"]) for m in out)
    assert all(torch.equal(a, b) for a, b in zip(before, agent.error_predictor.parameters()))
    out = agent.after_world_model(lambda: replay.sample(agent.cfg.model.batch_size, agent.cfg.model.seq_len, gen))
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.error_predictor.parameters()))


def test_the_avail_head_option_holds_for_the_local_models():
    """Flatland's default ``--model.avail_head false`` (released code) removes MAG's mask head too:
    no availability term in the loss or the errors, and unmasked imagined actions."""
    agent = _agent(11, **{"model.avail_head": False})
    assert agent.world_model.avail_head is None
    batch = _batch(agent, 2)
    _, metrics, filt = world_model_loss(agent.world_model, batch, agent.cfg.model.kl_balance)
    assert "avail" not in metrics
    rows = _replay(6).sample(agent.cfg.policy.batch_size, agent.cfg.model.seq_len, np.random.default_rng(6))
    assert agent.imagine(rows).avail is None
    assert _agent(11).world_model.avail_head is not None
