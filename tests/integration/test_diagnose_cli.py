"""`mabl diagnose` end to end on tiny debug-preset runs, and `--diagnose-every` in training.

The CLI runs in this process (``mabl.cli.main``): a subprocess would spend most of its time importing torch."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from mabl.cli import main
from mabl.diagnose import RESULT_KEYS
from mabl.train import TIMING_KEYS

pytest.importorskip("mpe2")

ENV = "mpe:simple_spread"


def mabl(*args: str, check: bool = True) -> SimpleNamespace:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    if check and code != 0:
        raise AssertionError(f"mabl {' '.join(args)} failed ({code}): {err.getvalue()[-3000:]}")
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def read_jsonl(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in path.read_text().splitlines()]


def train(run_dir: Path, algo: str, *extra: str) -> Path:
    mabl("train", "--env", ENV, "--algo", algo, "--preset", "debug", "--steps", "200", "--seed", "3",
         "--run-dir", str(run_dir), "--progress", "false", "--threads", "1", *extra)
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("diag")
    return {"mabl": train(root / "mabl", "mabl", "--diagnose-every", "1"),
            "dreamer": train(root / "dreamer", "dreamer")}


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@pytest.mark.parametrize("algo", ["mabl", "dreamer"])
def test_diagnose_json_has_every_key_with_finite_numbers(runs, algo, tmp_path):
    out = mabl("diagnose", "--run-dir", str(runs[algo]), "--windows", "8", "--length", "12", "--horizon", "3",
               "--json", "--out", str(tmp_path / "plots"), "--seed", "5", "--stack", "2")
    res = json.loads(out.stdout)
    assert set(RESULT_KEYS) <= res.keys()
    assert finite(res["probe_state_r2"]["mean"]) and finite(res["probe_others_obs_r2"]["agent"]["mean"])
    assert finite(res["probe_state_r2_obs"]["current"]["mean"]) and finite(res["probe_state_r2_obs"]["stacked"]["mean"])
    assert (res["probe_state_r2_global"] is None) == (algo == "dreamer") and res["probe_state_r2_obs"]["stack"] == 2
    assert [e["k"] for e in res["open_loop"]] == [1, 2, 3]
    assert all(finite(e[k]) for e in res["open_loop"] for k in ("obs_error", "reward_error", "cont_brier"))
    assert finite(res["imagination"]["lambda_return_mean"]) and finite(res["latents"]["agent"]["kl"])
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"diagnose.json", "open_loop.png", "probe_state_r2.png"}


def test_diagnose_on_another_runs_replay_and_errors(runs):
    out = mabl("diagnose", "--run-dir", str(runs["mabl"]), "--data", str(runs["dreamer"]), "--windows", "6",
               "--length", "12", "--horizon", "3")
    assert f"replay of {runs['dreamer']}" in out.stdout and "probe" in out.stdout and "open loop" in out.stdout
    bad = mabl("diagnose", "--run-dir", str(runs["mabl"]), "--windows", "1", check=False)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--windows=1" in bad.stderr


def test_training_logs_diagnose_lines(runs):
    lines = read_jsonl(runs["mabl"] / "metrics.jsonl")
    diag = [r for r in lines if r["kind"] == "diagnose"]
    learner = [r for r in lines if r["kind"] == "learner"]
    assert [r["learner_call"] for r in diag] == [r["learner_call"] for r in learner]
    assert all(finite(r["diag/obs_error_k1"]) and finite(r["diag/kl_global"]) for r in diag)


@pytest.mark.slow
def test_diagnose_every_does_not_change_training(runs, tmp_path):
    plain = train(tmp_path / "plain", "mabl")
    with_diag = [r for r in read_jsonl(runs["mabl"] / "metrics.jsonl") if r["kind"] != "diagnose"]
    assert with_diag == read_jsonl(plain / "metrics.jsonl")
