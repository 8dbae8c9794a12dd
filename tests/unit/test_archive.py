"""`mabl archive`: run logs without checkpoints, gzip-compressed, read back by the report as the runs."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from test_report import SEED0, SEED1, make_run

from mabl.archive import archive_runs
from mabl.cli import main
from mabl.errors import MablError
from mabl.report import find_runs, write_report


def _sweep(root):
    a = make_run(root / "smax_3m" / "mabl" / "seed0", "smax:3m", "mabl", 0, SEED0,
                 learner=[(15000, {"model/loss": 1.5, "wall_s": 10.0, "cpu_s": 9.0})])
    make_run(root / "smax_3m" / "mabl" / "seed1", "smax:3m", "mabl", 1, SEED1)
    (a / "eval.jsonl").write_text(json.dumps({"env_step": 30000, "win_rate": 0.4, "mean_return": 1.2}) + "\n")
    (a / "checkpoints").mkdir()
    (a / "checkpoints" / "step_30000.pt").write_bytes(b"weights" * 1000)
    return root


def test_archive_round_trip_and_determinism(tmp_path):
    sweep = _sweep(tmp_path / "runs")
    done = archive_runs([sweep], tmp_path / "arch")
    assert sorted(d.run for d in done) == ["smax_3m/mabl/seed0", "smax_3m/mabl/seed1"]
    seed0 = tmp_path / "arch" / "smax_3m" / "mabl" / "seed0"
    assert sorted(p.name for p in seed0.iterdir()) == ["config.json", "eval.jsonl.gz", "metrics.jsonl.gz"]
    assert gzip.decompress((seed0 / "metrics.jsonl.gz").read_bytes()) == (
        sweep / "smax_3m" / "mabl" / "seed0" / "metrics.jsonl").read_bytes()

    original, copy = find_runs(sweep), find_runs(tmp_path / "arch")
    assert [(r.algo, r.seed) for r in copy] == [(r.algo, r.seed) for r in original]
    for a, b in zip(original, copy):
        np.testing.assert_array_equal(a.env_step, b.env_step)
        np.testing.assert_array_equal(a.returns, b.returns)
        np.testing.assert_array_equal(a.win, b.win)
        assert a.eval == b.eval and a.learner == b.learner and a.config == b.config
    write_report(sweep, tmp_path / "rep_a", plots=False)
    write_report(tmp_path / "arch", tmp_path / "rep_b", plots=False)
    table = (tmp_path / "rep_a" / "table.md").read_text()
    assert "smax:3m" in table and table == (tmp_path / "rep_b" / "table.md").read_text()

    first = (seed0 / "metrics.jsonl.gz").read_bytes()
    archive_runs([sweep], tmp_path / "arch")  # refresh: same bytes (no timestamp in the header)
    assert (seed0 / "metrics.jsonl.gz").read_bytes() == first
    archive_runs([tmp_path / "arch"], tmp_path / "arch2")  # an archive of an archive copies the .gz as is
    assert (tmp_path / "arch2" / "smax_3m" / "mabl" / "seed0" / "metrics.jsonl.gz").read_bytes() == first


def test_archive_of_one_run_dir_goes_under_its_name(tmp_path):
    run = make_run(tmp_path / "my_run", "smax:3m", "dreamer", 2, SEED0)
    (done,) = archive_runs([run], tmp_path / "arch")
    assert done.run == "my_run" and (tmp_path / "arch" / "my_run" / "metrics.jsonl.gz").is_file()


def test_torn_gzip_is_skipped_with_its_reason(tmp_path):
    sweep = _sweep(tmp_path / "runs")
    archive_runs([sweep], tmp_path / "arch")
    bad = tmp_path / "arch" / "smax_3m" / "mabl" / "seed1" / "metrics.jsonl.gz"
    bad.write_bytes(bad.read_bytes()[:-20])  # cut off mid-stream
    skipped = []
    runs = find_runs(tmp_path / "arch", skipped)
    assert [r.seed for r in runs] == [0]
    assert len(skipped) == 1 and skipped[0].reason.startswith("metrics.jsonl.gz is not a complete gzip file")


def test_archive_errors_are_one_line(tmp_path, capsys):
    sweep = _sweep(tmp_path / "runs")
    with pytest.raises(MablError, match="no such run or sweep directory"):
        archive_runs([tmp_path / "nope"], tmp_path / "arch")
    with pytest.raises(MablError, match="holds the run"):
        archive_runs([tmp_path], tmp_path / "runs")
    assert main(["archive", str(tmp_path / "nope"), "--out", str(tmp_path / "arch")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mabl: error: no such run or sweep directory") and "\n" not in err
    assert main(["archive", str(sweep), "--out", str(tmp_path / "arch")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and out[0].startswith("archived smax_3m/mabl/seed0: ")


def test_archive_keeps_run_info_where_the_run_has_one(tmp_path):
    sweep = _sweep(tmp_path / "runs")
    info = b'[{"mabl": "0.3.0", "argv": ["mabl", "train"]}]\n'
    (sweep / "smax_3m" / "mabl" / "seed1" / "run_info.json").write_bytes(info)
    archive_runs([sweep], tmp_path / "arch")
    assert (tmp_path / "arch" / "smax_3m" / "mabl" / "seed1" / "run_info.json").read_bytes() == info
    assert not (tmp_path / "arch" / "smax_3m" / "mabl" / "seed0" / "run_info.json").exists()
