"""The filter (``BiLevelWorldModel.observe``) against a plain re-implementation of SPEC §1.

The model multiplies one-hot latents by gathers, splits its first layers by input, moves the
priors out of the loop and forms some weight gradients once for all steps. The reference here
does none of that: each layer is one dense ``Linear`` over the concatenation of its inputs, every
latent is a dense one-hot with the straight-through term ``onehot + probs - sg(probs)``, and the
order within a step is the SPEC's (global GRU -> global prior -> agent GRU -> agent prior ->
agent posterior -> global posterior). Drawing the same uniforms in the same order, both must give
the same outputs and the same gradient for every parameter.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mabl.algo.world_model_loss import action_input
from mabl.envs.base import EnvSpec
from mabl.models.world_model import VARIANTS, BiLevelWorldModel
from mabl.presets import build_config

T, B, N, OBS, G, A = 6, 3, 2, 5, 7, 4


def _sample(logits: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF one-hot sample of softmax(logits) with the straight-through term (flattened)."""
    probs = logits.softmax(-1)
    uniform = torch.rand(probs.shape[:-1] + (1,))
    index = (probs.detach().cumsum(-1) < uniform).sum(-1).clamp_max(probs.shape[-1] - 1)
    onehot = F.one_hot(index, probs.shape[-1]).float()
    return (onehot + probs - probs.detach()).flatten(-2)


def _linear(layer, *xs):
    """A SplitLinear as the single dense Linear over its concatenated inputs."""
    return F.linear(torch.cat(xs, -1), layer.weight, layer.bias)


def _head(head, *xs):
    return head.out(torch.relu(_linear(head.first, *xs))).unflatten(-1, head.shape)


def _reference(model: BiLevelWorldModel, obs, state, prev_action, first, carried: bool):
    """``carried``: at an episode start the carried state and latents are zeroed and the stored
    previous action is still read (released code, SPEC §2); otherwise the step takes the acting path's
    first state (zero previous action, zero latent, zero GRU state)."""
    cfg, agent = model.cfg, model.agent
    shape = (cfg.n_categoricals, cfg.n_classes)
    z_dim = cfg.n_categoricals * cfg.n_classes
    e_o = agent.obs_encoder(obs)
    e_s = model.state_encoder(state)
    zeros_a = torch.zeros(B, N, A)
    h_a_start = agent.agent_gru(torch.relu(_linear(agent.agent_input, zeros_a[0, :1], torch.zeros(1, z_dim))),
                                torch.zeros(1, cfg.deter))
    h_g_start = model.global_gru(torch.relu(_linear(model.global_input, torch.zeros(1, N * A), torch.zeros(1, z_dim))),
                                 torch.zeros(1, cfg.deter))
    z_a, h_a = torch.zeros(B, N, z_dim), torch.zeros(B, N, cfg.deter)
    z_g, h_g = torch.zeros(B, N, z_dim), torch.zeros(B, N, cfg.deter)
    out = {k: [] for k in ("z_a", "h_a", "z_g", "h_g", "h_a_trans", "h_g_trans", "post_a", "post_g")}
    for j in range(T):
        reset = first[j].view(B, 1, 1)
        if carried:
            z_a, h_a, z_g, h_g = (torch.where(reset, torch.zeros_like(t), t) for t in (z_a, h_a, z_g, h_g))
        joint = prev_action[j].flatten(-2)[:, None, :].expand(B, N, N * A)
        h_g_trans = model.global_gru(torch.relu(_linear(model.global_input, joint, z_g)).flatten(0, 1),
                                     h_g.flatten(0, 1)).view(B, N, -1)
        h_g_new = h_g_trans if carried else torch.where(reset, h_g_start, h_g_trans)
        h_a_trans = agent.agent_gru(torch.relu(_linear(agent.agent_input, prev_action[j], z_a)).flatten(0, 1),
                                    h_a.flatten(0, 1)).view(B, N, -1)
        h_a_new = h_a_trans if carried else torch.where(reset, h_a_start, h_a_trans)
        post_a = _head(agent.agent_posterior, h_a_new, e_o[j])
        z_a = _sample(post_a)
        post_g = _head(model.global_posterior, h_g_new, e_s[j][:, None].expand(B, N, -1), z_a)
        z_g = _sample(post_g)
        h_a, h_g = h_a_new, h_g_new
        for key, value in (("z_a", z_a), ("h_a", h_a), ("z_g", z_g), ("h_g", h_g), ("h_a_trans", h_a_trans),
                           ("h_g_trans", h_g_trans), ("post_a", post_a), ("post_g", post_g)):
            out[key].append(value)
    out = {k: torch.stack(v) for k, v in out.items() if v}
    # The priors read the same h_j; the global prior's sample conditions the agent prior. Their
    # samples are drawn after the loop in the model (they feed nothing recurrent), so here too.
    prior_g = _head(model.global_prior, out["h_g"])
    prior_a = _head(model.agent_prior, out["h_a"], _sample(prior_g))
    assert prior_a.shape[-2:] == shape
    out["prior_g"], out["prior_a"] = prior_g, prior_a
    return out


