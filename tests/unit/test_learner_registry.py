"""The algorithm registry, the learner contract, ``load_learner`` and the one clipped PPO surrogate.

Each registry fact is checked against what the learner it builds actually does (its acting policy's
centralisation, its world model's variant, the policy file it exports), so a wrong registry line
fails here; ``load_learner`` is checked on a checkpoint written with known weights.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import mabl.algo.ppo_loss as ppo_loss
from mabl.algo import ALGORITHMS, Algorithm, algorithm, build_learner, load_learner
from mabl.algo.contract import OnPolicyLearner, WorldModelLearner
from mabl.checkpoint import atomic_torch_save, save_checkpoint
from mabl.config import to_dict
from mabl.envs.base import EnvSpec
from mabl.errors import MablError
from mabl.models.world_model import VARIANTS
from mabl.policy import load_policy
from mabl.presets import build_config

SPEC = EnvSpec(name="registry", n_agents=3, obs_dim=6, state_dim=8, discrete=True, n_actions=5,
               has_action_mask=True, episode_limit=20)


def _learner(name: str, seed: int = 0):
    torch.manual_seed(seed)
    cfg = build_config("debug", {"algo": name, "device": "cpu"})
    return build_learner(SPEC, cfg, torch.device("cpu")), cfg


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_every_entry_builds_a_learner_of_its_contract(name):
    entry = ALGORITHMS[name]
    learner, cfg = _learner(name)
    assert isinstance(learner, entry.learner_class())
    contract = WorldModelLearner if entry.world_model else OnPolicyLearner
    other = OnPolicyLearner if entry.world_model else WorldModelLearner
    assert isinstance(learner, contract) and not isinstance(learner, other)
    # the registry's claim about centralised execution is what the acting policy does
    assert learner.policy().spec.centralized is entry.centralized_policy
    if entry.world_model:
        assert learner.variant == VARIANTS[name]
        assert VARIANTS[name].centralized_execution is entry.centralized_policy
    assert all(dataclasses.is_dataclass(getattr(cfg, section)) for section in entry.config_sections)


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_exported_policy_is_read_back_by_its_export_kind(tmp_path, name):
    """``policy_payload`` -> file -> ``load_policy`` (which picks its reader from the registry's
    export kind) acts as the live learner does: same greedy actions and probabilities."""
    learner, cfg = _learner(name)
    path = tmp_path / "policy.pt"
    atomic_torch_save(learner.policy_payload(cfg), path)
    loaded, live = load_policy(str(path)), learner.policy()
    rng = np.random.default_rng(0)
    live.reset(), loaded.reset()
    for _ in range(4):
        obs = rng.normal(size=(SPEC.n_agents, SPEC.obs_dim)).astype(np.float32)
        avail = np.ones((SPEC.n_agents, SPEC.n_actions), bool)
        avail[:, 1] = False
        a_live, info_live = live.act(obs, avail, deterministic=True)
        a_loaded, info_loaded = loaded.act(obs, avail, deterministic=True)
        np.testing.assert_array_equal(a_live, a_loaded)
        np.testing.assert_allclose(info_live["probs"], info_loaded["probs"], rtol=0, atol=1e-6)
        assert (info_loaded["probs"][:, 1] == 0).all()


def test_unknown_names_are_one_line_errors():
    with pytest.raises(MablError, match="unknown algorithm 'nope'; available: mabl, mabl-sg"):
        algorithm("nope")
    with pytest.raises(MablError, match="unknown algorithm 'nope'"):
        build_config("debug", {"algo": "nope"})


def test_an_added_entry_is_built_and_checked_like_the_others(monkeypatch):
    """One registry line makes a name buildable (here a second name for the model-free learner)."""
    entry = Algorithm("mappo-copy", "mabl.algo.mappo:Mappo", False, False, ("mappo",), "mlp")
    monkeypatch.setitem(ALGORITHMS, entry.name, entry)
    cfg = build_config("debug", {"algo": "mappo-copy", "device": "cpu"})
    learner = build_learner(SPEC, cfg, torch.device("cpu"))
    assert type(learner).__name__ == "Mappo" and isinstance(learner, OnPolicyLearner)


def test_agent_mixer_heads_are_checked_for_the_mixing_algorithms_only():
    bad = {"model.hidden": "36", "model.mixer_heads": "8"}  # 36 % 8 != 0
    for name in ("mamba", "mag"):
        with pytest.raises(MablError, match="must be divisible by --model.mixer_heads=8"):
            build_config("debug", {"algo": name, **bad})
    for name in ("mabl", "dreamer", "mappo"):  # no transformer over agents: no constraint
        assert build_config("debug", {"algo": name, **bad}).model.hidden == 36


def _checkpoint(run_dir, name: str, step: int, fill: float):
    learner, cfg = _learner(name)
    with torch.no_grad():
        for p in learner.actor.parameters():
            p.fill_(fill)
    save_checkpoint(run_dir, step, {"config": to_dict(cfg), "spec": dataclasses.asdict(SPEC),
                                    "agent": learner.state_dict()})


@pytest.mark.parametrize("name", ["mabl", "mappo"])
def test_load_learner_rebuilds_the_checkpointed_weights(tmp_path, name):
    _checkpoint(tmp_path, name, 100, 0.25)
    _checkpoint(tmp_path, name, 200, -0.5)
    newest = load_learner(tmp_path)
    assert newest.checkpoint.name == "step_000000200.pt" and newest.cfg.algo == name and newest.spec == SPEC
    assert all((p == -0.5).all() for p in newest.learner.actor.parameters())
    older = load_learner(tmp_path, step=100, compile=False)
    assert all((p == 0.25).all() for p in older.learner.actor.parameters())
    assert older.cfg.device == "cpu" and older.cfg.compile is False
    with pytest.raises(MablError, match="has no checkpoint of step 150; it keeps the newest ones: 100, 200"):
        load_learner(tmp_path, step=150)


def test_load_learner_refuses_a_missing_run_or_checkpoint(tmp_path):
    with pytest.raises(MablError, match="does not exist"):
        load_learner(tmp_path / "absent")
    with pytest.raises(MablError, match="has no checkpoint yet"):
        load_learner(tmp_path)


def test_the_clipped_surrogate_by_hand():
    """rho = 1.5 and 0.5 with A = +-1, clip 0.2: min(rho A, clip(rho) A) is 1.2, -1.5, 0.5, -0.8."""
    log_prob = torch.tensor([math.log(1.5), math.log(1.5), math.log(0.5), math.log(0.5)])
    advantage = torch.tensor([1.0, -1.0, 1.0, -1.0])
    surrogate, ratio, log_ratio = ppo_loss.clipped_surrogate(log_prob, torch.zeros(4), advantage, 0.2)
    assert surrogate.item() == pytest.approx((1.2 - 1.5 + 0.5 - 0.8) / 4, abs=1e-6)
    assert ratio.tolist() == pytest.approx([1.5, 1.5, 0.5, 0.5])
    assert log_ratio.tolist() == pytest.approx(log_prob.tolist())


def test_both_ppo_learners_use_the_one_surrogate(monkeypatch):
    """Both actor losses go through ``clipped_surrogate``: replacing it changes both."""
    calls = []

    def fake(log_prob, old_log_prob, advantage, clip):
        calls.append(clip)
        return torch.tensor(7.0), torch.ones_like(log_prob), torch.zeros_like(log_prob)

    monkeypatch.setattr(ppo_loss, "clipped_surrogate", fake)
    logits, action = torch.zeros(4, 3, 5), torch.zeros(4, 3, dtype=torch.int64)
    loss, _ = ppo_loss.ppo_actor_loss(logits, action, torch.zeros(4, 3), torch.ones(4, 3), 0.1, 0.0)
    loss_free, *_ = ppo_loss.clipped_surrogate_loss(logits, action, torch.zeros(4, 3), torch.ones(4, 3), 0.3, 0.0)
    assert calls == [0.1, 0.3] and loss.item() == loss_free.item() == -7.0
