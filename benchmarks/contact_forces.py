"""Magnitudes of mamujoco:Humanoid-9|8 observations under uniform random actions, for each
``--mamujoco.contact_forces`` reading (docs/ENVIRONMENTS.md, MAMuJoCo).

    python benchmarks/contact_forces.py [--steps 2000]
"""

from __future__ import annotations

import argparse

import numpy as np

from mabl.envs import make_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    for reading in ("v5", "zero"):
        env = make_env("mamujoco:Humanoid-9|8", seed=0, options={"contact_forces": reading})
        rng = np.random.default_rng(0)
        timestep, magnitudes = env.reset(0), []
        for _ in range(args.steps):
            timestep = env.step(rng.uniform(-0.4, 0.4, (2, 9)).astype(np.float32))
            magnitudes.append(np.abs(timestep.obs))
            if timestep.done:
                timestep = env.reset()
        obs = np.stack(magnitudes)
        print(f"{reading}: max |obs| {obs.max():.0f}, mean {obs.mean():.2f}, "
              f"observation entries whose max exceeds 10: {int((obs.max(axis=0) > 10).sum())}")
        env.close()


if __name__ == "__main__":
    main()
