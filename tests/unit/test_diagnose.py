"""`mabl diagnose`'s statistics on synthetic cases with known answers, and the whole pipeline on
untrained models of every world-model variant (discrete and continuous) saved as run directories."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from mabl import diagnose as dg
from mabl.algo import build_learner
from mabl.checkpoint import checkpoint_files, save_checkpoint
from mabl.config import replace_path, to_dict
from mabl.envs.base import EnvSpec
from mabl.errors import MablError
from mabl.presets import build_config
from mabl.replay import SequenceReplay

DISCRETE = EnvSpec("toy", n_agents=3, obs_dim=6, state_dim=5, discrete=True, n_actions=4, has_action_mask=True,
                   episode_limit=30, has_win=True)
CONTINUOUS = EnvSpec("toy-cont", n_agents=2, obs_dim=7, state_dim=9, discrete=False, action_dim=3,
                     action_low=-0.4, action_high=0.4, episode_limit=30)


# ------------------------------------------------------------------------------ probe
def test_probe_recovers_an_exact_linear_target():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 12))
    y = x @ rng.normal(size=(12, 4)) + 3.0
    res = dg.ridge_probe(x[:300], y[:300], x[300:], y[300:])
    assert res["dims_scored"] == 4
    assert res["mean"] > 0.999 and min(res["per_dim"]) > 0.999


def test_probe_of_independent_noise_is_near_zero_on_held_out_data():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2000, 20)), rng.normal(size=(2000, 3))
    res = dg.ridge_probe(x[:1000], y[:1000], x[1000:], y[1000:])
    assert -0.05 < res["mean"] < 0.02


def test_probe_leaves_out_constant_target_dimensions():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 3))
    y = np.stack([x[:, 0], np.full(200, 7.0)], 1)
    res = dg.ridge_probe(x[:100], y[:100], x[100:], y[100:])
    assert res["per_dim"][1] is None and res["dims_scored"] == 1
    assert res["mean"] == pytest.approx(res["per_dim"][0])


def test_pooled_r2_weighs_dimensions_by_their_held_out_variance():
    # Dimension 0 is x0 plus noise (R^2 about 0.8). Dimension 1 is a rare flag: 1 on every fifth fit
    # row, which a probe fits to x1, but only on a handful of score rows, so its score-set variance is
    # tiny and the probe's small errors there give a hugely negative R^2. The mean of per-dimension
    # R^2 follows that dimension; the pooled R^2 (1 - total SSE / total SST, computed here by hand
    # from the per-dimension values and the score set's own variances) stays near dimension 0's.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 3))
    y0 = x[:, 0] + 0.5 * rng.normal(size=400)
    flag = np.zeros(400)
    flag[:200:5] = 1.0
    flag[[250, 330]] = 1.0
    y1 = flag * (1.0 + 0.1 * x[:, 1])
    x[:200, 2] += 3.0 * flag[:200]  # the flag is visible in the fit half only
    y = np.stack([y0, y1], 1)
    res = dg.ridge_probe(x[:200], y[:200], x[200:], y[200:])
    r2 = np.array(res["per_dim"])
    assert r2[1] < -1.0 and res["mean"] < 0.0
    sst = ((y[200:] - y[200:].mean(0)) ** 2).sum(0)
    by_hand = 1.0 - ((1.0 - r2) * sst).sum() / sst.sum()
    assert res["pooled"] == pytest.approx(by_hand, rel=1e-9)
    assert res["pooled"] > 0.6


def test_data_order_split_fits_the_first_half_of_the_windows_and_scores_the_second():
    # The target is +x in the first half of the windows and -x in the second: a probe fitted on the
    # first half and scored on the second gets R^2 near -3 (prediction -y: SSE = 4 SST); scored on its
    # own fit data it would be near 1.
    rng = np.random.default_rng(3)
    steps, windows, agents = 6, 10, 2
    feats = rng.normal(size=(steps, windows, agents, 1))
    sign = np.where(np.arange(windows) < windows // 2, 1.0, -1.0)[None, :, None, None]
    target = feats * sign
    mask = np.ones((steps, windows), bool)
    fit, order, line = dg.probe_split(windows, "data_order", None)
    assert np.array_equal(fit, np.arange(windows) < windows // 2) and np.array_equal(order, np.arange(windows))
    assert "data order" in line
    res = dg._split_probe(feats, target, mask, fit, order)
    assert res["mean"] < -2.5
    assert res["samples_fit"] == res["samples_score"] == steps * windows // 2 * agents


def _synthetic_windows(rng, steps, windows, features, r2, era_shift=0.0):
    """Features ``[T, B, 1, F]`` (standard normal) and a 2-dim target ``x @ w + noise`` whose noise
    makes the population R^2 of the best linear read-out exactly ``r2``; ``era_shift`` adds to the
    target an offset that grows with the window's position in the data and that no feature shows."""
    x = rng.normal(size=(steps, windows, 1, features))
    w = rng.normal(size=(features, 2))
    signal_var = (w ** 2).sum(0)  # var(x @ w) per target dimension, x standard normal
    noise_sd = np.sqrt(signal_var * (1.0 - r2) / r2)
    era = era_shift * np.linspace(-1.0, 1.0, windows)[None, :, None, None]
    return x, x @ w + noise_sd * rng.normal(size=(steps, windows, 1, 2)) + era, signal_var, noise_sd ** 2


