"""World-model diagnostics (``mabl diagnose``): what a trained world model knows, measured on replay data.

MABL's claim is that the agent latent ``[z^a, h^a]`` (all an agent sees when acting) carries more
global information because the global level shapes it in training. This module puts numbers on
that and on the model's other duties, from a run's newest checkpoint, on windows of replay rows:

- **probe**: ridge regression from agent i's features to the global state ``s_t`` and to the other
  agents' observations (one probe per agent, averaged), fitted on a random half of the windows and
  scored (R^2 per target dimension) on the other half, the penalty chosen by cross-validation inside
  the fit half; beside the same probe on the raw own observation (current, and the last
  :data:`STACK` stacked) and on ``[z^g, h^g]`` where a global level exists, and the spread of the
  state probes over several window draws (``probe_spread``);
- **open loop**: filter the first part of a window, then roll the priors forward with the real
  actions for k = 1..H steps and compare the heads' predictions with the data;
- **imagination**: the lambda-return the policy learns from (imagined from real posterior states)
  against the discounted return observed after the same row of the data;
- **latents**: KL(posterior || prior) per level, posterior entropy per categorical, unused classes.

Window layout (``length`` L rows -> T = L-1 filtering steps, ``algo/world_model_loss.py``): the
probe, the latent statistics and the imagination starts use steps ``j >= BURN_IN`` whose observation
row is real (absorbing rows excluded); the open loop filters steps ``0 .. C-1`` (C = T - H) and rolls
from the posterior of step C-1. Windows never overlap (they are drawn from disjoint slots of the
data); a random half of them fits the probe and the other half scores it (``split="random"``), or,
sorted by their position in the data, the earlier half fits and the later half scores
(``split="data_order"``: extrapolation across the policies that wrote the data, which measures that
drift as much as what the features hold). Nothing crosses an episode end: open-loop steps after an
episode's end and stacked frames from before its start are excluded, and observed returns stop at the episode's end.

docs/DIAGNOSTICS.md explains every number. :func:`training_diagnostics` is the cheap subset that
``--diagnose-every`` logs during training.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mabl.errors import MablError

BURN_IN = 4
"""Filtering steps of a window before its states enter the probe, the latent statistics and the
imagination starts (the filter starts every window from the zero state)."""
STACK = 4
"""Observations stacked for the raw-observation reference probe (the current one and 3 before it)."""
RIDGE_LAMBDAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)
"""Ridge penalties tried by cross-validation inside the fit half (features standardised on the fit half).
Paper-size agent features (1,280 standardised dims) fitted on ~800 samples chose 1e4, the former top
of the grid, so it reaches 1e6."""
CV_FOLDS = 5
"""Folds of the cross-validation that picks the ridge penalty inside the fit half. Folds are blocks of
whole windows (a window's steps are strongly correlated) in the order the fit windows are given: a
random order for ``split="random"``, data order for ``split="data_order"``."""
SPLITS = ("random", "data_order")
"""How the windows are divided between fitting and scoring the probes: a random half fits
(the default), or the earlier half in data order fits and the later half scores."""
DRAWS = 5
"""Window draws (seeds ``seed .. seed + DRAWS - 1``) over which the spread of the state probes is reported."""
TRAIN_HORIZON = 5
"""Open-loop steps of the in-training diagnostics."""
DATASET_KIND = "mabl-dataset"
LARGEST = 0.02
"""``mabl diagnose``'s reward-head block: the fraction of rows counted as the largest rewards."""

RESULT_KEYS = ("probe_state_r2", "probe_state_r2_global", "probe_state_r2_obs", "probe_others_obs_r2",
               "probe_spread", "open_loop", "imagination", "latents", "reward_head")


# ---------------------------------------------------------------------------------------- data
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

    Run directories of ``benchmarks/representation.py`` hold no replay (``data`` is None then).
    """
    from mabl.algo import algorithm, load_learner
    from mabl.train import resolve_device

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


# ---------------------------------------------------------------------------------------- statistics
def ridge_probe(x_fit: np.ndarray, y_fit: np.ndarray, x_score: np.ndarray, y_score: np.ndarray,
                lambdas: tuple[float, ...] = RIDGE_LAMBDAS, groups: np.ndarray | None = None,
                folds: int = CV_FOLDS) -> dict[str, Any]:
    """Linear read-out of ``y`` from ``x``: ridge regression fitted on ``(x_fit, y_fit)``, scored on
    ``(x_score, y_score)`` by R^2 per target dimension (``1 - SSE / SST``, SST about the score set's own
    mean). Dimensions with no variance on the score set get None and are left out of the mean.
    ``pooled`` is ``1 - sum(SSE) / sum(SST)`` over the scored dimensions: the share of the target's
    total held-out variance the probe explains. The mean of per-dimension R^2 can be dragged far
    below zero by one dimension that is nearly constant on the score set (a small SST turns a small
    error into R^2 of -20); the pooled value weighs each dimension by its variance and is not.

    Features are standardised and targets centred with the fit set's statistics. Lambda is chosen from
    ``lambdas`` by ``folds``-fold cross-validation inside the fit set (:func:`cv_folds`: ``groups``, e.g.
    the window of each sample, never straddle two folds), the criterion being the held-out squared
    error summed over folds, each target dimension weighted by its inverse variance on the fit set;
    then the model is refitted on the whole fit set. The score set plays no part in choosing lambda.
    """
    x_fit, y_fit = np.asarray(x_fit, np.float64), np.asarray(y_fit, np.float64)
    x_score, y_score = np.asarray(x_score, np.float64), np.asarray(y_score, np.float64)
    if len(x_fit) < 4 or len(x_score) < 2:
        return {"mean": None, "pooled": None, "per_dim": [None] * y_fit.shape[1], "dims_scored": 0, "lambda": None,
                "samples_fit": len(x_fit), "samples_score": len(x_score)}
    fold = cv_folds(len(x_fit), groups, folds)
    var = y_fit.var(0)
    weight = np.where(var > 1e-12, 1.0 / np.maximum(var, 1e-12), 0.0)
    cv_error = np.zeros(len(lambdas))
    for k in np.unique(fold):
        held = fold == k
        for i, (sse, _, _) in enumerate(_ridge_errors(x_fit[~held], y_fit[~held], x_fit[held], y_fit[held], lambdas)):
            cv_error[i] += float((sse * weight).sum())
    best = lambdas[int(np.argmin(cv_error))]
    sse, sst, scored = _ridge_errors(x_fit, y_fit, x_score, y_score, [best])[0]
    per_dim = _r2(sse, sst, scored)
    pooled = float(1.0 - sse[scored].sum() / sst[scored].sum()) if scored.any() else None
    return {"mean": _mean_r2(per_dim), "pooled": pooled,
            "per_dim": [None if math.isnan(v) else float(v) for v in per_dim],
            "dims_scored": int(np.isfinite(per_dim).sum()), "lambda": best,
            "samples_fit": len(x_fit), "samples_score": len(x_score)}


def cv_folds(n: int, groups: np.ndarray | None = None, folds: int = CV_FOLDS) -> np.ndarray:
    """Fold index ``[n]`` of each sample: the distinct ``groups`` in order of first appearance (each
    sample its own group when None) cut into ``min(folds, #groups)`` contiguous blocks of near-equal
    size, every sample in its group's fold. With fewer than 2 groups, the samples themselves are cut."""
    groups = np.arange(n) if groups is None else np.asarray(groups)
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    if len(first) < 2:
        return cv_folds(n, None, folds)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))  # group -> position of first appearance
    k = min(folds, len(first))
    return (rank[inverse.reshape(-1)] * k) // len(first)


