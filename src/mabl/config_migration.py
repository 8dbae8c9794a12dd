"""Reading configs saved by earlier versions of mabl: the fields added since, each with the value that
reproduces what those versions did (:data:`ADDED_FIELDS`), and :func:`from_dict`, which rebuilds a
:class:`~mabl.config.RunConfig` from a saved ``config.json`` or checkpoint. A config field added to
``RunConfig`` gets its entry here. ``mabl.config`` still exports both names."""

from __future__ import annotations

from typing import Any

from mabl.config import RunConfig, coerce, iter_fields, replace_path
from mabl.errors import MablError

ADDED_FIELDS: dict[str, Any] = {
    "policy.init_std": 0.5,
    "mappo.init_std": 0.5,
    "model.input_transform": "none",
    "model.action_decoder_layers": 1,
    "model.action_decoder_mask": "episode_start",
    "model.bias_init": "zeros",
    "policy.continuation": "team_mean",
    "schedule.time_limit_done": "truncation",
    "diagnose_every": 0,
    "model.reward_target": "team",
    "model.done_target": "team",
    "model.avail_head": True,
    "policy.target_critic": 0,
    "mag.candidates": 4,
    "mag.plan_horizon": 6,
    "mag.error_layers": 4,
    "mag.error_lr": 5e-4,
    "max_skipped_updates": 0,
    "model.reward_scale": 1.0,
    "model.reward_loss": "smooth_l1",
    "policy.target_entropy": 0.0,
    "policy.entropy_rate": 0.01,
    "smax.reward": "jaxmarl",
    "smax.state": "jaxmarl",
    "smax.walls": "lethal",
    "flatland.obs": "standard",
    "flatland.actions": "all",
    "flatland.deadlock": "rings_move",
    "mamujoco.contact_forces": "v5",
    "log": "jsonl,tensorboard",
    "model.episode_reset": "start_state",
    "model.loss_divisor": "unmasked_rows",
    "model.agent_index_encoding": "none",
    "policy.empty_avail": "most_likely",
    "mag.error_updates": 0,
    "mag.error_target": "full_scale",
    "mag.plan_choice": "per_row",
    "mag.lr": 0.0,
    "mag.actor_init": "xavier",
    "rmappo.chunk_length": 10,
    "rmappo.epochs": 15,
    "rmappo.policy_active_masks": True,
    "rmappo.value_active_masks": False,
    "qmix.hidden": 64,
    "qmix.recurrent": True,
    "qmix.last_action": True,
    "qmix.agent_id": True,
    "qmix.buffer_episodes": 5000,
    "qmix.batch_episodes": 32,
    "qmix.epsilon_start": 1.0,
    "qmix.epsilon_finish": 0.05,
    "qmix.epsilon_anneal_steps": 50_000,
    "qmix.optimizer": "rmsprop",
    "qmix.lr": 5e-4,
    "qmix.optim_alpha": 0.99,
    "qmix.optim_eps": 1e-5,
    "qmix.grad_clip": 10.0,
    "qmix.gamma": 0.99,
    "qmix.double_q": True,
    "qmix.target_update_interval": 200,
    "qmix.target_update_unit": "episodes",
    "qmix.mixing_embed": 32,
    "qmix.hypernet_layers": 2,
    "qmix.hypernet_embed": 64,
}
"""Fields added after run directories of earlier versions were written, with the value that
reproduces what those versions did (continuous actions did not exist before ``init_std``; no input
transform before ``input_transform``; the five faithfulness fields of mabl 0.2 take their 0.1
readings; the four Flatland fields of the per-agent mend take the team readings every run had
before; no divergence stop before ``max_skipped_updates``; the env's own reward before
``reward_scale``; the decaying entropy bonus before ``target_entropy``; JaxMARL's reward, state and
lethal walls on SMAX before the ``smax`` section; Flatland's standard tree, its 5 actions and
ring-exempt deadlocks before the ``flatland`` section; v5's contact forces before the ``mamujoco``
section; JSONL and TensorBoard before ``log``; the earlier readings for the nine fields of the
faithfulness mends of SPEC §2-§3, MAMBA's agent-index encoding and MAG's released code; the
``rmappo`` and ``qmix`` sections, unused by runs before those algorithms, at their defaults). A saved
config without them gets these values, so runs and checkpoints made by an earlier mabl still resume
and evaluate."""


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a config from ``to_dict`` output; any other missing field is an error (foreign file)."""
    cfg = RunConfig()
    for path, _, _ in iter_fields(cfg):
        node = data
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                if path in ADDED_FIELDS:
                    node = ADDED_FIELDS[path]
                    break
                raise MablError(f"config is missing field '{path}'")
            node = node[part]
        cfg = replace_path(cfg, path, coerce(cfg, path, node))
    return cfg
