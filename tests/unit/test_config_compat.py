"""Saved configs of earlier versions (run directories, checkpoints) still load: fields added later
take the values that reproduce the earlier behaviour; anything else missing marks a foreign file."""

from __future__ import annotations

import copy

import pytest

from mabl.config import ADDED_FIELDS, RunConfig, from_dict, get_path, to_dict
from mabl.errors import MablError


def _without(data: dict, path: str) -> dict:
    data = copy.deepcopy(data)
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    del node[leaf]
    return data


def test_fields_added_later_take_their_earlier_behaviour():
    saved = to_dict(RunConfig(algo="dreamer", seed=3))
    for path in ADDED_FIELDS:
        saved = _without(saved, path)
    cfg = from_dict(saved)
    assert (cfg.algo, cfg.seed) == ("dreamer", 3)
    assert {path: get_path(cfg, path) for path in ADDED_FIELDS} == {
        "policy.init_std": 0.5, "mappo.init_std": 0.5, "model.input_transform": "none",
        "model.action_decoder_layers": 1, "model.action_decoder_mask": "episode_start", "model.bias_init": "zeros",
        "policy.continuation": "team_mean", "schedule.time_limit_done": "truncation",
        "diagnose_every": 0,
        "model.reward_target": "team", "model.done_target": "team", "model.avail_head": True,
        "policy.target_critic": 0,
        # --algo mag came later; its section is unused by earlier runs (MAG's code defaults)
        "mag.candidates": 4, "mag.plan_horizon": 6, "mag.error_layers": 4, "mag.error_lr": 5e-4, "max_skipped_updates": 0,
        "model.reward_scale": 1.0, "model.reward_loss": "smooth_l1", "policy.target_entropy": 0.0,
        "policy.entropy_rate": 0.01,
        # the smax section came later: runs before it trained on JaxMARL's reward, state and walls
        "smax.reward": "jaxmarl", "smax.state": "jaxmarl", "smax.walls": "lethal",
        # the flatland section came later: runs before it had Flatland's standard tree, 5 actions on every
        # step and ring-exempt deadlocks; the mamujoco section too: v5's contact forces
        "flatland.obs": "standard", "flatland.actions": "all", "flatland.deadlock": "rings_move",
        "mamujoco.contact_forces": "v5",
        # runs before --log wrote JSONL and TensorBoard
        "log": "jsonl,tensorboard",
        # the released-code readings of SPEC §2-§3, MAMBA's agent-index encoding and MAG's code
        "model.episode_reset": "start_state", "model.loss_divisor": "unmasked_rows",
        "model.agent_index_encoding": "none", "policy.empty_avail": "most_likely",
        "mag.error_updates": 0, "mag.error_target": "full_scale", "mag.plan_choice": "per_row", "mag.lr": 0.0,
        "mag.actor_init": "xavier",
        # --algo rmappo came later; its section is unused by earlier runs (Yu et al.'s SMAC defaults)
        "rmappo.chunk_length": 10, "rmappo.epochs": 15, "rmappo.policy_active_masks": True,
        "rmappo.value_active_masks": False,
        # --algo qmix came later; its section is unused by earlier runs (pymarl's qmix.yaml and default.yaml)
        "qmix.hidden": 64, "qmix.recurrent": True, "qmix.last_action": True, "qmix.agent_id": True,
        "qmix.buffer_episodes": 5000, "qmix.batch_episodes": 32, "qmix.epsilon_start": 1.0,
        "qmix.epsilon_finish": 0.05, "qmix.epsilon_anneal_steps": 50_000, "qmix.optimizer": "rmsprop",
        "qmix.lr": 5e-4, "qmix.optim_alpha": 0.99, "qmix.optim_eps": 1e-5, "qmix.grad_clip": 10.0, "qmix.gamma": 0.99,
        "qmix.double_q": True, "qmix.target_update_interval": 200, "qmix.target_update_unit": "episodes",
        "qmix.mixing_embed": 32, "qmix.hypernet_layers": 2, "qmix.hypernet_embed": 64}


@pytest.mark.parametrize("path", ["model.hidden", "algo", "schedule.model_updates"])
def test_other_missing_fields_mark_a_foreign_file(path):
    with pytest.raises(MablError, match=f"missing field '{path}'"):
        from_dict(_without(to_dict(RunConfig()), path))


def test_configs_written_by_earlier_versions_still_load():
    """The study's archived run directories (docs/reproduction/runs, runs_rs10) hold configs written by
    earlier versions of mabl; a field added since without an entry in ADDED_FIELDS breaks them (and
    every user's older runs)."""
    import json
    from pathlib import Path

    archived = sorted((Path(__file__).resolve().parents[2] / "docs" / "reproduction").rglob("config.json"))
    assert len(archived) >= 11
    for path in archived:
        data = json.loads(path.read_text())
        assert from_dict(data).algo == data["algo"], path
