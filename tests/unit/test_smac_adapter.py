"""The SMAC adapter's logic, against a fake ``smac`` package (StarCraft II cannot run here).

The fake ``StarCraft2Env`` follows oxwhirl's API and its end-of-episode rules: ``step`` returns
``(reward, terminated, info)``; a battle's end sets ``info["battle_won"]``; the time limit also
returns ``terminated=True`` and adds ``info["episode_limit"] = True`` only with
``continuing_episode``. Every "cannot run SMAC" error must be one line that says how to install.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from mabl.envs import make_env
from mabl.envs.smac import SMAC_MAPS, SmacEnv
from mabl.errors import MablError

# map -> (n_agents, n_enemies, episode_limit), as in smac_maps.py
FAKE_MAPS = {"3s_vs_4z": (3, 4, 200), "2s_vs_1sc": (2, 1, 300)}


class FakeStarCraft2Env:
    """oxwhirl's StarCraft2Env API with a scripted battle: ``outcome`` ends it at step ``end_at``."""

    outcome = "timeout"  # "win", "loss" or "timeout"
    end_at = 3
    instances: list[FakeStarCraft2Env] = []

    def __init__(self, map_name="8m", seed=None, difficulty="7", continuing_episode=False, **kwargs):
        self.n_agents, self.n_enemies, self.episode_limit = FAKE_MAPS[map_name]  # KeyError as get_map_params
        self.n_actions = 6 + self.n_enemies
        self.kwargs = {"seed": seed, "difficulty": difficulty, "continuing_episode": continuing_episode, **kwargs}
        self.continuing_episode = continuing_episode
        self.closed = False
        self.resets = 0
        self.actions_seen: list = []
        self._t = 0
        FakeStarCraft2Env.instances.append(self)

    def get_env_info(self):
        return {
            "state_shape": self.n_agents * 5 + self.n_enemies * 3 + self.n_agents * self.n_actions,
            "obs_shape": 4 + self.n_enemies * 5 + (self.n_agents - 1) * 5 + 1,
            "n_actions": self.n_actions,
            "n_agents": self.n_agents,
            "episode_limit": self.episode_limit,
        }

    def _alive(self, agent_id):
        return not (agent_id == 0 and self._t >= 2)  # agent 0 dies at step 2

    def get_obs(self):  # float64 lists like a careless env; the adapter must make float32 arrays
        size = self.get_env_info()["obs_shape"]
        return [np.full(size, self._t + 0.5 if self._alive(i) else 0.0) for i in range(self.n_agents)]

    def get_state(self):
        return np.arange(self.get_env_info()["state_shape"], dtype=np.float64) + self._t

    def get_avail_actions(self):
        rows = []
        for i in range(self.n_agents):
            if self._alive(i):
                rows.append([0, 1, 1, 1, 1, 1] + [1] * self.n_enemies)
            else:
                rows.append([1] + [0] * (self.n_actions - 1))  # dead: only the no-op
        return rows

    def reset(self):
        self._t = 0
        self.resets += 1
        return self.get_obs(), self.get_state()

    def step(self, actions):
        assert all(type(a) is int for a in actions), "SMAC gets plain ints"
        avail = self.get_avail_actions()
        assert all(avail[i][a] for i, a in enumerate(actions)), "only available actions"
        self.actions_seen.append(list(actions))
        self._t += 1
        info = {"battle_won": False}
        if self.outcome in ("win", "loss") and self._t == self.end_at:
            info["battle_won"] = self.outcome == "win"
            return (20.0 if self.outcome == "win" else 0.5), True, info
        if self._t >= self.episode_limit:
            if self.continuing_episode:
                info["episode_limit"] = True
            return 0.25, True, info
        return 0.25, False, info

    def close(self):
        self.closed = True


@pytest.fixture
def isolated_smac_modules():
    """Whatever a test imports or injects as ``smac`` is gone afterwards."""
    saved = {name: module for name, module in sys.modules.items() if name == "smac" or name.startswith("smac.")}
    for name in saved:
        del sys.modules[name]
    yield
    for name in [name for name in sys.modules if name == "smac" or name.startswith("smac.")]:
        del sys.modules[name]
    sys.modules.update(saved)


