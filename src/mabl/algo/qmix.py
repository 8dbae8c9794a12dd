"""QMIX (``--algo qmix``): Rashid et al. 2018, "QMIX: Monotonic Value Function Factorisation for Deep
Multi-Agent Reinforcement Learning", as oxwhirl/pymarl runs it on SMAC (settings: ``cfg.qmix``,
:class:`mabl.config.QmixConfig`; every setting with its pymarl file and line: docs/ALGORITHM.md, "QMIX").

Off-policy learning in the on-policy loop of :class:`mabl.algo.contract.OnPolicyLearner`. pymarl's
``run.py`` (lines 163-179) repeats: play one episode with epsilon-greedy actions, insert it into an
episode replay, and once the replay holds ``batch_size`` episodes make one gradient step on that many
episodes sampled uniformly. Here :meth:`Qmix.collect` is that episode (``n_envs`` = 1 env), stored in
the learner's own :class:`EpisodeReplay`; :meth:`Qmix.update` is that step (its ``batch`` argument is
unused: the data come from the replay). While the replay holds fewer than ``batch_episodes`` episodes,
``update`` makes no step and returns only ``samples`` = 0 (the trainer then logs no learner line).
The env-step counter of the epsilon schedule, the episode counter of the target updates, the replay
and the replay's random generator are the learner's state (:meth:`Qmix.state_dict`), so a resumed run
continues exactly.

Time layout of a batch (time-major, padded): episode b of length L_b stores rows 0..L_b of
observation, state and available actions (row L_b = the final next step, pymarl's ``last_data``,
``episode_runner.py`` lines 82-87) and rows 0..L_b-1 of action and reward. The TD error of step t
compares Q_tot(s_t, a_t) with ``r_t + gamma (1 - terminated_t) Q_tot^-(s_{t+1}, a*)`` where
``terminated_t`` is 1 only on the last step of an episode the env terminated: an episode cut by the
time limit (truncated) bootstraps from its final next step (pymarl stores ``terminated != episode_limit``,
``episode_runner.py`` line 75). Steps t >= L_b are padding and enter no loss: pymarl's mask
``filled[:, :-1]`` with the steps after a termination removed (``q_learner.py`` lines 42-43) keeps
exactly the steps 0..L_b-1 of each episode.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from mabl.algo.guard import UpdateGuard, params_finite
from mabl.algo.optim import adam
from mabl.config import RunConfig
from mabl.envs.base import EnvSpec, MultiAgentEnv
from mabl.episode import Episode, collection_fault, env_call, episode_metrics
from mabl.errors import MablError
from mabl.models.qmix import QAgent, QMixer, agent_inputs
from mabl.policy_contract import check_actor_output
from mabl.qmix_policy import QAgentShape, QmixPolicy

UNAVAILABLE_Q = -9999999.0
"""What the targets put in place of an unavailable action's Q-value before the max (pymarl
``q_learner.py`` lines 68 and 74)."""


def epsilon_at(cfg, env_step: int) -> float:
    """pymarl's linear ``DecayThenFlatSchedule`` (``epsilon_schedules.py`` lines 21-23):
    ``max(finish, start - (start - finish) / anneal * env_step)``."""
    delta = (cfg.epsilon_start - cfg.epsilon_finish) / cfg.epsilon_anneal_steps
    return max(cfg.epsilon_finish, cfg.epsilon_start - delta * env_step)


class EpisodeRecord(NamedTuple):
    """One stored episode of length L (module docstring)."""

    obs: np.ndarray  # [L+1, N, O] float32
    state: np.ndarray  # [L+1, G] float32
    avail: np.ndarray  # [L+1, N, A] bool
    action: np.ndarray  # [L, N] int64
    reward: np.ndarray  # [L] float32
    terminated: bool  # the env terminated it (False: truncated by the time limit)


class EpisodeReplay:
    """pymarl's ``ReplayBuffer`` (``episode_buffer.py``): a ring of ``capacity`` whole episodes, the
    newest overwriting the oldest; ``sample`` draws ``n`` distinct stored episodes uniformly (all of
    them, in slot order, when exactly ``n`` are stored, as pymarl's ``sample``)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.slots: list[EpisodeRecord] = []
        self.pos = 0  # the slot the next episode goes to

    def __len__(self) -> int:
        return len(self.slots)

    def add(self, episode: EpisodeRecord) -> None:
        if len(self.slots) < self.capacity:
            self.slots.append(episode)
        else:
            self.slots[self.pos] = episode
        self.pos = (self.pos + 1) % self.capacity

    def sample(self, n: int, rng: np.random.Generator) -> list[EpisodeRecord]:
        if len(self.slots) == n:
            return list(self.slots)
        return [self.slots[i] for i in rng.choice(len(self.slots), n, replace=False)]

    def state_dict(self) -> dict[str, Any]:
        """The stored episodes in slot order as concatenated tensors plus their lengths (rows held only,
        for ``torch.load(weights_only=True)``)."""
        lengths = [len(ep.reward) for ep in self.slots]
        cat = lambda key: torch.from_numpy(np.concatenate([getattr(ep, key) for ep in self.slots]))
        arrays = {key: cat(key) for key in ("obs", "state", "avail", "action", "reward")} if self.slots else {}
        return {"capacity": self.capacity, "pos": self.pos, "lengths": torch.tensor(lengths, dtype=torch.int64),
                "terminated": torch.tensor([ep.terminated for ep in self.slots], dtype=torch.bool), "arrays": arrays}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"episode replay capacity {state['capacity']} != {self.capacity}")
        lengths = state["lengths"].tolist()
        steps = np.cumsum([0, *lengths])
        rows = np.cumsum([0, *(n + 1 for n in lengths)])  # obs, state, avail hold L+1 rows
        arrays = {k: v.numpy() for k, v in state["arrays"].items()}
        self.slots = [EpisodeRecord(arrays["obs"][rows[i]:rows[i + 1]], arrays["state"][rows[i]:rows[i + 1]],
                                    arrays["avail"][rows[i]:rows[i + 1]], arrays["action"][steps[i]:steps[i + 1]],
                                    arrays["reward"][steps[i]:steps[i + 1]], bool(state["terminated"][i]))
                      for i in range(len(lengths))]
        self.pos = state["pos"]