def test_random_split_probe_recovers_a_known_r2_of_synthetic_features():
    # 12 features, target R^2 0.6 by construction; 200 windows of 20 steps: ~2000 samples fit 12
    # weights, so the held-out R^2 must be within 0.03 of the population value.
    rng = np.random.default_rng(11)
    feats, target, _, _ = _synthetic_windows(rng, 20, 200, 12, 0.6)
    mask = np.ones((20, 200), bool)
    fit, order, line = dg.probe_split(200, "random", np.random.default_rng(0))
    assert fit.sum() == 100 and "random" in line and sorted(order) == list(range(200))
    assert not np.array_equal(fit, np.arange(200) < 100)  # not the data-order half
    res = dg._split_probe(feats, target, mask, fit, order)
    assert res["pooled"] == pytest.approx(0.6, abs=0.03) and res["mean"] == pytest.approx(0.6, abs=0.03)
    assert res["lambda"][0] <= 10.0  # 2000 samples for 12 weights: cross-validation wants little shrinkage


def test_random_split_measures_the_read_out_where_the_data_order_split_measures_drift():
    # The target drifts with the data's position (an offset no feature shows, as a replay written by
    # improving policies drifts). Pooled over the data, the best linear read-out explains
    # var(signal) / (var(signal) + var(noise) + var(offset)); a random half of the windows recovers
    # that, while fitting the earlier half and scoring the later extrapolates the drift and scores
    # far below it.
    rng = np.random.default_rng(12)
    steps, windows, features, r2 = 10, 200, 8, 0.7
    feats, target, signal_var, noise_var = _synthetic_windows(rng, steps, windows, features, r2, era_shift=1.5)
    offset_var = 1.5 ** 2 * np.var(np.linspace(-1.0, 1.0, windows))
    expected = float(1.0 - (noise_var + offset_var).sum() / (signal_var + noise_var + offset_var).sum())
    mask = np.ones((steps, windows), bool)
    rand = dg._split_probe(feats, target, mask, *dg.probe_split(windows, "random", np.random.default_rng(1))[:2])
    ordered = dg._split_probe(feats, target, mask, *dg.probe_split(windows, "data_order", None)[:2])
    assert rand["pooled"] == pytest.approx(expected, abs=0.04)
    assert ordered["pooled"] < expected - 0.2


def test_lambda_is_chosen_inside_the_fit_windows_without_the_score_set():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(400, 30))
    y = x[:, :1] + 2.0 * rng.normal(size=(400, 1))  # a weak read-out among noise features: shrinkage pays
    groups = np.repeat(np.arange(40), 10)
    a = dg.ridge_probe(x[:200], y[:200], x[200:], y[200:], groups=groups[:200])
    b = dg.ridge_probe(x[:200], y[:200], x[200:], -50.0 * y[200:] + 3.0, groups=groups[:200])
    assert a["lambda"] == b["lambda"]  # the score set changed, the chosen penalty did not
    # the chosen lambda minimises the 5-fold error computed here by hand (plain ridge, closed form)
    folds = np.repeat(np.arange(5), 40)
    errors = []
    for lam in dg.RIDGE_LAMBDAS:
        total = 0.0
        for k in range(5):
            tr, te = folds != k, folds == k
            mu, sd = x[:200][tr].mean(0), x[:200][tr].std(0)
            xt, xe = (x[:200][tr] - mu) / sd, (x[:200][te] - mu) / sd
            ym = y[:200][tr].mean(0)
            coef = np.linalg.solve(xt.T @ xt + lam * np.eye(30), xt.T @ (y[:200][tr] - ym))
            total += float(((y[:200][te] - ym - xe @ coef) ** 2).sum())
        errors.append(total)
    assert a["lambda"] == dg.RIDGE_LAMBDAS[int(np.argmin(errors))]


def test_cross_validation_folds_keep_each_window_whole():
    groups = np.array([7, 7, 3, 3, 3, 9, 1, 1, 5, 5, 2])  # windows in the order the probe takes them
    fold = dg.cv_folds(len(groups), groups, folds=3)
    # 6 distinct windows in order of appearance 7, 3, 9, 1, 5, 2 -> blocks of 2: folds 0,0,1,1,2,2
    assert fold.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert dg.cv_folds(10, None, folds=5).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert dg.cv_folds(4, np.zeros(4), folds=5).tolist() == [0, 1, 2, 3]  # one window: its samples are cut


def test_probe_spread_is_the_statistics_of_the_draws():
    draws = [{"agent": {"pooled": p, "mean": m}, "global": None, "obs": {"pooled": 0.5, "mean": 0.4},
              "stacked": {"pooled": None, "mean": None}} for p, m in [(0.1, 0.0), (0.3, -0.2), (0.2, 0.1)]]
    out = dg.probe_spread(draws, [4, 5, 6])
    assert out["draws"] == 3 and out["seeds"] == [4, 5, 6] and out["global"] is None
    assert out["agent"]["pooled"] == [0.1, 0.3, 0.2]
    assert out["agent"]["pooled_mean"] == pytest.approx(0.2)
    assert out["agent"]["pooled_std"] == pytest.approx(math.sqrt((0.01 + 0.01 + 0.0) / 3))
    assert (out["agent"]["pooled_min"], out["agent"]["pooled_max"]) == (0.1, 0.3)
    assert out["agent"]["mean_mean"] == pytest.approx(-0.1 / 3)
    assert out["obs"]["pooled_std"] == 0.0 and out["stacked"]["pooled_mean"] is None