def _mean_r2(per_dim: np.ndarray) -> float | None:
    finite = per_dim[np.isfinite(per_dim)]
    return float(finite.mean()) if len(finite) else None


def _r2(sse: np.ndarray, sst: np.ndarray, scored: np.ndarray) -> np.ndarray:
    r2 = np.full(len(sse), np.nan)
    r2[scored] = 1.0 - sse[scored] / sst[scored]
    return r2


def _ridge_errors(x_fit, y_fit, x_score, y_score, lambdas) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(SSE, SST, scored)`` per target dimension on the score set for each lambda (one
    eigendecomposition for all of them); ``scored``: the dimensions with variance there."""
    mean, std = x_fit.mean(0), x_fit.std(0)
    std[std < 1e-8] = 1.0
    xf, xs = (x_fit - mean) / std, (x_score - mean) / std
    y_mean = y_fit.mean(0)
    eig, vec = np.linalg.eigh(xf.T @ xf)
    proj = vec.T @ (xf.T @ (y_fit - y_mean))
    sst = ((y_score - y_score.mean(0)) ** 2).sum(0)
    scored = sst > 1e-10 * max(1, len(y_score))
    out = []
    for lam in lambdas:
        weights = vec @ (proj / (np.maximum(eig, 0.0) + lam)[:, None])
        out.append((((y_score - y_mean - xs @ weights) ** 2).sum(0), sst, scored))
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation, None when either side is constant (or fewer than 2 samples)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if len(a) < 2 or a.std() < 1e-12 or b.std() < 1e-12:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def open_loop_masks(fake: np.ndarray, last: np.ndarray, context: int, horizon: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Which open-loop predictions have a real target, from the window's row flags ``[L, B]``.

    The roll starts at the posterior of step C-1 (observation row C) and step k uses the action of
    row C+k-1 and predicts row C+k's observation. Returns ``(transition [H, B], observation [H, B])``:
    the transition out of row C+k-1 (its reward and continuation) is real when rows C .. C+k-1 are
    real and none of C .. C+k-2 ended its episode; the observation of row C+k also needs row C+k real
    and row C+k-1 not the episode's last (so an episode's final transition still counts, not what follows).
    """
    fake, last = np.asarray(fake, bool), np.asarray(last, bool)
    batch = fake.shape[1]
    trans, obs = np.zeros((horizon, batch), bool), np.zeros((horizon, batch), bool)
    alive = np.ones(batch, bool)  # the episode of row C has not ended before row C+k-1
    for k in range(1, horizon + 1):
        row = context + k - 1
        alive &= ~fake[row]
        trans[k - 1] = alive
        obs[k - 1] = alive & ~last[row] & ~fake[row + 1]
        alive &= ~last[row]
    return trans, obs


