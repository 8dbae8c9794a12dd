"""Every registered env against the contract of ``mabl.envs.base``, plus the guards around it.

Each env is built once per module (SMAX compiles every map, seconds each) and runs random episodes
to their end. Envs whose package is missing are skipped, not failed.
"""

from __future__ import annotations

import sys
import types
from typing import ClassVar

import numpy as np
import pytest

from mabl.envs import EnvSpec, TimeStep, list_envs, make_env
from mabl.envs.checks import CheckedEnv
from mabl.errors import MablError

ENV_NAMES = [
    "smax:3m",
    "smax:3s_vs_4z",
    "smax:2s3z",
    "smax:3s_vs_5z",
    "smax:5m_vs_6m",
    "smax:3s5z",
    "smax:3s5z_vs_3s6z",
    "mpe:simple_spread",
    "flatland:5_agents",
    "flatland:10_agents",
    "mamujoco:Humanoid-9|8",
    "mamujoco:HumanoidStandup-9|8",
]
REQUIRED_PACKAGE = {"smax": "jaxmarl", "mpe": "mpe2", "flatland": "flatland", "mamujoco": "gymnasium_robotics"}
N_EPISODES = 3


@pytest.fixture(scope="module")
def built_envs():
    """One env per name for the whole module: building a SMAX env compiles its map."""
    envs: dict[str, object] = {}
    yield envs
    for env in envs.values():
        env.close()


def get_env(built_envs: dict, name: str):
    pytest.importorskip(REQUIRED_PACKAGE[name.split(":")[0]])
    if name not in built_envs:
        built_envs[name] = make_env(name, seed=0)
    return built_envs[name]


@pytest.fixture(scope="module", params=ENV_NAMES)
def env(request: pytest.FixtureRequest, built_envs: dict):
    return get_env(built_envs, request.param)