def test_windows_never_overlap_and_bad_counts_are_refused():
    rng = np.random.default_rng(4)
    starts = dg.draw_windows(1000, 20, 40, rng)
    assert np.all(np.diff(starts) >= 20) and starts[0] >= 0 and starts[-1] + 20 <= 1000
    fit, score = starts[:20], starts[20:]
    rows_fit = {int(s) + i for s in fit for i in range(20)}
    assert not rows_fit & {int(s) + i for s in score for i in range(20)}
    with pytest.raises(MablError, match="--windows=51"):
        dg.draw_windows(1000, 20, 51, rng)
    with pytest.raises(MablError, match=">= 4"):
        dg.draw_windows(1000, 20, 2, rng)


def test_window_helpers_match_the_rows_and_the_model_step_by_step(tmp_path):
    run_dir, replay = make_run(tmp_path, "mabl")
    loaded = dg.load_run(run_dir)
    data = loaded.data
    starts, windows = dg.sample_windows(data, 10, 6, np.random.default_rng(3))
    assert len(starts) == 6 and np.all(np.diff(starts) >= 10) and starts[0] >= 0 and starts[-1] + 10 <= data.n_rows
    for b, s in enumerate(starts):  # window b is rows s .. s+9 of the data, in order
        assert np.array_equal(windows["obs"][:, b], data.rows["obs"][s:s + 10])
        assert np.array_equal(windows["reward"][:, b], data.rows["reward"][s:s + 10])
    model = loaded.agent.world_model.eval()
    batch, prev, filt = dg.filter_windows(loaded.agent, windows, reward_scale=10.0)
    # step j pairs row j+1's observation with row j's action and reward (times the scale)
    assert torch.equal(batch.obs, torch.as_tensor(windows["obs"][1:]))
    assert torch.allclose(batch.reward, torch.as_tensor(windows["reward"][:-1]).float() * 10.0)
    assert torch.equal(prev.argmax(-1), torch.as_tensor(windows["action"][:-1]))
    torch.manual_seed(0)  # the latents are sampled: the same posterior logits from one window alone
    with torch.no_grad():
        one = model.observe(batch.obs[:, 2:3], batch.state[:, 2:3], prev[:, 2:3], batch.first[:, 2:3])
    assert torch.allclose(filt.post_a_logits[0, 2:3], one.post_a_logits[0], atol=1e-5)
    mask = np.zeros(batch.obs.shape[:2], bool)
    mask[4, 1] = mask[7, 0] = mask[7, 5] = True
    start = dg.posterior_starts(filt.post, mask)  # row-major over [T, B]: (4, 1), (7, 0), (7, 5)
    expected = torch.stack([filt.post.z_a[4, 1], filt.post.z_a[7, 0], filt.post.z_a[7, 5]])
    assert start.z_a.dtype == torch.float32 and torch.equal(start.z_a, expected.float())


def test_stacked_observations_stop_at_the_episode_start():
    # 1 window, 1 agent, 1 feature; obs of step j = j + 1; row 3 is an episode's last row, so step 3
    # (row 4) starts a new episode.
    steps = 6
    obs = (np.arange(steps, dtype=np.float32) + 1)[:, None, None, None]
    last = np.zeros((steps + 1, 1), bool)
    last[3] = True
    stacked = dg._stacked_obs(obs, last, 3)[:, 0, 0]
    assert stacked[2].tolist() == [3, 2, 1]
    assert stacked[3].tolist() == [4, 0, 0]  # new episode: nothing from before
    assert stacked[4].tolist() == [5, 4, 0]
    assert stacked[5].tolist() == [6, 5, 4]


# ------------------------------------------------------------------------------ reward head
def test_reward_by_size_groups_hand_made_rows():
    real = np.array([0.0, 0.1, 1.0, 0.0, 0.2, 1.2, 0.1, 0.0, 0.3, 0.1])
    pred = np.array([0.1, 0.1, 0.2, -0.1, 0.2, 0.3, 0.0, 0.0, 0.3, 0.2])
    out = dg.reward_by_size(pred, real, top=0.2)  # 20 % of 10 rows: the two largest, 1.2 and 1.0
    assert out["n"] == 10 and out["mae"] == pytest.approx(np.abs(pred - real).mean())
    assert out["corr"] == pytest.approx(np.corrcoef(pred, real)[0, 1])
    assert out["zero"] == {"n": 3, "real_mean": 0.0, "pred_mean": pytest.approx(0.0)}
    assert out["largest"] == {"n": 2, "real_mean": pytest.approx(1.1), "pred_mean": pytest.approx(0.25)}
    assert out["other"] == {"n": 5, "real_mean": pytest.approx(0.16), "pred_mean": pytest.approx(0.16)}
    # at least one row; never a zero row; an empty group is None
    few = dg.reward_by_size(np.zeros(4), np.array([0.0, 0.0, 0.5, 0.0]), top=0.02)
    assert few["largest"]["n"] == 1 and few["other"] is None and few["zero"]["n"] == 3
    assert dg.reward_by_size(np.zeros(3), np.zeros(3))["largest"] is None
    assert dg.reward_by_size(np.zeros(0), np.zeros(0)) is None


