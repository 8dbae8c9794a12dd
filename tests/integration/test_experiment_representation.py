"""``mabl experiment representation`` end to end at tiny sizes: collect -> train (resumable) -> score."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from mabl.cli import main
from mabl.diagnose import load_dataset

pytest.importorskip("mpe2")


def bench(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["experiment", "representation", *args])
    assert code == 0, out.getvalue() + err.getvalue()
    return out.getvalue()


def test_collect_train_score(tmp_path):
    out = str(tmp_path / "repr")
    bench("collect", "--out", out, "--env", "mpe:simple_spread", "--mappo-steps", "100", "--mappo-preset", "debug",
          "--policy-episodes", "4", "--random-episodes", "4", "--heldout-every", "2", "--threads", "1")
    train, held = load_dataset(Path(out) / "train.npz"), load_dataset(Path(out) / "heldout.npz")
    assert train.provenance["split"] == "train" and held.provenance["split"] == "heldout"
    assert sum(train.provenance["episodes"].values()) == sum(held.provenance["episodes"].values()) == 4
    assert train.n_rows == train.provenance["transitions"] == 100  # 4 x 25 steps, time limit: no absorbing rows
    assert not np.array_equal(train.rows["obs"], held.rows["obs"])

    args = ["train", "--out", out, "--preset", "debug", "--algos", "mabl,dreamer", "--seeds", "0", "--threads", "1",
            "--checkpoint-every", "2", "--log-every", "1"]
    bench(*args, "--updates", "2")
    bench(*args, "--updates", "3")  # resumes from update 2
    run = Path(out) / "models" / "mabl" / "seed0"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["model_updates"] for r in lines] == [1, 2, 3]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000000002.pt", "step_000000003.pt"]

    bench("train", "--out", out, "--preset", "debug", "--algos", "mabl", "--seeds", "1", "--threads", "1",
          "--updates", "2")  # an unfinished model is named and left out of the table
    score = ["score", "--out", out, "--windows", "4", "--length", "10", "--horizon", "2", "--updates", "3"]
    printed = bench(*score)
    assert "| mabl | 1 |" in printed and "| dreamer | 1 |" in printed
    assert f"skipped {Path(out) / 'models' / 'mabl' / 'seed1'}: 2 of 3 updates" in printed
    assert printed.count("scored ") == 2
    again = bench(*score)  # same checkpoints, same settings: the saved scores are reused, the table is the same
    assert "scored " not in again and again.split("World models")[1] == printed.split("World models")[1]
    with pytest.raises(AssertionError, match="no model under .* has 5 updates"):
        bench(*score[:-1], "5")
    scores = json.loads((Path(out) / "scores" / "mabl_seed0.json").read_text())
    assert scores["meta"]["data"].endswith("heldout.npz") and scores["probe_state_r2_global"] is not None
    dreamer = json.loads((Path(out) / "scores" / "dreamer_seed0.json").read_text())
    assert dreamer["meta"]["window_starts"] == scores["meta"]["window_starts"]  # the same held-out windows