class Batch(NamedTuple):
    """Sampled episodes, padded and time-major (module docstring)."""

    obs: torch.Tensor  # [T+1, B, N, O]
    state: torch.Tensor  # [T+1, B, G]
    avail: torch.Tensor  # [T+1, B, N, A] bool (True on padding)
    action: torch.Tensor  # [T, B, N] int64 (0 on padding)
    reward: torch.Tensor  # [T, B]
    terminated: torch.Tensor  # [T, B] float, 1 on the last step of a terminated episode
    mask: torch.Tensor  # [T, B] bool, True on the steps 0..L_b-1


def pad_batch(episodes: list[EpisodeRecord], device: torch.device) -> Batch:
    """Stack stored episodes into a :class:`Batch` (T = the longest episode's length)."""
    lengths = [len(ep.reward) for ep in episodes]
    t_max, b = max(lengths), len(episodes)
    first = episodes[0]
    obs = np.zeros((t_max + 1, b, *first.obs.shape[1:]), np.float32)
    state = np.zeros((t_max + 1, b, first.state.shape[1]), np.float32)
    avail = np.ones((t_max + 1, b, *first.avail.shape[1:]), bool)
    action = np.zeros((t_max, b, first.action.shape[1]), np.int64)
    reward = np.zeros((t_max, b), np.float32)
    terminated = np.zeros((t_max, b), np.float32)
    mask = np.zeros((t_max, b), bool)
    for i, (ep, n) in enumerate(zip(episodes, lengths)):
        obs[: n + 1, i], state[: n + 1, i], avail[: n + 1, i] = ep.obs, ep.state, ep.avail
        action[:n, i], reward[:n, i], mask[:n, i] = ep.action, ep.reward, True
        terminated[n - 1, i] = float(ep.terminated)
    tensor = lambda x: torch.as_tensor(x, device=device)
    return Batch(tensor(obs), tensor(state), tensor(avail), tensor(action), tensor(reward), tensor(terminated),
                 tensor(mask))