def test_reward_head_block_reads_what_the_loss_trains(tmp_path):
    """The block's predictions are the loss's reward heads on the posterior (``loss_heads`` with the
    transition states, mean over agents), on the real rows after the burn-in, in the env's units."""
    run_dir, _ = make_run(tmp_path, "mabl")
    loaded = dg.load_run(run_dir)
    res = dg.diagnose(run_dir, windows=8, length=12, horizon=4, seed=0)["reward_head"]
    _, windows = dg.sample_windows(loaded.data, 12, 8, np.random.default_rng(0))
    model = loaded.agent.world_model.eval()
    with torch.no_grad():
        torch.manual_seed(0)
        batch, _, filt = dg.filter_windows(loaded.agent, windows)
        heads = model.loss_heads(filt.post.map(lambda t: t[:-1]), filt.h_a_trans[1:], filt.h_g_trans[1:])
    pred = heads["reward"][..., 0].mean(-1).numpy() / loaded.cfg.model.reward_scale
    real = batch.reward[1:].numpy()
    keep = ~np.asarray(windows["fake"], bool)[1:-1]
    keep[:dg.BURN_IN] = False
    assert res["n"] == keep.sum() > 0
    assert res["mae"] == pytest.approx(np.abs(pred[keep] - real[keep]).mean(), rel=1e-5)


# ------------------------------------------------------------------------------ returns
def test_discounted_returns_stop_at_episode_ends():
    reward = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    done = np.array([0, 1, 1, 0, 0, 0, 0], bool)  # row 1 terminates; row 2 is an absorbing row (done too)
    last = np.array([0, 0, 1, 0, 1, 0, 0], bool)  # rows 3-4: a truncated episode; rows 5-6: unfinished
    g, complete = dg.discounted_returns(reward, done, last, 0.5)
    np.testing.assert_allclose(g, [1 + 0.5 * 2, 2, 3, 4 + 0.5 * 5, 5, 6 + 0.5 * 7, 7])
    assert complete.tolist() == [True, True, True, True, True, False, False]


# ------------------------------------------------------------------------------ open loop
def test_open_loop_masks_do_not_cross_an_episode_end():
    # window of 8 rows, context C = 2 (roll from row 2), H = 5 (rows 2..6 act, rows 3..7 observed)
    fake = np.zeros((8, 2), bool)
    last = np.zeros((8, 2), bool)
    # window 0: row 4 is the last of a truncated episode; window 1: row 3 terminates, rows 4-5 absorbing
    last[4, 0] = True
    fake[4:6, 1] = True
    last[5, 1] = True
    trans, obs = dg.open_loop_masks(fake, last, context=2, horizon=5)
    # window 0: transitions out of rows 2,3,4 are the episode's (4 is its final one); obs rows 3,4 only
    assert trans[:, 0].tolist() == [True, True, True, False, False]
    assert obs[:, 0].tolist() == [True, True, False, False, False]
    # window 1: transitions out of rows 2, 3 (3 terminates); obs row 3 only (row 4 is absorbing)
    assert trans[:, 1].tolist() == [True, True, False, False, False]
    assert obs[:, 1].tolist() == [True, False, False, False, False]


def test_open_loop_stats_of_an_exact_model_are_zero_error():
    rng = np.random.default_rng(5)
    h, b, n = 3, 6, 2
    target = {"obs": rng.normal(size=(h, b, n, 4)), "reward": rng.normal(size=(h, b)),
              "cont": (rng.random((h, b)) > 0.3).astype(float), "avail": rng.random((h, b, n, 5)) > 0.5}
    exact = {**target, "avail": target["avail"].astype(float)}
    ones = np.ones((h, b), bool)
    for entry in dg.open_loop_stats(exact, target, ones, ones):
        assert entry["obs_error"] == 0 and entry["reward_error"] == 0 and entry["cont_brier"] == 0
        assert entry["reward_corr"] == pytest.approx(1.0) and entry["cont_accuracy"] == 1
        assert entry["avail_accuracy"] == 1 and entry["n_obs"] == b
    # known errors: obs off by 0.5 everywhere, continuation 0.5 for every agent, reward shifted by 2
    off = {"obs": target["obs"] + 0.5, "reward": target["reward"] + 2.0, "cont": np.full((h, b, n), 0.5),
           "avail": None}
    trans = ones.copy()
    trans[2, :3] = False
    stats = dg.open_loop_stats(off, target, trans, ones)
    assert stats[0]["obs_error"] == pytest.approx(0.25) and stats[0]["reward_error"] == pytest.approx(2.0)
    assert stats[0]["reward_corr"] == pytest.approx(1.0) and stats[0]["cont_brier"] == pytest.approx(0.25)
    assert stats[0]["avail_accuracy"] is None and stats[2]["n_transitions"] == 3


def test_open_loop_continuation_per_agent_targets():
    """With per-agent done (Flatland) each agent's probability is scored against its own target."""
    h, b, n = 2, 3, 2
    target_cont = np.array([[[1, 0], [1, 1], [0, 0]], [[1, 1], [0, 1], [1, 0]]], float)  # [H, B, N]
    pred_cont = np.full((h, b, n), 0.8)
    target = {"obs": np.zeros((h, b, n, 1)), "reward": np.zeros((h, b)), "cont": target_cont, "avail": None}
    pred = {**target, "cont": pred_cont}
    ones = np.ones((h, b), bool)
    for k, entry in enumerate(dg.open_loop_stats(pred, target, ones, ones)):
        hand = np.mean([(0.8 - c) ** 2 for c in target_cont[k].ravel()])
        assert entry["cont_brier"] == pytest.approx(hand)
        assert entry["cont_accuracy"] == pytest.approx(target_cont[k].mean())
    assert dg._team(torch.tensor([[[1.0, 3.0]]])).tolist() == [[2.0]]  # per-agent rewards -> their mean


