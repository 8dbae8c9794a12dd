"""`mabl sweep`: the cross product as run directories, with local processes and on a Ray instance;
re-running skips finished runs and resumes interrupted ones; a crashed run is reported and kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mpe2")

ENV = "mpe:simple_spread"  # no JAX start-up: the fastest real env
BASE = ["--algos", "mabl,mappo", "--envs", ENV, "--seeds", "0,1", "--preset", "debug", "--threads", "1"]


def mabl(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "mabl", *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == expect, f"exit {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


def run_dirs(out: Path) -> dict[tuple[str, int], Path]:
    return {(algo, seed): out / "mpe_simple_spread" / algo / f"seed{seed}" for algo in ("mabl", "mappo") for seed in (0, 1)}


def episodes(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "episode"]


def test_local_sweep_skips_resumes_and_reports_crashes(tmp_path):
    out = tmp_path / "sweep"
    # A short sweep first: every run stops at ~100 steps (as if interrupted there).
    mabl("sweep", *BASE, "--steps", "100", "--workers", "2", "--out", str(out))
    first = {key: episodes(d) for key, d in run_dirs(out).items()}
    for (algo, seed), d in run_dirs(out).items():
        config = json.loads((d / "config.json").read_text())
        assert (config["algo"], config["seed"], config["env"], config["preset"]) == (algo, seed, ENV, "debug")
        assert first[(algo, seed)][-1]["env_step"] >= 100 and (d / "train.log").exists()

    # The full sweep resumes each run from its checkpoint instead of starting over.
    text = mabl("sweep", *BASE, "--steps", "250", "--workers", "2", "--out", str(out)).stdout
    assert "4 finished, 0 already done, 0 failed" in text
    for key, d in run_dirs(out).items():
        now = episodes(d)
        assert now[: len(first[key])] == first[key]  # the earlier episodes are kept, not replayed
        assert [r["episode"] for r in now] == list(range(1, len(now) + 1))
        assert now[-1]["env_step"] >= 250
    status = json.loads((out / "sweep.json").read_text())
    assert [r["status"] for r in status["runs"]] == ["finished"] * 4

    # Re-running a finished sweep runs nothing.
    before = {key: (d / "metrics.jsonl").read_bytes() for key, d in run_dirs(out).items()}
    text = mabl("sweep", *BASE, "--steps", "250", "--workers", "2", "--out", str(out)).stdout
    assert "0 finished, 4 already done, 0 failed" in text
    assert before == {key: (d / "metrics.jsonl").read_bytes() for key, d in run_dirs(out).items()}

    # A run that crashes is reported, keeps its log, and does not stop the others.
    crash_out = tmp_path / "crash"
    proc = mabl("sweep", "--algos", "mappo", "--envs", f"{ENV},pettingzoo:mabl_no_such_module", "--seeds", "0",
                "--preset", "debug", "--steps", "100", "--threads", "1", "--out", str(crash_out), expect=1)
    assert "1 finished, 0 already done, 1 failed" in proc.stdout
    log = crash_out / "pettingzoo_mabl_no_such_module" / "mappo" / "seed0" / "train.log"
    assert "mabl_no_such_module" in log.read_text()
    assert episodes(crash_out / "mpe_simple_spread" / "mappo" / "seed0")[-1]["env_step"] >= 100


@pytest.mark.parametrize("args, needle", [
    (["--algos", "mabl,nope", "--envs", ENV, "--seeds", "0"], "unknown algorithm 'nope'"),
    (["--algos", "mabl", "--envs", ENV, "--seeds", "0,x"], "--seeds"),
    (["--algos", "mabl", "--envs", ENV], "--seeds needs a comma-separated list"),
    (["--algos", "mabl", "--envs", ENV, "--seeds", "0", "--set", "model.hidden=-3"], "model.hidden"),
    (["--algos", "mabl", "--envs", ENV, "--seeds", "0", "--set", "model.nonsense=1"], "unknown config field"),
    (["--algos", "mabl", "--envs", ENV, "--seeds", "0", "--workers", "999"], "--workers=999"),
])
def test_bad_sweep_input_is_one_line(args, needle, tmp_path):
    proc = mabl("sweep", *args, "--out", str(tmp_path / "s"), expect=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "s").exists()  # nothing started


def test_sweep_file(tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text(f'algos = ["mappo"]\nenvs = ["{ENV}"]\nseeds = [3]\npreset = "debug"\nsteps = 100\n'
                    '[set]\n"mappo.hidden" = 8\n')
    mabl("sweep", "--file", str(spec), "--threads", "1", "--out", str(tmp_path / "s"))
    config = json.loads((tmp_path / "s" / "mpe_simple_spread" / "mappo" / "seed3" / "config.json").read_text())
    assert config["mappo"]["hidden"] == 8 and config["seed"] == 3 and config["steps"] == 100


def test_sweep_on_a_local_ray_instance(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        address = ray.get_runtime_context().gcs_address
        out = tmp_path / "ray_sweep"
        text = mabl("sweep", *BASE, "--steps", "100", "--out", str(out), "--ray-address", address).stdout
        assert "on Ray at" in text and "4 finished, 0 already done, 0 failed" in text
        for d in run_dirs(out).values():
            assert episodes(d)[-1]["env_step"] >= 100
    finally:
        ray.shutdown()
