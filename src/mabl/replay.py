"""Sequence replay: a ring buffer of env rows and uniform window sampling (SPEC §5).

Rows follow the convention drawn in ``algo/world_model_loss.py``. Whole episodes are appended at
once; an episode that ends by termination is followed by two absorbing rows (zero observation and
state, a random action, reward 0, done 1, every action available, ``fake`` 1). Rewards, and done
and fake, are kept per agent ``[N]`` when the run asks for it (``--model.reward_target``,
``--model.done_target``: Flatland's defaults): then an agent that finished (a train that arrived)
is absorbed on the rows after its done while the others go on. Windows of
``seq_len`` consecutive rows are drawn uniformly among those that do not cross the write head;
they may span episode boundaries (the ``last`` flag tells the filter to reset).

With a ``device``, the buffer keeps a copy of its rows there (written with every episode) and
:meth:`SequenceReplay.sample` gathers windows on the device: only the window indices cross from
the host, not the windows. The host arrays stay the source of truth (checkpoints, resume); the
windows are the same either way, drawn from the same numpy generator.
"""

from __future__ import annotations

import numpy as np
import torch

from mabl.envs.base import EnvSpec
from mabl.episode import Episode

ABSORBING_ROWS = 2


def replay_bytes(spec: EnvSpec, capacity: int, agent_reward: bool = False, agent_done: bool = False) -> int:
    """Memory a :class:`SequenceReplay` of ``capacity`` rows holds (per copy)."""
    return SequenceReplay(spec, 1, agent_reward=agent_reward, agent_done=agent_done).row_bytes * capacity


