"""MAMuJoCo's contact forces (``cfrc_ext``): zero by default, as under the paper era's models; v5's as an option.

Which entries are contact forces is derived here with gymnasium-robotics' own ``build_obs`` on a
marker in place of MuJoCo's data (ones at the contact forces, zeros elsewhere), and for the state
from Gymnasium's Humanoid-v5 layout (its last 78 entries are ``cfrc_ext`` of the 13 bodies).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics")

from gymnasium_robotics.envs.multiagent_mujoco.obsk import build_obs  # noqa: E402

from mabl.envs.mamujoco import make_mamujoco  # noqa: E402

TASK = "Humanoid-9|8"


def contact_entries(parallel_env) -> list[np.ndarray]:
    """Per agent, where build_obs puts contact forces (a marker run of gymnasium-robotics' builder)."""
    data = parallel_env.single_agent_env.unwrapped.data
    marker = SimpleNamespace(qpos=np.zeros_like(data.qpos), qvel=np.zeros_like(data.qvel),
                             cinert=np.zeros_like(data.cinert), cvel=np.zeros_like(data.cvel),
                             qfrc_actuator=np.zeros_like(data.qfrc_actuator), cfrc_ext=np.ones_like(data.cfrc_ext))
    return [build_obs(marker, parallel_env.k_dicts[i], parallel_env.local_categories, parallel_env.mujoco_globals,
                      parallel_env.global_categories, True) != 0 for i in range(len(parallel_env.possible_agents))]


def run(contact_forces: str, steps: int = 60):
    env = make_mamujoco(TASK, seed=0, contact_forces=contact_forces)
    parallel_env = env._env  # the mamujoco_v1 env (wrapped where forces are zeroed)
    rng = np.random.default_rng(0)
    timesteps, forces = [env.reset(0)], []
    for _ in range(steps):
        timesteps.append(env.step(rng.uniform(-0.4, 0.4, (2, 9)).astype(np.float32)))
        forces.append(parallel_env.single_agent_env.unwrapped.data.cfrc_ext[1:].ravel().copy())
        if timesteps[-1].done:
            break
    masks = contact_entries(parallel_env)
    env.close()
    return timesteps, forces, masks


def test_contact_forces_are_zero_by_default_and_v5s_with_the_option():
    zero, _, masks = run("zero")
    v5, forces, _ = run("v5")
    assert [int(m.sum()) for m in masks] == [54, 36]  # 9 and 6 bodies x 6 force components
    assert len(zero) == len(v5)
    nonzero_steps = 0
    for a, b, force in zip(zero[1:], v5[1:], forces):
        for agent, mask in enumerate(masks):
            size = mask.size  # agent 1's row is zero-padded beyond its own observation
            assert not a.obs[agent, :size][mask].any()
            np.testing.assert_array_equal(a.obs[agent, :size][~mask], b.obs[agent, :size][~mask])
        nonzero_steps += any(np.abs(b.obs[k, : m.size][m]).max() > 0 for k, m in enumerate(masks))
        np.testing.assert_allclose(b.state[-78:], force, rtol=1e-6, atol=1e-4)  # v5's state ends with cfrc_ext
        assert not a.state[-78:].any()
        np.testing.assert_array_equal(a.state[:-78], b.state[:-78])
        assert a.reward == b.reward  # the physics and the reward (contact cost included) are v5's
    assert nonzero_steps > 0, "v5's contact forces are non-zero in some step"
