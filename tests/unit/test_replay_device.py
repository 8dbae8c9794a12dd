"""A replay with a copy of its rows on the learner's device samples exactly the host windows
(issue 6: keep the replay on the device when it fits). Run on the CPU with a torch copy, and on CUDA
(the ``gpu`` variants, skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mabl.envs.base import EnvSpec
from mabl.replay import SequenceReplay, replay_bytes

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]

SPEC = EnvSpec("replay-test", n_agents=2, obs_dim=3, state_dim=4, discrete=True, n_actions=5,
               has_action_mask=True, episode_limit=20)


def _episode(rng: np.random.Generator, length: int) -> dict[str, np.ndarray]:
    return {"obs": rng.normal(size=(length, 2, 3)).astype(np.float32),
            "state": rng.normal(size=(length, 4)).astype(np.float32),
            "action": rng.integers(0, 5, size=(length, 2)), "reward": rng.normal(size=length).astype(np.float32),
            "done": np.arange(length) == length - 1, "avail": rng.random((length, 2, 5)) < 0.6}


def _fill(replay: SequenceReplay, seed: int, episodes: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(episodes):
        replay.add_episode(_episode(rng, int(rng.integers(2, 15))), terminated=bool(rng.random() < 0.5), rng=rng)


def _assert_same_windows(host: SequenceReplay, device: SequenceReplay, seed: int) -> None:
    a, b = host.sample(6, 5, np.random.default_rng(seed)), device.sample(6, 5, np.random.default_rng(seed))
    assert a.keys() == b.keys()
    for key in a:
        assert isinstance(a[key], np.ndarray) and isinstance(b[key], torch.Tensor)
        assert b[key].device.type == device.device.type and b[key].shape == a[key].shape
        np.testing.assert_array_equal(b[key].cpu().numpy(), a[key], err_msg=key)


@pytest.mark.parametrize("where", DEVICES)
def test_device_copy_samples_the_host_windows_also_after_the_ring_wraps(where):
    host, device = SequenceReplay(SPEC, 60), SequenceReplay(SPEC, 60, device=torch.device(where))
    _fill(host, 0, 3)
    _fill(device, 0, 3)
    _assert_same_windows(host, device, seed=1)
    _fill(host, 2, 30)  # far past the capacity: the write head has wrapped several times
    _fill(device, 2, 30)
    assert host.size == host.capacity and host.pos == device.pos
    _assert_same_windows(host, device, seed=3)
    for key in host.data:  # and the copy holds every row as the host arrays do
        np.testing.assert_array_equal(device.mirror[key].cpu().numpy(), host.data[key], err_msg=key)


@pytest.mark.parametrize("where", DEVICES)
def test_device_copy_is_refreshed_when_a_checkpoint_is_loaded(where):
    host = SequenceReplay(SPEC, 80)
    _fill(host, 4, 12)
    restored = SequenceReplay(SPEC, 80, device=torch.device(where))
    restored.load_state_dict(host.state_dict())
    _assert_same_windows(host, restored, seed=5)


def test_replay_bytes_counts_one_row_of_every_array():
    row = 2 * 3 * 4 + 4 * 4 + 2 * 8 + 4 + 1 + 1 + 1 + 2 * 5  # obs, state, action, reward, done, fake, last, avail
    assert replay_bytes(SPEC, 1000) == 1000 * row
