"""Independent PPO (``--algo ippo``): model-free MAPPO with each agent's critic on its own observation.

de Witt et al. 2020, "Is Independent Learning All You Need in the StarCraft Multi-Agent Challenge?";
Yu et al. 2022 run IPPO as their MAPPO code with ``use_centralized_V`` False (the critic then reads
the agent's local observation, ``onpolicy/runner/shared/base_runner.py``: ``share_observation_space``
= ``observation_space``). Everything else is :class:`mabl.algo.mappo.Mappo`: the shared
actor on the agent's observation and index, GAE, value normalisation, the clipped Huber value loss,
the divergence guard, the exported MLP policy, and the ``mappo`` config section (the same defaults).
The critic is :class:`mabl.models.mlp.LocalMlpCritic`: ``LayerNorm(o_i ++ onehot(i))`` -> MLP,
parameters shared over agents as the actor's.
"""

from __future__ import annotations

from mabl.algo.mappo import Mappo


class Ippo(Mappo):
    """:class:`Mappo` whose critic reads each agent's own observation, not the global state."""

    critic_input = "obs"
