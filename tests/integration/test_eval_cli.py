"""``mabl eval``: --json with each episode's values, the checkpoint it evaluated, --checkpoint STEP,
exported ONNX policies, and an ONNX policy's spec equal to the torch policy's."""

from __future__ import annotations

import dataclasses
import json

import pytest
from toy_env import use_toy

import mabl.envs
from mabl.cli import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    use_toy(mp)
    root = tmp_path_factory.mktemp("eval")
    for algo in ("mabl", "mappo"):
        assert main(["train", "--env", "test:toy", "--algo", algo, "--preset", "debug", "--steps", "200",
                     "--checkpoint-every", "100", "--eval-every", "0", "--run-dir", str(root / algo),
                     "--progress", "false", "--threads", "1"]) == 0
    mp.undo()
    return root


@pytest.fixture
def toy_eval(monkeypatch):
    use_toy(monkeypatch, mabl.envs)


def _eval_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["eval", *args, "--episodes", "3", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_names_the_checkpoint_and_keeps_each_episode(runs, toy_eval, capsys):
    newest = _eval_json(capsys, "--run-dir", str(runs / "mabl"))
    assert newest["checkpoint_step"] == 200 and newest["checkpoint"].endswith("step_000000200.pt")
    assert len(newest["returns"]) == 3 and newest["lengths"] == [20, 20, 20]
    assert sum(newest["returns"]) / 3 == pytest.approx(newest["mean_return"])
    older = _eval_json(capsys, "--run_dir", str(runs / "mabl"), "--checkpoint", "100")
    assert older["checkpoint_step"] == 100
    assert main(["eval", "--run-dir", str(runs / "mabl")]) == 0
    assert "evaluating checkpoint of step 200" in capsys.readouterr().out


def test_a_missing_checkpoint_step_is_one_line(runs, toy_eval, capsys):
    assert main(["eval", "--run-dir", str(runs / "mabl"), "--checkpoint", "50"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no checkpoint of step 50" in err and "100, 200" in err


@pytest.mark.parametrize("algo", ["mabl", "mappo"])
def test_onnx_policy_evaluates_like_the_run_and_has_the_same_spec(runs, toy_eval, capsys, tmp_path, algo):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from mabl import load_policy
    from mabl.onnx_policy import OnnxPolicy

    onnx_file, torch_file = tmp_path / "p.onnx", tmp_path / "p.pt"
    assert main(["export", "--run-dir", str(runs / algo), "--format", "onnx", "--out", str(onnx_file)]) == 0
    said = capsys.readouterr().out
    # MAPPO's MLP actor has no recurrent state; the world-model actors carry h and z
    assert ("no recurrent state" in said) == (algo == "mappo") and "of checkpoint step " in said
    assert main(["export", "--run-dir", str(runs / algo), "--out", str(torch_file)]) == 0
    assert dataclasses.asdict(OnnxPolicy(str(onnx_file)).spec) == dataclasses.asdict(load_policy(str(torch_file)).spec)
    from_onnx = _eval_json(capsys, "--policy", str(onnx_file))
    from_run = _eval_json(capsys, "--run-dir", str(runs / algo))
    assert from_onnx["returns"] == pytest.approx(from_run["returns"])  # greedy: the same actions
    assert from_onnx["policy"] == str(onnx_file) and "checkpoint" not in from_onnx


def test_diagnose_on_a_short_run_uses_the_windows_that_fit(runs, capsys):
    assert main(["diagnose", "--run-dir", str(runs / "mabl"), "--json", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    rows = result["meta"]["data_rows"]
    assert result["meta"]["windows"] == rows // 20 < 100
    assert f"room for {rows // 20} windows of 20 rows, not the default 100" in captured.err
