"""The CLI end to end: train, resume after SIGKILL, eval, export, and one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mabl.train import TIMING_KEYS

pytest.importorskip("mpe2")

ENV = "mpe:simple_spread"  # fast; SMAX runs are covered in test_train_smax.py


def mabl(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "mabl", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"mabl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def train_args(run_dir: Path, *extra: str) -> list[str]:
    return ["train", "--env", ENV, "--preset", "debug", "--steps", "600", "--checkpoint-every", "150",
            "--eval-every", "300", "--seed", "3", "--run-dir", str(run_dir), "--progress", "false",
            "--threads", "1", *extra]


def read_jsonl(path: Path, drop: tuple[str, ...] = TIMING_KEYS) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "uninterrupted"
    mabl(*train_args(run_dir))
    return run_dir


def test_run_directory_contents(finished_run: Path):
    cfg = json.loads((finished_run / "config.json").read_text())
    assert cfg["env"] == ENV and cfg["preset"] == "debug" and cfg["steps"] == 600
    episodes = [r for r in read_jsonl(finished_run / "metrics.jsonl") if r["kind"] == "episode"]
    learner = [r for r in read_jsonl(finished_run / "metrics.jsonl") if r["kind"] == "learner"]
    assert episodes and learner
    for rec in episodes:
        assert {"env_step", "episode", "return", "length"} <= rec.keys()
    assert [r["episode"] for r in episodes] == list(range(1, len(episodes) + 1))
    assert episodes[-1]["env_step"] >= 600
    assert all(np.isfinite(r["model/loss"]) and np.isfinite(r["policy/critic_loss"]) for r in learner)
    evals = read_jsonl(finished_run / "eval.jsonl")
    assert [e["env_step"] for e in evals] == [300, 600]
    assert any((finished_run / "tb").iterdir())
    ckpts = sorted((finished_run / "checkpoints").glob("step_*.pt"))
    assert 1 <= len(ckpts) <= 2  # rotation keeps the newest two
    state = torch.load(ckpts[-1], weights_only=True)
    assert state["kind"] == "mabl-checkpoint" and state["schema"] == 1
    assert {"agent", "replay", "counters", "rng", "config", "spec"} <= state.keys()
    assert state["counters"]["env_step"] == episodes[-1]["env_step"]


def test_sigkill_then_resume_matches_uninterrupted(finished_run: Path, tmp_path: Path):
    run_dir = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mabl", *train_args(run_dir)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    ckpt_dir = run_dir / "checkpoints"
    # Kill after the second checkpoint exists, i.e. in the middle of the run.
    while time.time() < deadline and proc.poll() is None:
        if ckpt_dir.exists() and len(list(ckpt_dir.glob("step_*.pt"))) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*.pt"))
    assert killed_at < 600
    mabl(*train_args(run_dir))  # the same command resumes
    assert read_jsonl(run_dir / "metrics.jsonl") == read_jsonl(finished_run / "metrics.jsonl")
    assert read_jsonl(run_dir / "eval.jsonl") == read_jsonl(finished_run / "eval.jsonl")
    # Training time is summed over the two processes: it never goes back across the resume.
    learner = [r for r in read_jsonl(run_dir / "metrics.jsonl", drop=()) if r["kind"] == "learner"]
    for key in ("wall_s", "cpu_s"):
        times = [r[key] for r in learner]
        assert times[0] > 0 and all(b >= a for a, b in zip(times, times[1:])), (key, times)


def test_rerun_of_finished_run_changes_nothing(finished_run: Path, tmp_path: Path):
    before = (finished_run / "metrics.jsonl").read_bytes()
    mabl(*train_args(finished_run))
    assert (finished_run / "metrics.jsonl").read_bytes() == before


def test_eval_and_export(finished_run: Path, tmp_path: Path):
    out = mabl("eval", "--run-dir", str(finished_run), "--episodes", "3").stdout
    assert "mean return" in out and ENV in out
    policy_file = tmp_path / "policy.pt"
    mabl("export", "--run-dir", str(finished_run), "--out", str(policy_file))
    out2 = mabl("eval", "--policy", str(policy_file), "--episodes", "3").stdout
    assert out2.split(": ", 1)[1] == out.split(": ", 1)[1]  # same policy, same seeds, greedy

    import mabl as mabl_pkg
    from mabl.cli import _agent_from_run

    policy = mabl_pkg.load_policy(str(policy_file))
    assert policy.spec.n_agents == 3 and policy.spec.n_actions == 5 and policy.spec.obs_dim > 0
    # The exported file holds the decentralized part only.
    payload = torch.load(policy_file, weights_only=True)
    assert set(payload) == {"format", "version", "algo", "execution", "spec", "model", "policy_hidden", "encoder",
                            "actor"}
    assert payload["algo"] == "mabl" and payload["execution"] == "decentralized"
    assert not any("state_encoder" in k or "global" in k for k in payload["encoder"])
    # The file round-trips the run's acting path: the same probabilities as the run's own policy object
    # (the acting path against the training filter is tests/unit/test_acting_path.py).
    agent, _, _ = _agent_from_run(str(finished_run))
    live = agent.policy()
    rng = np.random.default_rng(0)
    policy.reset()
    live.reset()
    for _ in range(6):
        obs = rng.normal(size=(3, policy.spec.obs_dim)).astype(np.float32)
        a1, i1 = policy.act(obs, deterministic=True)
        a2, i2 = live.act(obs, deterministic=True)
        np.testing.assert_allclose(i1["probs"], i2["probs"], rtol=1e-5, atol=1e-6)
        assert (a1 == a2).all() and a1.shape == (3,) and i1["probs"].shape == (3, 5)


def test_exported_policy_is_decentralized(finished_run: Path, tmp_path: Path):
    import mabl as mabl_pkg

    policy_file = tmp_path / "p.pt"
    mabl("export", "--run-dir", str(finished_run), "--out", str(policy_file))
    policy = mabl_pkg.load_policy(str(policy_file))
    rng = np.random.default_rng(1)
    obs_seq = rng.normal(size=(5, 3, policy.spec.obs_dim)).astype(np.float32)

    def probs(seq):
        policy.reset()
        return np.stack([policy.act(o, deterministic=True)[1]["probs"] for o in seq])

    base = probs(obs_seq)
    for i in range(3):  # every agent: the others see something else entirely, agent i's probabilities stay
        other = obs_seq.copy()
        rest = [j for j in range(3) if j != i]
        other[:, rest] = rng.normal(size=other[:, rest].shape) * 3.0
        changed = probs(other)
        np.testing.assert_array_equal(changed[:, i], base[:, i])
        assert np.abs(changed[:, rest] - base[:, rest]).max() > 1e-4  # the others' did move


# ---------------------------------------------------------------- bad input: one line, no traceback
def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("args, needles", [
    (["train", "--env", "nope:thing"], ["nope:thing"]),
    (["train", "--env", "smax:not_a_map"], ["not_a_map"]),
    (["train", "--algo", "qmax"], ["qmax", "mabl"]),
    (["train", "--preset", "huge"], ["huge", "paper"]),
    (["train", "--policy.gamma", "2"], ["policy.gamma"]),
    (["train", "--model.hidden", "abc"], ["model.hidden"]),
    (["train", "--model.reward_scale", "nan"], ["--model.reward_scale=nan must be > 0"]),
    (["train", "--schedule.mode", "sometimes"], ["schedule.mode", "episode"]),
    (["eval", "--run-dir", "/nonexistent/run"], ["/nonexistent/run"]),
    (["eval", "--policy", "/nonexistent/p.pt"], ["/nonexistent/p.pt"]),
    (["bench", "speed", "--map", "nowhere"], ["nowhere", "3s_vs_4z"]),
    (["bench", "env", "--env", "nope:thing"], ["nope:thing", "flatland"]),
    (["bench", "env", "--env", "mpe:simple_spread", "--steps", "0"], ["--steps=0"]),
])
def test_bad_input_gives_one_line(args, needles, tmp_path):
    if args[0] == "train":
        args = [*args, "--run-dir", str(tmp_path / "r"), "--progress", "false"]
    assert_one_line_error(mabl(*args, check=False), *needles)
    if args[0] == "train":
        assert not (tmp_path / "r" / "checkpoints").exists()


def test_bench_env_prints_steps_per_second():
    out = mabl("bench", "env", "--env", "mpe:simple_spread", "--steps", "60", "--json").stdout
    result = json.loads(out)
    assert result["env"] == "mpe:simple_spread" and result["steps"] == 60
    assert result["episodes"] == 3  # MPE episodes last 25 steps: resets at steps 0, 25 and 50
    assert result["env_steps_per_s"] > 0


def test_replay_copy_on_the_device_gives_the_same_run(finished_run: Path, tmp_path: Path):
    # --schedule.replay_on device gathers windows from a torch copy of the replay (the GPU path,
    # here on the CPU); the windows, and so every logged number, must be those of the host path
    run_dir = tmp_path / "replay_on_device"
    mabl(*train_args(run_dir, "--schedule.replay_on", "device"))
    assert json.loads((run_dir / "config.json").read_text())["schedule"]["replay_on"] == "device"
    got, want = read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(finished_run / "metrics.jsonl")
    assert len(want) > 10 and any(line.get("kind") == "learner" for line in want)
    assert got == want


def test_bench_speed_reports_every_phase_and_its_matrix_work():
    out = mabl("bench", "speed", "--preset", "debug", "--repeats", "2", "--policy-repeats", "1", "--json").stdout
    r = json.loads(out)
    assert r["map"] == "3s_vs_4z" and r["preset"] == "debug"
    assert r["policy_iteration_ms"] == r["imagination_ms"] + r["ppo_ms"]
    per_call = (r["model_updates_per_call"] * r["model_update_ms"]
                + r["policy_iterations_per_call"] * r["policy_iteration_ms"])
    assert abs(r["learner_s_per_episode"] - per_call / 1e3) < 1e-9
    for phase, gflop, ms in (("model_update", "model_update_gflop", "model_update_ms"),
                             ("imagination", "imagination_gflop", "imagination_ms"), ("ppo", "ppo_gflop", "ppo_ms")):
        assert r[gflop] > 0
        assert abs(r["achieved_gflops"][phase] - r[gflop] / r[ms] * 1e3) < 1e-6
    assert r["matmul_gflops"] > 0


def test_broken_checkpoints_are_refused_without_damage_and_resume_falls_back(finished_run: Path, tmp_path: Path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run, run_dir)
    older, newest = sorted((run_dir / "checkpoints").glob("step_*.pt"))[-2:]
    snapshot = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p != newest}
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # truncated
    assert_one_line_error(mabl("eval", "--run-dir", str(run_dir), check=False), "unreadable")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    assert_one_line_error(mabl("eval", "--policy", str(tmp_path / "foreign.pt"), check=False), "not a mabl policy")
    for path, content in snapshot.items():
        assert path.read_bytes() == content, f"{path} was modified"
    # resuming falls back to the previous checkpoint, says so in one line, keeps the damaged file aside
    proc = mabl(*train_args(run_dir, "--steps", "900"), check=False)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "unreadable" in err and f"resumed from {older.name}" in err, err
    assert newest.with_name(newest.name + ".damaged").read_bytes() == data[: len(data) // 2]


def test_resume_with_other_settings_is_refused(finished_run: Path):
    before = (finished_run / "metrics.jsonl").read_bytes()
    proc = mabl(*train_args(finished_run, "--model.hidden", "64"), check=False)
    assert_one_line_error(proc, "model.hidden")
    assert (finished_run / "metrics.jsonl").read_bytes() == before