@pytest.fixture
def game_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A StarCraft II directory with the SMAC map files of FAKE_MAPS, as SC2PATH."""
    game = tmp_path / "StarCraftII"
    (game / "Maps" / "SMAC_Maps").mkdir(parents=True)
    for map_name in FAKE_MAPS:
        (game / "Maps" / "SMAC_Maps" / f"{map_name}.SC2Map").write_bytes(b"")
    monkeypatch.setenv("SC2PATH", str(game))
    return game


@pytest.fixture
def fake_smac(monkeypatch: pytest.MonkeyPatch, isolated_smac_modules, game_dir):
    """oxwhirl's smac (faked) importable, and the game in place."""
    package = types.ModuleType("smac")
    package.__path__ = []  # a package, as the real one
    env_module = types.ModuleType("smac.env")
    env_module.StarCraft2Env = FakeStarCraft2Env
    package.env = env_module
    monkeypatch.setitem(sys.modules, "smac", package)
    monkeypatch.setitem(sys.modules, "smac.env", env_module)
    monkeypatch.setattr(FakeStarCraft2Env, "outcome", "timeout")
    monkeypatch.setattr(FakeStarCraft2Env, "instances", [])
    return FakeStarCraft2Env


def play(env, seed: int | None = None) -> list:
    """An episode of the first available action of every agent."""
    timesteps = [env.reset(seed)]
    while not timesteps[-1].done:
        timesteps.append(env.step(np.argmax(timesteps[-1].avail, axis=1)))
    return timesteps


def test_the_papers_maps_are_listed():
    assert list(SMAC_MAPS) == ["2s_vs_1sc", "3s_vs_4z", "3s_vs_5z", "corridor", "3s5z_vs_3s6z"]
    assert SMAC_MAPS["3s_vs_5z"]["paper_steps"] == 200_000


def test_spec_and_arrays_follow_smac(fake_smac):
    env = make_env("smac:3s_vs_4z", seed=5)  # through the registry and CheckedEnv
    spec = env.spec
    sc2 = fake_smac.instances[-1]
    info = sc2.get_env_info()
    assert spec.name == "smac:3s_vs_4z" and spec.discrete and spec.has_action_mask and spec.has_win
    assert (spec.n_agents, spec.obs_dim, spec.state_dim) == (3, info["obs_shape"], info["state_shape"])
    assert (spec.n_actions, spec.episode_limit) == (10, 200)
    assert sc2.kwargs == {"seed": 5, "difficulty": "7", "continuing_episode": True}

    first = env.reset(seed=123)
    assert first.obs.shape == (3, spec.obs_dim) and first.obs.dtype == np.float32
    assert first.state.shape == (spec.state_dim,) and first.state.dtype == np.float32
    assert first.avail.shape == (3, 10) and first.avail.dtype == np.bool_
    np.testing.assert_array_equal(first.obs[1], 0.5)
    np.testing.assert_array_equal(first.state, np.arange(spec.state_dim))
    assert not first.avail[0, 0] and first.avail[0, 1:].all()  # alive: everything but the no-op
    assert first.info == {} and first.reward == 0.0

    second = env.step(np.array([1, 2, 6]))
    assert sc2.actions_seen[-1] == [1, 2, 6]
    assert isinstance(second.reward, float) and second.reward == 0.25
    assert not second.done and second.info == {}
    dead = env.step(np.array([1, 1, 1]))
    np.testing.assert_array_equal(dead.obs[0], 0.0)  # agent 0 died: zero observation, only the no-op
    np.testing.assert_array_equal(dead.avail[0], [True] + [False] * 9)
    env.close()
    assert sc2.closed


@pytest.mark.parametrize(("outcome", "won"), [("win", True), ("loss", False)])
def test_a_battles_end_is_terminated_with_the_win_flag(fake_smac, outcome: str, won: bool):
    fake_smac.outcome = outcome
    timesteps = play(make_env("smac:2s_vs_1sc"))
    *middle, last = timesteps
    assert len(timesteps) - 1 == fake_smac.end_at
    assert last.terminated and not last.truncated
    assert last.info == {"win": won} and type(last.info["win"]) is bool
    assert all(timestep.info == {} for timestep in middle)
    assert last.reward == (20.0 if won else 0.5)


