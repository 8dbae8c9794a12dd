"""Recurrent MAPPO (``--algo rmappo``): Yu et al. 2022's MAPPO with GRU actor and critic.

Yu et al., "The Surprising Effectiveness of PPO in Cooperative Multi-Agent Games" (NeurIPS 2022
Datasets and Benchmarks), as marlbenchmark/on-policy runs it on SMAC (``onpolicy/algorithms/r_mappo``,
``utils/shared_buffer.py`` ``recurrent_generator``, ``runner/shared/smac_runner.py``). Networks:
:mod:`mabl.models.gru`. What is :class:`mabl.algo.mappo.Mappo`'s is reused: collection of whole
episodes from ``mappo.n_envs`` envs in lockstep, GAE, the value normaliser, the clipped surrogate
and clipped Huber value losses, the divergence guard, and the ``mappo`` config section (lr, clip,
entropy, ...); the ``rmappo`` section holds what differs (chunk length, epochs, active masks).

Recurrent state. Each env's actor GRU state starts at zero with its episode and is carried from
step to step of the collection; the state entering every step is recorded with the step (their
buffer's ``rnn_states``). The critic's states are those of one pass of the critic over each whole
episode after collection (the critic does not change while collecting, so these are the states
their collection-time critic pass carries), together with the values GAE reads.

Chunks (their ``recurrent_generator``, ``data_chunk_length``): every episode is cut into chunks of
``rmappo.chunk_length`` consecutive steps from its first step (the last chunk padded); a chunk
holds all N agents and starts from the recorded states of its first step. An update runs
``rmappo.epochs`` epochs, each over ``mappo.minibatches`` shuffled minibatches of chunks, the
networks re-run over each chunk from its recorded start state.

Active masks (their ``active_masks``, ``smac_runner.py`` lines 141-143): an agent is inactive at a
step where it is dead. SMAX (and SMAC) mark a dead ally by an all-zero observation with exactly one
available action (SMAX: ``get_avail_actions`` clears the move actions of a dead unit and the
observation of a dead unit is zeros; a live unit always has its four moves and its own health in
its observation), so that is the rule here; an env without action masks has every agent active.
Inactive agent-steps always leave the advantage mean and std (theirs), the policy loss and the
entropy with ``rmappo.policy_active_masks`` (on), the value loss with ``rmappo.value_active_masks``
(off, as in their SMAC scripts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from mabl.algo.mappo import Batch, Mappo, UpdateStats, _pad
from mabl.algo.ppo_loss import clipped_surrogate_loss, clipped_value_loss
from mabl.config import RunConfig
from mabl.envs.base import EnvSpec, MultiAgentEnv, TimeStep
from mabl.episode import Episode
from mabl.gru_policy import GruPolicy
from mabl.models.gru import GruActor, GruCritic

RecurrentBatch = NamedTuple("RecurrentBatch", [
    *Batch.__annotations__.items(),  # the fields of mabl.algo.mappo.Batch, as its comments say
    ("active", "torch.Tensor"),  # [T, B, N] bool, True where the agent is alive on a real step
    ("h_actor", "torch.Tensor"),  # [T, B, N, H] actor GRU state entering each step (recorded at collection)
    ("h_critic", "torch.Tensor"),  # [T, B, N, H] critic GRU state entering each step
])
RecurrentBatch.__doc__ = """One update's data: the episodes padded time-major to a multiple of the chunk length;
the fields of :class:`mabl.algo.mappo.Batch`, then the active agents and the recorded GRU states."""


def active_agents(obs: torch.Tensor, avail: torch.Tensor | None) -> torch.Tensor:
    """``[..., N]`` True where the agent is alive: not (all-zero observation and one available action)."""
    if avail is None:
        return torch.ones(obs.shape[:-1], dtype=torch.bool, device=obs.device)
    return ~((obs == 0).all(-1) & (avail.sum(-1) == 1))


def chunk_starts(lengths: list[int], chunk: int) -> list[tuple[int, int]]:
    """``(t0, b)`` of every chunk: episode b of length ``L_b`` gives ``t0 = 0, chunk, ... < L_b``."""
    return [(t0, b) for b, length in enumerate(lengths) for t0 in range(0, length, chunk)]


class Chunks(NamedTuple):
    """The chunks of one update, time-major: every field of :class:`RecurrentBatch` but the states as
    ``[C, K, ...]`` (C the chunk length, K chunks), the states entering each chunk ``[K, N, H]``."""

    fields: dict[str, torch.Tensor]
    h_actor: torch.Tensor
    h_critic: torch.Tensor
    first: torch.Tensor  # [C, K] bool, True on an episode's first step


def make_chunks(batch: RecurrentBatch, chunk: int) -> Chunks:
    """Cut every episode (column) of ``batch`` into chunks of ``chunk`` steps from its first step;
    ``batch`` is padded to a multiple of ``chunk`` steps (:meth:`Rmappo._batch`)."""
    device = batch.mask.device
    starts = torch.tensor(chunk_starts(batch.mask.sum(0).tolist(), chunk), device=device).reshape(-1, 2)
    steps = starts[:, 0] + torch.arange(chunk, device=device).unsqueeze(1)  # [C, K]
    cols = starts[:, 1].expand_as(steps)
    fields = {k: v[steps, cols] for k, v in batch._asdict().items() if v is not None and not k.startswith("h_")}
    return Chunks(fields, batch.h_actor[starts[:, 0], starts[:, 1]], batch.h_critic[starts[:, 0], starts[:, 1]],
                  steps == 0)


class Rmappo(Mappo):
    """:class:`Mappo` with GRU actor and critic trained on chunks of recorded sequences."""

    _LEARNER_ROWS = ("sample", "log_prob", "h")

    def __init__(self, spec: EnvSpec, cfg: RunConfig, device: torch.device | str):
        super().__init__(spec, cfg, device)
        self.rcfg = cfg.rmappo
        self._h: torch.Tensor | None = None  # [E, N, H] actor state of each env during a round

    def _networks(self, spec: EnvSpec) -> tuple[GruActor, GruCritic]:
        return GruActor(spec, self.cfg.hidden, self.cfg.init_std), GruCritic(spec, self.cfg.hidden)

    def _play_round(self, envs: list[MultiAgentEnv], next_seed: Callable[[], int]
                    ) -> list[tuple[dict[str, list], TimeStep]]:
        self._h = torch.zeros(len(envs), self.spec.n_agents, self.actor.hidden, device=self.device)
        return super()._play_round(envs, next_seed)

    def _policy_output(self, obs: torch.Tensor, avail: torch.Tensor | None, live: list[int]
                       ) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """One GRU step of the live envs from their carried states; records the entering state ``h``."""
        index = torch.as_tensor(live, device=self.device)
        h = self._h[index]
        out, self._h[index] = self.actor.policy_step(obs, h, avail)
        return out, {"h": h.cpu().numpy()}

    def _batch(self, episodes: list[Episode], records: dict[str, list[np.ndarray]],
               finals: list[np.ndarray]) -> RecurrentBatch:
        """Pad to a multiple of the chunk length, run the critic over every episode, run GAE."""
        chunk = self.rcfg.chunk_length
        length = -(-max(ep.length for ep in episodes) // chunk) * chunk
        states = [np.concatenate([ep.rows["state"], x[None]]) for ep, x in zip(episodes, finals)]
        state_next = self._tensor(_pad(states, length + 1))  # [T+1, B, G], row L_b = the final next state
        first = torch.zeros(length + 1, len(episodes), dtype=torch.bool, device=self.device)
        first[0] = True
        raw_value, h_critic = self.critic.value_states(state_next, first)  # [T+1, B, N], [T+1, B, N, H]
        fields = self._padded(episodes, records, raw_value, length)
        obs = self._tensor(_pad([ep.rows["obs"] for ep in episodes], length))
        active = active_agents(obs, fields["avail"]) & fields["mask"].unsqueeze(-1)
        return RecurrentBatch(obs=obs, state=state_next[:-1], **fields, active=active,
                              h_actor=self._tensor(_pad(records["h"], length)), h_critic=h_critic[:-1])

    def update(self, batch: RecurrentBatch) -> dict[str, torch.Tensor]:
        """``rmappo.epochs`` x ``mappo.minibatches`` shuffled minibatches of chunks (module docstring).

        Advantages are normalised once over the active agent-steps; the value normaliser takes the
        returns of the real steps once, before the epochs. Per minibatch one actor step (clipped
        surrogate and entropy over the active agent-steps of its chunks) and one critic step
        (clipped Huber value loss over the real steps, or the active ones with
        ``rmappo.value_active_masks``). Returns the metrics of :meth:`Mappo.update`.
        """
        c, r = self.cfg, self.rcfg
        cut = make_chunks(batch, r.chunk_length)
        chunks, h0, first = cut.fields, {"actor": cut.h_actor, "critic": cut.h_critic}, cut.first
        valid = chunks["mask"]
        policy_rows = chunks["active"] if r.policy_active_masks else valid.unsqueeze(-1).expand_as(chunks["active"])
        value_rows = chunks["active"] if r.value_active_masks else valid.unsqueeze(-1).expand_as(chunks["active"])
        advantage = chunks["advantage"]
        live = batch.active
        mean, std = batch.advantage[live].mean(), batch.advantage[live].std(correction=0)
        advantage = (advantage - mean) / (std + 1e-5)
        target = chunks["returns"]
        if c.value_norm:
            self.value_norm.update(batch.returns[batch.mask])
            target = self.value_norm.normalize(target)
        stats = UpdateStats(self.device)
        for index in self._minibatches(first.shape[1], r.epochs):  # minibatches of chunks
            avail = chunks["avail"][:, index] if "avail" in chunks else None
            out = self.actor.policy_sequence(chunks["obs"][:, index], h0["actor"][index], first[:, index], avail)
            rows = policy_rows[:, index]
            policy = self.actor.dist(out[rows]) if self.actor.continuous else out[rows]
            actor_loss, entropy, kl, clip_fraction = clipped_surrogate_loss(
                policy, chunks["action"][:, index][rows], chunks["log_prob"][:, index][rows],
                advantage[:, index][rows], c.clip, c.entropy)
            actor_ok = ~self._step("actor", self.actor_opt, self.actor, actor_loss,
                                   {"policy/entropy": entropy, "policy/approx_kl": kl})
            values = self.critic.value_sequence(chunks["state"][:, index], h0["critic"][index], first[:, index])
            rows = value_rows[:, index]
            critic_loss = clipped_value_loss(values[rows], chunks["value"][:, index][rows],
                                             target[:, index][rows], c.clip, c.huber_delta)
            critic_ok = ~self._step("critic", self.critic_opt, self.critic, critic_loss)
            stats.add(actor_loss, critic_loss, entropy, kl, clip_fraction, actor_ok, critic_ok)
        out = stats.means()
        out["samples"] = (batch.mask.sum() * r.epochs).float()
        return out

    def policy(self) -> GruPolicy:
        """An acting object over the live actor (sees later updates)."""
        return GruPolicy(self.actor, self.spec, self.device)

    def policy_payload(self, cfg: RunConfig) -> dict[str, Any]:
        """Export hook (:mod:`mabl.algo.contract`): the policy file (:meth:`GruPolicy.to_payload`)."""
        return GruPolicy(self.actor, self.spec, self.device, algo=cfg.algo).to_payload()