def open_loop_stats(pred: dict[str, np.ndarray], target: dict[str, np.ndarray], trans: np.ndarray,
                    obs_mask: np.ndarray) -> list[dict[str, Any]]:
    """Per step k: observation MSE (mean over agents and features, model input space), reward MAE and
    correlation, continuation Brier score and accuracy, action-mask accuracy (None without masks), and
    how many windows each is over. Arrays are ``[H, B, ...]``; ``cont`` predictions may have a trailing
    agent axis (each agent's probability is scored against the team's target)."""
    out = []
    for k in range(trans.shape[0]):
        t, o = trans[k], obs_mask[k]
        entry: dict[str, Any] = {"k": k + 1, "obs_error": None, "reward_error": None, "reward_corr": None,
                                 "cont_brier": None, "cont_accuracy": None, "avail_accuracy": None,
                                 "n_transitions": int(t.sum()), "n_obs": int(o.sum())}
        if o.any():
            entry["obs_error"] = float(((pred["obs"][k][o] - target["obs"][k][o]) ** 2).mean())
            if pred.get("avail") is not None:
                entry["avail_accuracy"] = float(((pred["avail"][k][o] > 0.5) == target["avail"][k][o]).mean())
        if t.any():
            r_pred, r_true = pred["reward"][k][t], target["reward"][k][t]
            entry["reward_error"] = float(np.abs(r_pred - r_true).mean())
            entry["reward_corr"] = _corr(r_pred, r_true)
            c_pred = pred["cont"][k][t].reshape(int(t.sum()), -1)
            c_true = target["cont"][k][t]  # the team's [n] or, with per-agent done, each agent's [n, N]
            c_true = np.broadcast_to(c_true.reshape(c_true.shape[0], -1), c_pred.shape)
            entry["cont_brier"] = float(((c_pred - c_true) ** 2).mean())
            entry["cont_accuracy"] = float(((c_pred > 0.5) == (c_true > 0.5)).mean())
        out.append(entry)
    return out


def reward_by_size(pred: np.ndarray, real: np.ndarray, top: float = LARGEST) -> dict[str, Any] | None:
    """The reward head's predictions ``pred`` against the real rewards ``real`` (1-D, the env's units):
    pooled (mean absolute error, correlation) and in three groups of rows, each with its count, mean
    real and mean predicted reward: ``zero`` (real reward 0), ``largest`` (the ``top`` fraction of the
    rows, at least one, with the largest positive rewards: on SMAX the win bonus) and ``other`` (the
    remaining nonzero rows). A group without rows is None. None without rows."""
    if len(real) == 0:
        return None
    positive = np.flatnonzero(real > 0)
    n_large = min(len(positive), max(1, round(top * len(real))))
    large = np.zeros(len(real), bool)
    large[positive[np.argsort(-real[positive], kind="stable")[:n_large]]] = True
    zero = real == 0

    def group(sel: np.ndarray) -> dict[str, Any] | None:
        if not sel.any():
            return None
        return {"n": int(sel.sum()), "real_mean": float(real[sel].mean()), "pred_mean": float(pred[sel].mean())}

    return {"n": len(real), "top": top, "mae": float(np.abs(pred - real).mean()), "corr": _corr(pred, real),
            "zero": group(zero), "largest": group(large), "other": group(~zero & ~large)}


def usage_stats(counts: np.ndarray) -> dict[str, float]:
    """From how often each class of each categorical was sampled, ``counts [C, K]``: the fraction of
    classes never used and the fraction of categoricals that only ever took one class (collapsed)."""
    used = np.asarray(counts) > 0
    return {"unused_class_fraction": float(1.0 - used.mean()),
            "collapsed_fraction": float((used.sum(-1) <= 1).mean())}


def latent_level_stats(post_logits: torch.Tensor, prior_logits: torch.Tensor, sample: torch.Tensor,
                       mask: torch.Tensor) -> dict[str, Any]:
    """One level's KL(posterior || prior) (mean over categoricals, then over the masked rows), its
    posterior entropy per categorical (nats; at most log K) and the class usage of its samples.

    ``*_logits [..., C, K]``, ``sample [..., C*K]`` one-hot, ``mask [...]`` bool."""
    from mabl.models.distributions import categorical_kl

    n_cat, n_classes = post_logits.shape[-2:]
    post = post_logits[mask].float().reshape(-1, n_cat, n_classes)
    prior = prior_logits[mask].float().reshape(-1, n_cat, n_classes)
    kl = categorical_kl(post, prior)  # [M, C]
    log_q = torch.log_softmax(post, -1)
    entropy = -(log_q.exp() * log_q).sum(-1)  # [M, C]
    counts = sample[mask].float().reshape(-1, n_cat, n_classes).sum(0)
    return {"kl": float(kl.mean()), "entropy_mean": float(entropy.mean()),
            "entropy_per_categorical": [float(v) for v in entropy.mean(0)], "max_entropy": math.log(n_classes),
            **usage_stats(counts.cpu().numpy())}


# ---------------------------------------------------------------------------------------- the model
def _obs_prediction(model, latent) -> torch.Tensor:
    """The observation decoder's output ``[..., N, O]`` (model input space) for states ``latent``."""
    return model.obs_decoder_out(torch.relu(model.obs_decoder_body(latent.z_a, latent.h_a)))


def _features(post, model) -> dict[str, torch.Tensor | None]:
    """Per-agent probe features ``[T, B, N, .]``: agent ``[z^a, h^a]`` and global ``[z^g, h^g]`` (None
    without a global level; a shared one broadcast to the agents). Latents are one-hot floats."""
    from mabl.models.world_model import level_features

    both = level_features(*post)
    agent = torch.cat([post.z_a, post.h_a], -1).float()
    glob = None if len(both) == 2 else torch.cat([both[2], both[3]], -1).float()
    return {"agent": agent, "global": glob}


def _stacked_obs(obs: np.ndarray, last_rows: np.ndarray, k: int) -> np.ndarray:
    """Step j's observation and the k-1 before it ``[T, B, N, k*O]``, zeros where a frame lies before
    the window or before the start of step j's episode (``last_rows [L, B]``: row flags; step j = row j+1)."""
    steps = obs.shape[0]
    frames = []
    for d in range(k):
        frame = np.zeros_like(obs)
        for j in range(d, steps):
            # rows j+1-d .. j+1 in one episode: none of rows j+1-d .. j is an episode's last row
            same = ~last_rows[j + 1 - d: j + 1].any(0) if d else np.ones(obs.shape[1], bool)
            frame[j] = obs[j - d] * same[:, None, None]
        frames.append(frame)
    return np.concatenate(frames, -1)


