"""``mabl eval --render out.gif``: SMAX through JaxMARL's visualiser (frames replayed with the keys
the episode used, so they end where the episode ended), MPE and MAMuJoCo through their rgb_array frames."""

from __future__ import annotations

import numpy as np
import pytest

from mabl.cli import main


class LastAvailable:
    """A stand-in policy: each agent takes its highest available action (an attack when one is in range)."""

    def __init__(self, n_agents: int):
        self.n_agents = n_agents

    def reset(self) -> None:
        pass

    def act(self, obs, avail=None, deterministic=False):
        if avail is None:
            return np.zeros(self.n_agents, np.int64), {}
        avail = np.asarray(avail)
        return (avail.shape[1] - 1 - np.argmax(avail[:, ::-1], axis=1)).astype(np.int64), {}


def test_smax_gif_frames_end_where_the_episode_ended(tmp_path):
    pytest.importorskip("jaxmarl")
    from PIL import Image

    from mabl.render import smax_frames, write_smax_gif

    policy = LastAvailable(3)
    world, frames, steps, _, final = smax_frames("smax:3m", {}, policy, seed=5, max_steps=3)
    assert steps == 3 and len(frames) == 3 * (world.world_steps_per_env_step + 1)
    last = frames[-1][1]
    np.testing.assert_allclose(np.asarray(last.unit_positions), np.asarray(final.unit_positions), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(last.unit_health), np.asarray(final.unit_health))
    out = tmp_path / "smax.gif"
    write_smax_gif(world, frames, str(out))
    with Image.open(out) as gif:
        assert gif.format == "GIF" and gif.n_frames >= 3 and gif.size[0] > 100


def test_eval_render_writes_a_gif_of_an_mpe_episode(tmp_path, capsys):
    pytest.importorskip("mpe2")
    from PIL import Image

    run = tmp_path / "run"
    assert main(["train", "--env", "mpe:simple_spread", "--preset", "debug", "--steps", "100", "--checkpoint-every",
                 "100", "--eval-every", "0", "--run-dir", str(run), "--progress", "false", "--threads", "1"]) == 0
    out = tmp_path / "mpe.gif"
    assert main(["eval", "--run-dir", str(run), "--episodes", "1", "--render", str(out), "--render-steps", "5"]) == 0
    assert f"wrote {out}: 5 env steps (6 frames)" in capsys.readouterr().out
    with Image.open(out) as gif:
        assert gif.format == "GIF" and gif.n_frames >= 2


def test_render_refuses_what_it_cannot_draw(tmp_path, capsys):
    from mabl.errors import MablError
    from mabl.render import render_episode

    with pytest.raises(MablError, match="has no renderer"):
        render_episode("flatland:5_agents", {}, None, 0, str(tmp_path / "x.gif"))
    with pytest.raises(MablError, match="must end in .gif"):
        render_episode("smax:3m", {}, None, 0, str(tmp_path / "x.mp4"))


class Zeros:
    """A stand-in continuous policy: zero torque for every agent."""

    def __init__(self, n_agents: int, action_dim: int):
        self.shape = (n_agents, action_dim)

    def reset(self) -> None:
        pass

    def act(self, obs, avail=None, deterministic=False):
        return np.zeros(self.shape, np.float32), {}


def test_mamujoco_gif_shows_the_humanoid_move(tmp_path):
    pytest.importorskip("gymnasium_robotics")
    from PIL import Image

    from mabl.render import render_episode

    out = tmp_path / "humanoid.gif"
    done = render_episode("mamujoco:Humanoid-9+8", {"contact_forces": "zero"}, Zeros(2, 9), 0, str(out), max_steps=6)
    assert done["env_steps"] == 6 and done["frames"] == 7
    with Image.open(out) as gif:
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB"), np.int16))
    assert len(frames) == 7 and frames[0].std() > 0  # a drawn scene, not a blank image
    assert np.abs(frames[-1] - frames[0]).max() > 0  # the unactuated humanoid falls: the picture changes
