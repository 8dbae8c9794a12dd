"""The SMAX adapter's SMAC readings (reward, state, walls) against JaxMARL's, on real SMAX episodes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jaxmarl")

from mabl.config import ADDED_FIELDS, RunConfig, env_options, from_dict, to_dict  # noqa: E402
from mabl.envs import make_env  # noqa: E402
from mabl.envs.smax import SmaxEnv  # noqa: E402
from mabl.errors import MablError  # noqa: E402

ATTACK, STOP = 5, 4


def focus_fire(avail: np.ndarray) -> np.ndarray:
    """Every ally attacks the lowest-numbered enemy it can, else moves east (towards the enemy)."""
    can_attack = avail[:, ATTACK:]
    actions = np.where(can_attack.any(axis=1), ATTACK + np.argmax(can_attack, axis=1), 1)
    return np.where(avail[np.arange(len(actions)), actions], actions, STOP)


def play(env, seed: int, policy=focus_fire) -> list:
    timesteps = [env.reset(seed)]
    while not timesteps[-1].done:
        timesteps.append(env.step(policy(timesteps[-1].avail)))
    return timesteps


@pytest.fixture(scope="module")
def smac_3m():
    env = SmaxEnv("3m", seed=0)
    yield env
    env.close()


@pytest.fixture(scope="module")
def jaxmarl_rules_3m():
    """SMAC's reward and state on JaxMARL's lethal walls: the same dynamics as JaxMARL's readings."""
    env = SmaxEnv("3m", seed=0, walls="lethal")
    yield env
    env.close()


@pytest.fixture(scope="module")
def jaxmarl_3m():
    env = SmaxEnv("3m", seed=0, reward="jaxmarl", state="jaxmarl", walls="lethal")
    yield env
    env.close()


def test_won_episodes_return_exactly_20_and_others_less(smac_3m):
    returns = {True: [], False: []}
    for seed in range(8):
        timesteps = play(smac_3m, seed)
        returns[timesteps[-1].info["win"]].append(sum(ts.reward for ts in timesteps[1:]))
    assert returns[True], "focus fire wins some 3m battles"
    np.testing.assert_allclose(returns[True], 20.0, rtol=1e-5)
    assert all(0.0 <= r < 20.0 - 10.0 for r in returns[False]), "no win bonus (200/365 x 20 = 11) without a win"


def test_a_team_that_only_stops_deals_no_damage(smac_3m):
    timesteps = play(smac_3m, 3, policy=lambda avail: np.full(len(avail), STOP))
    assert all(ts.reward == 0.0 for ts in timesteps[1:]) and timesteps[-1].info["win"] is False


def test_flags_observations_and_masks_are_jaxmarls(jaxmarl_rules_3m, jaxmarl_3m):
    """Only reward and state change with those readings: same ends, wins, observations and masks."""
    for seed in (0, 1):
        ours, theirs = play(jaxmarl_rules_3m, seed), play(jaxmarl_3m, seed)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a.obs, b.obs)
            np.testing.assert_array_equal(a.avail, b.avail)
            assert (a.terminated, a.truncated, a.info) == (b.terminated, b.truncated, b.info)
        # rewards are positive exactly where JaxMARL's are (damage, kills, the win)
        assert [a.reward > 0 for a in ours[1:]] == [b.reward > 0 for b in theirs[1:]]


def test_smac_state_at_the_start_of_3s_vs_4z():
    env = SmaxEnv("3s_vs_4z", seed=0)
    first = env.reset(0)
    assert env.spec.state_dim == 58 and first.state.shape == (58,)
    allies, enemies, last = first.state[:15].reshape(3, 5), first.state[15:31].reshape(4, 4), first.state[31:]
    np.testing.assert_array_equal(allies[:, [0, 4]], 1.0)  # full health and shield
    np.testing.assert_array_equal(allies[:, 1], 0.0)  # no cooldown yet
    assert (allies[:, 2] < 0).all() and (enemies[:, 1] > 0).all()  # allies west of the centre, enemies east
    assert (np.abs(first.state[:31]) <= 1.0).all()
    np.testing.assert_array_equal(last, 0.0)
    nxt = env.step(np.array([STOP, 0, 1]))
    expected = np.zeros((3, 9))
    expected[[0, 1, 2], [STOP, 0, 1]] = 1.0
    np.testing.assert_array_equal(nxt.state[31:].reshape(3, 9), expected)
    env.close()


