"""One training process per run directory: a second process is refused in one line, the lock dies
with its holder (no stale lock after a kill), and a refused start writes nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import mabl.train
from mabl.errors import MablError
from mabl.presets import build_config
from mabl.run_lock import LOCK_NAME, RunLock

HOLDER = textwrap.dedent("""
    import fcntl, sys, time
    f = open(sys.argv[1], "a+")
    fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0); f.truncate(); f.write("pid HOLDER-TEST on somewhere"); f.flush()
    print("locked", flush=True)
    time.sleep(120)
""")


@pytest.fixture
def holder(tmp_path):
    """Another process holding the flock of ``tmp_path/run/.lock`` (plain fcntl, not mabl's code)."""
    run = tmp_path / "run"
    run.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run / LOCK_NAME)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield run, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _other_process_can_lock(path) -> bool:
    code = ("import fcntl, sys\nf = open(sys.argv[1], 'a+')\n"
            "try:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(3)\n")
    return subprocess.run([sys.executable, "-c", code, str(path)]).returncode == 0


def test_a_directory_locked_by_another_process_is_refused_in_one_line(holder):
    run, _ = holder
    with pytest.raises(MablError) as err:
        RunLock(run).acquire()
    message = str(err.value)
    assert "\n" not in message and "in use by another training process" in message
    assert "pid HOLDER-TEST on somewhere" in message and "--run-dir" in message


def test_the_lock_dies_with_a_killed_holder(holder):
    run, proc = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lock = RunLock(run).acquire()
    try:
        assert (run / LOCK_NAME).read_text().startswith(f"pid {os.getpid()} on ")
        assert not _other_process_can_lock(run / LOCK_NAME)
    finally:
        lock.release()
    assert _other_process_can_lock(run / LOCK_NAME)


def test_the_lock_is_reentrant_within_a_process_and_held_until_the_last_release(tmp_path):
    first, second = RunLock(tmp_path / "run").acquire(), RunLock(tmp_path / "run").acquire()
    first.release()
    first.release()  # idempotent: does not release the second holder's share
    assert not _other_process_can_lock(tmp_path / "run" / LOCK_NAME)
    second.release()
    assert _other_process_can_lock(tmp_path / "run" / LOCK_NAME)


def test_mabl_train_on_a_directory_in_use_exits_with_one_line_and_touches_nothing(holder):
    run, _ = holder
    (run / "metrics.jsonl").write_text('{"kind": "episode", "env_step": 7}\n')
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    proc = subprocess.run([sys.executable, "-m", "mabl", "train", "--env", "smax:3m", "--preset", "debug",
                           "--steps", "50", "--run-dir", str(run), "--progress", "false"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is in use by another training process" in lines[0], proc.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_a_refused_start_leaves_no_new_directory_and_releases_the_lock(tmp_path, monkeypatch):
    def no_env(*args, **kwargs):
        raise MablError("no such env here")

    monkeypatch.setattr(mabl.train, "make_env", no_env)
    new, old = tmp_path / "new_run", tmp_path / "old_run"
    old.mkdir()
    (old / "train.log").write_text("earlier output\n")
    for run in (new, old):
        with pytest.raises(MablError, match="no such env here"):
            mabl.train.Trainer(build_config("debug", {"env": "smax:3m", "run_dir": str(run)}))
    assert not new.exists()
    assert (old / "train.log").read_text() == "earlier output\n"
    assert _other_process_can_lock(old / LOCK_NAME)