def random_actions(spec: EnvSpec, avail: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Uniform random actions, among the available ones when there is a mask."""
    if not spec.discrete:
        shape = (spec.n_agents, spec.action_dim)
        return rng.uniform(spec.action_low, spec.action_high, shape).astype(np.float32)
    if avail is None:
        return rng.integers(0, spec.n_actions, spec.n_agents)
    # argmax of random scores over the available actions = a uniform pick among them
    return np.argmax(np.where(avail, rng.random(avail.shape), -1.0), axis=1)


def assert_conforms(timestep: TimeStep, spec: EnvSpec) -> None:
    assert timestep.obs.shape == (spec.n_agents, spec.obs_dim)
    assert timestep.obs.dtype == np.float32
    assert timestep.state.shape == (spec.state_dim,)
    assert timestep.state.dtype == np.float32
    assert np.isfinite(timestep.obs).all() and np.isfinite(timestep.state).all()
    if spec.has_action_mask:
        assert timestep.avail.shape == (spec.n_agents, spec.n_actions)
        assert timestep.avail.dtype == np.bool_
        assert timestep.avail.any(axis=1).all(), "every agent needs an available action"
    else:
        assert timestep.avail is None
    assert isinstance(timestep.reward, float) and np.isfinite(timestep.reward)
    assert isinstance(timestep.terminated, bool) and isinstance(timestep.truncated, bool)
    assert not (timestep.terminated and timestep.truncated)
    if spec.per_agent_reward:
        assert timestep.agent_reward.shape == (spec.n_agents,) and timestep.agent_reward.dtype == np.float32
        assert np.isfinite(timestep.agent_reward).all()
        # the team reward is the agents' rewards summed (float32 rounding aside)
        assert timestep.reward == pytest.approx(float(timestep.agent_reward.sum()), rel=1e-5, abs=1e-4)
    else:
        assert timestep.agent_reward is None
    if spec.per_agent_done:
        assert timestep.agent_done.shape == (spec.n_agents,) and timestep.agent_done.dtype == np.bool_
        if timestep.terminated:
            assert timestep.agent_done.all(), "an env that terminated has every agent done"
    else:
        assert timestep.agent_done is None


def run_episode(env, seed: int | None, rng: np.random.Generator) -> list[TimeStep]:
    timesteps = [env.reset(seed)]
    while not timesteps[-1].done:
        timesteps.append(env.step(random_actions(env.spec, timesteps[-1].avail, rng)))
    return timesteps


def test_names_are_listed():
    assert set(ENV_NAMES) <= set(list_envs())


def test_spec_is_usable(env):
    spec = env.spec
    assert spec.n_agents > 0 and spec.obs_dim > 0 and spec.state_dim > 0
    assert spec.episode_limit > 0
    assert spec.action_size > 0
    assert spec.n_actions > 0 if spec.discrete else spec.action_dim > 0


def test_random_episodes_run_to_their_end(env):
    spec = env.spec
    rng = np.random.default_rng(0)
    for _ in range(N_EPISODES):
        timesteps = run_episode(env, None, rng)
        for timestep in timesteps:
            assert_conforms(timestep, spec)
        assert 1 <= len(timesteps) - 1 <= spec.episode_limit
        *middle, last = timesteps
        assert not any(timestep.done for timestep in middle)
        if spec.per_agent_done:  # an agent's done never goes back within an episode
            done = np.stack([timestep.agent_done for timestep in timesteps])
            assert (done[1:] >= done[:-1]).all() and not done[0].any()
        if last.truncated:
            assert len(timesteps) - 1 == spec.episode_limit, "only the time limit truncates"
        if spec.has_win:
            assert isinstance(last.info["win"], bool)
            assert all("win" not in (timestep.info or {}) for timestep in middle)


def test_same_seed_same_episode(env):
    def record(seed: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
        # the action sequence depends only on `seed` (through the rng and the masks seen)
        rng = np.random.default_rng(seed)
        return [(ts.obs, ts.state, ts.reward) for ts in run_episode(env, seed, rng)]

    first, again, other = record(7), record(7), record(8)
    assert len(first) == len(again)
    for (obs, state, reward), (obs2, state2, reward2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(obs, obs2)
        np.testing.assert_array_equal(state, state2)
        assert reward == reward2
    assert not np.array_equal(first[0][1], other[0][1]), "another seed, another start"


def greedy_smax_actions(avail: np.ndarray) -> np.ndarray:
    """Attack the first enemy in range, else move east (towards the enemy), else stop."""
    attack, east, stop = 5, 1, 4
    can_attack = avail[:, attack:]
    actions = np.where(can_attack.any(axis=1), attack + np.argmax(can_attack, axis=1), east)
    return np.where(avail[np.arange(len(actions)), actions], actions, stop)


def test_smax_reports_wins(built_envs):
    env = get_env(built_envs, "smax:3m")
    outcomes = []
    for seed in range(10):  # the greedy team wins about half of its 3m battles
        timestep = env.reset(seed)
        while not timestep.done:
            timestep = env.step(greedy_smax_actions(timestep.avail))
        outcomes.append(timestep.info["win"])
        if timestep.info["win"]:
            assert timestep.terminated and timestep.reward > 1.0  # with SMAX's win bonus
    assert any(outcomes)


def test_smax_truncates_at_the_episode_limit(monkeypatch):
    pytest.importorskip("jaxmarl")
    from mabl.envs import smax

    # 5 steps: too short for the teams to meet, so the time limit must end the episode
    monkeypatch.setitem(smax.SMAC_EPISODE_LIMITS, "3m", 5)
    env = CheckedEnv(smax.SmaxEnv("3m", seed=0))
    timesteps = run_episode(env, None, np.random.default_rng(0))
    assert len(timesteps) - 1 == 5
    last = timesteps[-1]
    assert last.truncated and not last.terminated and last.info["win"] is False


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("foo:bar", r"unknown env 'foo:bar': families are smax, pettingzoo, mpe, flatland, mamujoco, smac; examples: "),
        ("3m", r"unknown env '3m'"),
        ("smax:3s_vs_9z", r"unknown SMAX map '3s_vs_9z': maps are 3m, .*3s_vs_4z"),
        ("mpe:no_such_task", r"unknown MPE task 'mpe:no_such_task'"),
        ("pettingzoo:no_such_pkg_xyz.env_v0", r"needs the 'no_such_pkg_xyz' package: pip install"),
        ("pettingzoo:numpy", r"module 'numpy' has no parallel_env\(\)"),
    ],
)
def test_make_env_errors_are_one_line(name: str, message: str):
    with pytest.raises(MablError, match=message) as caught:
        make_env(name)
    assert "\n" not in str(caught.value)


class FakeEnv:
    """Two agents, three actions, five steps; ``break_at`` makes it misbehave from that step on."""

    PER_AGENT: ClassVar[set[str]] = {"agent_reward_shape", "agent_done_back"}
    """Breakages of an env that reports per-agent rewards and done (agent 0 is done from step 1 on)."""

    def __init__(self, breakage: str | None = None, break_at: int = 2) -> None:
        self.spec = EnvSpec(
            name="fake",
            n_agents=2,
            obs_dim=3,
            state_dim=4,
            discrete=True,
            n_actions=3,
            has_action_mask=True,
            episode_limit=5,
            per_agent_reward=breakage in self.PER_AGENT,
            per_agent_done=breakage in self.PER_AGENT,
        )
        self.breakage, self.break_at, self.t = breakage, break_at, 0

    def reset(self, seed: int | None = None) -> TimeStep:
        self.t = 0
        return self._timestep()

    def step(self, actions: np.ndarray) -> TimeStep:
        self.t += 1
        return self._timestep()

    def close(self) -> None:
        pass

    def _timestep(self) -> TimeStep:
        timestep = TimeStep(
            obs=np.zeros((2, 3), np.float32),
            state=np.zeros(4, np.float32),
            avail=np.array([[True, True, False], [True, True, True]]),
            truncated=self.t >= 5,
            info={},
        )
        if self.spec.per_agent_reward:
            timestep.agent_reward = np.zeros(2, np.float32)
            timestep.agent_done = np.array([self.t >= 1, False])
        if self.t >= self.break_at:
            if self.breakage == "nan_obs":
                timestep.obs[1, 2] = np.nan
            elif self.breakage == "obs_shape":
                timestep.obs = np.zeros((2, 4), np.float32)
            elif self.breakage == "state_dtype":
                timestep.state = np.zeros(4, np.float64)
            elif self.breakage == "inf_reward":
                timestep.reward = float("inf")
            elif self.breakage == "empty_mask":
                timestep.avail[1] = False
            elif self.breakage == "no_end":
                timestep.truncated = False
            elif self.breakage == "agent_reward_shape":
                timestep.agent_reward = np.zeros(3, np.float32)
            elif self.breakage == "agent_done_back":
                timestep.agent_done = np.zeros(2, bool)
            elif self.breakage == "stray_agent_done":
                timestep.agent_done = np.zeros(2, bool)
        return timestep


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("nan_obs", r"env fake returned a non-finite obs \(nan\) at step 2$"),
        ("obs_shape", r"env fake returned obs of shape \(2, 4\), expected \(2, 3\) at step 2$"),
        ("state_dtype", r"env fake returned state of dtype float64, expected float32 at step 2$"),
        ("inf_reward", r"env fake returned a non-finite reward \(inf\) at step 2$"),
        ("empty_mask", r"env fake returned avail with no available action for agent 1 at step 2$"),
        ("no_end", r"env fake did not end at its episode_limit 5 \(step 5\)$"),
        ("agent_reward_shape", r"env fake returned agent_reward of shape \(3,\), expected \(2,\) at step 2$"),
        ("agent_done_back", r"env fake returned agent_done False for agent 0, done on an earlier step, at step 2$"),
        ("stray_agent_done", r"env fake returned agent_done although its spec has no per-agent done at step 2$"),
    ],
)
def test_checked_env_catches_a_broken_env(breakage: str, message: str):
    env = CheckedEnv(FakeEnv(breakage))
    env.reset()
    with pytest.raises(MablError, match=message):
        for _ in range(5):
            env.step(np.zeros(2, np.int64))


def test_checked_env_catches_reset_errors():
    with pytest.raises(MablError, match=r"non-finite obs \(nan\) at reset$"):
        CheckedEnv(FakeEnv("nan_obs", break_at=0)).reset()


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        (np.zeros(3, np.int64), r"got actions of shape \(3,\), expected \(2,\) at step 1$"),
        (np.zeros(2, np.float32), r"got actions of dtype float32, expected integers"),
        (np.array([0, 3]), r"got action 3 for agent 1, outside \[0, 3\) at step 1$"),
        (np.array([-1, 0]), r"got action -1 for agent 0, outside \[0, 3\)"),
        (np.array([2, 0]), r"got unavailable action 2 for agent 0 at step 1$"),
    ],
)
def test_checked_env_catches_bad_actions(actions: np.ndarray, message: str):
    env = CheckedEnv(FakeEnv())
    env.reset()
    with pytest.raises(MablError, match=message):
        env.step(actions)


def test_checked_env_refuses_steps_outside_an_episode():
    env = CheckedEnv(FakeEnv())
    with pytest.raises(MablError, match="call reset"):
        env.step(np.zeros(2, np.int64))
    env.reset()
    for _ in range(5):
        timestep = env.step(np.zeros(2, np.int64))
    assert timestep.truncated
    with pytest.raises(MablError, match="call reset"):
        env.step(np.zeros(2, np.int64))


def _fake_pettingzoo_module():
    """A module with a ParallelEnv whose agents differ in sizes, carry masks, and leave early."""
    from gymnasium import spaces
    from pettingzoo.utils.env import ParallelEnv

    class TwoAgents(ParallelEnv):
        metadata: ClassVar[dict] = {"name": "two_agents"}

        def __init__(self, max_cycles: int = 4) -> None:
            self.possible_agents = ["big", "small"]
            self.max_cycles = max_cycles
            self._n_actions = {"big": 3, "small": 2}
            self._obs_dims = {"big": 4, "small": 2}

        def observation_space(self, agent):
            return spaces.Dict(
                {
                    "observation": spaces.Box(-1, 1, (self._obs_dims[agent],), np.float32),
                    "action_mask": spaces.MultiBinary(self._n_actions[agent]),
                }
            )

        def action_space(self, agent):
            return spaces.Discrete(self._n_actions[agent])

        def _obs(self):
            def mask(agent):  # "big" may not repeat its last action
                return np.array([a != self.last.get(agent) for a in range(self._n_actions[agent])], np.int8)

            return {
                agent: {
                    "observation": np.full(self._obs_dims[agent], self.t / 4, np.float32),
                    "action_mask": mask(agent),
                }
                for agent in self.agents
            }

        def reset(self, seed=None, options=None):
            self.agents, self.t, self.last = list(self.possible_agents), 0, {}
            return self._obs(), {agent: {} for agent in self.agents}

        def step(self, actions):
            assert set(actions) == set(self.agents), "actions only for the live agents"
            self.t += 1
            self.last = {"big": actions["big"]}
            rewards = {agent: float(actions[agent]) for agent in self.agents}
            terminations = {agent: agent == "small" and self.t == 2 for agent in self.agents}
            truncations = {agent: self.t >= self.max_cycles for agent in self.agents}
            obs = self._obs()
            self.agents = [a for a in self.agents if not (terminations[a] or truncations[a])]
            return obs, rewards, terminations, truncations, {agent: {} for agent in obs}

    module = types.ModuleType("fake_two_agents_v0")
    module.parallel_env = TwoAgents
    return module


def test_pettingzoo_adapter_pads_masks_and_keeps_departed_agents(monkeypatch):
    pytest.importorskip("pettingzoo")
    monkeypatch.setitem(sys.modules, "fake_two_agents_v0", _fake_pettingzoo_module())
    env = make_env("pettingzoo:fake_two_agents_v0")
    spec = env.spec
    assert (spec.n_agents, spec.obs_dim, spec.n_actions, spec.episode_limit) == (2, 4, 3, 4)
    assert spec.has_action_mask and spec.state_dim == 2 * 4  # no env.state(): all observations

    first = env.reset(seed=0)
    np.testing.assert_array_equal(first.avail, [[True, True, True], [True, True, False]])
    one = env.step(np.array([1, 1]))
    assert one.reward == 1.0  # mean of the agents' rewards
    np.testing.assert_array_equal(one.avail[0], [True, False, True])  # the env's own mask
    np.testing.assert_array_equal(one.obs[1], [0.25, 0.25, 0.0, 0.0])  # padded observation
    two = env.step(np.array([0, 0]))
    assert not two.done  # "small" terminated, "big" plays on
    three = env.step(np.array([2, 0]))
    np.testing.assert_array_equal(three.obs[1], 0.0)  # "small" left: zero observation
    np.testing.assert_array_equal(three.avail[1], [True, False, False])
    assert three.reward == 2.0
    four = env.step(np.array([0, 0]))
    assert four.truncated and not four.terminated


def test_pettingzoo_adapter_continuous_actions():
    pytest.importorskip("mpe2")
    from mabl.envs.pettingzoo import PettingZooEnv

    env = CheckedEnv(PettingZooEnv("mpe2.simple_spread_v3", seed=3, continuous_actions=True))
    spec = env.spec
    assert not spec.discrete and spec.action_dim == 5
    assert (spec.action_low, spec.action_high) == (0.0, 1.0)
    timesteps = run_episode(env, None, np.random.default_rng(0))
    assert len(timesteps) - 1 == spec.episode_limit == 25
    assert timesteps[-1].truncated