class SequenceReplay:
    """``agent_reward``: rows hold each agent's reward ``[N]`` (else the team reward); ``agent_done``:
    rows hold ``done`` and ``fake`` per agent ``[N]`` (else one flag per row), see :meth:`add_episode`."""

    def __init__(self, spec: EnvSpec, capacity: int, device: torch.device | None = None,
                 agent_reward: bool = False, agent_done: bool = False):
        self.spec = spec
        self.capacity = capacity
        self.agent_reward, self.agent_done = agent_reward, agent_done
        n = spec.n_agents
        reward_shape = (n,) if agent_reward else ()
        done_shape = (n,) if agent_done else ()
        action_shape = (n,) if spec.discrete else (n, spec.action_dim)
        self.data: dict[str, np.ndarray] = {
            "obs": np.zeros((capacity, n, spec.obs_dim), np.float32),
            "state": np.zeros((capacity, spec.state_dim), np.float32),
            "action": np.zeros((capacity, *action_shape), np.int64 if spec.discrete else np.float32),
            "reward": np.zeros((capacity, *reward_shape), np.float32),
            "done": np.zeros((capacity, *done_shape), np.bool_),
            "fake": np.zeros((capacity, *done_shape), np.bool_),
            "last": np.zeros(capacity, np.bool_),
        }
        if spec.has_action_mask:
            self.data["avail"] = np.zeros((capacity, n, spec.n_actions), np.bool_)
        self.row_bytes = sum(a[0].nbytes for a in self.data.values())
        self.device = device
        self.mirror: dict[str, torch.Tensor] | None = None
        if device is not None:
            self.mirror = {k: torch.from_numpy(v).to(device) for k, v in self.data.items()}
        self.pos = 0  # next row to write
        self.size = 0  # rows held
        self.real_rows = 0  # real (non-absorbing) transitions ever added

    def __len__(self) -> int:
        return self.size

    def add_episode(self, episode: dict[str, np.ndarray], terminated: bool, rng: np.random.Generator) -> None:
        """Append one episode (arrays ``[L, ...]`` with keys obs, state, action, reward, done, and
        avail when masked); add absorbing rows when it ``terminated``; set ``last`` on its final row.

        With ``agent_reward`` the episode's reward is ``[L, N]``; with ``agent_done`` its done is
        ``[L, N]`` and an agent whose done is set on row k is absorbed from row k+1 on (released
        code on Flatland): its ``fake`` is 1 there and its observation is the absorbing one (zeros).
        """
        length = len(episode["reward"])
        rows = {k: np.asarray(v) for k, v in episode.items() if k in self.data}
        for key in ("reward", "done"):
            if rows[key].shape[1:] != self.data[key].shape[1:]:
                raise ValueError(f"episode {key} rows of shape {rows[key].shape[1:]}, this replay holds "
                                 f"{self.data[key].shape[1:]}")
        if self.agent_done:
            fake = np.zeros((length, self.spec.n_agents), np.bool_)
            fake[1:] = rows["done"][:-1]
            rows["fake"] = fake
            rows["obs"] = np.where(fake[:, :, None], np.float32(0.0), rows["obs"]).astype(np.float32)
        else:
            rows["fake"] = np.zeros(length, np.bool_)
        if terminated:
            rows = {k: np.concatenate([v, self._absorbing(rng)[k]]) for k, v in rows.items()}
        rows["last"] = np.zeros(len(rows["reward"]), np.bool_)
        rows["last"][-1] = True
        total = len(rows["reward"])
        index = (self.pos + np.arange(total)) % self.capacity
        for key, array in self.data.items():
            array[index] = rows[key]
        if self.mirror is not None:
            where = torch.from_numpy(index).to(self.device)
            for key, tensor in self.mirror.items():
                tensor[where] = torch.from_numpy(np.ascontiguousarray(self.data[key][index])).to(self.device)
        self.pos = int((self.pos + total) % self.capacity)
        self.size = min(self.capacity, self.size + total)
        self.real_rows += length

    def _absorbing(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        spec, count = self.spec, ABSORBING_ROWS
        if spec.discrete:
            action = rng.integers(0, spec.n_actions, size=(count, spec.n_agents))
        else:
            action = rng.uniform(spec.action_low, spec.action_high, size=(count, spec.n_agents, spec.action_dim))
        rows = {
            "obs": np.zeros((count, spec.n_agents, spec.obs_dim), np.float32),
            "state": np.zeros((count, spec.state_dim), np.float32),
            "action": action.astype(self.data["action"].dtype),
            "reward": np.zeros((count, *self.data["reward"].shape[1:]), np.float32),
            "done": np.ones((count, *self.data["done"].shape[1:]), np.bool_),
            "fake": np.ones((count, *self.data["fake"].shape[1:]), np.bool_),
        }
        if "avail" in self.data:
            rows["avail"] = np.ones((count, spec.n_agents, spec.n_actions), np.bool_)
        return rows

    def can_sample(self, seq_len: int) -> bool:
        return self.size >= seq_len

    def sample(self, batch: int, seq_len: int, rng: np.random.Generator) -> dict[str, np.ndarray | torch.Tensor]:
        """``batch`` windows of ``seq_len`` rows, time-major ``[seq_len, batch, ...]``: numpy arrays, or
        tensors on the device when the buffer keeps a copy there."""
        oldest = self.pos if self.size == self.capacity else 0
        starts = rng.integers(0, self.size - seq_len + 1, size=batch)
        index = (oldest + starts[None, :] + np.arange(seq_len)[:, None]) % self.capacity  # [L, B]
        if self.mirror is not None:
            where = torch.from_numpy(index).to(self.device)
            return {key: tensor[where] for key, tensor in self.mirror.items()}
        return {key: array[index] for key, array in self.data.items()}

    # ------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict:
        """Only the rows held (in physical order), as tensors for ``torch.load(weights_only=True)``."""
        return {
            "arrays": {k: torch.from_numpy(v[: self.size].copy()) for k, v in self.data.items()},
            "pos": self.pos, "size": self.size, "real_rows": self.real_rows, "capacity": self.capacity,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"replay capacity {state['capacity']} != {self.capacity}")
        for key, tensor in state["arrays"].items():
            self.data[key][: state["size"]] = tensor.numpy()
        self.pos, self.size, self.real_rows = state["pos"], state["size"], state["real_rows"]
        if self.mirror is not None:
            self.mirror = {k: torch.from_numpy(v).to(self.device) for k, v in self.data.items()}


def stored_episode(episode: Episode, time_limit_done: str, agent_reward: bool = False,
                   agent_done: bool = False) -> tuple[dict[str, np.ndarray], bool]:
    """The rows and the 'append absorbing rows' flag an episode goes into the replay with.

    Termination: done 1 on the last row, absorbing rows follow. A time-out (truncation) under
    'terminal' (released code, where SMAC reports terminated at the limit) also stores done 1 on
    the last row, without absorbing rows; under 'truncation' it stores done 0. ``agent_reward``:
    the reward rows are each agent's own ``[L, N]``; ``agent_done``: done is each agent's ``[L, N]``
    (the episode's termination, and a time-out under 'terminal', set it for every agent on the last
    row; the replay absorbs an agent on the rows after its done).
    """
    rows = {k: v for k, v in episode.rows.items() if k not in ("agent_reward", "agent_done")}
    if agent_reward:
        rows["reward"] = episode.rows["agent_reward"].astype(np.float32)
    if agent_done:
        done = episode.rows["agent_done"].copy()
        done[-1] |= bool(episode.rows["done"][-1])
        rows["done"] = done
    if time_limit_done == "terminal" and not episode.terminated:
        rows["done"] = rows["done"].copy()
        rows["done"][-1] = True
    return rows, episode.terminated
