"""``benchmarks/gpu_check.sh`` / ``python -m mabl.gpu_check`` (issue 18), exercised on the CPU: the
driver's stage bookkeeping (a failed or timed-out stage is recorded and the next one runs), the
training summary and its extrapolation against hand computations, the JUnit parsing, and the
stages themselves end to end with the tiniest settings (the whole ``--quick`` run is the slow test
at the end)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mabl import gpu_check
from mabl.gpu_check import OUTPUT_FILES, Check, parse_junit, settings, summarise_training

REPO = Path(__file__).resolve().parents[2]
NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def _assert_device_machine_can_return(out: Path) -> None:
    """The device machine returns at most 8 files, named in letters, digits, '.', '_' and '-'."""
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and set(files) <= set(OUTPUT_FILES), files
    assert all(NAME.match(name) for name in files)
    assert all(p.is_file() for p in out.iterdir())


def _episode(step, length, sps):
    return {"kind": "episode", "env_step": step, "episode": 0, "return": 0.0, "length": length, "sps": sps}


def _learner(step, seconds):
    return {"kind": "learner", "env_step": step, "learner_call": 0, "learner_s": seconds}


def test_training_summary_and_its_extrapolation_match_a_hand_computation(tmp_path: Path):
    # 5 episodes of 100 steps; learning starts at 100 steps: learner calls after episodes 2-5
    # (the paper's one call per episode), the first one slow (warm-up / compile).
    records = [_episode(100, 100, 50.0), _episode(200, 100, 40.0), _learner(200, 9.0),
               _episode(300, 100, 30.0), _learner(300, 2.0), _episode(400, 100, 20.0), _learner(400, 3.0),
               _episode(500, 100, 25.0), _learner(500, 4.0)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n{\"kind\": \"epis")  # a line cut by the stop
    got = summarise_training(path, {"mode": "episode", "learning_starts": 100}, process_s=40.0, target_steps=10_000)
    # loop wall = 500 / 25 (before the last call) + 4.0 (the last call) = 24 s; learner 18 s in all
    assert got["env_steps"] == 500 and got["episodes"] == 5 and got["learner_calls"] == 4
    assert got["loop_s"] == pytest.approx(24.0)
    assert got["startup_s"] == pytest.approx(16.0)
    assert got["env_steps_per_s"] == pytest.approx(500 / 24)
    assert got["learner_s_total"] == pytest.approx(18.0)
    assert got["acting_ms_per_env_step"] == pytest.approx(1e3 * 6.0 / 500)
    assert got["first_learner_call_s"] == 9.0
    assert got["learner_s_per_call_mean"] == pytest.approx(3.0)  # (2 + 3 + 4) / 3, warm-up left out
    assert got["learner_calls_per_env_step"] == pytest.approx(1 / 100)  # one call per 100-step episode
    assert got["learner_s_per_episode"] == pytest.approx(3.0)
    e = got["extrapolated"]
    assert e["learner_s"] == pytest.approx(10_000 / 100 * 3.0)  # 100 episodes x 3 s = 300 s
    assert e["acting_s"] == pytest.approx(10_000 * 6.0 / 500)  # 120 s
    assert e["total_min"] == pytest.approx(420 / 60)
    assert "EXTRAPOLATION" in e["note"]
    # the 'steps' schedule: one call per train_every env steps, whatever the episodes' length
    steps_mode = summarise_training(path, {"mode": "steps", "train_every": 50, "learning_starts": 100}, 40.0, 10_000)
    assert steps_mode["learner_calls_per_env_step"] == pytest.approx(1 / 50)
    assert steps_mode["extrapolated"]["learner_s"] == pytest.approx(10_000 / 50 * 3.0)
    assert steps_mode["learner_s_per_episode"] == pytest.approx(3.0 * 100 / 50)


def test_training_summary_of_a_run_that_wrote_nothing(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("")
    assert summarise_training(path, {}, 1.0) is None
    path.write_text(json.dumps(_episode(50, 50, 10.0)) + "\n")  # no learner call yet: measured, no extrapolation
    got = summarise_training(path, {"mode": "episode", "learning_starts": 100}, 9.0)
    assert got["env_steps"] == 50 and got["learner_calls"] == 0 and "extrapolated" not in got


def test_only_the_files_with_gpu_tests_are_collected():
    files = gpu_check.gpu_test_files(REPO / "tests")
    assert {"tests/unit/test_compile.py", "tests/unit/test_replay_device.py", "tests/unit/test_host_sync.py"} <= set(files)
    assert "tests/unit/test_gpu_check.py" not in files and all((REPO / f).is_file() for f in files)


def test_junit_report_is_read_into_counts_and_outcomes(tmp_path: Path):
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest">'
        '<testcase classname="tests.unit.test_a" name="test_ok" time="0.5"/>'
        '<testcase classname="tests.unit.test_a" name="test_bad" time="1.25"><failure message="assert 1 == 2">x'
        '</failure></testcase>'
        '<testcase classname="tests.unit.test_b" name="test_gpu[cuda]" time="0"><skipped message="needs CUDA"/>'
        '</testcase></testsuite></testsuites>')
    got = parse_junit(xml)
    assert got["counts"] == {"passed": 1, "failed": 1, "skipped": 1}
    assert [t["outcome"] for t in got["tests"]] == ["passed", "failed", "skipped"]
    assert got["tests"][1]["id"] == "tests.unit.test_a::test_bad" and got["tests"][1]["message"] == "assert 1 == 2"
    assert got["tests"][1]["seconds"] == 1.25
    assert parse_junit(tmp_path / "missing.xml") == {"counts": {}, "tests": []}


def test_a_stage_past_its_budget_is_stopped_with_its_children(tmp_path: Path):
    check = Check(tmp_path / "out", tmp_path / "work", settings("cpu", quick=True), ())
    marker = tmp_path / "child.pid"
    # a parent that starts a sleeping child, then sleeps itself: both must be gone after the timeout
    script = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
              f" open({str(marker)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    t0 = time.monotonic()
    code, seconds = check.run_process([sys.executable, "-c", script], timeout=2.0)
    assert code is None and time.monotonic() - t0 < 20
    child = int(marker.read_text())
    time.sleep(0.5)
    assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text().lower()
    assert "$ " in (tmp_path / "out" / "log.txt").read_text()


FAKE_WORKER = """#!/bin/sh
# stands in for python: the facts worker reports an error, the bench worker dies without a result
case "$*" in
  *"--worker facts"*) result=$(echo "$*" | sed 's/.*--result //')
                      echo '{"error": "no GPU in this test"}' > "$result"; exit 1;;
  *) echo "bench worker crashed"; exit 3;;