# ------------------------------------------------------------------------------ latents
def test_uniform_logits_give_zero_kl_and_maximal_entropy():
    logits = torch.zeros(4, 3, 5, 7)  # [T, B, C, K]
    sample = torch.nn.functional.one_hot(torch.randint(0, 7, (4, 3, 5)), 7).float().flatten(-2)
    st = dg.latent_level_stats(logits, logits, sample, torch.ones(4, 3, dtype=torch.bool))
    assert st["kl"] == pytest.approx(0.0, abs=1e-6)
    assert st["entropy_mean"] == pytest.approx(math.log(7), abs=1e-5) == st["max_entropy"]
    assert len(st["entropy_per_categorical"]) == 5


def test_collapse_fraction_of_a_hand_made_usage_pattern():
    counts = np.array([[9, 0, 0, 0], [3, 3, 0, 0], [1, 1, 1, 1], [0, 0, 4, 0]])
    st = dg.usage_stats(counts)
    assert st["collapsed_fraction"] == pytest.approx(2 / 4)
    assert st["unused_class_fraction"] == pytest.approx((3 + 2 + 0 + 3) / 16)


# ------------------------------------------------------------------------------ the pipeline
def random_replay(spec: EnvSpec, episodes: int, seed: int) -> SequenceReplay:
    rng = np.random.default_rng(seed)
    replay = SequenceReplay(spec, 10_000)
    for e in range(episodes):
        length = int(rng.integers(8, 30))
        n = spec.n_agents
        ep = {"obs": rng.normal(size=(length, n, spec.obs_dim)).astype(np.float32),
              "state": rng.normal(size=(length, spec.state_dim)).astype(np.float32),
              "reward": rng.normal(size=length).astype(np.float32), "done": np.zeros(length, bool)}
        if spec.discrete:
            ep["action"] = rng.integers(0, spec.n_actions, size=(length, n))
        else:
            ep["action"] = rng.uniform(spec.action_low, spec.action_high, (length, n, spec.action_dim)).astype(np.float32)
        if spec.has_action_mask:
            avail = rng.random((length, n, spec.n_actions)) > 0.4
            avail[..., 0] = True
            ep["avail"] = avail
        terminated = e % 2 == 0
        ep["done"][-1] = terminated
        replay.add_episode(ep, terminated, rng)
    return replay


def make_run(tmp_path, algo: str, spec: EnvSpec = DISCRETE, with_replay: bool = True, seed: int = 0):
    cfg = build_config("debug", {"algo": algo, "seed": seed, "device": "cpu"})
    if algo not in ("mappo", "ippo"):
        cfg = replace_path(cfg, "policy.horizon", 4)
    agent = build_learner(spec, cfg, torch.device("cpu"))
    replay = random_replay(spec, 30, seed)
    run_dir = tmp_path / f"{algo}_{spec.name}_{seed}"
    save_checkpoint(run_dir, 100, {"config": to_dict(cfg), "spec": dataclasses.asdict(spec),
                                   "agent": agent.state_dict(), "replay": replay.state_dict() if with_replay else None})
    return run_dir, replay


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


@pytest.mark.parametrize("algo,spec", [("mabl", DISCRETE), ("mabl-sg", DISCRETE), ("dreamer", DISCRETE),
                                       ("mamba", DISCRETE), ("mag", DISCRETE), ("mabl", CONTINUOUS), ("dreamer", CONTINUOUS),
                                       ("mag", CONTINUOUS)])
def test_diagnose_reports_every_key_for_every_variant(tmp_path, algo, spec):
    run_dir, _ = make_run(tmp_path, algo, spec)
    res = dg.diagnose(run_dir, windows=8, length=12, horizon=4, seed=0)
    assert list(res)[:len(dg.RESULT_KEYS)] == list(dg.RESULT_KEYS)
    json.dumps(res, allow_nan=False)  # JSON-clean: no NaN anywhere
    assert _finite(res["probe_state_r2"]["mean"]) and len(res["probe_state_r2"]["per_dim"]) == spec.state_dim
    assert _finite(res["probe_state_r2_obs"]["current"]["mean"]) and _finite(res["probe_state_r2_obs"]["stacked"]["mean"])
    has_global = algo in ("mabl", "mabl-sg")
    assert (res["probe_state_r2_global"] is not None) == has_global
    assert (res["latents"]["global"] is not None) == has_global
    assert len(res["probe_others_obs_r2"]["agent"]["per_dim"]) == (spec.n_agents - 1) * spec.obs_dim
    assert [e["k"] for e in res["open_loop"]] == [1, 2, 3, 4]
    first = res["open_loop"][0]
    assert all(_finite(first[k]) for k in ("obs_error", "reward_error", "cont_brier"))
    assert (first["avail_accuracy"] is not None) == spec.has_action_mask
    im = res["imagination"]
    assert _finite(im["lambda_return_mean"]) and _finite(im["lambda_return_corr"]) and im["compared"] > 0
    assert _finite(res["latents"]["agent"]["kl"]) and "split" in res["probe_state_r2"]
    assert res["reward_head"]["n"] > 0 and _finite(res["reward_head"]["mae"])
    spread = res["probe_spread"]  # draw 0 is the reported one; the others are new window draws
    assert spread["draws"] == dg.DRAWS and spread["seeds"] == list(range(dg.DRAWS))
    assert spread["agent"]["pooled"][0] == res["probe_state_r2"]["pooled"]
    assert spread["stacked"]["pooled"][0] == res["probe_state_r2_obs"]["stacked"]["pooled"]
    assert len(set(spread["agent"]["pooled"])) > 1 and (spread["global"] is not None) == has_global
    assert "random split" in res["probe_state_r2"]["split"] and res["meta"]["split"] == "random"
    assert "draws" in dg.format_table(res)


