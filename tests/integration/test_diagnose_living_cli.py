"""`mabl diagnose --living --living-fresh N` on a tiny debug-preset SMAX run: the block's rows are new
episodes of the run's policy in the run's env, played as training collects, and the same seed gives the
same block."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_diagnose_cli import mabl

pytest.importorskip("jaxmarl")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("living") / "mabl"
    mabl("train", "--env", "smax:3m", "--algo", "mabl", "--preset", "debug", "--steps", "300", "--seed", "0",
         "--run-dir", str(run_dir), "--progress", "false", "--threads", "1")
    return run_dir


def test_fresh_rows_are_whole_episodes_of_the_policy(run):
    from mabl.diagnose import load_run
    from mabl.diagnose.living import fresh_rows

    loaded = load_run(run, "cpu")
    torch.manual_seed(0)
    rows = fresh_rows(loaded, 3, seed=5)
    last, fake, done = (np.asarray(rows[k], bool) for k in ("last", "fake", "done"))
    assert last.sum() == 3 and last[-1]  # three episodes, the data ends with the third
    # each termination is followed by the replay's two absorbing rows, the second the episode's last
    for t in np.flatnonzero(done & ~fake):
        assert fake[t + 1] and fake[t + 2] and last[t + 2]
    alive = (np.asarray(rows["avail"])[~fake].sum(-1) > 1).sum(-1)
    assert alive.max() == 3 and alive.min() >= 0  # smax:3m: three marines, all alive at the start


def test_living_on_fresh_episodes_through_the_cli(run):
    args = ["diagnose", "--run-dir", str(run), "--living", "--living-fresh", "8", "--living-horizon", "6",
            "--windows", "8", "--only-blocks", "--device", "cpu", "--json"]
    first = json.loads(mabl(*args).stdout)["living"]
    assert first["data"] == "8 new episodes of the run's policy" and first["horizon"] == 6
    assert 0 < first["starts"] <= first["windows"] <= 8
    assert sum(g["starts"] for g in first["groups"]) == first["starts"]
    assert json.loads(mabl(*args).stdout)["living"] == first  # same seed, same episodes and rolls
    bad = mabl("diagnose", "--run-dir", str(run), "--living", "--living-fresh", "-1", "--only-blocks", check=False)
    assert bad.returncode == 2 and "--living-fresh=-1 must be >= 0" in bad.stderr