esac
"""


def test_failed_stages_are_recorded_and_the_check_goes_on(tmp_path: Path):
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_WORKER)
    fake.chmod(0o755)
    out = tmp_path / "out"
    cfg = settings("cpu", quick=True, maps=("3s_vs_4z",), modes=("fp32",))
    records = Check(out, tmp_path / "w", cfg, ("facts", "bench"), python=str(fake)).run()
    assert [(r.name, r.status) for r in records] == [("facts", "failed"), ("bench 3s_vs_4z fp32", "failed")]
    facts = json.loads((out / "facts.json").read_text())
    assert facts["stage"]["status"] == "failed" and facts["stage"]["detail"] == "no GPU in this test"
    bench = json.loads((out / "bench.json").read_text())
    assert [r["stage"]["detail"] for r in bench["runs"]] == ["exit code 3; see log.txt"]  # ran although facts failed
    assert "bench worker crashed" in (out / "log.txt").read_text()
    summary = (out / "summary.md").read_text()
    assert "| facts | failed |" in summary and "| bench 3s_vs_4z fp32 | failed |" in summary
    _assert_device_machine_can_return(out)


def test_a_stage_finds_no_time_left(tmp_path: Path):
    cfg = dataclasses.replace(settings("cpu", quick=True), budget_s=8.0)
    records = Check(tmp_path / "out", tmp_path / "w", cfg, ("facts",), python="/nonexistent/python").run()
    assert records[0].status == "skipped" and "out of time" in records[0].detail
    assert json.loads((tmp_path / "out" / "facts.json").read_text())["stage"]["status"] == "skipped"


def test_bad_arguments_give_one_line(tmp_path: Path, capsys):
    assert gpu_check.main(["--device", "cpu", "--out", str(tmp_path), "--stages", "facts,nope"]) == 2
    assert "unknown stage nope" in capsys.readouterr().err
    env_out = os.environ.pop("OUT", None)
    try:
        assert gpu_check.main(["--device", "cpu"]) == 2
        assert "--out" in capsys.readouterr().err
    finally:
        if env_out is not None:
            os.environ["OUT"] = env_out
    (tmp_path / "mine.txt").write_text("keep")
    assert gpu_check.main(["--device", "cpu", "--out", str(tmp_path), "--stages", "facts"]) == 2
    assert "mine.txt" in capsys.readouterr().err and (tmp_path / "mine.txt").read_text() == "keep"


@pytest.mark.integration  # runs the stages' worker processes end to end: not the fast unit tier
def test_quick_stages_end_to_end_with_the_tiniest_settings(tmp_path: Path):
    """facts, one bench run and the profile through the driver and its worker processes."""
    out = tmp_path / "out"
    code = gpu_check.main(["--device", "cpu", "--quick", "--out", str(out), "--work", str(tmp_path / "w"),
                           "--stages", "facts,bench,profile", "--maps", "3s_vs_4z", "--modes", "fp32"])
    assert code == 0, (out / "log.txt").read_text()[-3000:]
    facts = json.loads((out / "facts.json").read_text())
    assert facts["torch"] == torch.__version__ and facts["matmul_gflops"]["fp32"] > 0 and facts["matmul_size"] == 512
    run = json.loads((out / "bench.json").read_text())["runs"][0]
    r = run["result"]
    assert run["stage"]["status"] == "ok" and r["preset"] == "debug" and r["map"] == "3s_vs_4z" and not r["amp"]
    assert run["share_of_matmul_rate"]["model_update"] == pytest.approx(
        r["achieved_gflops"]["model_update"] / facts["matmul_gflops"]["fp32"])
    prof = json.loads((out / "profile.json").read_text())["profiles"][0]
    for phase in ("world_model_update", "policy_iteration"):
        data = prof["phases"][phase]
        assert data["wall_ms"] > 0 and data["aten_ops"] > 100 and not data["errors"]
        assert any(t["name"] in ("aten::mm", "aten::addmm", "aten::bmm") for t in data["top"])
    text = (out / "profile.txt").read_text()
    assert "world_model_update" in text and "Self CPU" in text
    assert "| facts | ok |" in (out / "summary.md").read_text()
    _assert_device_machine_can_return(out)


@pytest.mark.slow
def test_whole_quick_check_through_the_shell_script(tmp_path: Path):
    pytest.importorskip("jaxmarl")
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "MABL_WHEEL_SITE": str(tmp_path / "site")}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--quick",
                           "--work", str(tmp_path / "w")], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _assert_device_machine_can_return(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    bench = json.loads((out / "bench.json").read_text())["runs"]
    assert [(b.get("map"), b["mode"], b["stage"]["status"]) for b in bench] == [
        ("3s_vs_4z", "fp32", "ok"), ("corridor", "fp32", "ok"), ("3s_vs_4z", "bf16", "ok"), ("corridor", "bf16", "ok"),
        (None, "bf16+compile", "off")]  # --quick leaves compiling out
    assert all(b["result"]["preset"] == "debug" for b in bench[:4])
    profiles = json.loads((out / "profile.json").read_text())["profiles"]
    assert [p["stage"]["status"] for p in profiles] == ["ok", "off"]
    tests = json.loads((out / "tests.json").read_text())
    assert tests["stage"]["status"] == "ok" and tests["counts"].get("skipped", 0) > 10  # no CUDA here
    train = json.loads((out / "train.json").read_text())
    assert train["stage"]["status"] == "ok" and train["env_steps"] >= 300 and "extrapolated" in train
    assert "EXTRAPOLATION" in (out / "summary.md").read_text()


class _Range:
    def __init__(self, us):
        self.us = us

    def elapsed_us(self):
        return self.us


class _Event:
    def __init__(self, name, device_type, us=0.0):
        self.name, self.device_type, self.time_range = name, device_type, _Range(us)


class _Avg:
    def __init__(self, key, count, cpu_us, device_us):
        self.key, self.count, self.self_cpu_time_total, self.self_device_time_total = key, count, cpu_us, device_us


class _Averages(list):
    def table(self, sort_by, row_limit):
        return f"table sorted by {sort_by}, {row_limit} rows"


class _FakeCudaProfile:
    """What torch.profiler gives for a CUDA run: runtime calls as CPU events, kernels as CUDA events."""

    def events(self):
        cpu, cuda = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA
        return ([_Event("aten::mm", cpu)] * 4 + [_Event("cudaLaunchKernel", cpu)] * 3
                + [_Event("cudaLaunchKernelExC", cpu), _Event("cudaGraphLaunch", cpu), _Event("cudaMemcpyAsync", cpu),
                   _Event("cudaStreamSynchronize", cpu)]
                + [_Event("ampere_sgemm", cuda, 250.0), _Event("elementwise", cuda, 50.0)])

    def key_averages(self):
        return _Averages([_Avg("aten::add", 2, 90.0, 50.0), _Avg("aten::mm", 4, 10.0, 250.0)])


def test_cuda_profile_numbers_from_the_profiler_events():
    got = gpu_check._summarise_profile(_FakeCudaProfile(), "cuda", wall_s=0.001, top=5)
    assert not got["errors"]
    assert got["aten_ops"] == 4 and got["device_events"] == 2
    assert got["kernel_launches"] == 4 and got["graph_launches"] == 1  # 3 + 1 ExC; the graph launch apart
    assert got["sync_calls"] == {"cudaStreamSynchronize": 1}  # cudaMemcpyAsync does not wait
    assert got["device_busy_ms"] == pytest.approx(0.3) and got["device_busy_share"] == pytest.approx(0.3)
    assert [t["name"] for t in got["top"]] == ["aten::mm", "aten::add"]  # by self device time on a GPU
    assert "self_cuda_time_total" in got["table"]
    cpu = gpu_check._summarise_profile(_FakeCudaProfile(), "cpu", wall_s=0.001, top=5)
    assert [t["name"] for t in cpu["top"]] == ["aten::add", "aten::mm"] and "kernel_launches" not in cpu
