"""``mabl diagnose --living`` (mabl.diagnose.living): living units, episode courses, survival and
discounted sums on hand-made arrays; the block of a model whose heads output constants against values
computed here from the window arrays; end to end through the CLI on a tiny SMAX-shaped run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_diagnose import DISCRETE, _constant_heads
from test_diagnose_units import _smax_run

from mabl.algo import build_learner
from mabl.diagnose import living as lv
from mabl.errors import MablError
from mabl.presets import build_config


def test_living_units_are_those_allowed_more_than_one_action():
    stop_only, free = [0, 1, 0], [1, 1, 1]
    avail = np.array([[free, stop_only, free], [stop_only, stop_only, [1, 0, 1]]], bool)
    assert lv.living_count(avail).tolist() == [2, 1]
    p = np.array([[[0.9, 0.6, 0.1], [0.2, 0.99, 0.4]]])  # unit 0: two above 0.5, unit 1: one
    assert lv.predicted_living(p).tolist() == [1]
    assert lv.predicted_living(p, threshold=0.3).tolist() == [2]


def test_episode_course_stops_at_terminations_and_censors_time_limit_ends():
    # 4 windows, context 2 (start step 1), horizon 5 (steps 2..6)
    t, b = 7, 4
    done, first, fake = (np.zeros((t, b), bool) for _ in range(3))
    done[4, 1] = True  # window 1 terminates at step 4 (k = 3); absorbing rows follow, then a new episode
    fake[4:6, 1] = True
    first[6, 1] = True
    first[3, 2] = True  # window 2: a time-limit end, the next episode starts at step 3 (k = 2)
    done[2, 3] = True  # window 3 terminates at k = 1
    fake[2:4, 3] = True
    first[4, 3] = True
    c = lv.episode_course(done, first, fake, context=2, horizon=5)
    assert c["terminated"][:, 0].tolist() == [False] * 5 and c["running"][:, 0].all() and c["known"][:, 0].all()
    assert c["terminated"][:, 1].tolist() == [False, False, True, True, True]
    assert c["known"][:, 1].all()  # the new episode after a termination does not censor
    assert c["running"][:, 1].tolist() == [True, True, False, False, False]
    assert c["before_end"][:, 1].tolist() == [True, True, True, False, False]
    assert c["known"][:, 2].tolist() == [True, False, False, False, False]
    assert c["running"][:, 2].tolist() == [True, False, False, False, False]
    assert c["terminated"][:, 3].all() and not c["running"][:, 3].any() and c["known"][:, 3].all()


def test_survival_and_discounted_sums():
    cont = np.array([[[0.5, 1.0]], [[0.5, 0.5]]])  # [H=2, M=1, N=2]
    assert lv.survival(cont)[:, 0] == pytest.approx([0.75, (0.25 + 0.5) / 2])
    reward = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    assert lv.discounted_sum(reward, 0.5) == pytest.approx([1 + 1.5 + 1.25, 2 + 2 + 1.5])
    w = np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    assert lv.discounted_sum(reward, 0.5, w) == pytest.approx([2.5, 2.0])


def _windows(rng, length: int, count: int) -> dict[str, np.ndarray]:
    """Windows of DISCRETE-shaped rows (3 agents, 4 actions) with deaths (only action 0 allowed), one
    termination followed by absorbing rows, and one time-limit end."""
    n, a = DISCRETE.n_agents, DISCRETE.n_actions
    avail = rng.random((length, count, n, a)) < 0.7
    avail[..., 0] = True
    dead = rng.random((length, count, n)) < 0.3
    avail[dead] = np.eye(a, dtype=bool)[0]
    done, fake, last = (np.zeros((length, count), bool) for _ in range(3))
    done[14, 0] = True  # row 14's action terminates: rows 15, 16 absorbing, row 16 the last of its episode
    fake[15:17, 0] = True
    last[16, 0] = True
    last[13, 1] = True  # a time-limit end: row 14 starts a new episode
    return {"obs": rng.normal(size=(length, count, n, DISCRETE.obs_dim)).astype(np.float32),
            "state": rng.normal(size=(length, count, DISCRETE.state_dim)).astype(np.float32),
            "action": rng.integers(0, a, (length, count, n)),
            "reward": rng.normal(size=(length, count)).astype(np.float32),
            "done": done, "fake": fake, "last": last, "avail": avail}


@pytest.mark.parametrize("algo", ["mabl", "dreamer"])
def test_block_of_constant_heads_against_the_window_arrays(algo):
    """All actions available (logit 2), continuation c, reward r in every state: the model keeps every
    unit alive and survives c^k in both rolls, its sums are closed-form; the real columns are counted
    here from the rows (step j observes row j + 1; the transition into step j is row j's)."""
    torch.manual_seed(0)
    agent = build_learner(DISCRETE, build_config("debug", {"algo": algo, "device": "cpu"}), torch.device("cpu"))
    r, cont_logit = 0.2, 1.5
    _constant_heads(agent, np.zeros(DISCRETE.obs_dim, np.float32), r, cont_logit, value=0.0, avail_logit=2.0)
    context, horizon, count = 10, 6, 12
    win = _windows(np.random.default_rng(3), context + horizon + 1, count)
    out = lv.living_windows(agent, win, context, horizon)
    gamma, c = agent.cfg.policy.gamma, 1.0 / (1.0 + math.exp(-cont_logit))
    start_alive = (win["avail"][context].sum(-1) > 1).sum(-1)  # step context - 1 observes row context
    assert out["starts"] == count and out["horizon"] == horizon and out["context"] == context
    assert [g["alive_at_start"] for g in out["groups"]] == sorted(set(start_alive.tolist()))
    assert sum(g["starts"] for g in out["groups"]) == count
    for g in out["groups"]:
        members = np.flatnonzero(start_alive == g["alive_at_start"])
        for s in g["steps"]:
            k = s["k"]
            row = context + k  # the row observed k steps after the start
            running = [w for w in members if not (w == 0 and row >= 15) and not (w == 1 and row >= 14)]
            known = [w for w in members if not (w == 1 and row >= 14)]
            assert s["running"] == len(running) and s["known"] == len(known)
            if running:
                real = (win["avail"][row, running].sum(-1) > 1).sum(-1).mean()
                assert s["living_real"] == pytest.approx(real)
                assert s["living_open_loop"] == pytest.approx(DISCRETE.n_agents)
            assert s["living_imagined"] == pytest.approx(DISCRETE.n_agents)
            if known:
                ended = [w == 0 and row - 1 >= 14 for w in known]  # row 14's action ends window 0
                assert s["survival_real"] == pytest.approx(1.0 - np.mean(ended))
                assert s["survival_open_loop"] == pytest.approx(c ** k, rel=1e-5)
            assert s["survival_imagined"] == pytest.approx(c ** k, rel=1e-5)
        rs = g["reward_sum"]
        whole = [w for w in members if w != 1]
        assert rs["known"] == len(whole)
        assert rs["imagined"] == pytest.approx(r * sum(gamma ** i for i in range(horizon)), rel=1e-5)
        assert rs["imagined_survival_weighted"] == pytest.approx(
            r * sum(gamma ** i * c ** i for i in range(horizon)), rel=1e-5)
        if whole:
            real = [sum(gamma ** (k - 1) * win["reward"][context + k - 1, w] for k in range(1, horizon + 1)
                        if not (w == 0 and context + k - 1 > 14)) for w in whole]
            assert rs["real"] == pytest.approx(np.mean(real), rel=1e-5)
            opened = [sum(gamma ** (k - 1) * r for k in range(1, horizon + 1) if not (w == 0 and context + k - 1 > 14))
                      for w in whole]
            assert rs["open_loop"] == pytest.approx(np.mean(opened), rel=1e-5)


def test_block_refuses_windows_too_short_or_without_masks():
    agent = build_learner(DISCRETE, build_config("debug", {"algo": "mabl", "device": "cpu"}), torch.device("cpu"))
    win = _windows(np.random.default_rng(0), 17, 4)
    with pytest.raises(MablError, match="must fit in 16 filtering steps"):
        lv.living_windows(agent, win, 10, 7)
    with pytest.raises(MablError, match="context > 4"):
        lv.living_windows(agent, win, 4, 3)
    with pytest.raises(MablError, match="needs action masks"):
        lv.living_windows(agent, {k: v for k, v in win.items() if k != "avail"}, 5, 3)


def test_living_end_to_end_on_a_tiny_run(tmp_path, capsys):
    from mabl.cli import main

    run = _smax_run(tmp_path)
    assert main(["diagnose", "--run-dir", str(run), "--living", "--living-horizon", "6", "--only-blocks",
                 "--windows", "8", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["living"]
    assert out["horizon"] == 6 and out["windows"] == 8 and 0 < out["starts"] <= 8
    for g in out["groups"]:
        assert len(g["steps"]) == 6 and 0 <= g["alive_at_start"] <= 3
        for s in g["steps"]:
            assert s["running"] <= s["known"] <= g["starts"]
            assert 0.0 <= s["survival_imagined"] <= 1.0 and 0.0 <= s["living_imagined"] <= 3.0
    assert main(["diagnose", "--run-dir", str(run), "--living", "--living-horizon", "6", "--only-blocks",
                 "--windows", "8", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "living units and survival" in text and "alive at the start" in text
    assert main(["diagnose", "--run-dir", str(run), "--living", "--living-horizon", "0", "--only-blocks",
                 "--device", "cpu"]) == 2
    assert "--living-horizon=0 must be >= 1" in capsys.readouterr().err
