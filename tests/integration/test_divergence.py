"""Issue 17 end to end: a diverging run stops with one line and leaves only finite checkpoints; a
damaged newest checkpoint is renamed aside and the run resumes from the previous one; export and
eval refuse non-finite weights; env and policy faults during collection are one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mabl.train
from mabl.checkpoint import checkpoint_files, load_checkpoint, nonfinite_tensors
from mabl.cli import main
from mabl.envs.base import EnvSpec, TimeStep
from mabl.envs.checks import CheckedEnv
from mabl.errors import MablError


class ToyEnv:
    """Random observations; the reward grows with the actions taken (so the learners have signal).
    ``fail_at``: total env steps after which ``step`` raises (a crashing simulator)."""

    def __init__(self, seed: int = 0, fail_at: int | None = None):
        self.spec = EnvSpec(name="test:toy", n_agents=2, obs_dim=4, state_dim=5, discrete=True, n_actions=3,
                            episode_limit=20)
        self.rng, self.t, self.total, self.fail_at = np.random.default_rng(seed), 0, 0, fail_at

    def _step(self, reward: float = 0.0, done: bool = False) -> TimeStep:
        return TimeStep(self.rng.normal(size=(2, 4)).astype(np.float32), self.rng.normal(size=5).astype(np.float32),
                        None, reward=reward, truncated=done)

    def reset(self, seed=None) -> TimeStep:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t = 0
        return self._step()

    def step(self, actions) -> TimeStep:
        self.t += 1
        self.total += 1
        if self.fail_at is not None and self.total >= self.fail_at:
            raise RuntimeError("simulator lost its connection\nsecond line of a long message")
        return self._step(float(np.sum(actions)) * 10.0, self.t >= 20)

    def close(self) -> None:
        pass


def _args(run_dir, steps: int, *extra: str) -> list[str]:
    return ["train", "--env", "test:toy", "--preset", "debug", "--steps", str(steps), "--checkpoint-every", "100",
            "--run-dir", str(run_dir), "--progress", "false", *extra]


@pytest.fixture
def toy(monkeypatch):
    def use(fail_at: int | None = None):
        monkeypatch.setattr(mabl.train, "make_env", lambda name, seed=0, options=None: CheckedEnv(ToyEnv(seed, fail_at)))
    use()
    return use


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_diverging_run_stops_with_one_line_and_only_finite_checkpoints(toy, tmp_path, capsys):
    """A real run with learning rates of 1e3 (without the guard: NaN weights in the checkpoint and a
    raw 'probability tensor contains either inf, nan' traceback at about 350 env steps)."""
    run_dir = tmp_path / "run"
    lrs = ["--model.lr", "1e3", "--policy.actor_lr", "1e3", "--policy.critic_lr", "1e3"]
    assert main(_args(run_dir, 1000, *lrs)) == 2
    err = _one_line(capsys)
    assert "training diverged" in err and "consecutive" in err and "env step" in err and "learner call" in err, err
    assert "--max-skipped-updates 20" in err and "lower --" in err, err
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])  # the stopping call is logged
    assert last["kind"] == "learner" and max(v for k, v in last.items() if k.endswith("skipped")) > 0, last
    files = checkpoint_files(run_dir)
    assert files, "the run had written checkpoints before it stopped"
    for path in files:
        assert nonfinite_tensors(load_checkpoint(path)) == [], path
    assert main(["export", "--run-dir", str(run_dir), "--out", str(tmp_path / "p.pt")]) == 0  # the last good one
    capsys.readouterr()


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(toy, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(_args(run_dir, 200)) == 0
    older, newest = checkpoint_files(run_dir)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # torn
    capsys.readouterr()
    assert main(_args(run_dir, 300)) == 0
    err = _one_line(capsys)
    assert newest.name in err and f"{newest.name}.damaged" in err and f"resumed from {older.name}" in err, err
    aside = newest.with_name(newest.name + ".damaged")
    assert aside.read_bytes() == data[: len(data) // 2]  # renamed, never deleted
    assert load_checkpoint(checkpoint_files(run_dir)[-1])["counters"]["env_step"] >= 300


def test_no_usable_checkpoint_is_one_whole_sentence(toy, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(_args(run_dir, 200)) == 0
    for path in checkpoint_files(run_dir):
        path.write_bytes(path.read_bytes()[:1000])
    capsys.readouterr()
    assert main(_args(run_dir, 300)) == 2
    err = _one_line(capsys)
    assert "has no usable checkpoint" in err and err.endswith("start afresh."), err
    assert all(p.exists() for p in checkpoint_files(run_dir)) and len(checkpoint_files(run_dir)) == 2


def _poison_newest(run_dir) -> None:
    path = checkpoint_files(run_dir)[-1]
    state = torch.load(path, weights_only=True)
    weight = next(iter(state["agent"]["actor"].values()))
    weight.view(-1)[0] = float("nan")
    torch.save(state, path)


def test_export_and_eval_refuse_nonfinite_weights(toy, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(_args(run_dir, 100)) == 0
    good = tmp_path / "good.pt"
    assert main(["export", "--run-dir", str(run_dir), "--out", str(good)]) == 0
    _poison_newest(run_dir)
    capsys.readouterr()
    assert main(["export", "--run-dir", str(run_dir), "--out", str(tmp_path / "bad.pt")]) == 2
    assert "non-finite weights" in _one_line(capsys) and not (tmp_path / "bad.pt").exists()
    assert main(["eval", "--run-dir", str(run_dir), "--episodes", "1"]) == 2
    assert "non-finite weights" in _one_line(capsys)
    payload = torch.load(good, weights_only=True)
    next(iter(payload["actor"].values())).view(-1)[0] = float("inf")
    torch.save(payload, tmp_path / "bad_policy.pt")
    assert main(["eval", "--policy", str(tmp_path / "bad_policy.pt"), "--episodes", "1"]) == 2
    assert "non-finite weights" in _one_line(capsys)


def test_exported_policy_refuses_nonfinite_observations(toy, tmp_path, capsys):
    import mabl

    run_dir = tmp_path / "run"
    assert main(_args(run_dir, 100)) == 0
    assert main(["export", "--run-dir", str(run_dir), "--out", str(tmp_path / "p.pt")]) == 0
    policy = mabl.load_policy(str(tmp_path / "p.pt"))
    obs = np.zeros((2, 4), np.float32)
    policy.act(obs)
    obs[1, 2] = np.nan
    with pytest.raises(MablError, match=r"obs of agent\(s\) \[1\] hold NaN"):
        policy.act(obs)


@pytest.mark.parametrize("algo", ["mabl", "mappo"])
def test_an_env_crash_during_collection_is_one_line_naming_the_step(toy, algo, tmp_path, capsys):
    toy(fail_at=130)
    assert main(_args(tmp_path / "run", 300, "--algo", algo)) == 2
    err = _one_line(capsys)
    assert "env test:toy failed" in err and "RuntimeError: simulator lost its connection" in err, err
    assert "step 10 of the episode" in err and "second line" not in err, err
    if algo == "mabl":
        assert "env step 130" in err, err


def test_a_policy_fault_during_collection_is_one_line_naming_the_step(toy, tmp_path, capsys, monkeypatch):
    from mabl.policy import DecentralizedPolicy

    run_dir = tmp_path / "run"
    calls = {"n": 0}
    act = DecentralizedPolicy.act

    def broken(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 57:
            raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
        return act(self, *args, **kwargs)

    monkeypatch.setattr(DecentralizedPolicy, "act", broken)
    assert main(_args(run_dir, 300)) == 2
    err = _one_line(capsys)
    assert "the policy failed at env step 56 (step 16 of the episode" in err and "RuntimeError" in err, err


# ------------------------------------------------------------------------------ every non-finite path
def test_a_checkpoint_with_a_nonfinite_tensor_is_refused_and_nothing_is_written(toy, tmp_path, capsys):
    from mabl.checkpoint import save_checkpoint
    from mabl.train import Trainer

    run_dir = tmp_path / "run"
    assert main(_args(run_dir, 100)) == 0
    before = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}
    payload = {"agent": {"w": torch.tensor([1.0, float("nan")])}, "counters": {"env_step": 500}}
    with pytest.raises(MablError, match=r"refusing to write checkpoint step_000000500\.pt: non-finite values in "
                                        r"agent\.w"):
        save_checkpoint(run_dir, 500, payload)
    # the trainer's own save refuses a poisoned network the same way
    from mabl.cli import _parser
    from mabl.presets import build_config

    args = {k: v for k, v in vars(_parser().parse_args(_args(run_dir, 300))).items() if k not in ("command", "config")}
    trainer = Trainer(build_config(args.pop("preset"), args))  # resumes the run's newest checkpoint
    with torch.no_grad():
        next(trainer.agent.critic.parameters()).view(-1)[0] = float("inf")
    with pytest.raises(MablError, match="refusing to write checkpoint .*critic"):
        trainer.save()
    after = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}
    assert after == before  # no new file, no temporary left behind, the old ones untouched
    capsys.readouterr()


def test_weights_that_become_nonfinite_stop_training_before_any_checkpoint(toy, tmp_path, capsys, monkeypatch):
    """A world-model update that leaves a NaN weight without a non-finite loss or gradient (which the
    guard would skip) is what the per-call weight check is for: the run stops with one line at that
    learner call, and every checkpoint on disk stays finite."""
    from mabl.algo.agent import MablAgent

    real = MablAgent.train_world_model
    calls = {"n": 0}

    def poisoning(self, rows):
        out = real(self, rows)
        calls["n"] += 1
        if calls["n"] == 5:
            with torch.no_grad():
                next(self.world_model.parameters()).view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(MablAgent, "train_world_model", poisoning)
    run_dir = tmp_path / "run"
    assert main(_args(run_dir, 1000)) == 2
    err = _one_line(capsys)
    assert "training diverged: the world model weights became non-finite" in err and "learner call" in err, err
    assert "the last checkpoint is intact" in err
    files = checkpoint_files(run_dir)
    for path in files:
        assert nonfinite_tensors(load_checkpoint(path)) == [], path
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["kind"] == "learner"  # the stopping call's line is written, then the run stops
    assert all(load_checkpoint(p)["counters"]["env_step"] <= last["env_step"] for p in files)


@pytest.mark.parametrize("damage", ["nonfinite", "foreign"])
def test_resume_falls_back_from_a_nonfinite_or_foreign_newest_checkpoint(toy, tmp_path, capsys, damage):
    run_dir = tmp_path / "run"
    assert main(_args(run_dir, 200)) == 0
    older, newest = checkpoint_files(run_dir)
    if damage == "nonfinite":
        _poison_newest(run_dir)
        reason = "holds non-finite weights (agent.actor."
    else:  # a readable torch file that is not a mabl checkpoint (e.g. an exported policy copied in)
        torch.save({"actor": {"w": torch.zeros(3)}}, newest)
        reason = "is not a mabl training checkpoint"
    damaged = newest.read_bytes()
    capsys.readouterr()
    assert main(_args(run_dir, 300)) == 0
    err = _one_line(capsys)
    assert reason in err and f"renamed it to {newest.name}.damaged" in err and f"resumed from {older.name}" in err, err
    assert newest.with_name(newest.name + ".damaged").read_bytes() == damaged
    state = load_checkpoint(checkpoint_files(run_dir)[-1])
    assert state["counters"]["env_step"] >= 300 and nonfinite_tensors(state) == []
