"""MAMuJoCo's action padding and clipping, against gymnasium-robotics' own env stepped beside the adapter.

README / ``mabl.envs.mamujoco``: on ``Humanoid-9|8`` both agents act in ``[-0.4, 0.4]``,
``action_dim = 9`` (the larger agent's); agent 1 uses the first 8 entries of its row and ignores the
ninth; actions are clipped to the bounds; agent 1's 170 observation floats are zero-padded to 242.
The reference is ``mamujoco_v1.parallel_env`` stepped with the actions computed here by hand
(clipped, agent 1's row cut to 8); both envs are reset with the same seed, so MuJoCo's state, the
observations and the reward must agree exactly at every step. The adapter is built with v5's contact
forces (``contact_forces="v5"``) so that its observations are the reference's own; the zeroed forces
of the default are tested in ``tests/integration/test_mamujoco_contact_forces.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics")
pytest.importorskip("mujoco")

from mabl.envs.mamujoco import make_mamujoco  # noqa: E402

TASK, LOW, HIGH, STEPS = "Humanoid-9|8", -0.4, 0.4, 12


def _reference():
    from gymnasium_robotics import mamujoco_v1

    return mamujoco_v1.parallel_env("Humanoid", "9|8", agent_obsk=1)


def test_mamujoco_pads_cuts_and_clips_actions_like_the_reference():
    env, ref = make_mamujoco(TASK, seed=0, contact_forces="v5"), _reference()
    spec = env.spec
    assert (spec.n_agents, spec.action_dim, spec.obs_dim) == (2, 9, 242)
    assert (spec.action_low, spec.action_high) == (pytest.approx(LOW), pytest.approx(HIGH))
    names = list(ref.possible_agents)
    assert [ref.action_space(a).shape[0] for a in names] == [9, 8]
    rng = np.random.default_rng(0)
    step = env.reset(seed=7)
    obs, _ = ref.reset(seed=7)
    np.testing.assert_array_equal(step.obs[0], np.asarray(obs[names[0]], np.float32))
    np.testing.assert_array_equal(step.obs[1, :170], np.asarray(obs[names[1]], np.float32))
    assert (step.obs[1, 170:] == 0).all()
    clipped_any = False
    for t in range(STEPS):
        actions = rng.uniform(-1.5, 1.5, size=(2, 9))  # well outside the bounds, as an unclipped Gaussian is
        clipped_any |= bool((np.abs(actions) > HIGH).any())
        step = env.step(actions)
        by_hand = {names[0]: np.minimum(np.maximum(actions[0], LOW), HIGH).astype(np.float32),
                   names[1]: np.minimum(np.maximum(actions[1, :8], LOW), HIGH).astype(np.float32)}
        obs, rewards, terms, truncs, _ = ref.step(by_hand)
        np.testing.assert_array_equal(step.obs[0], np.asarray(obs[names[0]], np.float32), err_msg=f"step {t}")
        np.testing.assert_array_equal(step.obs[1, :170], np.asarray(obs[names[1]], np.float32), err_msg=f"step {t}")
        assert (step.obs[1, 170:] == 0).all()
        np.testing.assert_array_equal(step.state, np.asarray(ref.state(), np.float32))
        assert step.reward == pytest.approx(float(rewards[names[0]]), abs=1e-12)
        assert step.terminated == all(terms.values())
        if step.done:
            break
    assert clipped_any


def test_mamujoco_ignores_the_ninth_entry_of_agent_one_and_values_beyond_the_bounds():
    env = make_mamujoco(TASK, seed=0)
    rng = np.random.default_rng(1)
    base = rng.uniform(-0.3, 0.3, size=(STEPS, 2, 9))
    other = base.copy()
    other[:, 1, 8] = rng.uniform(-5, 5, size=STEPS)  # agent 1's unused ninth entry
    beyond = base.copy()
    beyond[:, 0, 0] = 0.4 + rng.uniform(0.1, 3.0, size=STEPS)  # past the bound: acts as the bound
    at_bound = base.copy()
    at_bound[:, 0, 0] = 0.4
    runs = []
    for seq in (base, other, beyond, at_bound):
        env.reset(seed=3)
        steps = [env.step(a) for a in seq]
        # observations and rewards (MuJoCo clamps its controls itself; the control cost in the
        # reward reads the action as given, so only the reward shows a missing clip)
        runs.append(np.concatenate([np.stack([s.obs.ravel() for s in steps]),
                                    np.array([[s.reward] for s in steps])], 1))
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[2], runs[3])
    assert np.abs(runs[0] - runs[2]).max() > 1e-6  # the first joint's torque did matter