def units_alive_after_walking_west(env) -> int:
    timestep = env.reset(0)
    west = 3  # SMAX's movement action with the negative x direction (its 45-degree rotated moves)
    for _ in range(12):
        timestep = env.step(np.where(timestep.avail[:, west], west, STOP))
        if timestep.done:
            break
    return int((timestep.state[:12].reshape(3, 4)[:, 0] > 0).sum())


def test_walls_stop_units_by_default_and_kill_with_lethal_walls(smac_3m, jaxmarl_rules_3m):
    assert units_alive_after_walking_west(smac_3m) == 3
    assert units_alive_after_walking_west(jaxmarl_rules_3m) == 0


def test_options_come_from_the_config_and_old_runs_keep_jaxmarls():
    cfg = RunConfig(env="smax:3m")
    assert env_options(cfg) == {"reward": "smac", "state": "smac", "walls": "stop"}
    old = to_dict(cfg)
    del old["smax"]
    assert env_options(from_dict(old)) == {"reward": "jaxmarl", "state": "jaxmarl", "walls": "lethal"}
    assert {k: v for k, v in ADDED_FIELDS.items() if k.startswith("smax.")} == {
        "smax.reward": "jaxmarl", "smax.state": "jaxmarl", "smax.walls": "lethal"}
    assert env_options(RunConfig(env="mpe:simple_spread")) == {}
    assert env_options(RunConfig(env="flatland:10_agents")) == {"obs": "mamba", "actions": "mamba", "deadlock": "mamba"}
    assert env_options(RunConfig(env="mamujoco:Humanoid-9|8")) == {"contact_forces": "zero"}
    old = to_dict(RunConfig(env="flatland:5_agents"))
    del old["flatland"]
    assert env_options(from_dict(old)) == {"obs": "standard", "actions": "all", "deadlock": "rings_move"}


def test_bad_options_get_one_line():
    with pytest.raises(MablError, match=r"--smax.reward='smack' is not allowed; choose one of smac, jaxmarl"):
        SmaxEnv("3m", reward="smack")
    with pytest.raises(MablError, match=r"^unknown smax option\(s\) colour: options are reward, state, walls$"):
        make_env("smax:3m", options={"colour": "red"})
    with pytest.raises(MablError, match=r"^--smax.walls='soft' is not allowed; choose one of stop, lethal$"):
        make_env("smax:3m", options={"walls": "soft"})
    with pytest.raises(MablError, match=r"^env family 'pettingzoo' takes no options \(got reward\)$"):
        make_env("mpe:simple_spread", options={"reward": "smac"})


@pytest.mark.parametrize(("name", "options", "message"), [
    ("flatland:5_agents", {"obs": "tree"}, r"^--flatland.obs='tree' is not allowed; choose one of mamba, standard$"),
    ("flatland:5_agents", {"walls": "stop"}, r"^unknown flatland option\(s\) walls: options are obs, actions, deadlock$"),
    ("mamujoco:Humanoid-9|8", {"contact_forces": "v2"},
     r"^--mamujoco.contact_forces='v2' is not allowed; choose one of zero, v5$"),
])
def test_other_families_declare_their_options(name, options, message):
    family = name.partition(":")[0]
    pytest.importorskip({"flatland": "flatland", "mamujoco": "gymnasium_robotics"}[family])
    with pytest.raises(MablError, match=message):
        make_env(name, options=options)
