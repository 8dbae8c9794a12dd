"""``--model.reward_loss``: the reward head's regression loss, checked against an independent
computation on known head outputs, with the released code's smooth-L1 unchanged by default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mabl.algo.world_model_loss import shift_window, world_model_loss
from mabl.config import ADDED_FIELDS, RunConfig, from_dict, to_dict
from mabl.envs.base import EnvSpec
from mabl.errors import MablError
from mabl.models.world_model import BiLevelWorldModel
from mabl.presets import build_config
from mabl.replay import SequenceReplay, stored_episode
from mabl.rollout import Episode

N, A, OBS, G = 3, 4, 5, 6
SPEC = EnvSpec(name="team", n_agents=N, obs_dim=OBS, state_dim=G, discrete=True, n_actions=A,
               has_action_mask=True, episode_limit=50)


def _rows(scale: float) -> dict[str, torch.Tensor]:
    """Sampled replay windows of three episodes whose last rows carry a large reward (a win bonus)."""
    replay = SequenceReplay(SPEC, 60)
    for k in range(3):
        rng = np.random.default_rng(k)
        length = 7
        reward = rng.uniform(0.0, 0.2, length).astype(np.float32)
        reward[-1] += 1.0  # the bonus on the terminal row
        done = np.zeros(length, bool)
        done[-1] = True
        rows = {"obs": rng.standard_normal((length, N, OBS)).astype(np.float32),
                "state": rng.standard_normal((length, G)).astype(np.float32),
                "action": rng.integers(0, A, (length, N)), "reward": reward * scale, "done": done,
                "avail": np.ones((length, N, A), bool)}
        episode = Episode(rows, True, float(reward.sum()), length, None)
        replay.add_episode(*stored_episode(episode, "terminal"), np.random.default_rng(k))
    return {k: torch.as_tensor(v) for k, v in replay.sample(6, 8, np.random.default_rng(1)).items()}


def _reward_term(reward_loss: str, scale: float) -> tuple[float, np.ndarray, np.ndarray]:
    cfg = build_config("debug", {"model.reward_loss": reward_loss})
    torch.manual_seed(0)
    model = BiLevelWorldModel(SPEC, cfg.model)
    batch = shift_window(_rows(scale))
    t, b = batch.obs.shape[:2]
    known = torch.randn(t - 1, b, N, 1, generator=torch.Generator().manual_seed(5))
    heads = model.loss_heads
    model.loss_heads = lambda *args: {**heads(*args), "reward": known}
    _, terms, _ = world_model_loss(model, batch, cfg.model.kl_balance)
    target = batch.reward[1:].numpy()[..., None]  # reward[j+1], every agent's target
    return terms["reward"].item(), known[..., 0].numpy().astype(np.float64), np.broadcast_to(target, (t - 1, b, N))


def test_mse_is_the_mean_squared_error_and_smooth_l1_stays_the_default():
    assert RunConfig().model.reward_loss == "smooth_l1"
    mse, pred, target = _reward_term("mse", 10.0)
    err = pred - target
    assert (np.abs(err) > 1.0).any()  # the bonus rows lie where the two losses part
    assert mse == pytest.approx((err ** 2).mean(), rel=1e-5)
    huber, pred, target = _reward_term("smooth_l1", 10.0)
    err = pred - target
    ax = np.abs(err)
    assert huber == pytest.approx(np.where(ax < 1.0, 0.5 * err * err, ax - 0.5).mean(), rel=1e-5)
    assert mse > 2 * huber


def test_old_configs_read_smooth_l1_and_bad_values_get_one_line():
    assert ADDED_FIELDS["model.reward_loss"] == "smooth_l1"
    saved = to_dict(build_config("debug", {"model.reward_loss": "mse"}))
    assert from_dict(saved).model.reward_loss == "mse"
    del saved["model"]["reward_loss"]
    assert from_dict(saved).model.reward_loss == "smooth_l1"
    with pytest.raises(MablError, match="reward_loss.*smooth_l1, mse"):
        build_config("debug", {"model.reward_loss": "l2"}).validate()
