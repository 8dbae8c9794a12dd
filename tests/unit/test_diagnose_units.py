"""``mabl diagnose --by-alive / --advantages / --attack-masks`` (mabl.diagnose.units) on hand-made
arrays: which unit-rows count as alive / last unit / attack allowed, the probability that independent
Bernoulli availabilities allow at least one attack, the per-alive-count means and the advantage spread;
end to end on a tiny run, with ``mabl experiment reward-loss`` on the same run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mabl import diagnose
from mabl.diagnose import units


def test_attack_rates_groups_and_probabilities():
    move, stop_only = [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]
    # 2 rows x 3 agents, 5 + 2 actions (two enemies)
    avail = np.array([
        [move + [1, 0], move + [0, 0], stop_only + [0, 0]],  # row 0: two alive, agent 0 may attack
        [move + [0, 0], stop_only + [0, 0], stop_only + [0, 0]],  # row 1: agent 0 is the last unit, no attack
    ], bool)
    p = np.zeros(avail.shape)
    p[0, 0, 5:] = [0.9, 0.5]  # P(some attack) = 1 - 0.1 * 0.5 = 0.95
    p[0, 1, 5:] = [0.2, 0.0]  # 0.2
    p[1, 0, 5:] = [0.5, 0.5]  # 0.75
    p[1, 1, 5:] = [1.0, 1.0]  # dead: never counted
    rates = units.attack_rates(p, avail, np.array([True, True]))
    assert rates["env_no_attack"] == {"p_attack": pytest.approx((0.2 + 0.75) / 2), "unit_rows": 2}
    assert rates["env_attack"] == {"p_attack": pytest.approx(0.95), "unit_rows": 1}
    assert rates["last_unit_env_no_attack"] == {"p_attack": pytest.approx(0.75), "unit_rows": 1}
    assert rates["last_unit_env_attack"] == {"p_attack": None, "unit_rows": 0}
    # rows not ok are left out, and a row's last unit only counts when the others are dead
    rates = units.attack_rates(p, avail, np.array([True, False]))
    assert [rates[g]["unit_rows"] for g in units.ATTACK_GROUPS] == [1, 1, 0, 0]
    assert rates["env_no_attack"]["p_attack"] == pytest.approx(0.2)


def test_alive_groups_are_the_means_of_their_states():
    alive = np.array([3, 1, 3, 2, 1])
    value = np.array([1.0, 0.5, 3.0, 2.0, 0.1])
    lam = np.array([0.0, 1.0, 2.0, 4.0, 3.0])
    observed = np.array([0.5, 0.2, 0.5, 1.0, 0.2])
    groups = units.alive_groups(alive, value, lam, observed)
    assert [g["alive"] for g in groups] == [1, 2, 3] and [g["states"] for g in groups] == [2, 1, 2]
    one, _, three = groups
    assert one["value"] == pytest.approx(0.3) and one["lambda_return"] == pytest.approx(2.0)
    assert one["value_minus_observed"] == pytest.approx(0.1)
    assert three["value"] == pytest.approx(2.0) and three["value_minus_observed"] == pytest.approx(1.5)


def test_advantage_spread_is_of_the_raw_differences():
    returns = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    value = torch.tensor([[0.0, 1.0], [4.0, 4.0]])  # advantages 1, 1, -1, 2
    out = units.advantage_spread(returns, value)
    assert out["advantage_mean_abs"] == pytest.approx(1.25)
    assert out["advantage_std"] == pytest.approx(np.std([1, 1, -1, 2], ddof=1))  # torch's std: unbiased
    assert out["lambda_return_mean"] == pytest.approx(3.0)
    assert out["lambda_return_std"] == pytest.approx(np.std([1, 2, 3, 6], ddof=1))


def test_burn_in_is_diagnoses():
    assert units.BURN_IN == diagnose.BURN_IN


def _smax_run(tmp_path):
    """A debug-size mabl checkpoint named as a SMAX task (3 agents; 0-3 move, 4 stop, 5-7 attack) with a
    replay of random episodes whose masks let some units die (only stop allowed)."""
    import dataclasses

    from mabl.algo import build_learner
    from mabl.checkpoint import save_checkpoint
    from mabl.config import replace_path, to_dict
    from mabl.envs.base import EnvSpec
    from mabl.presets import build_config
    from mabl.replay import SequenceReplay

    spec = EnvSpec("smax:3m", n_agents=3, obs_dim=6, state_dim=5, discrete=True, n_actions=8, has_action_mask=True,
                   episode_limit=40)
    cfg = replace_path(build_config("debug", {"algo": "mabl", "device": "cpu"}), "policy.horizon", 4)
    agent = build_learner(spec, cfg, torch.device("cpu"))
    rng = np.random.default_rng(0)
    replay = SequenceReplay(spec, 10_000)
    for _ in range(30):
        length = int(rng.integers(10, 30))
        avail = rng.random((length, 3, 8)) > 0.5
        avail[..., 4] = True
        dead = rng.random((length, 3)) < 0.4
        avail[dead] = np.eye(8, dtype=bool)[4]  # a dead unit may only stop
        replay.add_episode({"obs": rng.normal(size=(length, 3, 6)).astype(np.float32),
                            "state": rng.normal(size=(length, 5)).astype(np.float32),
                            "action": rng.integers(0, 8, size=(length, 3)),
                            "reward": rng.normal(size=length).astype(np.float32),
                            "done": np.arange(length) == length - 1, "avail": avail}, True, rng)
    run_dir = tmp_path / "run"
    save_checkpoint(run_dir, 100, {"config": to_dict(cfg), "spec": dataclasses.asdict(spec),
                                   "agent": agent.state_dict(), "replay": replay.state_dict()})
    return run_dir


def test_blocks_end_to_end_on_a_tiny_run(tmp_path, capsys):
    import json

    from mabl.cli import main

    run = _smax_run(tmp_path)
    assert main(["diagnose", "--run-dir", str(run), "--by-alive", "--advantages", "--attack-masks", "--only-blocks",
                 "--windows", "8", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    alive = out["by_alive"]
    assert sum(g["states"] for g in alive["groups"]) == alive["complete_returns"] <= alive["states"]
    assert all(0 <= g["alive"] <= 3 for g in alive["groups"])  # (random masks: all may be dead)
    adv = out["advantages"]
    assert adv["advantage_std"] > 0 and adv["advantage_mean_abs"] > 0 and min(adv["imagined_rows"]) > 0
    masks = out["attack_masks"]
    assert len(masks["open_loop"]) == 8
    for rates in [masks["filtered"], *masks["open_loop"]]:
        assert rates["last_unit_env_no_attack"]["unit_rows"] <= rates["env_no_attack"]["unit_rows"]
        assert all(r["p_attack"] is None or 0.0 <= r["p_attack"] <= 1.0 for r in rates.values())
    assert main(["diagnose", "--run-dir", str(run), "--only-blocks", "--device", "cpu"]) == 2
    assert "--only-blocks goes with" in capsys.readouterr().err


def test_reward_loss_experiment_starts_every_loss_from_the_checkpoint_and_the_loss_matters(tmp_path, capsys):
    from mabl.cli import main
    from mabl.experiment.reward_loss import run

    path = _smax_run(tmp_path)
    out = run(str(path), ["smooth_l1", "mse"], updates=4, emit=lambda line: None)
    assert [(r["loss"], r["updates"]) for r in out] == [("smooth_l1", 0), ("smooth_l1", 2), ("smooth_l1", 4),
                                                        ("mse", 0), ("mse", 2), ("mse", 4)]
    assert out[0]["block"] == out[3]["block"]  # the same checkpoint, the same windows
    assert out[2]["block"]["mae"] != out[5]["block"]["mae"]  # the same batches, another loss: another head
    assert out[2]["block"]["mae"] != out[0]["block"]["mae"]  # the updates changed the head
    assert main(["experiment", "reward-loss", "--run-dir", str(path), "--updates", "1"]) == 2
    assert "--updates=1 must be >= 2" in capsys.readouterr().err
    assert main(["experiment", "reward-loss", "--run-dir", str(path), "--losses", "huber"]) == 2
    assert "--losses: unknown huber" in capsys.readouterr().err
