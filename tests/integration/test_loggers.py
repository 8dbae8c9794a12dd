"""``--log``: every sink gets the numbers of metrics.jsonl; run_info.json records what ran; progress
lines without a terminal; files follow the umask."""

from __future__ import annotations

import csv
import json
import os
import stat
import time

import pytest
from toy_env import use_toy

import mabl
from mabl.cli import main


def _args(run_dir, steps: int, *extra: str) -> list[str]:
    return ["train", "--env", "test:toy", "--preset", "debug", "--steps", str(steps), "--checkpoint-every", "100",
            "--eval-every", "100", "--run-dir", str(run_dir), "--threads", "1", *extra]


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _episode_returns(run_dir) -> list[tuple[int, float]]:
    return [(r["env_step"], r["return"]) for r in _jsonl(run_dir / "metrics.jsonl") if r["kind"] == "episode"]


def test_csv_and_tensorboard_hold_the_jsonl_numbers_and_survive_a_resume(monkeypatch, tmp_path, capsys):
    use_toy(monkeypatch)
    run = tmp_path / "run"
    assert main(_args(run, 200, "--log", "jsonl,tensorboard,csv", "--progress", "false")) == 0
    out = capsys.readouterr().out
    assert f"run directory: {run}" in out.splitlines()[0]
    # --progress false still prints one line per evaluation and per checkpoint
    assert "step 200: evaluation over 2 episodes" in out and "step 100: checkpoint" in out, out
    assert main(_args(run, 300, "--log", "jsonl,tensorboard,csv", "--progress", "false")) == 0
    assert "resumed from step 200" in capsys.readouterr().out

    lines = _jsonl(run / "metrics.jsonl")
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(lines)  # the resume rebuilt the CSV from the truncated JSONL, no duplicates
    header = list(rows[0])
    assert {"kind", "env_step", "return", "win", "model/loss", "learner_call"} <= set(header)  # the union of kinds
    for row, line in zip(rows, lines):
        assert row["kind"] == line["kind"] and int(row["env_step"]) == line["env_step"]
        if line["kind"] == "episode":
            assert float(row["return"]) == pytest.approx(line["return"]) and row["model/loss"] == ""
        else:
            assert float(row["model/loss"]) == pytest.approx(line["model/loss"]) and row["return"] == ""
    with open(run / "eval.csv", newline="") as f:
        evals = list(csv.DictReader(f))
    assert [float(r["mean_return"]) for r in evals] == pytest.approx([e["mean_return"] for e in _jsonl(run / "eval.jsonl")])

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    tb = sorted((e.step, e.value) for e in acc.Scalars("metrics/return"))
    assert tb == pytest.approx(sorted(_episode_returns(run)))


def test_eval_lines_keep_every_episode(monkeypatch, tmp_path, capsys):
    use_toy(monkeypatch)
    run = tmp_path / "run"
    assert main(_args(run, 100, "--progress", "false")) == 0
    (line,) = _jsonl(run / "eval.jsonl")
    assert len(line["returns"]) == len(line["lengths"]) == len(line["wins"]) == 2
    assert sum(line["returns"]) / 2 == pytest.approx(line["mean_return"])
    assert sum(line["wins"]) / 2 == pytest.approx(line["win_rate"])
    assert line["lengths"] == [20, 20]


def test_run_info_records_version_command_and_packages(monkeypatch, tmp_path, capsys):
    use_toy(monkeypatch)
    run = tmp_path / "run"
    monkeypatch.setattr("sys.argv", ["mabl", *_args(run, 100, "--progress", "false")])
    assert main(_args(run, 100, "--progress", "false")) == 0
    import torch

    (info,) = json.loads((run / "run_info.json").read_text())["starts"]
    assert info["mabl"] == mabl.__version__ and info["torch"] == torch.__version__
    assert info["command"][:3] == ["mabl", "train", "--env"] and str(run) in info["command"]
    assert info["start_env_step"] == 0
    assert isinstance(info["packages"], dict)
    # this test runs from a clone: the commit is the worktree's HEAD
    import subprocess

    head = subprocess.run(["git", "-C", os.path.dirname(mabl.__file__), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    if head:
        assert info["git_commit"].split("+")[0] == head


def test_plain_progress_lines_without_a_terminal(monkeypatch, tmp_path, capsys):
    use_toy(monkeypatch)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert main(_args(tmp_path / "run", 200, "--progress", "true", "--eval-every", "0")) == 0
    captured = capsys.readouterr()
    plain = [line for line in captured.out.splitlines() if line.startswith("step ") and "/200 (" in line]
    assert 5 <= len(plain) <= 21 and plain[-1].startswith("step 200/200 (100%)"), captured.out
    assert "env-steps/s" in plain[-1] and "\r" not in captured.out + captured.err


def test_run_directory_files_follow_the_umask(monkeypatch, tmp_path, capsys):
    use_toy(monkeypatch)
    old = os.umask(0o022)
    try:
        run = tmp_path / "run"
        assert main(_args(run, 100, "--progress", "false")) == 0
    finally:
        os.umask(old)
    for path in [run / "config.json", run / "run_info.json", *(run / "checkpoints").glob("*.pt")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_unknown_logger_is_one_line(monkeypatch, tmp_path, capsys):
    use_toy(monkeypatch)
    assert main(_args(tmp_path / "run", 100, "--log", "jsonl,neptune")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "neptune" in err and "wandb" in err


def _wandb_history(path) -> list[dict]:
    """The history rows of an offline ``.wandb`` file, read independently of wandb's own reader: the
    file is a 7-byte header, then LevelDB-log blocks of 32 KiB holding records (crc32, little-endian
    length, type: 1 full, 2 first, 3 middle, 4 last) whose payloads are wandb ``Record`` protobufs."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, pos, block, rows, buf = path.read_bytes(), 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):  # block trailer / padding
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            buf = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


def test_wandb_offline_gets_the_same_numbers(monkeypatch, tmp_path, capsys):
    pytest.importorskip("wandb")
    use_toy(monkeypatch)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    assert main(_args(run, 100, "--log", "wandb", "--progress", "false")) == 0
    (log,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    assert (run / "wandb_id.txt").read_text().strip() in log.name
    expected = sorted(_episode_returns(run))
    for _ in range(100):  # wandb's service process may still be writing the file for a moment
        rows = _wandb_history(log)
        if sum("metrics/return" in row for row in rows) >= len(expected):
            break
        time.sleep(0.2)
    logged = sorted((row["env_step"], row["metrics/return"]) for row in rows if "metrics/return" in row)
    assert logged == pytest.approx(expected)
    learner = [r for r in _jsonl(run / "metrics.jsonl") if r["kind"] == "learner"]
    assert [row["metrics/model/loss"] for row in rows if "metrics/model/loss" in row] == pytest.approx(
        [r["model/loss"] for r in learner])


def test_mlflow_file_store_gets_the_same_numbers(monkeypatch, tmp_path, capsys):
    pytest.importorskip("mlflow")
    use_toy(monkeypatch)
    run = tmp_path / "run"
    assert main(_args(run, 100, "--log", "jsonl,mlflow", "--progress", "false")) == 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    run_id = (run / "mlflow_id.txt").read_text().strip()
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "metrics/return"))
    assert history == pytest.approx(sorted(_episode_returns(run)))
    assert client.get_run(run_id).data.params["model.hidden"] == "32"
