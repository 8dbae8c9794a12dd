"""``mabl report --bins W`` and ``--loss-terms`` (mabl.report.windows) on hand-made run directories:
which episodes and learner lines fall in a window, and the means taken of them."""

from __future__ import annotations

import gzip
import json
import math

import pytest

from mabl.cli import main
from mabl.report.runs import load_run
from mabl.report.windows import episode_windows, loss_term_means


def write_run(tmp_path, episodes: list[dict], learner: list[dict] = (), gz: bool = False, name: str = "run"):
    run = tmp_path / name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"env": "smax:3m", "algo": "mabl", "seed": 0, "steps": 100,
                                                 "model": {"reward_scale": 10.0}}))
    lines = "".join(json.dumps({"kind": "episode", **e}) + "\n" for e in episodes)
    lines += "".join(json.dumps({"kind": "learner", **r}) + "\n" for r in learner)
    if gz:
        (run / "metrics.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    else:
        (run / "metrics.jsonl").write_text(lines)
    return run


EPISODES = [
    {"env_step": 10, "return": 1.0, "length": 10, "win": False},
    {"env_step": 25, "return": 3.0, "length": 15, "win": True},
    {"env_step": 40, "return": 0.0, "length": 15, "win": False},  # (20, 40]: ends exactly on the edge
    {"env_step": 70, "return": 2.0, "length": 30, "win": True},
]


def line(step: int, loss: float, reward: float, with_global: bool = True) -> dict:
    out = {"env_step": step, "model/loss": loss, "model/reward": reward}
    for term in ("kl_agent", "obs", "cont", "avail", "action"):
        out[f"model/{term}"] = loss / 10
    if with_global:
        out["model/kl_global"] = 0.5
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_windows_are_half_open_and_hold_their_episodes_means(tmp_path, gz):
    run = load_run(write_run(tmp_path, EPISODES, gz=gz))
    assert run.lengths.tolist() == [10, 15, 15, 30]
    rows = episode_windows(run, 20)
    assert [r["end"] for r in rows] == [20, 40, 60, 80]
    assert [r["episodes"] for r in rows] == [1, 2, 0, 1]
    assert rows[1]["return"] == pytest.approx(1.5) and rows[1]["win"] == pytest.approx(50.0)
    assert rows[1]["length"] == pytest.approx(15.0)
    assert rows[3]["win"] == pytest.approx(100.0) and rows[0]["win"] == pytest.approx(0.0)
    assert all(math.isnan(rows[2][k]) for k in ("return", "win", "length"))  # an empty window
    short = episode_windows(run, 20, end=40)  # an earlier end: the same windows, cut after (20, 40]
    assert [r["end"] for r in short] == [20, 40] and [r["episodes"] for r in short] == [1, 2]


def test_logs_without_lengths_or_wins_give_nan_not_an_error(tmp_path):
    run = load_run(write_run(tmp_path, [{"env_step": 5, "return": 1.0}, {"env_step": 9, "return": 2.0}]))
    assert run.lengths is None and run.win is None
    (row,) = episode_windows(run, 10)
    assert row["episodes"] == 2 and row["return"] == pytest.approx(1.5)
    assert math.isnan(row["win"]) and math.isnan(row["length"])


def test_loss_window_is_half_open_and_means_are_over_its_calls():
    learner = [line(100, 2.0, 0.1), line(200, 4.0, 0.3), line(300, 8.0, 0.0), line(301, 100.0, 9.0)]
    w = loss_term_means(learner, end=300, width=200)  # (100, 300]: the calls at 200 and 300
    assert w["calls"] == 2 and w["loss"] == pytest.approx(6.0) and w["reward"] == pytest.approx(0.15)
    assert w["obs"] == pytest.approx(0.6) and w["kl_global"] == pytest.approx(0.5)
    assert loss_term_means(learner, end=50, width=40) is None
    w = loss_term_means([line(10, 1.0, 0.0, with_global=False)], end=10, width=10)
    assert math.isnan(w["kl_global"]) and w["kl_agent"] == pytest.approx(0.1)


def test_report_prints_the_tables(tmp_path, capsys):
    learner = [line(10, 2.0, 0.5), line(20, 4.0, 0.5), line(30, 8.0, 1.0)]
    run = write_run(tmp_path, EPISODES, learner)
    assert main(["report", str(run), "--bins", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"== {run} (mabl, smax:3m, seed 0, 4 episodes)"
    assert lines[3].split() == ["20-40", "2", "1.500", "50.0", "15.0"]
    assert main(["report", str(run), "--loss-terms", "--bins", "20", "--at", "20,40"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("model.reward_scale 10.0")
    # (0, 20]: calls at 10 and 20, loss 3.0, reward 0.5 = 16.7 % of it; (20, 40]: the call at 30
    assert lines[2].split()[:3] == ["0-20", "2", "3.000"] and "0.5000 (16.7%)" in lines[2]
    assert lines[3].split()[:3] == ["20-40", "1", "8.000"] and "1.0000 (12.5%)" in lines[3]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--bins", "0"], "--bins=0 must be > 0"),
    (["--loss-terms", "--at", "5k"], "--at='5k': expected comma-separated env steps"),
    (["--end", "10", "--out", "o"], "--end goes with --bins or --loss-terms"),
    ([], "give --out REPORT_DIR"),
])
def test_report_table_refusals_are_one_line(tmp_path, capsys, argv, message):
    run = write_run(tmp_path, EPISODES)
    assert main(["report", str(run), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