def td_targets(live_q: torch.Tensor, target_q: torch.Tensor, avail: torch.Tensor, reward: torch.Tensor,
               terminated: torch.Tensor, next_state: torch.Tensor, target_mixer: Callable, gamma: float,
               double_q: bool) -> torch.Tensor:
    """The 1-step targets ``y_t = r_t + gamma (1 - terminated_t) Q_tot^-(s_{t+1}, a*_{t+1})``, pymarl
    ``q_learner.py`` lines 64-86 (no gradient).

    ``live_q``, ``target_q`` ``[T+1, B, N, A]``: the live and target agent networks' Q-values on rows
    0..T; ``avail [T+1, B, N, A]``; ``reward``, ``terminated`` ``[T, B]``; ``next_state [T, B, G]``.
    Double Q: a*_{t+1} = argmax of the live Q-values over the available actions, valued by the target
    network; else the target network's max over the available actions. Returns ``[T, B]``."""
    with torch.no_grad():
        next_avail = avail[1:]
        target_next = target_q[1:].masked_fill(~next_avail, UNAVAILABLE_Q)
        if double_q:
            pick = live_q[1:].masked_fill(~next_avail, UNAVAILABLE_Q).argmax(-1, keepdim=True)
            best = target_next.gather(-1, pick).squeeze(-1)
        else:
            best = target_next.max(-1).values
        return reward + gamma * (1.0 - terminated) * target_mixer(best, next_state)


