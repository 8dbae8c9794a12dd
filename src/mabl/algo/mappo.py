"""Model-free MAPPO on real environment data (``--algo mappo``): the baseline without a world model.

Algorithm and hyperparameters: Yu et al. 2022, "The Surprising Effectiveness of PPO in Cooperative
Multi-Agent Games", MLP-policy variant. A shared
decentralized actor reads LayerNorm(own observation ++ one-hot agent index); a centralized critic
reads LayerNorm(global state ++ one-hot agent index) and gives one value per agent; both are
2-layer ReLU MLPs with orthogonal initialisation. Every hyperparameter comes from ``cfg.mappo``
(:class:`mabl.config.MappoConfig`), whose defaults are Yu et al.'s SMAC table: 8 envs, 3200 steps
per update, hidden 64, Adam lr 5e-4 eps 1e-5, 5 epochs, 1 minibatch, clip 0.2 (ratio and value),
entropy 0.01, gamma 0.99, GAE lambda 0.95, Huber delta 10, value normalisation, grad-norm clip 10.

Data layout: :meth:`Mappo.collect` plays rounds in which every env runs one whole episode,
all envs stepped in lockstep. Each episode becomes one column of a padded time-major batch:
arrays are ``[T, B, N, ...]`` (T the longest episode, B episodes in start order, N agents) with
``mask [T, B]`` True on real steps; column b starts at the episode's first step, so its last real
step is ``L_b - 1``. For GAE, values are ``[T+1, B, N]`` with ``value[L_b, b]`` the value of the
episode's final next state. A terminated episode is not bootstrapped (nothing follows its last
step); a truncated one (time limit) bootstraps from the value of its final next state. Padding
never enters a loss or a statistic: :meth:`Mappo.update` keeps only the valid rows and
shuffles those; a row is one env step and carries all N agents (agents stay a tensor axis).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from mabl.actions import action_distribution, to_env_action
from mabl.algo.guard import UpdateGuard, params_finite
from mabl.algo.optim import adam
from mabl.algo.ppo_loss import clipped_surrogate_loss, clipped_value_loss
from mabl.algo.returns import gae
from mabl.algo.value_norm import ValueNormalizer
from mabl.config import RunConfig
from mabl.envs.base import EnvSpec, MultiAgentEnv, TimeStep
from mabl.episode import Episode, collection_fault, env_call, episode_metrics
from mabl.errors import MablError
from mabl.mlp_policy import MlpPolicy
from mabl.models.mlp import LocalMlpCritic, MlpActor, MlpCritic
from mabl.policy_contract import check_actor_output

_ROW_DTYPES = {"obs": np.float32, "state": np.float32, "avail": bool, "action": np.int64, "reward": np.float32,
               "done": bool}
"""Episode row arrays as ``mabl.rollout.run_episode`` makes them (``done`` = terminated)."""


CRITIC_INPUTS = {"state": MlpCritic, "obs": LocalMlpCritic}
"""What the critic of a model-free PPO learner reads -> its network: ``state`` = the global state
(MAPPO's centralized critic), ``obs`` = each agent's own observation (IPPO, :mod:`mabl.algo.ippo`)."""


class Batch(NamedTuple):
    """One update's data, per-episode padded and time-major (module docstring)."""

    obs: torch.Tensor  # [T, B, N, O]
    state: torch.Tensor  # [T, B, G]
    avail: torch.Tensor | None  # [T, B, N, A] bool (True on padding), None without action masks
    action: torch.Tensor  # [T, B, N] int64, or [T, B, N, D] raw Gaussian samples (continuous)
    log_prob: torch.Tensor  # [T, B, N] log-prob of the action when sampled
    value: torch.Tensor  # [T, B, N] critic output at collection (normalised space when value_norm)
    advantage: torch.Tensor  # [T, B, N] GAE, zero on padding
    returns: torch.Tensor  # [T, B, N] value targets in real scale, zero on padding
    mask: torch.Tensor  # [T, B] bool, True on real steps


def _pad(arrays: list[np.ndarray], length: int, fill: Any = 0) -> np.ndarray:
    """Stack ``[L_b, ...]`` arrays into ``[length, B, ...]``, ``fill`` after each one's end."""
    out = np.full((length, len(arrays), *arrays[0].shape[1:]), fill, dtype=arrays[0].dtype)
    for b, array in enumerate(arrays):
        out[: len(array), b] = array
    return out


class UpdateStats:
    """An update's metrics: per minibatch the actor and critic losses, the entropy, the approximate KL
    and the clip fraction, summed over the steps the divergence guard applied (:mod:`mabl.algo.guard`);
    :meth:`means` divides by the applied steps and counts the skipped ones."""

    NAMES = ("actor_loss", "critic_loss", "entropy", "approx_kl", "clip_fraction")

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(5, device=device)
        self.applied = torch.zeros(2, device=device)  # actor, critic steps
        self.count = 0

    def add(self, actor_loss: torch.Tensor, critic_loss: torch.Tensor, entropy: torch.Tensor, kl: torch.Tensor,
            clip_fraction: torch.Tensor, actor_ok: torch.Tensor, critic_ok: torch.Tensor) -> None:
        """One minibatch's values; ``actor_ok``, ``critic_ok``: device flags, True where the step was applied."""
        values = torch.stack([actor_loss.detach(), critic_loss.detach(), entropy.detach(), kl, clip_fraction])
        ok = torch.stack([actor_ok, critic_ok, actor_ok, actor_ok, actor_ok])
        self.sums += torch.where(ok, values, 0.0)
        self.applied += torch.stack([actor_ok, critic_ok]).float()
        self.count += 1

    def means(self) -> dict[str, torch.Tensor]:
        """Each metric's mean over its applied steps, and ``actor_skipped``, ``critic_skipped``."""
        means = self.sums / self.applied[[0, 1, 0, 0, 0]]
        out = dict(zip(self.NAMES, means.unbind()))
        out["actor_skipped"], out["critic_skipped"] = (self.count - self.applied).unbind()
        return out


class Mappo:
    """Actor, critic, their Adam optimizers and the value normaliser; ``collect`` then ``update``."""

    _LEARNER_ROWS: tuple[str, ...] = ("sample", "log_prob")
    """Per-step records the update needs that an :class:`Episode` does not hold."""

    critic_input = "state"
    """The batch field the critic reads (a key of :data:`CRITIC_INPUTS`): the global state (MAPPO)."""

    def __init__(self, spec: EnvSpec, cfg: RunConfig, device: torch.device | str):
        self.spec, self.cfg, self.device = spec, cfg.mappo, torch.device(device)
        c = self.cfg
        self.actor, self.critic = (net.to(self.device) for net in self._networks(spec))
        self.actor_opt = adam(self.actor.parameters(), lr=c.lr, eps=c.adam_eps)
        self.critic_opt = adam(self.critic.parameters(), lr=c.lr, eps=c.adam_eps)
        self.value_norm = ValueNormalizer(device=self.device)
        hint = f"try a lower --mappo.lr (now {c.lr:g}) or --mappo.grad_clip (now {c.grad_clip:g})"
        self.guards = {"actor": UpdateGuard("actor", self.device, hint),
                       "critic": UpdateGuard("critic", self.device, hint)}
        """The divergence guard of each learner (:mod:`mabl.algo.guard`), read by the trainer."""
        self._row_dtypes = {**_ROW_DTYPES, "action": np.int64 if spec.discrete else np.float32}

    def _networks(self, spec: EnvSpec) -> tuple[nn.Module, nn.Module]:
        """The actor and the critic (built before the optimizers, in this order)."""
        return MlpActor(spec, self.cfg.hidden, self.cfg.init_std), CRITIC_INPUTS[self.critic_input](spec, self.cfg.hidden)

    @staticmethod
    def n_envs(cfg: RunConfig) -> int:
        """``mappo.n_envs`` envs in lockstep (Yu et al.'s rollout threads)."""
        return cfg.mappo.n_envs

    def _tensor(self, array: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.as_tensor(array, dtype=dtype, device=self.device)

    def _play_round(self, envs: list[MultiAgentEnv], next_seed: Callable[[], int]
                    ) -> list[tuple[dict[str, list], TimeStep]]:
        """One episode in every env, in lockstep: one batched actor call per step over the live envs.

        Returns per env its step lists and its final TimeStep. Actions are sampled with torch's global
        RNG (of the learner's device), so restoring the RNG state from a checkpoint reproduces them.
        """

        seeds = [next_seed() for _ in envs]
        steps = []
        for e, env in enumerate(envs):
            steps.append(env_call(env, "reset", seeds[e], 0, seeds[e]))
        keys = ["obs", "state", "action", *self._LEARNER_ROWS, "reward", "done"] + (
            ["avail"] if self.spec.has_action_mask else [])
        logs: list[dict[str, list]] = [{k: [] for k in keys} for _ in envs]
        live = list(range(len(envs)))
        while live:
            obs = self._tensor(np.stack([steps[e].obs for e in live]))
            avail = self._tensor(np.stack([steps[e].avail for e in live]), torch.bool) if "avail" in keys else None
            t = len(logs[live[0]]["reward"])  # the live envs are all at the same step of their episodes
            try:
                out, extras = self._policy_output(obs, avail, live)
                check_actor_output(out)
            except MablError as exc:
                raise collection_fault("the policy", exc, f"at step {t} of the episodes with seeds "
                                       f"{[seeds[e] for e in live]}") from None
            if self.actor.continuous:  # raw Gaussian sample u for PPO, the clipped and scaled one for the env
                dist = action_distribution(out, self.actor.log_std)
                sample = dist.sample()  # [E, N, D]
                log_prob = dist.log_prob(sample)
                action = to_env_action(sample, self.spec.action_low, self.spec.action_high)
            else:
                log_probs = out.log_softmax(-1)  # [E, N, A]
                action = sample = torch.multinomial(log_probs.exp().flatten(0, 1), 1).view(len(live), -1)
                log_prob = log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)
            action_np, sample_np, log_prob_np = action.cpu().numpy(), sample.cpu().numpy(), log_prob.cpu().numpy()
            for k, e in enumerate(live):
                ts = steps[e]
                nxt = env_call(envs[e], "step", seeds[e], t + 1, action_np[k])
                row = {"obs": ts.obs, "state": ts.state, "avail": ts.avail, "action": action_np[k],
                       "sample": sample_np[k], "log_prob": log_prob_np[k], "reward": nxt.reward,
                       "done": nxt.terminated, **{name: value[k] for name, value in extras.items()}}
                for key, values in logs[e].items():
                    values.append(row[key])
                steps[e] = nxt
            live = [e for e in live if not steps[e].done]
        return list(zip(logs, steps))

    def _policy_output(self, obs: torch.Tensor, avail: torch.Tensor | None, live: list[int]
                       ) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """The actor's output for the live envs' step (masked logits, or the Gaussian mean) and the
        extra per-step records of :data:`_LEARNER_ROWS` (name -> ``[E, ...]``; none for the MLP actor)."""
        return self.actor(obs, avail), {}

    @torch.no_grad()
    def collect(self, envs: list[MultiAgentEnv], next_seed: Callable[[], int]) -> tuple[list[Episode], Batch]:
        """Rounds of one episode per env until the episodes hold ``rollout_steps`` env steps.

        Every env is reset with ``next_seed()`` at each round start (in env order); envs that finish
        early wait for the round's end. Returns the ``mabl.rollout.Episode`` list in start order and
        the padded :class:`Batch` (column b = episode b) with GAE advantages and returns.
        """
        # imported here, so that mabl.policy (which mabl.rollout imports) may import this module

        episodes: list[Episode] = []
        records: dict[str, list[np.ndarray]] = {k: [] for k in self._LEARNER_ROWS}
        finals: list[np.ndarray] = []  # the critic's input at each episode's final next step
        while sum(ep.length for ep in episodes) < self.cfg.rollout_steps:
            for log, final in self._play_round(envs, next_seed):
                rows = {k: np.asarray(v, self._row_dtypes[k]) for k, v in log.items() if k not in records}
                info = final.info or {}
                win = bool(info["win"]) if "win" in info else None
                length = len(log["reward"])
                episodes.append(Episode(rows, bool(final.terminated), float(sum(log["reward"])), length, win,
                                        episode_metrics(info)))
                for key, values in records.items():
                    values.append(np.asarray(log[key], self._row_dtypes["action"] if key == "sample" else np.float32))
                finals.append(np.asarray(getattr(final, self.critic_input), np.float32))
        return episodes, self._batch(episodes, records, finals)

    def _batch(self, episodes: list[Episode], records: dict[str, list[np.ndarray]], finals: list[np.ndarray]) -> Batch:
        """Pad the episodes into columns, evaluate the critic once on all its inputs, run GAE.

        ``records["sample"]``: the actions as the actor drew them (the raw Gaussian sample for continuous
        actions, :mod:`mabl.actions`; the index itself for discrete ones), ``records["log_prob"]`` their
        log-probabilities then, per episode. ``finals``: per episode
        the critic's input (``critic_input``: state or observations) at its final next step.
        """
        length = max(ep.length for ep in episodes)
        col = lambda key: [ep.rows[key] for ep in episodes]
        key = self.critic_input
        inputs = [np.concatenate([ep.rows[key], x[None]]) for ep, x in zip(episodes, finals)]
        input_next = self._tensor(_pad(inputs, length + 1))  # [T+1, B, G] or [T+1, B, N, O], row L_b = final next
        raw_value = self.critic(input_next)  # [T+1, B, N]
        fields = {"obs": self._tensor(_pad(col("obs"), length)), "state": self._tensor(_pad(col("state"), length)),
                  key: input_next[:-1]}
        return Batch(**fields, **self._padded(episodes, records, raw_value, length))

    def _padded(self, episodes: list[Episode], records: dict[str, list[np.ndarray]], raw_value: torch.Tensor,
                length: int) -> dict[str, torch.Tensor | None]:
        """The :class:`Batch` fields but ``obs`` and ``state``, padded to ``length`` steps: ``avail``, the
        recorded ``action`` samples and ``log_prob``, ``value`` (``raw_value [T+1, B, N]``, the critic's
        output on every step and each episode's final next step, less its last row), GAE's
        ``advantage`` and ``returns`` from the denormalised values, and ``mask``."""
        col = lambda key: [ep.rows[key] for ep in episodes]
        mask = self._tensor(_pad([np.ones(ep.length, bool) for ep in episodes], length, False), torch.bool)
        value = self.value_norm.denormalize(raw_value) if self.cfg.value_norm else raw_value
        advantage, returns = gae(self._tensor(_pad(col("reward"), length)), value,
                                 self._tensor(_pad(col("done"), length, False), torch.bool), mask,
                                 self.cfg.gamma, self.cfg.gae_lambda)
        avail = None
        if self.spec.has_action_mask:
            avail = self._tensor(_pad(col("avail"), length, True), torch.bool)
        return {"avail": avail,
                "action": self._tensor(_pad(records["sample"], length),
                                       torch.int64 if self.spec.discrete else torch.float32),
                "log_prob": self._tensor(_pad(records["log_prob"], length)), "value": raw_value[:-1],
                "advantage": advantage, "returns": returns, "mask": mask}

    def _minibatches(self, n: int, epochs: int) -> Iterator[torch.Tensor]:
        """``epochs`` shuffles of ``n`` items (torch's global RNG), each split into ``mappo.minibatches``
        index sets; an empty set (more minibatches than items) is left out."""
        for _ in range(epochs):
            for index in torch.randperm(n, device=self.device).tensor_split(self.cfg.minibatches):
                if len(index) > 0:
                    yield index

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``epochs`` x ``minibatches`` shuffled minibatches of valid env-step rows (each with all agents).

        Per minibatch one actor step (clipped surrogate, advantages normalised once over the valid
        rows of the whole batch) and one critic step (clipped Huber value loss, in normalised space
        when value_norm; the normaliser takes this batch's returns once, before the epochs). Returns
        detached means over minibatches and ``samples`` = valid rows x epochs.
        """
        c = self.cfg
        valid = batch.mask.flatten().nonzero().squeeze(1)
        rows = {k: v.flatten(0, 1)[valid] for k, v in batch._asdict().items() if v is not None and k != "mask"}
        advantage = rows["advantage"]
        advantage = (advantage - advantage.mean()) / (advantage.std(correction=0) + 1e-5)
        target = rows["returns"]
        if c.value_norm:
            self.value_norm.update(target)
            target = self.value_norm.normalize(target)
        n_rows = rows["action"].shape[0]
        stats = UpdateStats(self.device)
        for index in self._minibatches(n_rows, c.epochs):
            avail = rows["avail"][index] if "avail" in rows else None
            obs = rows["obs"][index]
            policy = self.actor.dist(obs) if self.actor.continuous else self.actor(obs, avail)
            actor_loss, entropy, kl, clip_fraction = clipped_surrogate_loss(
                policy, rows["action"][index], rows["log_prob"][index],
                advantage[index], c.clip, c.entropy)
            actor_ok = ~self._step("actor", self.actor_opt, self.actor, actor_loss,
                                   {"policy/entropy": entropy, "policy/approx_kl": kl})
            critic_loss = clipped_value_loss(self.critic(rows[self.critic_input][index]), rows["value"][index],
                                             target[index], c.clip, c.huber_delta)
            critic_ok = ~self._step("critic", self.critic_opt, self.critic, critic_loss)
            stats.add(actor_loss, critic_loss, entropy, kl, clip_fraction, actor_ok, critic_ok)
        out = stats.means()
        out["samples"] = torch.tensor(float(n_rows * c.epochs), device=self.device)
        return out

    def _step(self, learner: str, optimizer: torch.optim.Optimizer, module: nn.Module, loss: torch.Tensor,
              terms: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """One guarded step (:mod:`mabl.algo.guard`); returns the device flag 'skipped'."""
        return self.guards[learner].step(optimizer, module.parameters(), loss, self.cfg.grad_clip, terms)[1]

    def params_finite(self) -> dict[str, torch.Tensor]:
        """Per network, a device bool: all its weights (the critic's: and the value normaliser) are finite."""
        return {"actor": params_finite([self.actor]),
                "critic": params_finite([self.critic]) & torch.isfinite(self.value_norm.mean_sq)}

    def policy(self) -> MlpPolicy:
        """An acting object over the live actor (sees later updates)."""
        return MlpPolicy(self.actor, self.spec, self.device)

    def policy_payload(self, cfg: RunConfig) -> dict[str, Any]:
        """Export hook (:mod:`mabl.algo.contract`): the policy file (:meth:`MlpPolicy.to_payload`)."""
        return MlpPolicy(self.actor, self.spec, self.device, algo=cfg.algo).to_payload()

    def state_dict(self) -> dict[str, Any]:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "value_norm": self.value_norm.state_dict(),
                "guards": {k: g.state_dict() for k, g in self.guards.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.value_norm.load_state_dict(state["value_norm"])
        for key, guard in self.guards.items():  # (checkpoints from before the guard have none)
            guard.load_state_dict(state.get("guards", {}).get(key))