def _inputs():
    gen = torch.Generator().manual_seed(3)
    first = torch.zeros(T, B, dtype=torch.bool)
    first[0, :] = True
    first[3, 1] = True
    action = torch.randint(0, A, (T, B, N), generator=gen)
    return (torch.randn(T, B, N, OBS, generator=gen), torch.randn(T, B, G, generator=gen),
            F.one_hot(action, A).float(), first)


@pytest.mark.parametrize("episode_reset", ["carried_state", "start_state"])
def test_filter_outputs_and_every_gradient_match_the_plain_form(episode_reset):
    spec = EnvSpec(name="fake", n_agents=N, obs_dim=OBS, state_dim=G, discrete=True, n_actions=A,
                   has_action_mask=True, episode_limit=50)
    cfg = build_config("debug", {"model.episode_reset": episode_reset})
    torch.manual_seed(0)
    model = BiLevelWorldModel(spec, cfg.model, VARIANTS["mabl"])
    assert cfg.model.global_posterior_on == "agent_posterior" and cfg.model.agent_prior_on == "global_prior"
    obs, state, prev_action, first = _inputs()
    assert torch.equal(action_input(prev_action.argmax(-1), spec), prev_action)

    def weighted_sum(fields: dict[str, torch.Tensor]) -> torch.Tensor:
        gen = torch.Generator().manual_seed(11)  # fixed random weights per output
        return sum((value.float() * torch.randn(value.shape, generator=gen)).sum() for _, value in sorted(fields.items()))

    def grads(loss):
        model.zero_grad(set_to_none=True)
        loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    torch.manual_seed(5)
    filt = model.observe(obs, state, prev_action, first)
    mine = {"z_a": filt.post.z_a, "h_a": filt.post.h_a, "z_g": filt.post.z_g, "h_g": filt.post.h_g,
            "h_a_trans": filt.h_a_trans, "h_g_trans": filt.h_g_trans, "post_a": filt.post_a_logits,
            "post_g": filt.post_g_logits, "prior_g": filt.prior_g_logits, "prior_a": filt.prior_a_logits}
    grads_mine = grads(weighted_sum(mine))

    torch.manual_seed(5)
    ref = _reference(model, obs, state, prev_action, first, carried=episode_reset == "carried_state")
    grads_ref = grads(weighted_sum(ref))

    assert set(mine) == set(ref)
    assert torch.equal(mine["z_a"].detach().round(), ref["z_a"].detach().round())  # the same samples
    assert torch.equal(mine["z_g"].detach().round(), ref["z_g"].detach().round())
    for key in mine:
        torch.testing.assert_close(mine[key], ref[key], rtol=1e-4, atol=1e-5, msg=key)
    # every filter network is reached (the heads are not: nothing here reads them)
    assert set(grads_mine) == set(grads_ref)
    for prefix in ("agent.obs_encoder", "agent.agent_input", "agent.agent_gru", "agent.agent_posterior",
                   "state_encoder", "global_input", "global_gru", "global_posterior", "global_prior",
                   "agent_prior"):
        assert any(name.startswith(prefix) for name in grads_ref), prefix
    for name in grads_ref:
        scale = grads_ref[name].abs().max().item()
        err = (grads_mine[name] - grads_ref[name]).abs().max().item()
        assert err <= 1e-4 * max(scale, 1e-3), (name, err, scale)
