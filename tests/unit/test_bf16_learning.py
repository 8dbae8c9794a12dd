"""bf16 autocast (``--amp true``) does not change what the world model learns beyond rounding: with
the same seed and batches, fp32 and bf16 runs of world-model updates on episodes that hold something
to learn (observations follow a hidden random walk) end at nearly the same loss, and both learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mabl.algo import build_learner
from mabl.envs.base import EnvSpec
from mabl.presets import build_config
from mabl.replay import SequenceReplay

SPEC = EnvSpec(name="bench:walk", n_agents=3, obs_dim=12, state_dim=8, discrete=True, n_actions=6,
               has_action_mask=True, episode_limit=200)


def walk_replay(rng: np.random.Generator, rows: int = 1500) -> SequenceReplay:
    n, a, o, g = SPEC.n_agents, SPEC.n_actions, SPEC.obs_dim, SPEC.state_dim
    replay = SequenceReplay(SPEC, 4 * rows)
    while replay.real_rows < rows:
        length = 60
        walk = np.cumsum(rng.normal(size=(length, 1, 1)), 0)
        obs = np.tanh(walk * np.linspace(-1, 1, o)[None, None]) + 0.1 * rng.normal(size=(length, n, o))
        avail = rng.random((length, n, a)) < 0.7
        avail[..., 0] = True
        replay.add_episode({
            "obs": obs.astype(np.float32), "state": np.repeat(obs[:, 0, :1], g, 1).astype(np.float32),
            "action": rng.integers(0, a, (length, n)), "reward": np.tanh(walk[:, 0, 0]).astype(np.float32),
            "done": np.arange(length) == length - 1, "avail": avail}, terminated=True, rng=rng)
    return replay


def losses(amp: bool, updates: int) -> np.ndarray:
    torch.manual_seed(0)
    cfg = build_config("debug", {"amp": amp, "device": "cpu"})
    agent = build_learner(SPEC, cfg, torch.device("cpu"))
    replay = walk_replay(np.random.default_rng(0))
    return np.array([float(agent.train_world_model(replay.sample(cfg.model.batch_size, cfg.model.seq_len,
                                                                 np.random.default_rng(i)))["loss"])
                     for i in range(updates)])


def test_bf16_and_fp32_world_model_losses_agree():
    fp32, bf16 = losses(False, 30), losses(True, 30)
    assert fp32[-5:].mean() < 0.9 * fp32[:5].mean()  # there is something learned
    assert not np.array_equal(fp32, bf16)  # autocast did run in bf16
    assert bf16[-5:].mean() == pytest.approx(fp32[-5:].mean(), rel=0.01)  # measured: 0.02 %
