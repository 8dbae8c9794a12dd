"""Every ``--algo`` through the CLI: trains on SMAX and PettingZoo, writes the same metrics fields,
checkpoints and resumes to the same result, and (for the world models) consumes the same real and
imagined sample budget per env step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mabl.train import TIMING_KEYS

ALGOS = ["mabl", "mabl-sg", "dreamer", "mamba", "mag", "mappo", "ippo", "rmappo", "qmix"]
MODEL_BASED = ["mabl", "mabl-sg", "dreamer", "mamba", "mag"]
STEPS = 300
EPISODE_KEYS = {"kind", "env_step", "episode", "return", "length", "sps", "win"}
LEARNER_KEYS = {"kind", "env_step", "learner_call", "model_updates", "policy_iterations", "real_samples",
                "imagined_samples", "policy/actor_loss", "policy/critic_loss", "policy/entropy", "learner_s"}
VALUE_BASED_KEYS = LEARNER_KEYS - {"policy/actor_loss", "policy/critic_loss", "policy/entropy"} | {"policy/loss"}
"""QMIX has one TD loss (agent networks and mixer together), no actor, critic or entropy."""


def mabl(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "mabl", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"mabl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def train(algo: str, env: str, run_dir: Path, steps: int = STEPS) -> None:
    mabl("train", "--algo", algo, "--env", env, "--preset", "debug", "--steps", str(steps), "--seed", "1",
         "--checkpoint-every", "100", "--run-dir", str(run_dir), "--progress", "false", "--threads", "1")


def records(run_dir: Path, kind: str | None = None, drop: tuple[str, ...] = ()) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    out = [{k: v for k, v in json.loads(line).items() if k not in drop} for line in lines]
    return [r for r in out if kind is None or r["kind"] == kind]


class _SmaxRuns(dict):
    """algo -> its uninterrupted SMAX run directory, trained on first use (so that a test of one
    algorithm trains only that one)."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, algo: str) -> Path:
        train(algo, "smax:3m", self.root / algo)
        self[algo] = self.root / algo
        return self[algo]


@pytest.fixture(scope="module")
def smax_runs(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("jaxmarl")
    return _SmaxRuns(tmp_path_factory.mktemp("algos"))


@pytest.mark.parametrize("algo", ALGOS)
def test_trains_on_smax_with_common_fields(algo, smax_runs):
    run_dir = smax_runs[algo]
    episodes, learner = records(run_dir, "episode"), records(run_dir, "learner")
    assert episodes and learner
    assert all(set(r) == EPISODE_KEYS for r in episodes), episodes[0]  # the same fields for every algorithm
    keys = VALUE_BASED_KEYS if algo == "qmix" else LEARNER_KEYS
    assert all(keys <= set(r) for r in learner), learner[0]
    assert episodes[-1]["env_step"] >= STEPS
    assert [r["episode"] for r in episodes] == list(range(1, len(episodes) + 1))
    for r in learner:
        assert all(np.isfinite(v) for k, v in r.items() if k != "kind")
    if algo in MODEL_BASED:
        assert all("model/loss" in r for r in learner)
        assert ("model/kl_global" in learner[0]) == (algo in ("mabl", "mabl-sg"))
        assert learner[-1]["imagined_samples"] > 0
    else:
        assert learner[-1]["imagined_samples"] == 0 and learner[-1]["model_updates"] == 0
    state = torch.load(sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)
    assert state["config"]["algo"] == algo and state["counters"]["env_step"] == episodes[-1]["env_step"]


@pytest.mark.parametrize("algo", ALGOS)
def test_stop_and_resume_matches_uninterrupted(algo, smax_runs, tmp_path):
    run_dir = tmp_path / algo
    train(algo, "smax:3m", run_dir, steps=STEPS // 2)
    train(algo, "smax:3m", run_dir)  # the same run directory with more steps resumes it
    assert records(run_dir, drop=TIMING_KEYS) == records(smax_runs[algo], drop=TIMING_KEYS)


def test_world_models_consume_the_same_samples_per_env_step(smax_runs):
    """Same preset -> the same real and imagined samples per env step for every world model: the
    counters the trainer logs agree with the schedule, learner call by learner call. MAG also reads
    ``mag.error_updates`` fresh model batches per call for its error predictor (released MAG code)."""
    from mabl.presets import build_config

    cfg = build_config("debug")
    windows = cfg.schedule.model_updates * cfg.model.batch_size + cfg.schedule.policy_iterations * cfg.policy.batch_size
    real_per_call = windows * cfg.model.seq_len
    imagined_per_call = (cfg.schedule.policy_iterations * (cfg.policy.horizon - 1)
                         * (cfg.model.seq_len - 2) * cfg.policy.batch_size)
    for algo in MODEL_BASED:
        learner = records(smax_runs[algo], "learner")
        last_at_step = {r["env_step"]: r for r in learner}  # several calls may fall due at one episode end
        assert all(r["learner_call"] == step // cfg.schedule.train_every for step, r in last_at_step.items()), algo
        extra = cfg.mag.error_updates * cfg.model.batch_size * cfg.model.seq_len if algo == "mag" else 0
        for r in learner:
            assert r["real_samples"] == r["learner_call"] * (real_per_call + extra), (algo, r)
            assert r["imagined_samples"] == r["learner_call"] * imagined_per_call, (algo, r)


@pytest.mark.parametrize("algo", ALGOS)
def test_trains_on_pettingzoo(algo, tmp_path):
    pytest.importorskip("mpe2")
    train(algo, "mpe:simple_spread", tmp_path / algo, steps=200)
    episodes, learner = records(tmp_path / algo, "episode"), records(tmp_path / algo, "learner")
    assert all(set(r) == EPISODE_KEYS - {"win"} for r in episodes)  # MPE has no win
    loss = "policy/loss" if algo == "qmix" else "policy/critic_loss"
    assert learner and all(np.isfinite(r[loss]) for r in learner)


@pytest.mark.parametrize("algo", ["mamba", "mag", "mappo", "ippo", "rmappo", "qmix", "dreamer"])
def test_export_states_how_the_policy_executes(algo, smax_runs, tmp_path):
    from mabl.policy import load_policy

    out = tmp_path / "policy.pt"
    text = mabl("export", "--run-dir", str(smax_runs[algo]), "--out", str(out)).stdout
    policy = load_policy(str(out))
    if algo in ("mamba", "mag"):
        assert "JOINT" in text and "centralized" in text and policy.spec.centralized
    else:
        assert "decentralized" in text and not policy.spec.centralized
    result = mabl("eval", "--policy", str(out), "--episodes", "2").stdout
    assert "2 episodes" in result


@pytest.mark.parametrize("algo", ["mappo", "ippo", "rmappo", "qmix"])
def test_diagnose_refuses_a_model_free_run_in_one_line(algo, smax_runs):
    proc = subprocess.run([sys.executable, "-m", "mabl", "diagnose", "--run-dir", str(smax_runs[algo])],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("mabl: error: ") and f"is a {algo} run (model-free: no world model" in proc.stderr