def _split_probe(features: np.ndarray, target: np.ndarray, mask: np.ndarray, fit_windows: np.ndarray,
                 order: np.ndarray | None = None) -> dict[str, Any]:
    """One probe per agent (agent i's features -> its target), then averaged over agents.

    ``features [T, B, N, F]``, ``target [T, B, N, D]``, ``mask [T, B]``: samples of windows
    ``fit_windows`` (bool ``[B]``) fit, the others score. Samples are taken window by window in
    ``order`` (a permutation of the windows; data order when None), and the cross-validation folds
    that pick lambda are blocks of whole windows in that order (:func:`ridge_probe`). ``per_dim`` is
    the R^2 of each target dimension averaged over the agents that score it; ``mean`` the mean over
    agents of each agent's mean over its scored dimensions, ``pooled`` the mean over agents of each
    agent's pooled R^2 (:func:`ridge_probe`)."""
    order = np.arange(features.shape[1]) if order is None else np.asarray(order)

    def take(windows, agent):
        keep = np.transpose(mask & windows[None, :])[order]  # [B, T] with windows in ``order``
        x = np.transpose(features[:, :, agent], (1, 0, 2))[order][keep]
        y = np.transpose(target[:, :, agent], (1, 0, 2))[order][keep]
        group = np.broadcast_to(order[:, None], keep.shape)[keep]
        return x, y, group

    def fit_score(agent):
        x_fit, y_fit, group = take(fit_windows, agent)
        x_score, y_score, _ = take(~fit_windows, agent)
        return ridge_probe(x_fit, y_fit, x_score, y_score, groups=group)

    per_agent = [fit_score(i) for i in range(features.shape[2])]
    dims = np.array([[np.nan if v is None else v for v in p["per_dim"]] for p in per_agent])  # [N, D]
    scored = np.isfinite(dims).any(0)
    per_dim = np.full(dims.shape[1], np.nan)
    per_dim[scored] = np.nanmean(dims[:, scored], 0)
    means = [p["mean"] for p in per_agent if p["mean"] is not None]
    pooled = [p["pooled"] for p in per_agent if p["pooled"] is not None]
    return {"mean": float(np.mean(means)) if means else None, "pooled": float(np.mean(pooled)) if pooled else None,
            "per_dim": [None if math.isnan(v) else float(v) for v in per_dim],
            "per_agent": [p["mean"] for p in per_agent], "dims_scored": int(scored.sum()),
            "lambda": [p["lambda"] for p in per_agent],
            "samples_fit": sum(p["samples_fit"] for p in per_agent),
            "samples_score": sum(p["samples_score"] for p in per_agent)}