def test_diagnose_on_other_data_and_refusals(tmp_path):
    run_dir, replay = make_run(tmp_path, "mabl")
    other, _ = make_run(tmp_path, "dreamer", seed=1)
    a = dg.diagnose(run_dir, data=other, windows=6, length=12, horizon=3)
    assert a["meta"]["data"] == f"replay of {other}"
    # a dataset file with the same rows gives the same windows and numbers as the run's own replay
    path = tmp_path / "rows.npz"
    dg.save_dataset(path, dg.replay_rows(replay), DISCRETE, {"note": "test"})
    from_file = dg.diagnose(run_dir, data=path, windows=6, length=12, horizon=3)
    own = dg.diagnose(run_dir, windows=6, length=12, horizon=3)
    assert from_file["probe_state_r2"] == own["probe_state_r2"] and from_file["open_loop"] == own["open_loop"]
    cont_run, _ = make_run(tmp_path, "mabl", CONTINUOUS)
    with pytest.raises(MablError, match="env spec toy-cont"):
        dg.diagnose(run_dir, data=cont_run, windows=6, length=12, horizon=3)
    bare, _ = make_run(tmp_path, "dreamer", with_replay=False, seed=2)
    with pytest.raises(MablError, match="holds no replay"):
        dg.diagnose(bare, windows=6, length=12, horizon=3)
    assert dg.diagnose(bare, data=path, windows=6, length=12, horizon=3)["meta"]["algo"] == "dreamer"
    for model_free in ("mappo", "ippo"):  # (the registry's world_model flag)
        run, _ = make_run(tmp_path, model_free)
        with pytest.raises(MablError, match=f"is a {model_free} run \\(model-free: no world model"):
            dg.diagnose(run)
    with pytest.raises(MablError, match="no checkpoint"):
        dg.diagnose(tmp_path)
    with pytest.raises(MablError, match="does not exist"):
        dg.diagnose(tmp_path / "nowhere")
    with pytest.raises(MablError, match="--horizon=9"):
        dg.diagnose(run_dir, windows=6, length=12, horizon=9)
    with pytest.raises(MablError, match="--windows=500"):
        dg.diagnose(run_dir, windows=500, length=12, horizon=3)
    with pytest.raises(MablError, match="--split=time is not one of random, data_order"):
        dg.diagnose(run_dir, windows=6, length=12, horizon=3, split="time")
    with pytest.raises(MablError, match="--draws=0 must be >= 1"):
        dg.diagnose(run_dir, windows=6, length=12, horizon=3, draws=0)
    single = dg.diagnose(run_dir, windows=6, length=12, horizon=3, draws=1)
    assert single["probe_spread"] is None and single["probe_state_r2"] == own["probe_state_r2"]
    ordered = dg.diagnose(run_dir, windows=6, length=12, horizon=3, split="data_order", draws=1)
    assert "data order" in ordered["probe_state_r2"]["split"] and ordered["open_loop"] == own["open_loop"]


def test_diagnose_reads_past_a_damaged_newest_checkpoint_without_renaming_it(tmp_path, capsys):
    run_dir, _ = make_run(tmp_path, "mabl")
    before = dg.diagnose(run_dir, windows=6, length=12, horizon=3)
    older = checkpoint_files(run_dir)[-1]
    newest = older.with_name("step_000000200.pt")
    newest.write_bytes(older.read_bytes()[:1000])  # a truncated write, as a crash leaves one
    capsys.readouterr()
    after = dg.diagnose(run_dir, windows=6, length=12, horizon=3)
    err = capsys.readouterr().err
    assert newest.name in err and f"read {older.name}" in err and err.count("\n") == 1, err
    assert after["meta"]["checkpoint"] == before["meta"]["checkpoint"] == str(older)
    assert after["probe_state_r2"] == before["probe_state_r2"] and after["open_loop"] == before["open_loop"]
    assert newest.exists() and not newest.with_name(newest.name + ".damaged").exists()  # a reader renames nothing
    older.write_bytes(b"not a checkpoint")
    with pytest.raises(MablError, match="no usable checkpoint.*Nothing was renamed"):
        dg.diagnose(run_dir, windows=6, length=12, horizon=3)
    # --data through a run directory takes the same path
    with pytest.raises(MablError, match="no usable checkpoint"):
        dg.diagnose(make_run(tmp_path, "dreamer", seed=1)[0], data=run_dir, windows=6, length=12, horizon=3)


def test_diagnose_without_imagination_leaves_every_other_number_unchanged(tmp_path):
    run_dir, _ = make_run(tmp_path, "mabl")
    full = dg.diagnose(run_dir, windows=6, length=12, horizon=3)
    lean = dg.diagnose(run_dir, windows=6, length=12, horizon=3, imagination=False)
    assert full["imagination"]["compared"] > 0 and lean["imagination"] is None and lean["meta"]["imagination"] is False
    for key in dg.RESULT_KEYS:
        if key != "imagination":
            assert lean[key] == full[key], key