def test_the_time_limit_is_truncated_not_terminated(fake_smac):
    timesteps = play(make_env("smac:3s_vs_4z"))
    last = timesteps[-1]
    assert len(timesteps) - 1 == 200
    assert last.truncated and not last.terminated
    assert last.info == {"win": False}


def test_reset_seeds_cannot_reseed_the_game(fake_smac):
    env = SmacEnv("3s_vs_4z", seed=2**32 + 7)
    sc2 = fake_smac.instances[-1]
    assert sc2.kwargs["seed"] == 7  # the game takes a 32-bit seed
    env.reset(seed=1)  # accepted and ignored: SMAC's reset takes no seed
    env.reset()
    assert sc2.resets == 2


def test_unknown_map(fake_smac):
    with pytest.raises(MablError, match=r"unknown SMAC map 'no_such_map': the paper's maps are 2s_vs_1sc, ") as caught:
        make_env("smac:no_such_map")
    assert "\n" not in str(caught.value)


def assert_install_error(caught: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(caught.value)
    assert "\n" not in message
    for fragment in ("pip install git+https://github.com/oxwhirl/smac.git", "StarCraft II 4.10", "SC2PATH", *fragments):
        assert fragment in message


def test_error_when_smac_is_not_installed(monkeypatch: pytest.MonkeyPatch, isolated_smac_modules):
    monkeypatch.setitem(sys.modules, "smac", None)  # import smac -> ModuleNotFoundError
    with pytest.raises(MablError, match=r"^smac envs need oxwhirl's smac, which is not installed: ") as caught:
        make_env("smac:3s_vs_4z")
    assert_install_error(caught)


def test_error_when_smac_is_pypis_automl_package(monkeypatch: pytest.MonkeyPatch, isolated_smac_modules):
    automl = types.ModuleType("smac")  # PyPI's smac: a package without smac.env
    automl.__path__ = []
    automl.version = "2.3.1"
    monkeypatch.setitem(sys.modules, "smac", automl)
    with pytest.raises(MablError, match=r"PyPI's unrelated AutoML package, not oxwhirl's SMAC; pip uninstall") as caught:
        make_env("smac:3s_vs_4z")
    assert_install_error(caught)


@pytest.mark.parametrize(
    ("env_init", "expected"),
    [
        # pysc2 4.0 on Python 3.11 fails while its modules are being defined
        ("raise ValueError('mutable default for field x\\nis not allowed')", r"pysc2 failed \(ValueError: mutable default"),
        ("import pysc2", r"module 'pysc2' is missing"),
    ],
)
def test_error_when_pysc2_does_not_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_smac_modules, env_init: str, expected: str
):
    (tmp_path / "smac" / "env").mkdir(parents=True)
    (tmp_path / "smac" / "__init__.py").write_text("")
    (tmp_path / "smac" / "env" / "__init__.py").write_text(env_init + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "pysc2", None)  # not installed
    with pytest.raises(MablError, match=expected) as caught:
        make_env("smac:3s_vs_4z")
    assert_install_error(caught, "oxwhirl's smac cannot be imported")


def test_error_when_the_game_is_missing(fake_smac, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SC2PATH", str(tmp_path / "nowhere"))
    with pytest.raises(MablError, match=r"needs StarCraft II, which is not at SC2PATH=.*nowhere: on Python") as caught:
        make_env("smac:3s_vs_4z")
    assert_install_error(caught)
    assert fake_smac.instances[-1].closed

    monkeypatch.delenv("SC2PATH")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # pysc2's default: ~/StarCraftII
    with pytest.raises(MablError, match=r"not at .*StarCraftII \(SC2PATH is not set\)") as caught:
        make_env("smac:3s_vs_4z")
    assert_install_error(caught)


def test_error_when_the_map_file_is_missing(fake_smac, game_dir: Path):
    (game_dir / "Maps" / "SMAC_Maps" / "3s_vs_4z.SC2Map").unlink()
    with pytest.raises(MablError, match=r"needs the SMAC map file .*3s_vs_4z\.SC2Map, which is missing") as caught:
        make_env("smac:3s_vs_4z")
    assert_install_error(caught)