def probe_split(n_windows: int, split: str, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Which of ``n_windows`` windows (in data order) fit the probes (bool ``[B]``), the order the
    probes take them in (:func:`_split_probe`), and a line saying so. ``split="random"``: a random half
    (``rng``) fits, taken in a random order; ``"data_order"``: the earlier half fits, in data order."""
    if split not in SPLITS:
        raise MablError(f"probe split {split!r} is not one of {', '.join(SPLITS)}")
    half = n_windows // 2
    if split == "random":
        order = (rng if rng is not None else np.random.default_rng(0)).permutation(n_windows)
        fit = np.zeros(n_windows, bool)
        fit[order[:half]] = True
        return fit, order, (f"random split of the windows: {half} fit, {n_windows - half} score (disjoint rows); "
                            f"lambda by {CV_FOLDS}-fold cross-validation over the fit windows")
    return (np.arange(n_windows) < half, np.arange(n_windows),
            f"windows in data order: the first {half} fit, the last {n_windows - half} score (disjoint rows); "
            f"lambda by {CV_FOLDS}-fold cross-validation over blocks of the fit windows in data order")


@torch.no_grad()
def diagnose_windows(agent, windows: dict[str, np.ndarray], horizon: int, returns: np.ndarray | None = None,
                     returns_complete: np.ndarray | None = None, stack: int = STACK, burn_in: int = BURN_IN,
                     imagination: bool = True, full: bool = True, split: str = "random",
                     rng: np.random.Generator | None = None, probes_only: bool = False) -> dict[str, Any]:
    """Every diagnostic on ``windows`` (rows ``[L, B, ...]``, windows in data order); ``returns`` /
    ``returns_complete`` ``[L, B]`` are the observed discounted returns of the window rows
    (:func:`discounted_returns`). The probes are fitted and scored on the halves of :func:`probe_split`
    (``split``; ``rng`` draws the random one, a fixed seed when None).
    ``full=False`` gives the in-training subset (agent probe on the state, open loop, KL);
    ``probes_only=True`` only the state probes (agent, global, current and stacked own observation)."""
    model, spec, device = agent.world_model, agent.spec, agent.device
    was_training = model.training
    model.eval()
    try:
        batch, prev_action, filt = filter_windows(agent, windows)
        steps, n_windows, n_agents = batch.obs.shape[:3]
        fake_rows = np.asarray(windows["fake"], bool)
        if fake_rows.ndim == 3:  # per-agent absorbing rows (Flatland): skip rows where any agent is absorbed
            fake_rows = fake_rows.any(-1)
        last_rows = np.asarray(windows["last"], bool)
        burn_in = min(burn_in, steps // 2)
        step_mask = ~fake_rows[1:]  # [T, B]: the observation row of step j is real
        step_mask[:burn_in] = False
        fit_windows, order, split_line = probe_split(n_windows, split, rng)
        split_line += f"; steps j >= {burn_in}, absorbing rows excluded"
        result: dict[str, Any] = {}

        # ------------------------------------------------------------ probe
        feats = {k: None if v is None else v.cpu().numpy() for k, v in _features(filt.post, model).items()}
        obs = np.asarray(windows["obs"], np.float32)[1:]  # [T, B, N, O]
        state = np.broadcast_to(np.asarray(windows["state"], np.float32)[1:, :, None, :],
                                (steps, n_windows, n_agents, spec.state_dim))

        def probe(features, target):
            if features is None:
                return None
            return {**_split_probe(features, target, step_mask, fit_windows, order), "split": split_line}

        result["probe_state_r2"] = probe(feats["agent"], state)
        if probes_only:
            stacked = _stacked_obs(obs, last_rows, stack)
            return {"agent": result["probe_state_r2"], "global": probe(feats["global"], state),
                    "obs": probe(obs, state), "stacked": probe(stacked, state)}
        if full:
            stacked = _stacked_obs(obs, last_rows, stack)
            result["probe_state_r2_global"] = probe(feats["global"], state)
            result["probe_state_r2_obs"] = {"current": probe(obs, state), "stacked": probe(stacked, state),
                                            "stack": stack}
            if n_agents > 1:
                others = np.stack([np.concatenate([obs[:, :, j] for j in range(n_agents) if j != i], -1)
                                   for i in range(n_agents)], 2)  # [T, B, N, (N-1)*O]
                result["probe_others_obs_r2"] = {
                    "agent": probe(feats["agent"], others), "global": probe(feats["global"], others),
                    "obs": {"current": probe(obs, others), "stacked": probe(stacked, others), "stack": stack}}
            else:
                result["probe_others_obs_r2"] = None

        # ------------------------------------------------------------ open loop
        horizon = min(horizon, steps - 1)
        context = steps - horizon  # filtered steps 0 .. C-1; rolls from posterior C-1 (row C)
        pred = open_loop_predictions(model, filt.post, prev_action, context, horizon)
        sl = slice(context, context + horizon)
        target = {"obs": model.agent.transform(batch.obs[sl].float()).cpu().numpy(),
                  "reward": _team(batch.reward[sl]).cpu().numpy(), "cont": (1.0 - batch.done[sl]).cpu().numpy(),
                  "avail": None if batch.avail is None else batch.avail[sl].cpu().numpy()}
        trans, obs_ok = open_loop_masks(fake_rows, last_rows, context, horizon)
        result["open_loop"] = open_loop_stats(pred, target, trans, obs_ok)

        # ------------------------------------------------------------ latents
        latents = {"agent": latent_level_stats(filt.post_a_logits, filt.prior_a_logits, filt.post.z_a,
                                               torch.as_tensor(step_mask, device=device)), "global": None}
        if model.has_global:
            latents["global"] = latent_level_stats(filt.post_g_logits, filt.prior_g_logits, filt.post.z_g,
                                                   torch.as_tensor(step_mask, device=device))
        result["latents"] = latents

        # ------------------------------------------------------------ reward head, one step from the posterior
        if full:
            result["reward_head"] = reward_head_block(model, filt, batch, step_mask)

        # ------------------------------------------------------------ imagination
        if full:
            result["imagination"] = _imagination(agent, filt, batch, step_mask, returns, returns_complete) \
                if imagination else None
        return result
    finally:
        model.train(was_training)


def reward_head_block(model, filt, batch, step_mask: np.ndarray) -> dict[str, Any] | None:
    """The ``reward_head`` block: the reward heads read as the loss reads them, ``(z_j, h_{j+1})`` with
    ``h_{j+1}`` the transition out of posterior j (mean over agents, the env's units), against the
    reward received, on the steps where ``step_mask`` ``[T, B]`` holds (:func:`reward_by_size`)."""
    cut = filt.post.z_a.shape[0] - 1
    nxt = filt.post.map(lambda t: t[1:])._replace(
        h_a=filt.h_a_trans[1:], h_g=None if filt.h_g_trans is None else filt.h_g_trans[1:])
    pred_reward, _ = model.reward_continuation(filt.post.map(lambda t: t[:cut]), nxt)
    scored = step_mask[:cut]  # posterior j is a real row, after the burn-in
    return reward_by_size((pred_reward / model.cfg.reward_scale).float().cpu().numpy()[scored],
                          _team(batch.reward[1:]).cpu().numpy()[scored])


def open_loop_predictions(model, post, prev_action: torch.Tensor, context: int, horizon: int
                          ) -> dict[str, np.ndarray | None]:
    """Roll the priors from the filtered state of step ``context - 1`` under the data's own actions for
    ``horizon`` steps; the predictions ``[horizon, ...]`` for rows ``context .. context + horizon - 1``:
    ``obs``, team ``reward`` (in the env's units: divided by ``--model.reward_scale``), per-agent ``cont``
    probability, ``avail`` probabilities (None without masks)."""
    latent = post.map(lambda t: t[context - 1])
    preds: dict[str, list] = {"obs": [], "reward": [], "cont": [], "avail": []}
    for k in range(1, horizon + 1):
        nxt = model.prior_step(latent, prev_action[context - 1 + k])
        reward, cont = model.reward_continuation(latent, nxt)
        preds["obs"].append(_obs_prediction(model, nxt))
        preds["reward"].append(reward / model.cfg.reward_scale)
        preds["cont"].append(cont)
        avail_logits = model.avail_logits(nxt)
        preds["avail"].append(None if avail_logits is None else torch.sigmoid(avail_logits))
        latent = nxt
    return {k: None if v[0] is None else torch.stack(v).float().cpu().numpy() for k, v in preds.items()}


def _team(reward: torch.Tensor) -> torch.Tensor:
    """Per-agent rewards ``[..., N]`` (Flatland) -> the team's, their mean (what imagination predicts);
    team rewards ``[L, B]`` as they are."""
    return reward.float().mean(-1) if reward.dim() == 3 else reward


def imagine_from(agent, start) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Imagine from the ``M`` latents ``start`` with the agent's actor and critic (its config's horizon,
    gamma, lambda): the lambda-return and critic value of each start, mean over agents (``[M]``), and every
    imagined reward, all divided by ``--model.reward_scale`` (the env's units)."""
    from mabl.algo.imagination import imagine

    policy, scale = agent.cfg.policy, agent.cfg.model.reward_scale
    n_start = start.z_a.shape[0]
    rollout = imagine(agent.world_model, agent.actor, agent.critic, start, policy.horizon, policy.gamma, policy.lam)
    lam_return = rollout.returns[:n_start].mean(-1).cpu().numpy() / scale
    value = rollout.value[:n_start].mean(-1).cpu().numpy() / scale
    return lam_return, value, rollout.reward / scale


def _imagination(agent, filt, batch, step_mask, returns, returns_complete) -> dict[str, Any]:
    """Imagine from every probe state; compare its lambda-return (mean over agents) and the critic's
    value with the observed discounted return from the same row, where that return is complete. Imagined
    rewards, lambda-returns and values are divided by ``--model.reward_scale`` (the env's units)."""
    policy = agent.cfg.policy
    start = posterior_starts(filt.post, step_mask)
    n_start = int(step_mask.sum())
    if n_start == 0:
        return None
    lam_return, value, imagined_reward = imagine_from(agent, start)
    real_reward = _team(batch.reward[1:])[torch.as_tensor(step_mask[:-1], device=agent.device)]
    out = {"starts": n_start, "horizon": policy.horizon, "gamma": policy.gamma, "lambda": policy.lam,
           "lambda_return_mean": float(lam_return.mean()), "value_mean": float(value.mean()),
           "imagined_reward_mean": float(imagined_reward.mean()), "imagined_reward_std": float(imagined_reward.std()),
           "real_reward_mean": float(real_reward.mean()) if len(real_reward) else None,
           "real_reward_std": float(real_reward.std()) if len(real_reward) > 1 else None}
    if returns is None:
        return out
    # step j's state is row j+1: the observed return from that row on
    observed = np.asarray(returns)[1:].reshape(-1)[step_mask.reshape(-1)]
    complete = np.asarray(returns_complete)[1:].reshape(-1)[step_mask.reshape(-1)]
    out.update({"compared": int(complete.sum()), "incomplete_returns": int((~complete).sum())})
    if complete.any():
        obs_ret, lam, val = observed[complete], lam_return[complete], value[complete]
        out.update({"observed_return_mean": float(obs_ret.mean()),
                    "lambda_return_bias": float((lam - obs_ret).mean()), "lambda_return_corr": _corr(lam, obs_ret),
                    "value_bias": float((val - obs_ret).mean()), "value_corr": _corr(val, obs_ret)})
    return out


# ---------------------------------------------------------------------------------------- entry points
def diagnose(run_dir: str | Path, data: str | Path | None = None, windows: int | None = 100, length: int = 20,
             horizon: int = 8, seed: int = 0, device: str = "cpu", stack: int = STACK,
             imagination: bool = True, split: str = "random", draws: int = DRAWS) -> dict[str, Any]:
    """``mabl diagnose``: every statistic of a run's newest checkpoint on ``windows`` windows of its
    replay (or of ``data``: another run directory's replay or a dataset file). One JSON-ready dict with
    the keys of :data:`RESULT_KEYS` plus ``meta`` (what was measured on what). ``imagination=False``
    leaves the imagination block out (None): for world models whose actor and critic never trained.
    ``windows=None``: 100, or as many as fit in the data when fewer do (``meta["windows"]`` says how many).
    ``split``: how the probes' windows are divided (:data:`SPLITS`); ``draws``: the state probes are
    repeated on the window draws of seeds ``seed .. seed + draws - 1`` (the first is the reported one)
    and their spread is ``probe_spread`` (None when ``draws`` is 1)."""
    if length < 8:
        raise MablError(f"--length={length} must be >= 8 (burn-in {BURN_IN} steps, then the probes and the open loop)")
    if not 1 <= horizon <= length - 1 - BURN_IN:
        raise MablError(f"--horizon={horizon} must be in [1, {length - 1 - BURN_IN}] for --length={length}")
    if stack < 1:
        raise MablError(f"--stack={stack} must be >= 1")
    if split not in SPLITS:
        raise MablError(f"--split={split} is not one of {', '.join(SPLITS)}")
    if draws < 1:
        raise MablError(f"--draws={draws} must be >= 1")
    loaded = load_run(run_dir, device)
    if data is not None:
        source = load_data(data)
        if dataclasses.asdict(source.spec) != dataclasses.asdict(loaded.spec):
            raise MablError(f"--data {data} was recorded on env spec {source.spec.name} "
                            f"(N={source.spec.n_agents}, O={source.spec.obs_dim}, G={source.spec.state_dim}, "
                            f"A={source.spec.action_size}); the model needs {loaded.spec.name} (N={loaded.spec.n_agents}, "
                            f"O={loaded.spec.obs_dim}, G={loaded.spec.state_dim}, A={loaded.spec.action_size})")
    elif loaded.data is None:
        raise MablError(f"run {run_dir} holds no replay (a representation-benchmark run); pass --data DATASET")
    else:
        source = loaded.data
    if windows is None:  # the default: 100, or as many non-overlapping windows as the data holds
        windows = min(100, source.n_rows // length)
    rng = np.random.default_rng(seed)
    starts, win = sample_windows(source, length, windows, rng)
    torch.manual_seed(seed)
    rows = source.rows
    reward, done = np.asarray(rows["reward"]), np.asarray(rows["done"])
    if reward.ndim == 2:  # per-agent rewards (Flatland): the team's is their mean, as imagination's
        reward = reward.mean(-1)
    if done.ndim == 2:  # per-agent done: the team's episode goes on until every agent is done
        done = done.all(-1)
    returns, complete = discounted_returns(reward, done, rows["last"], loaded.cfg.policy.gamma)
    index = starts[None, :] + np.arange(length)[:, None]
    result = diagnose_windows(loaded.agent, win, horizon, returns[index], complete[index], stack=stack,
                              imagination=imagination, split=split, rng=rng)
    draw_probes = [{"agent": result["probe_state_r2"], "global": result["probe_state_r2_global"],
                    "obs": result["probe_state_r2_obs"]["current"], "stacked": result["probe_state_r2_obs"]["stacked"]}]
    for extra in range(seed + 1, seed + draws):
        extra_rng = np.random.default_rng(extra)
        _, extra_win = sample_windows(source, length, windows, extra_rng)
        torch.manual_seed(extra)
        draw_probes.append(diagnose_windows(loaded.agent, extra_win, horizon, stack=stack, split=split,
                                            rng=extra_rng, probes_only=True))
    result["probe_spread"] = probe_spread(draw_probes, list(range(seed, seed + draws))) if draws > 1 else None
    ordered = {k: _json_ready(result.get(k)) for k in RESULT_KEYS}
    ordered["meta"] = {"run_dir": str(run_dir), "checkpoint": str(loaded.checkpoint), "algo": loaded.cfg.algo,
                       "env": loaded.spec.name, "data": source.source, "data_rows": source.n_rows,
                       "windows": windows, "length": length, "horizon": horizon, "seed": seed,
                       "burn_in": BURN_IN, "stack": stack, "imagination": imagination, "split": split,
                       "draws": draws,
                       "window_starts": [int(s) for s in starts]}
    return ordered


def probe_spread(draws: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """The state probes' ``pooled`` and ``mean`` R^2 over window draws (one dict per draw with the
    probes ``agent``, ``global``, ``obs``, ``stacked``, :func:`diagnose_windows`'s ``probes_only``):
    per feature set the values in draw order and their mean, population std, min and max (None for a
    feature set a model lacks)."""
    out: dict[str, Any] = {"draws": len(draws), "seeds": seeds}
    for name in ("agent", "global", "obs", "stacked"):
        if draws[0][name] is None:
            out[name] = None
            continue
        entry = {}
        for stat in ("pooled", "mean"):
            values = [d[name][stat] for d in draws]
            finite = np.array([v for v in values if v is not None], np.float64)
            entry[stat] = values
            entry[f"{stat}_mean"] = float(finite.mean()) if len(finite) else None
            entry[f"{stat}_std"] = float(finite.std()) if len(finite) else None
            entry[f"{stat}_min"] = float(finite.min()) if len(finite) else None
            entry[f"{stat}_max"] = float(finite.max()) if len(finite) else None
        out[name] = entry
    return out


def _json_ready(value: Any) -> Any:
    """Non-finite floats (e.g. a statistic over no samples) become None, so the JSON stays strict."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def training_diagnostics(agent, rows: dict[str, Any]) -> dict[str, float]:
    """The cheap subset ``--diagnose-every`` logs: the agent-feature probe of the state on the
    learner call's own windows (a random half fit, the other half score), open-loop errors for k = 1 ..
    :data:`TRAIN_HORIZON` and the KL per level. Flat ``diag/...`` numbers; the torch RNG is left as it was."""
    windows = {k: v.cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in rows.items()}
    devices = [agent.device] if agent.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        res = diagnose_windows(agent, windows, TRAIN_HORIZON, full=False)
    out = {"diag/probe_state_r2": res["probe_state_r2"]["mean"], "diag/kl_agent": res["latents"]["agent"]["kl"]}
    if res["latents"]["global"] is not None:
        out["diag/kl_global"] = res["latents"]["global"]["kl"]
    for entry in res["open_loop"]:
        for key in ("obs_error", "reward_error", "cont_brier"):
            out[f"diag/{key}_k{entry['k']}"] = entry[key]
    return {k: (float("nan") if v is None else v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------- output
def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(result: dict[str, Any]) -> str:
    """The readable form of :func:`diagnose`'s result."""
    meta = result["meta"]
    lines = [f"{meta['algo']} on {meta['env']}: {meta['checkpoint']}",
             f"data: {meta['data']} ({meta['data_rows']} rows), {meta['windows']} windows of {meta['length']} rows, "
             f"seed {meta['seed']}", ""]
    state = result["probe_state_r2"]
    lines.append(f"probe (ridge, R^2 on held-out windows; {state['split']})")
    obs = result["probe_state_r2_obs"]
    rows = [("agent [z^a, h^a]", state, (result["probe_others_obs_r2"] or {}).get("agent")),
            ("raw own obs", obs["current"], ((result["probe_others_obs_r2"] or {}).get("obs") or {}).get("current")),
            (f"last {obs['stack']} own obs", obs["stacked"],
             ((result["probe_others_obs_r2"] or {}).get("obs") or {}).get("stacked")),
            ("global [z^g, h^g]", result["probe_state_r2_global"], (result["probe_others_obs_r2"] or {}).get("global"))]
    spread = result.get("probe_spread")
    lines.append(f"  {'features':<22}{'state s_t':>12}{'(pooled)':>10}{'others obs':>12}{'(pooled)':>10}"
                 + (f"   state pooled over {spread['draws']} draws: mean +- std [min, max]" if spread else ""))
    for (name, s, o), key in zip(rows, ("agent", "obs", "stacked", "global")):
        sp = spread and spread.get(key)
        lines.append(f"  {name:<22}{_fmt(s and s['mean']):>12}{_fmt(s and s.get('pooled')):>10}"
                     f"{_fmt(o and o['mean']):>12}{_fmt(o and o.get('pooled')):>10}"
                     + (f"   {_fmt(sp['pooled_mean'])} +- {_fmt(sp['pooled_std'])} [{_fmt(sp['pooled_min'])}, "
                        f"{_fmt(sp['pooled_max'])}]" if sp else ""))
    lines += ["", "open loop (priors rolled with the real actions)",
              f"  {'k':>3}{'obs mse':>10}{'rew mae':>10}{'rew corr':>10}{'cont brier':>12}{'cont acc':>10}"
              f"{'avail acc':>11}{'n':>6}"]
    for e in result["open_loop"]:
        lines.append(f"  {e['k']:>3}{_fmt(e['obs_error'], 4):>10}{_fmt(e['reward_error'], 4):>10}"
                     f"{_fmt(e['reward_corr']):>10}{_fmt(e['cont_brier'], 4):>12}{_fmt(e['cont_accuracy']):>10}"
                     f"{_fmt(e['avail_accuracy']):>11}{e['n_transitions']:>6}")
    im = result["imagination"]
    if im:
        lines += ["", f"imagination (H={im['horizon']}, {im['starts']} starts; {im.get('compared', 0)} with a "
                  f"complete observed return)",
                  f"  lambda-return mean {_fmt(im['lambda_return_mean'])}, observed return mean "
                  f"{_fmt(im.get('observed_return_mean'))}, bias {_fmt(im.get('lambda_return_bias'))}, "
                  f"corr {_fmt(im.get('lambda_return_corr'))}",
                  f"  critic value bias {_fmt(im.get('value_bias'))}, corr {_fmt(im.get('value_corr'))}; "
                  f"imagined reward {_fmt(im['imagined_reward_mean'], 4)} +- {_fmt(im['imagined_reward_std'], 4)}, "
                  f"real {_fmt(im['real_reward_mean'], 4)} +- {_fmt(im['real_reward_std'], 4)}"]
    rh = result.get("reward_head")
    if rh:
        lines += ["", f"reward head (one step from the posterior, the loss's reading; {rh['n']} rows): "
                  f"mae {_fmt(rh['mae'], 4)}, corr {_fmt(rh['corr'])}"]
        for name, label in [("zero", "real reward 0"), ("largest", f"largest {rh['top']:.0%} of rows"),
                            ("other", "other rows")]:
            g = rh[name]
            lines.append(f"  {label:<22}" + (f"n {g['n']:>6}  real {_fmt(g['real_mean'], 4):>8}  predicted "
                                             f"{_fmt(g['pred_mean'], 4):>8}" if g else "none"))
    lines += ["", "latents (posterior)"]
    for level, st in result["latents"].items():
        if st is not None:
            lines.append(f"  {level:<7} KL {_fmt(st['kl'])}, entropy {_fmt(st['entropy_mean'])} of max "
                         f"{_fmt(st['max_entropy'])}, unused classes {st['unused_class_fraction']:.1%}, "
                         f"collapsed categoricals {st['collapsed_fraction']:.1%}")
    return "\n".join(lines)


def write_outputs(result: dict[str, Any], out: str | Path) -> list[Path]:
    """``--out``: diagnose.json and PNG plots (error vs k; probe R^2 per state feature); matplotlib is
    imported here only."""
    from mabl.checkpoint import atomic_write_bytes

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "diagnose.json", json.dumps(result, indent=1).encode())
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MablError("--out plots need matplotlib: pip install 'mabl[report]'") from None
    files = [out / "diagnose.json"]
    ol = result["open_loop"]
    ks = [e["k"] for e in ol]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, key, title in zip(axes, ("obs_error", "reward_error", "cont_brier"),
                              ("observation MSE", "reward MAE", "continuation Brier")):
        ax.plot(ks, [np.nan if e[key] is None else e[key] for e in ol], marker="o")
        ax.set_xlabel("open-loop step k")
        ax.set_title(title)
    fig.suptitle(f"{result['meta']['algo']}: open-loop prediction error")
    fig.tight_layout()
    fig.savefig(out / "open_loop.png", dpi=110)
    plt.close(fig)
    files.append(out / "open_loop.png")
    fig, ax = plt.subplots(figsize=(12, 3.6))
    series = [("agent [z^a, h^a]", result["probe_state_r2"]),
              ("raw own obs", result["probe_state_r2_obs"]["current"]),
              (f"last {result['probe_state_r2_obs']['stack']} own obs", result["probe_state_r2_obs"]["stacked"]),
              ("global [z^g, h^g]", result["probe_state_r2_global"])]
    for name, probe in series:
        if probe is not None:
            ax.plot([np.nan if v is None else v for v in probe["per_dim"]], marker=".", lw=0.8, label=name)
    ax.set_xlabel("state feature")
    ax.set_ylabel("held-out R^2")
    ax.set_ylim(-0.5, 1.05)
    ax.legend(fontsize=8)
    ax.set_title(f"{result['meta']['algo']}: linear probe of the global state, per feature")
    fig.tight_layout()
    fig.savefig(out / "probe_state_r2.png", dpi=110)
    plt.close(fig)
    files.append(out / "probe_state_r2.png")
    return files
