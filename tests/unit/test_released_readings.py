"""Readings of the released code that SPEC §1-§3 and §7 pin, each against an independent
computation: imagined availability masks with no action available (SPEC §3), MAMBA's sinusoidal
agent-index encoding before the transformer over agents (SPEC §7), and MAG's learning rates and
actor initialisation (SPEC §7, the released MAG code)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_ctde import SPEC, A, N, _replay

from mabl.actions import action_distribution
from mabl.algo import build_learner
from mabl.algo.imagination import sample_avail
from mabl.models.actor_critic import masked_logits
from mabl.models.world_model import VARIANTS, AgentMixer, BiLevelWorldModel
from mabl.policy import load_policy, save_policy
from mabl.presets import build_config


# ------------------------------------------------------------------ SPEC §3: empty sampled masks
def test_an_empty_sampled_mask_is_kept_and_the_action_is_uniform():
    logits = torch.full((4, N, A), -60.0)  # sigmoid ~ 1e-26: every action comes out unavailable
    logits[0, 0, 2] = 60.0  # one row with one sure action
    torch.manual_seed(0)
    kept = sample_avail(logits, "keep")
    assert not kept[1:].any() and kept[0, 0].tolist() == [False, False, True, False, False]
    dist = action_distribution(masked_logits(torch.randn(4, N, A), kept), None)
    torch.testing.assert_close(dist.log_prob(torch.zeros(4, N, dtype=torch.long))[1:],
                               torch.full((3, N), -math.log(A)))  # uniform over A (rnns.py: logits all -1e10)
    torch.testing.assert_close(dist.entropy()[1:], torch.full((3, N), math.log(A)))
    # the earlier guard: the head's most likely action made available instead
    logits[1, 1, 3] = -50.0
    torch.manual_seed(0)
    guarded = sample_avail(logits, "most_likely")
    assert guarded.sum(-1).min() == 1 and bool(guarded[1, 1, 3])
    assert sample_avail(logits, "keep")[1, 1].sum() == 0


def test_imagination_follows_the_empty_avail_option():
    """A world model whose avail head says "nothing available": the imagined rows keep empty masks
    (released code) or get one action each (``--policy.empty_avail most_likely``)."""
    for option, expected_per_row in (("keep", 0), ("most_likely", 1)):
        torch.manual_seed(0)
        agent = build_learner(SPEC, build_config("debug", {"policy.empty_avail": option}), torch.device("cpu"))
        with torch.no_grad():
            last = agent.world_model.avail_head.rest[-1]
            last.weight.zero_()
            last.bias.fill_(-60.0)
        rng = np.random.default_rng(0)
        rows = _replay(0).sample(agent.cfg.policy.batch_size, agent.cfg.model.seq_len, rng)
        out = agent.imagine(rows)
        assert (out.avail.sum(-1) == expected_per_row).all(), option
        if option == "keep":  # every action drawn uniformly: log-prob -log A
            torch.testing.assert_close(out.log_prob, torch.full_like(out.log_prob, -math.log(A)))


# ------------------------------------------------------------------ SPEC §7: MAMBA's agent-index encoding
def _mamba_table(n_positions: int, dim: int) -> np.ndarray:
    """MAMBA's PositionalEncoding table, written out: angle = pos / 10000^(2 (j // 2) / dim), sine
    on even j, cosine on odd j."""
    table = np.array([[pos / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)] for pos in range(n_positions)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return table


def test_mixer_adds_mambas_agent_index_table_before_the_transformer():
    torch.manual_seed(0)
    mixer = AgentMixer(8, 1, 2, 0.0, n_agents=N).eval()
    np.testing.assert_allclose(mixer.agent_code.numpy(), _mamba_table(N, 8), rtol=1e-6, atol=1e-6)
    x = torch.randn(5, N, 8)
    with torch.no_grad():
        expected = mixer.encoder(x + torch.as_tensor(_mamba_table(N, 8), dtype=torch.float32))
        torch.testing.assert_close(mixer(x), expected)
        # the agents are no longer interchangeable: permuting them does not just permute the output
        perm = torch.tensor([2, 0, 1])
        assert (mixer(x[:, perm]) - mixer(x)[:, perm]).abs().max() > 1e-3
        plain = AgentMixer(8, 1, 2, 0.0)
        plain.load_state_dict(mixer.state_dict())
        plain.eval()
        torch.testing.assert_close(plain(x[:, perm]), plain(x)[:, perm])  # without it they are


@pytest.mark.parametrize("algo", ["mamba", "mag"])
def test_agent_index_encoding_is_on_by_default_and_old_checkpoints_load(algo):
    spec_cfg = build_config("debug", {"algo": algo})
    assert spec_cfg.model.agent_index_encoding == "sinusoidal"
    torch.manual_seed(0)
    new = build_learner(SPEC, spec_cfg, torch.device("cpu"))
    assert new.world_model.agent.mixer.agent_code is not None
    torch.manual_seed(0)
    old = build_learner(SPEC, build_config("debug", {"algo": algo, "model.agent_index_encoding": "none"}),
                        torch.device("cpu"))
    assert old.world_model.agent.mixer.agent_code is None
    # a fixed table, not a parameter: the same state-dict keys, so earlier checkpoints load
    assert set(new.world_model.state_dict()) == set(old.world_model.state_dict())
    new.world_model.load_state_dict(old.world_model.state_dict())


def test_the_encoding_is_only_for_the_transformer_over_agents():
    spec_cfg = build_config("debug", {"algo": "mabl"})
    model = BiLevelWorldModel(SPEC, spec_cfg.model, VARIANTS["mabl"])
    assert model.agent.mixer is None


# ------------------------------------------------------------------ SPEC §7: MAG's learning rates and actor init
def _is_semi_orthogonal(w: torch.Tensor) -> bool:
    w = w.double()
    gram = w @ w.t() if w.shape[0] <= w.shape[1] else w.t() @ w
    return torch.allclose(gram, torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-5)


def test_mag_runs_with_mags_learning_rates_and_an_orthogonal_actor():
    torch.manual_seed(0)
    agent = build_learner(SPEC, build_config("debug", {"algo": "mag"}), torch.device("cpu"))
    lrs = [agent.model_opt.param_groups[0]["lr"], agent.ppo.actor_opt.param_groups[0]["lr"],
           agent.ppo.critic_opt.param_groups[0]["lr"]]
    assert lrs == [5e-4, 5e-4, 5e-4]  # MAG-code DreamerLearnerConfig.py: MODEL_LR, ACTOR_LR, VALUE_LR
    first = agent.actor.net.first  # a SplitLinear: its parts form one [out, in] matrix
    matrices = [first.weight] + [m.weight for m in agent.actor.modules() if isinstance(m, torch.nn.Linear)]
    assert len(matrices) == 3 and all(_is_semi_orthogonal(w) for w in matrices)
    # the earlier reading: the other algorithms' learning rates and Xavier-uniform actor
    torch.manual_seed(0)
    old = build_learner(SPEC, build_config("debug", {"algo": "mag", "mag.lr": 0, "mag.actor_init": "xavier"}),
                        torch.device("cpu"))
    cfg = old.cfg
    assert [old.model_opt.param_groups[0]["lr"], old.ppo.actor_opt.param_groups[0]["lr"],
            old.ppo.critic_opt.param_groups[0]["lr"]] == [cfg.model.lr, cfg.policy.actor_lr, cfg.policy.critic_lr]
    assert cfg.model.lr != 5e-4
    assert not _is_semi_orthogonal(old.actor.net.first.weight)


@pytest.mark.parametrize("algo", ["mamba", "mag"])
def test_a_policy_file_written_before_the_encoding_acts_without_it(algo, tmp_path):
    torch.manual_seed(0)
    agent = build_learner(SPEC, build_config("debug", {"algo": algo}), torch.device("cpu"))
    path = str(tmp_path / "policy.pt")
    save_policy(path, agent.world_model.agent, agent.actor, SPEC, agent.cfg.model, agent.cfg.policy.hidden, algo)
    assert load_policy(path).encoder.mixer.agent_code is not None
    payload = torch.load(path, weights_only=True)
    del payload["model"]["agent_index_encoding"]  # what an earlier mabl wrote
    torch.save(payload, path)
    assert load_policy(path).encoder.mixer.agent_code is None