def test_checkpoint_rows_are_the_replay_rows_oldest_first():
    replay = SequenceReplay(DISCRETE, 100)
    rng = np.random.default_rng(0)
    for _ in range(3):  # wraps around: 3 x (40 + 2 absorbing) rows in a 100-row ring
        replay.add_episode({"obs": rng.normal(size=(40, 3, 6)).astype(np.float32),
                            "state": rng.normal(size=(40, 5)).astype(np.float32), "action": rng.integers(0, 4, (40, 3)),
                            "reward": np.arange(40, dtype=np.float32), "done": np.arange(40) == 39,
                            "avail": np.ones((40, 3, 4), bool)}, True, rng)
    rows = dg.checkpoint_rows(replay.state_dict())
    assert replay.pos == 26 and len(rows["reward"]) == 100
    for key, value in dg.replay_rows(replay).items():
        np.testing.assert_array_equal(rows[key], value)
    # oldest first: the surviving tail of episode 1, then episodes 2 and 3 whole
    np.testing.assert_array_equal(rows["reward"][-42:-2], np.arange(40))
    assert rows["last"][-1] and rows["fake"][-2:].all()


def test_training_diagnostics_leave_the_random_state_alone(tmp_path):
    cfg = build_config("debug", {"algo": "mabl", "device": "cpu"})
    agent = build_learner(DISCRETE, cfg, torch.device("cpu"))
    replay = random_replay(DISCRETE, 20, 0)
    rows = replay.sample(4, cfg.model.seq_len, np.random.default_rng(0))
    torch.manual_seed(7)
    before = torch.get_rng_state()
    out = dg.training_diagnostics(agent, rows)
    assert torch.equal(before, torch.get_rng_state())
    expected = {"diag/probe_state_r2", "diag/kl_agent", "diag/kl_global", "diag/obs_error_k1", "diag/cont_brier_k5"}
    assert expected <= out.keys()
    assert math.isfinite(out["diag/obs_error_k1"]) and math.isfinite(out["diag/kl_agent"])


def _last_linear(module: torch.nn.Module) -> torch.nn.Linear:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]


def test_reward_scale_multiplies_the_learned_reward_and_diagnose_reports_env_units(tmp_path):
    """A model with --model.reward_scale 10 whose reward head and critic output 10x those of a model
    with scale 1 (same weights otherwise) is the same model in other units: every diagnostic, reported
    in the env's units, must agree, while the world model's reward target is 10x the replay's."""
    run_dir, replay = make_run(tmp_path, "mabl")
    loaded = dg.load_run(run_dir)
    cfg10 = replace_path(loaded.cfg, "model.reward_scale", 10.0)
    agent10 = build_learner(DISCRETE, cfg10, torch.device("cpu"))
    agent10.load_state_dict(loaded.agent.state_dict())
    with torch.no_grad():
        for module in (agent10.world_model.reward_head, agent10.critic):
            layer = _last_linear(module)
            layer.weight.mul_(10.0)
            layer.bias.mul_(10.0)
    scaled_dir = tmp_path / "scaled"
    save_checkpoint(scaled_dir, 100, {"config": to_dict(cfg10), "spec": dataclasses.asdict(DISCRETE),
                                      "agent": agent10.state_dict(), "replay": replay.state_dict()})
    rows = replay.sample(4, 12, np.random.default_rng(0))
    torch.testing.assert_close(agent10.to_batch(rows).reward, 10.0 * loaded.agent.to_batch(rows).reward)

    base = dg.diagnose(run_dir, windows=8, length=12, horizon=4, seed=0)
    scaled = dg.diagnose(scaled_dir, windows=8, length=12, horizon=4, seed=0)
    for a, b in zip(base["open_loop"], scaled["open_loop"], strict=True):
        assert b["reward_error"] == pytest.approx(a["reward_error"], rel=1e-4)
        assert b["reward_corr"] == pytest.approx(a["reward_corr"], abs=1e-4)
    for key in ("lambda_return_mean", "value_mean", "imagined_reward_mean", "imagined_reward_std",
                "lambda_return_bias", "value_bias", "lambda_return_corr"):
        assert scaled["imagination"][key] == pytest.approx(base["imagination"][key], rel=1e-4, abs=1e-6), key
    assert base["imagination"]["lambda_return_mean"] != 0.0


# ------------------------------------------------------------------------------ known answers of the model blocks
def _constant_heads(agent, obs_bias: np.ndarray, reward: float, cont_logit: float, value: float,
                    avail_logit: float) -> None:
    """Make every head the open loop and imagination read a constant: the last linear layer's weights
    zero and its bias the constant (the observation decoder, reward, continuation, mask heads; the critic)."""
    model = agent.world_model
    with torch.no_grad():
        for module, bias in ((model.obs_decoder_out, torch.as_tensor(obs_bias)), (model.reward_head, reward),
                             (model.cont_head, cont_logit), (model.avail_head, avail_logit), (agent.critic, value)):
            layer = module if isinstance(module, torch.nn.Linear) else _last_linear(module)
            layer.weight.zero_()
            layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype).expand_as(layer.bias))


def _hand_windows(rng, length: int, count: int, spec: EnvSpec = DISCRETE) -> dict[str, np.ndarray]:
    """Windows with no episode boundary inside (no last or absorbing rows): every target is real."""
    n, a = spec.n_agents, spec.n_actions
    avail = rng.random((length, count, n, a)) < 0.6
    avail[..., 0] = True
    return {"obs": rng.normal(size=(length, count, n, spec.obs_dim)).astype(np.float32),
            "state": rng.normal(size=(length, count, spec.state_dim)).astype(np.float32),
            "action": rng.integers(0, a, (length, count, n)), "reward": rng.normal(size=(length, count)).astype(np.float32),
            "done": rng.random((length, count)) < 0.3, "fake": np.zeros((length, count), bool),
            "last": np.zeros((length, count), bool), "avail": avail}


