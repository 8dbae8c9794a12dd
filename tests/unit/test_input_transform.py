"""``model.input_transform = symlog``: the values by hand, and the world model (loss and acting path)
behaving exactly like the untransformed model fed symlog'd observations and states."""

from __future__ import annotations

import dataclasses
import math

import torch

from mabl.algo.world_model_loss import SequenceBatch, world_model_loss
from mabl.envs.base import EnvSpec
from mabl.models.nets import symlog
from mabl.models.world_model import BiLevelWorldModel
from mabl.presets import build_config

N, A, OBS, G = 2, 3, 5, 7
SPEC = EnvSpec("fake", n_agents=N, obs_dim=OBS, state_dim=G, discrete=True, n_actions=A, episode_limit=10)


def test_symlog_by_hand():
    x = torch.tensor([0.0, math.e - 1, -(math.e - 1), 1e3, -2914.0])
    expected = torch.tensor([0.0, 1.0, -1.0, math.log(1001.0), -math.log(2915.0)])
    torch.testing.assert_close(symlog(x), expected)


def _models():
    cfg = build_config("debug").model
    torch.manual_seed(0)
    plain = BiLevelWorldModel(SPEC, cfg)
    squashed = BiLevelWorldModel(SPEC, dataclasses.replace(cfg, input_transform="symlog"))
    squashed.load_state_dict(plain.state_dict())  # same weights: only the transform differs
    return plain, squashed


def test_loss_equals_the_plain_model_on_symlogd_inputs():
    plain, squashed = _models()
    gen = torch.Generator().manual_seed(1)
    steps, b = 6, 3
    batch = SequenceBatch(
        obs=torch.randn(steps, b, N, OBS, generator=gen) * 500, state=torch.randn(steps, b, G, generator=gen) * 500,
        avail=None, prev_action=torch.randint(0, A, (steps, b, N), generator=gen),
        reward=torch.randn(steps, b, generator=gen), done=torch.zeros(steps, b), fake=torch.zeros(steps, b),
        first=torch.zeros(steps, b, dtype=torch.bool))
    torch.manual_seed(5)
    _, with_transform, _ = world_model_loss(squashed, batch, 0.8)
    torch.manual_seed(5)
    _, by_hand, _ = world_model_loss(plain, batch._replace(obs=symlog(batch.obs), state=symlog(batch.state)), 0.8)
    for key in by_hand:
        torch.testing.assert_close(with_transform[key], by_hand[key])
    torch.manual_seed(5)
    _, untransformed, _ = world_model_loss(plain, batch, 0.8)
    assert untransformed["obs"] > 10 * with_transform["obs"]  # raw values in the hundreds dominate the loss


def test_acting_path_applies_the_transform():
    plain, squashed = _models()
    obs = torch.randn(N, OBS) * 300
    h, z, a = torch.zeros(N, plain.deter), torch.zeros(N, plain.latent_dim), torch.zeros(N, A)
    h1, z1 = squashed.agent.step(h, z, a, obs, deterministic=True)
    h2, z2 = plain.agent.step(h, z, a, symlog(obs), deterministic=True)
    torch.testing.assert_close(h1, h2)
    torch.testing.assert_close(z1, z2)
