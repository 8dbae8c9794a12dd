"""``mabl diagnose``'s data: replay rows and dataset files, a run's checkpoint and replay, non-overlapping
windows of rows, the world model's filtering pass over them and the observed discounted returns."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mabl.errors import MablError

DATASET_KIND = "mabl-dataset"


@dataclasses.dataclass
class Data:
    """Replay rows in the order they were written, ``[R, ...]`` per key (``replay.py``'s row layout)."""

    rows: dict[str, np.ndarray]
    spec: Any  # EnvSpec
    source: str
    provenance: dict = dataclasses.field(default_factory=dict)
    """A dataset file's record of how it was made (empty for a run's replay)."""

    @property
    def n_rows(self) -> int:
        return len(self.rows["reward"])


def replay_rows(replay) -> dict[str, np.ndarray]:
    """The rows a :class:`~mabl.replay.SequenceReplay` holds, oldest first."""
    oldest = replay.pos if replay.size == replay.capacity else 0
    order = (oldest + np.arange(replay.size)) % replay.capacity
    return {k: v[order] for k, v in replay.data.items()}


def episode_rows(spec, episodes, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Replay rows of played episodes (``rollout.Episode``), in order, stored as training stores them:
    with the absorbing rows a :class:`~mabl.replay.SequenceReplay` adds after a termination (their
    random actions drawn from ``rng``)."""
    from mabl.replay import SequenceReplay

    replay = SequenceReplay(spec, sum(ep.length + 2 for ep in episodes))
    for ep in episodes:
        replay.add_episode(ep.rows, ep.terminated, rng)
    return replay_rows(replay)


def save_dataset(path: str | Path, rows: dict[str, np.ndarray], spec, provenance: dict) -> None:
    """Write replay rows (oldest first) with their env spec and provenance as one ``.npz`` file
    (atomically), readable by ``mabl diagnose --data``."""
    from mabl.checkpoint import atomic_open

    meta = {"kind": DATASET_KIND, "spec": dataclasses.asdict(spec), "provenance": provenance}
    with atomic_open(path) as f:
        np.savez_compressed(f, __meta__=np.array(json.dumps(meta)), **{f"row_{k}": v for k, v in rows.items()})


def load_dataset(path: str | Path) -> Data:
    from mabl.envs.base import EnvSpec

    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["__meta__"]))
            rows = {k[4:]: f[k] for k in f.files if k.startswith("row_")}
    except (OSError, ValueError, KeyError) as exc:
        raise MablError(f"dataset {path} is unreadable (not a mabl dataset .npz): {str(exc)[:120]}") from None
    if meta.get("kind") != DATASET_KIND:
        raise MablError(f"{path} is not a mabl dataset (kind {meta.get('kind')!r})")
    return Data(rows, EnvSpec(**meta["spec"]), str(path), meta.get("provenance") or {})


@dataclasses.dataclass
class Loaded:
    """What diagnose needs of a run: the learner (world model, actor, critic), config, spec, replay rows."""

    agent: Any
    cfg: Any
    spec: Any
    data: Data | None
    checkpoint: Path


def load_run(run_dir: str | Path, device: str = "cpu") -> Loaded:
    """The newest checkpoint of a run directory, rebuilt as ``train.Trainer._resume`` does, without the env.

    Run directories of ``mabl experiment representation train`` hold no replay (``data`` is None then).
    """
    from mabl.algo import algorithm, load_learner
    from mabl.device import resolve_device

    agent, cfg, spec, path, state = load_learner(run_dir, device=resolve_device(device), skip_unusable=True,
                                                 compile=False, amp=False)
    if not algorithm(cfg.algo).world_model:
        raise MablError(f"run {run_dir} is a {cfg.algo} run (model-free: no world model to diagnose); "
                        "diagnose runs of a world-model algorithm")
    data = None if state.get("replay") is None else Data(checkpoint_rows(state["replay"]), spec, f"replay of {run_dir}")
    return Loaded(agent, cfg, spec, data, path)


def checkpoint_rows(replay_state: dict) -> dict[str, np.ndarray]:
    """The rows of a checkpoint's replay (``SequenceReplay.state_dict``), oldest first, without
    allocating the replay's whole capacity."""
    size, capacity, pos = replay_state["size"], replay_state["capacity"], replay_state["pos"]
    order = (pos + np.arange(size)) % capacity if size == capacity else np.arange(size)
    return {k: v.numpy()[order] for k, v in replay_state["arrays"].items()}


def load_data(path: str | Path) -> Data:
    """``--data``: a run directory (its checkpoint's replay) or a dataset ``.npz`` (:func:`save_dataset`)."""
    path = Path(path)
    if path.is_file():
        return load_dataset(path)
    data = load_run_replay(path)
    if data is None:
        raise MablError(f"--data {path} holds no replay rows; give a run directory with a replay or a dataset .npz")
    return data


def open_checkpoint(run_dir: Path, what: str, hint: str = "") -> tuple[Path, dict]:
    """The checkpoint a resumed run would start from (:func:`mabl.checkpoint.read_checkpoint`: newer
    damaged or non-finite ones are skipped with one line each on stderr, never renamed)."""
    from mabl.checkpoint import read_checkpoint

    found = read_checkpoint(run_dir, report=lambda line: print(line, file=sys.stderr))
    if found is None:
        raise MablError(f"{what} has no checkpoint yet (checkpoints/step_*.pt){hint}")
    return found


def load_run_replay(run_dir: Path) -> Data | None:
    from mabl.envs.base import EnvSpec

    if not run_dir.is_dir():
        raise MablError(f"--data {run_dir} is neither a run directory nor a dataset file")
    _, state = open_checkpoint(run_dir, f"--data {run_dir}")
    if state.get("replay") is None:
        return None
    return Data(checkpoint_rows(state["replay"]), EnvSpec(**state["spec"]), f"replay of {run_dir}")


def draw_windows(n_rows: int, length: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Start rows of ``count`` windows of ``length`` rows that never overlap, sorted (data order):
    ``count`` distinct slots of a tiling of the data, the tiling shifted by a random offset."""
    if count < 4:
        raise MablError(f"--windows={count} must be >= 4 (half of them fit the probe, half score it)")
    slots = n_rows // length
    if count > slots:
        raise MablError(f"--windows={count} x --length={length} rows do not fit in the data's {n_rows} rows "
                        f"without overlap; use --windows <= {slots}")
    offset = int(rng.integers(0, n_rows - slots * length + 1))
    chosen = np.sort(rng.choice(slots, size=count, replace=False))
    return offset + chosen * length


def gather(rows: dict[str, np.ndarray], starts: np.ndarray, length: int) -> dict[str, np.ndarray]:
    """Windows ``[length, B, ...]`` of the rows starting at ``starts``."""
    index = starts[None, :] + np.arange(length)[:, None]
    return {k: v[index] for k, v in rows.items()}


def sample_windows(data: Data, length: int, count: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``count`` non-overlapping windows of ``length`` rows of ``data`` (:func:`draw_windows`): their
    start rows and the windows ``[length, count, ...]``."""
    starts = draw_windows(data.n_rows, length, count, rng)
    return starts, gather(data.rows, starts, length)


@torch.no_grad()
def filter_windows(agent, windows: dict[str, np.ndarray], reward_scale: float = 1.0):
    """The world model's filtering pass over replay windows (rows ``[L, B, ...]``, :func:`gather`): the
    ``T = L - 1`` shifted steps (``shift_window``; rewards times ``reward_scale``), the action input the
    networks read, and ``observe``'s output (posteriors ``[T, B, ...]``). The model's train/eval mode is
    the caller's."""
    from mabl.algo.world_model_loss import action_input, shift_window

    tensors = {k: torch.as_tensor(np.asarray(v)).to(agent.device) for k, v in windows.items()}
    batch = shift_window(tensors, reward_scale)
    prev_action = action_input(batch.prev_action, agent.spec)
    return batch, prev_action, agent.world_model.observe(batch.obs, batch.state, prev_action, batch.first)


def posterior_starts(post, mask: np.ndarray):
    """The posteriors ``[T, B, ...]`` of the steps where ``mask`` ``[T, B]`` holds, flattened to ``[M, ...]``
    in float: imagination's start latents."""
    flat = torch.as_tensor(np.asarray(mask, bool).reshape(-1), device=post.z_a.device)
    return post.map(lambda t: t.flatten(0, 1)[flat].float())


def discounted_returns(reward: np.ndarray, done: np.ndarray, last: np.ndarray, gamma: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Observed discounted return from every row to the end of its episode, and whether that end is in
    the data: ``G_r = reward_r + gamma G_{r+1}``, stopped after a row with ``done`` (termination; the
    absorbing rows after it have done too) or ``last`` (the final row of an episode)."""
    n = len(reward)
    out = np.zeros(n, np.float64)
    complete = np.zeros(n, np.bool_)
    ends = np.asarray(done, bool) | np.asarray(last, bool)
    following, following_complete = 0.0, False
    for r in range(n - 1, -1, -1):
        if ends[r]:
            following, following_complete = 0.0, True
        out[r] = following = float(reward[r]) + gamma * following
        complete[r] = following_complete
    return out, complete