@pytest.mark.parametrize("algo", ["mabl", "dreamer"])
def test_open_loop_block_of_constant_heads_is_the_error_of_those_constants(algo):
    """Step k of the roll predicts row C+k's observation and the reward and continuation of the
    transition out of row C+k-1 (C = T - H, T = L - 1). With constant heads every error is a
    plain statistic of those data rows, computed here from the window arrays."""
    torch.manual_seed(0)
    cfg = build_config("debug", {"algo": algo, "device": "cpu"})
    agent = build_learner(DISCRETE, cfg, torch.device("cpu"))
    b = np.linspace(-0.5, 0.5, DISCRETE.obs_dim).astype(np.float32)
    r, cont_logit = 0.25, 0.4
    _constant_heads(agent, b, r, cont_logit, value=0.0, avail_logit=2.0)
    length, count, horizon = 14, 5, 4
    win = _hand_windows(np.random.default_rng(8), length, count)
    res = dg.diagnose_windows(agent, win, horizon, full=False)
    context = (length - 1) - horizon
    c = 1.0 / (1.0 + math.exp(-cont_logit))
    assert [e["k"] for e in res["open_loop"]] == list(range(1, horizon + 1))
    for k, entry in enumerate(res["open_loop"], start=1):
        obs_row, trans_row = context + k, context + k - 1
        assert entry["n_transitions"] == entry["n_obs"] == count
        assert entry["obs_error"] == pytest.approx(float(((b - win["obs"][obs_row]) ** 2).mean()), rel=1e-5)
        assert entry["reward_error"] == pytest.approx(float(np.abs(r - win["reward"][trans_row]).mean()), rel=1e-5)
        assert entry["reward_corr"] is None  # a constant prediction has no correlation
        cont_true = 1.0 - win["done"][trans_row].astype(np.float64)
        assert entry["cont_brier"] == pytest.approx(float(((c - cont_true) ** 2).mean()), rel=1e-5)
        assert entry["cont_accuracy"] == pytest.approx(float(cont_true.mean()))  # c > 0.5 predicts "continues"
        assert entry["avail_accuracy"] == pytest.approx(float(win["avail"][obs_row].mean()))  # all predicted available


@pytest.mark.parametrize("algo", ["mabl", "dreamer"])
def test_imagination_block_of_constant_heads_is_the_closed_form_lambda_return(algo):
    """Reward r, continuation c and value v constant: every imagined lambda-return from a start is
    R_0 of R_{H-1} = v, R_k = r + gamma c ((1 - lambda) v + lambda R_{k+1}); the block compares it
    with the observed returns given for the same rows (steps j >= burn-in, state row j + 1)."""
    torch.manual_seed(0)
    cfg = replace_path(build_config("debug", {"algo": algo, "device": "cpu"}), "model.reward_scale", 4.0)
    agent = build_learner(DISCRETE, cfg, torch.device("cpu"))
    r, cont_logit, v = 0.3, 1.2, -0.7  # in the model's units (reward scale 4)
    _constant_heads(agent, np.zeros(DISCRETE.obs_dim, np.float32), r, cont_logit, v, avail_logit=0.0)
    length, count = 12, 4
    rng = np.random.default_rng(9)
    win = _hand_windows(rng, length, count)
    returns = rng.normal(size=(length, count))
    complete = np.ones((length, count), bool)
    complete[-1, 0] = False  # one observed return whose episode end is not in the data
    im = dg.diagnose_windows(agent, win, 3, returns, complete)["imagination"]
    gamma, lam, horizon, scale = cfg.policy.gamma, cfg.policy.lam, cfg.policy.horizon, 4.0
    c = 1.0 / (1.0 + math.exp(-cont_logit))
    ret = v
    for _ in range(horizon - 1):
        ret = r + gamma * c * ((1 - lam) * v + lam * ret)
    burn = min(dg.BURN_IN, (length - 1) // 2)
    starts = (length - 1 - burn) * count
    observed = returns[1 + burn:][complete[1 + burn:]]
    assert im["starts"] == starts and im["compared"] == starts - 1 and im["incomplete_returns"] == 1
    assert im["horizon"] == horizon and im["gamma"] == gamma and im["lambda"] == lam
    assert im["lambda_return_mean"] == pytest.approx(ret / scale, rel=1e-5)
    assert im["value_mean"] == pytest.approx(v / scale, rel=1e-5)
    assert im["imagined_reward_mean"] == pytest.approx(r / scale, rel=1e-5) and im["imagined_reward_std"] < 1e-6
    assert im["observed_return_mean"] == pytest.approx(observed.mean())
    assert im["lambda_return_bias"] == pytest.approx(ret / scale - observed.mean(), rel=1e-5)
    assert im["value_bias"] == pytest.approx(v / scale - observed.mean(), rel=1e-5)
    assert im["lambda_return_corr"] is None and im["value_corr"] is None  # constants correlate with nothing
    real = win["reward"][burn + 1:length - 1]  # out of state rows burn+1 .. L-2 (the last row has no next step)
    assert im["real_reward_mean"] == pytest.approx(float(real.mean()), rel=1e-5)
