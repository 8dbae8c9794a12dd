"""``mabl eval --render out.gif``: a GIF of one greedy episode of a policy.

- ``smax:<map>``: JaxMARL's SMAX visualiser (``jaxmarl.viz.visualizer.SMAXVisualizer``). SMAX moves
  its units in ``world_steps_per_env_step`` ticks per env step; JaxMARL's own ``expand_state_seq``
  replays each step from a key it derives itself, so here each step is replayed with the key the
  adapter used (:class:`mabl.envs.smax.SmaxEnv` splits its key once per step and steps with the
  second half), and the frames are the units exactly as the episode went.
- ``mpe:``/``pettingzoo:`` tasks: the env's ``render_mode="rgb_array"`` frames, one per env step.
- ``mamujoco:`` tasks: the Gymnasium MuJoCo env's ``render_mode="rgb_array"`` frames, one per env
  step, drawn off-screen through EGL (``MUJOCO_GL=egl`` unless the user set ``MUJOCO_GL``).

Other families (Flatland, SMAC) are refused with one line. The episode is played on its
own env, built like the evaluation's (same task options), from the evaluation's first episode seed,
so it is the first of the evaluated episodes up to ``max_steps`` env steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mabl.errors import MablError

RENDERED = ("smax", "pettingzoo", "mpe", "mamujoco")


def render_episode(env_name: str, options: dict[str, Any], policy, seed: int, out: str,
                   max_steps: int | None = None, deterministic: bool = True) -> dict[str, Any]:
    """Play one episode of ``policy`` on ``env_name`` from ``seed`` and write it to ``out`` (a GIF).
    Returns ``{"path", "env_steps", "frames", "return"}``."""
    from mabl.envs.registry import ALIASES

    family = ALIASES.get(env_name, env_name).partition(":")[0]
    if family not in RENDERED:
        raise MablError(f"--render draws smax:, mpe:, pettingzoo: and mamujoco: tasks; {env_name} ({family}) has no "
                        "renderer in mabl yet")
    if not str(out).lower().endswith(".gif"):
        raise MablError(f"--render {out}: the file must end in .gif")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if family == "smax":
        return _render_smax(env_name, options, policy, seed, out, max_steps, deterministic)
    return _render_rgb(env_name, options, policy, seed, out, max_steps, deterministic)


def _play(env, policy, seed: int, max_steps: int | None, deterministic: bool, before_step=None, after_step=None
          ) -> tuple[int, float]:
    """Greedy (or sampled) steps from ``env.reset(seed)`` until the episode ends or ``max_steps``;
    ``before_step(action)`` / ``after_step()`` are called around every env step."""
    step = env.reset(seed=seed)
    policy.reset()
    t, total = 0, 0.0
    while max_steps is None or t < max_steps:
        action, _ = policy.act(step.obs, step.avail, deterministic=deterministic)
        if before_step is not None:
            before_step(action)
        step = env.step(action)
        t, total = t + 1, total + float(step.reward)
        if after_step is not None:
            after_step()
        if step.done:
            break
    return t, total


def _render_smax(env_name: str, options: dict[str, Any], policy, seed: int, out: str, max_steps: int | None,
                 deterministic: bool) -> dict[str, Any]:
    world, frames, env_steps, total, _ = smax_frames(env_name, options, policy, seed, max_steps, deterministic)
    write_smax_gif(world, frames, out)
    return {"path": str(out), "env_steps": env_steps, "frames": len(frames), "return": total}


def write_smax_gif(world, frames: list, out: str) -> None:
    """Draw :func:`smax_frames`' frames with JaxMARL's SMAX visualiser into the GIF ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from jaxmarl.viz.visualizer import SMAXVisualizer

    viz = SMAXVisualizer(world, frames)
    viz.have_expanded = True  # the frames are already the ticks
    try:
        with matplotlib.rc_context({"animation.writer": "pillow"}):  # a GIF needs no ffmpeg
            viz.animate(save_fname=str(out), view=False)
    finally:
        plt.close(viz.fig)


