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
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mabl.diagnose.data import (
    DATASET_KIND,
    Data,
    Loaded,
    checkpoint_rows,
    discounted_returns,
    draw_windows,
    episode_rows,
    filter_windows,
    gather,
    load_data,
    load_dataset,
    load_run,
    load_run_replay,
    open_checkpoint,
    posterior_starts,
    replay_rows,
    sample_windows,
    save_dataset,
)
from mabl.diagnose.measures import (
    LARGEST,
    _imagination,
    _team,
    imagine_from,
    latent_level_stats,
    open_loop_masks,
    open_loop_predictions,
    open_loop_stats,
    reward_by_size,
    reward_head_block,
    usage_stats,
)
from mabl.diagnose.output import format_table, write_outputs
from mabl.diagnose.probes import (
    CV_FOLDS,
    RIDGE_LAMBDAS,
    SPLITS,
    STACK,
    _features,
    _split_probe,
    _stacked_obs,
    cv_folds,
    probe_split,
    probe_spread,
    ridge_probe,
)
from mabl.errors import MablError

__all__ = ["BURN_IN", "CV_FOLDS", "DATASET_KIND", "DRAWS", "Data", "LARGEST", "Loaded", "RESULT_KEYS", "RIDGE_LAMBDAS",
           "SPLITS", "STACK", "TRAIN_HORIZON", "checkpoint_rows", "cv_folds", "diagnose", "diagnose_windows",
           "discounted_returns", "draw_windows", "episode_rows", "filter_windows", "format_table", "gather", "imagine_from",
           "latent_level_stats", "load_data", "load_dataset", "load_run", "load_run_replay", "open_checkpoint",
           "open_loop_masks", "open_loop_predictions", "open_loop_stats", "posterior_starts", "probe_split",
           "probe_spread", "replay_rows", "reward_by_size", "reward_head_block", "ridge_probe", "sample_windows",
           "save_dataset", "training_diagnostics", "usage_stats", "write_outputs", "_split_probe", "_stacked_obs",
           "_team"]

BURN_IN = 4
"""Filtering steps of a window before its states enter the probe, the latent statistics and the
imagination starts (the filter starts every window from the zero state)."""

DRAWS = 5
"""Window draws (seeds ``seed .. seed + DRAWS - 1``) over which the spread of the state probes is reported."""

TRAIN_HORIZON = 5
"""Open-loop steps of the in-training diagnostics."""

RESULT_KEYS = ("probe_state_r2", "probe_state_r2_global", "probe_state_r2_obs", "probe_others_obs_r2",
               "probe_spread", "open_loop", "imagination", "latents", "reward_head")


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