class Qmix:
    """Agent network, mixer, their target copies, one optimizer over both, the episode replay;
    ``collect`` one epsilon-greedy episode into the replay, ``update`` one gradient step
    (module docstring)."""

    def __init__(self, spec: EnvSpec, cfg: RunConfig, device: torch.device | str):
        if not spec.discrete:
            raise MablError(f"--algo qmix needs discrete actions; {spec.name} has continuous ones (QMIX takes a max "
                            "over each agent's actions)")
        self.spec, self.cfg, self.device = spec, cfg.qmix, torch.device(device)
        c = self.cfg
        self.shape = QAgentShape(c.hidden, c.last_action, c.agent_id, c.recurrent)
        self.agent = self.shape.build(spec).to(self.device)
        self.mixer = QMixer(spec.n_agents, spec.state_dim, c.mixing_embed, c.hypernet_layers,
                            c.hypernet_embed).to(self.device)
        self.target_agent: QAgent = copy.deepcopy(self.agent)
        self.target_mixer: QMixer = copy.deepcopy(self.mixer)
        for p in [*self.target_agent.parameters(), *self.target_mixer.parameters()]:
            p.requires_grad_(False)
        self.params = [*self.agent.parameters(), *self.mixer.parameters()]
        if c.optimizer == "rmsprop":
            self.optimizer = torch.optim.RMSprop(self.params, lr=c.lr, alpha=c.optim_alpha, eps=c.optim_eps)
        else:
            self.optimizer = adam(self.params, lr=c.lr)
        hint = f"try a lower --qmix.lr (now {c.lr:g}) or --qmix.grad_clip (now {c.grad_clip:g})"
        self.guards = {"q": UpdateGuard("Q-network", self.device, hint)}
        """The divergence guard (:mod:`mabl.algo.guard`), read by the trainer."""
        self.replay = EpisodeReplay(c.buffer_episodes)
        self.rng = np.random.default_rng([cfg.seed, 7])  # the replay's draws
        self.eye = torch.eye(spec.n_agents, device=self.device)
        self.env_steps = 0  # env steps collected: the epsilon schedule's clock (pymarl runner.t_env)
        self.episodes = 0  # episodes collected (pymarl run.py's `episode`, after this one)
        self.updates = 0  # gradient steps made
        self.last_target_update = 0  # pymarl last_target_update_episode (or EPyMARL's ..._step)
        self.epsilon = epsilon_at(self.cfg, 0)  # of the latest collected episode (logged with the update after it)

    @staticmethod
    def n_envs(cfg: RunConfig) -> int:
        """One env, one episode per ``collect`` (pymarl's ``episode`` runner, ``batch_size_run`` 1)."""
        return 1

    @staticmethod
    def check_config(cfg: RunConfig) -> None:
        """QMIX is discrete-only: MAMuJoCo's continuous actions are refused here (any other continuous env
        when the learner is built)."""
        if cfg.env.split(":", 1)[0] == "mamujoco":
            raise MablError(f"--algo qmix needs discrete actions; {cfg.env} has continuous ones (QMIX takes a max "
                            "over each agent's actions); use --algo mappo, ippo or a world-model algorithm there")

    # ---------------------------------------------------------------- acting
    def _inputs(self, obs: torch.Tensor, prev_action: torch.Tensor) -> torch.Tensor:
        return agent_inputs(obs, prev_action if self.cfg.last_action else None, self.eye if self.cfg.agent_id else None)

    @torch.no_grad()
    def collect(self, envs: list[MultiAgentEnv], next_seed: Callable[[], int]) -> tuple[list[Episode], None]:
        """One episode on ``envs[0]`` with epsilon-greedy actions (epsilon of the env steps collected before
        it, pymarl ``episode_runner.py`` line 67 with ``t_env`` advanced at the episode's end, line 101),
        stored in the replay. Random numbers: torch's global RNG of the learner's device."""
        env, spec = envs[0], self.spec
        seed = next_seed()
        epsilon = self.epsilon = epsilon_at(self.cfg, self.env_steps)
        step = env_call(env, "reset", seed, 0, seed)
        h = torch.zeros(spec.n_agents, self.cfg.hidden, device=self.device)
        prev = torch.zeros(spec.n_agents, spec.n_actions, device=self.device)
        obs, state, avail, actions, rewards = [], [], [], [], []
        all_avail = np.ones((spec.n_agents, spec.n_actions), bool)
        while True:
            step_avail = all_avail if step.avail is None else np.asarray(step.avail, bool)
            obs.append(np.asarray(step.obs, np.float32))
            state.append(np.asarray(step.state, np.float32))
            avail.append(step_avail)
            if step.done:
                break
            t = len(actions)
            obs_t = torch.as_tensor(obs[-1], device=self.device)
            avail_t = torch.as_tensor(step_avail, device=self.device)
            q, h = self.agent(self._inputs(obs_t, prev), h)
            try:
                check_actor_output(q)
            except MablError as exc:
                raise collection_fault("the policy", exc, f"at step {t} of the episode with seed {seed}") from None
            action = self._epsilon_greedy(q, avail_t, epsilon)
            prev = F.one_hot(action, spec.n_actions).float()
            action_np = action.cpu().numpy()
            actions.append(action_np)
            step = env_call(env, "step", seed, t + 1, action_np)
            rewards.append(float(step.reward))
        record = EpisodeRecord(np.stack(obs), np.stack(state), np.stack(avail), np.asarray(actions, np.int64),
                               np.asarray(rewards, np.float32), bool(step.terminated))
        self.replay.add(record)
        self.env_steps += len(rewards)
        self.episodes += 1
        info = step.info or {}
        rows = {"obs": record.obs[:-1], "state": record.state[:-1], "action": record.action, "reward": record.reward,
                "done": np.arange(len(rewards)) == len(rewards) - 1 if record.terminated else np.zeros(len(rewards), bool)}
        if spec.has_action_mask:
            rows["avail"] = record.avail[:-1]
        episode = Episode(rows, record.terminated, float(sum(rewards)), len(rewards),
                          bool(info["win"]) if "win" in info else None, episode_metrics(info))
        return [episode], None

    def _epsilon_greedy(self, q: torch.Tensor, avail: torch.Tensor, epsilon: float) -> torch.Tensor:
        """pymarl ``EpsilonGreedyActionSelector`` (``action_selectors.py`` lines 44-62): per agent, with
        probability epsilon an available action uniformly at random, else the greedy available one."""
        greedy = q.masked_fill(~avail, -float("inf")).argmax(-1)
        explore = torch.rand(q.shape[0], device=self.device) < epsilon
        uniform = torch.multinomial(avail.float(), 1).squeeze(-1)
        return torch.where(explore, uniform, greedy)

    # ---------------------------------------------------------------- learning
    def q_values(self, batch: Batch, agent: QAgent) -> torch.Tensor:
        """``agent``'s Q-values on rows 0..T of every episode, from a zero state: ``[T+1, B, N, A]``
        (pymarl ``q_learner.py`` lines 47-52 and 58-62: one pass over the whole padded batch)."""
        prev = F.one_hot(batch.action, self.spec.n_actions).float()
        prev = torch.cat([torch.zeros_like(prev[:1]), prev])  # the action before row t; zeros at row 0
        h = torch.zeros(*batch.obs.shape[1:3], self.cfg.hidden, device=self.device)
        return agent.unroll(self._inputs(batch.obs, prev), h)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """pymarl ``q_learner.py`` lines 37-97: the masked mean squared TD error of Q_tot."""
        c = self.cfg
        live_q = self.q_values(batch, self.agent)
        with torch.no_grad():
            target_q = self.q_values(batch, self.target_agent)
        chosen = live_q[:-1].gather(-1, batch.action.unsqueeze(-1)).squeeze(-1)  # [T, B, N]
        q_tot = self.mixer(chosen, batch.state[:-1])
        targets = td_targets(live_q.detach(), target_q, batch.avail, batch.reward, batch.terminated,
                             batch.state[1:], self.target_mixer, c.gamma, c.double_q)
        mask = batch.mask.float()
        td = (q_tot - targets) * mask
        n = mask.sum()
        loss = (td ** 2).sum() / n
        metrics = {"td_error_abs": td.abs().sum().detach() / n, "q_taken_mean": (q_tot * mask).sum().detach() / n,
                   "target_mean": (targets * mask).sum() / n}
        return loss, {**metrics, "samples": n}

    def update(self, batch: Any = None) -> dict[str, torch.Tensor]:
        """One gradient step on ``batch_episodes`` episodes sampled from the replay, then the hard target
        update when it is due (pymarl ``q_learner.py`` lines 99-107; ``target_update_unit`` 'updates':
        EPyMARL's count of gradient steps). ``batch`` is unused (module docstring). Returns only
        ``samples`` = 0 while the replay holds fewer than ``batch_episodes`` episodes (pymarl
        ``run.py`` line 169: no training yet)."""
        c = self.cfg
        if len(self.replay) < c.batch_episodes:
            return {"samples": torch.zeros((), device=self.device)}
        data = pad_batch(self.replay.sample(c.batch_episodes, self.rng), self.device)
        loss, metrics = self.loss(data)
        samples = metrics.pop("samples")
        grad_norm, skipped = self.guards["q"].step(self.optimizer, self.params, loss, c.grad_clip)
        self.updates += 1
        self._maybe_update_targets()
        return {"loss": loss.detach(), "grad_norm": grad_norm.detach(), **metrics,
                "epsilon": torch.tensor(self.epsilon, device=self.device),
                "q_skipped": skipped.float(), "samples": samples}

    def _maybe_update_targets(self) -> None:
        """Copy the live networks into the targets every ``target_update_interval`` episodes, counted as
        pymarl does: ``episode_num`` is the index of the episode just collected (``run.py`` lines 179
        and 205), checked after each gradient step (``q_learner.py`` lines 105-107)."""
        c = self.cfg
        clock = self.episodes - 1 if c.target_update_unit == "episodes" else self.updates
        if (clock - self.last_target_update) / c.target_update_interval >= 1.0:
            self.target_agent.load_state_dict(self.agent.state_dict())
            self.target_mixer.load_state_dict(self.mixer.state_dict())
            self.last_target_update = clock

    # ---------------------------------------------------------------- the contract's rest
    def params_finite(self) -> dict[str, torch.Tensor]:
        return {"Q-network": params_finite([self.agent, self.mixer])}

    def policy(self) -> QmixPolicy:
        """The greedy/Boltzmann acting object over the live agent network (:mod:`mabl.qmix_policy`)."""
        return QmixPolicy(self.agent, self.shape, self.spec, self.device)

    def policy_payload(self, cfg: RunConfig) -> dict[str, Any]:
        """Export hook (:mod:`mabl.algo.contract`): the policy file (:meth:`QmixPolicy.to_payload`)."""
        return QmixPolicy(self.agent, self.shape, self.spec, self.device).to_payload(cfg.algo)

    def state_dict(self) -> dict[str, Any]:
        return {"agent": self.agent.state_dict(), "mixer": self.mixer.state_dict(),
                "target_agent": self.target_agent.state_dict(), "target_mixer": self.target_mixer.state_dict(),
                "optimizer": self.optimizer.state_dict(), "guards": {k: g.state_dict() for k, g in self.guards.items()},
                "replay": self.replay.state_dict(), "rng": json.dumps(self.rng.bit_generator.state),
                "counters": {"env_steps": self.env_steps, "episodes": self.episodes, "updates": self.updates,
                             "last_target_update": self.last_target_update}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.agent.load_state_dict(state["agent"])
        self.mixer.load_state_dict(state["mixer"])
        self.target_agent.load_state_dict(state["target_agent"])
        self.target_mixer.load_state_dict(state["target_mixer"])
        self.optimizer.load_state_dict(state["optimizer"])
        for key, guard in self.guards.items():
            guard.load_state_dict(state["guards"].get(key))
        self.replay.load_state_dict(state["replay"])
        self.rng.bit_generator.state = json.loads(state["rng"])
        counters = state["counters"]
        self.env_steps, self.episodes = int(counters["env_steps"]), int(counters["episodes"])
        self.updates, self.last_target_update = int(counters["updates"]), int(counters["last_target_update"])
