"""benchmarks/episode_bins.py and RunData.lengths: windows of training episodes from a run's log."""

from __future__ import annotations

import gzip
import json
import math

import pytest

from mabl.report.runs import load_run


def write_run(tmp_path, episodes: list[dict], gz: bool = False):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"env": "smax:3m", "algo": "mabl", "seed": 0, "steps": 100}))
    lines = "".join(json.dumps({"kind": "episode", **e}) + "\n" for e in episodes)
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


@pytest.mark.parametrize("gz", [False, True])
def test_windows_are_half_open_and_hold_their_episodes_means(tmp_path, benchmark_script, gz):
    m = benchmark_script("episode_bins")
    run = load_run(write_run(tmp_path, EPISODES, gz))
    assert run.lengths.tolist() == [10, 15, 15, 30]
    rows = m.bin_rows(run, 20)
    assert [r["end"] for r in rows] == [20, 40, 60, 80]
    assert [r["episodes"] for r in rows] == [1, 2, 0, 1]
    assert rows[1]["return"] == pytest.approx(1.5) and rows[1]["win"] == pytest.approx(50.0)
    assert rows[1]["length"] == pytest.approx(15.0)
    assert rows[3]["win"] == pytest.approx(100.0) and rows[0]["win"] == pytest.approx(0.0)
    assert all(math.isnan(rows[2][k]) for k in ("return", "win", "length"))  # an empty window
    short = m.bin_rows(run, 20, end=40)  # an earlier end: the same windows, cut after (20, 40]
    assert [r["end"] for r in short] == [20, 40] and [r["episodes"] for r in short] == [1, 2]


def test_logs_without_lengths_or_wins_give_nan_not_an_error(tmp_path, benchmark_script):
    m = benchmark_script("episode_bins")
    run = load_run(write_run(tmp_path, [{"env_step": 5, "return": 1.0}, {"env_step": 9, "return": 2.0}]))
    assert run.lengths is None and run.win is None
    (row,) = m.bin_rows(run, 10)
    assert row["episodes"] == 2 and row["return"] == pytest.approx(1.5)
    assert math.isnan(row["win"]) and math.isnan(row["length"])
    with pytest.raises(ValueError, match="--bin must be > 0"):
        m.bin_rows(run, 0)