def smax_frames(env_name: str, options: dict[str, Any], policy, seed: int, max_steps: int | None = None,
                deterministic: bool = True):
    """Play the episode and replay each env step's world ticks. Returns ``(world, frames, env_steps,
    return, final_state)``: the JaxMARL env that draws, the visualiser's ``(key, state, attacks)``
    frames, and the adapter's SMAX state after the last step (which the last frame equals)."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from mabl.envs import make_env
    from mabl.envs.smax import SMAC_EPISODE_LIMITS, _import_jaxmarl

    env = make_env(env_name, seed=seed, options=options)
    adapter = getattr(env, "env", env)  # the SmaxEnv inside mabl's CheckedEnv
    if not hasattr(adapter, "_key") or not hasattr(adapter, "_env_state"):
        raise MablError(f"--render: the SMAX adapter of {env_name} does not expose its JAX state")
    jaxmarl = _import_jaxmarl()
    from jaxmarl.environments.smax import map_name_to_scenario
    from jaxmarl.environments.smax.smax_env import State as WorldState

    map_name = env_name.partition(":")[2]
    # the same JaxMARL env as the adapter's (mabl.envs.smax.SmaxEnv.__init__), for replaying and drawing
    world = jaxmarl.make("HeuristicEnemySMAX", scenario=map_name_to_scenario(map_name),
                         max_steps=SMAC_EPISODE_LIMITS[map_name],
                         walls_cause_death=adapter.options.get("walls") == "lethal")
    steps: list[tuple[Any, Any, dict]] = []

    def before_step(action) -> None:
        _, step_key = jax.random.split(adapter._key)  # the adapter's step key of this step
        acts = jnp.asarray(np.asarray(action), jnp.int32)
        steps.append((step_key, adapter._env_state, {agent: acts[i] for i, agent in enumerate(world.agents)}))

    env_steps, total = _play(env, policy, seed, max_steps, deterministic, before_step)
    frames = []
    for key, state, actions in steps:  # each env step's world ticks, replayed with the step's own key
        ticks = world.step_env(key, state, actions, get_state_sequence=True)
        ticks = [WorldState(*fields) for fields in zip(*dataclasses.astuple(ticks))]
        attacks = {agent: ticks[-1].prev_attack_actions[i] for i, agent in enumerate(world.all_agents)}
        frames += [(key, tick, attacks) for tick in [state.state, *ticks]]
    final = adapter._env_state.state
    env.close()
    return world, frames, env_steps, total, final


def _render_rgb(env_name: str, options: dict[str, Any], policy, seed: int, out: str, max_steps: int | None,
                deterministic: bool) -> dict[str, Any]:
    import os

    from PIL import Image

    from mabl.envs.checks import CheckedEnv
    from mabl.envs.registry import ALIASES

    family, _, task = ALIASES.get(env_name, env_name).partition(":")
    if family == "mamujoco":
        os.environ.setdefault("MUJOCO_GL", "egl")  # off-screen: no display needed
        from mabl.envs.mamujoco import make_mamujoco

        adapter = make_mamujoco(task.replace("+", "|"), seed=seed, render_mode="rgb_array", **options)
    else:
        from mabl.envs.pettingzoo import PettingZooEnv

        adapter = PettingZooEnv(task, seed=seed, render_mode="rgb_array")
    env = CheckedEnv(adapter)
    frames: list[np.ndarray] = []

    def grab() -> None:
        try:
            frame = adapter._env.render()  # the ParallelEnv inside the adapter
        except Exception as exc:  # a renderer without a display or GL backend
            raise MablError(f"--render: {env_name} could not draw a frame ({type(exc).__name__}: {exc}); "
                            "MuJoCo needs an off-screen GL backend (MUJOCO_GL=egl or osmesa)") from None
        if frame is not None:
            frames.append(np.asarray(frame, np.uint8))

    env_steps, total = _play(env, policy, seed, max_steps, deterministic, before_step=lambda _a: grab())
    grab()
    env.close()
    if not frames:
        raise MablError(f"--render: {env_name} gave no frames (its render_mode='rgb_array' returned None)")
    images = [Image.fromarray(f) for f in frames]
    images[0].save(out, save_all=True, append_images=images[1:], duration=100, loop=0)
    return {"path": str(out), "env_steps": env_steps, "frames": len(frames), "return": total}
