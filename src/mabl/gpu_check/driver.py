"""The GPU check's driver: runs the stages in order, each in its own process group within its budget,
and keeps the output folder current."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from mabl.gpu_check.report import BENCH_NOTE, parse_junit, profile_text, summarise_training, summary_markdown
from mabl.gpu_check.settings import MODES, OUTPUT_FILES, Settings


@dataclasses.dataclass
class StageRecord:
    name: str
    status: str = "pending"
    """ok, failed, timeout, skipped (no time left), off (not selected)."""
    seconds: float = 0.0
    budget_s: float = 0.0
    detail: str = ""


class Check:
    """Runs the stages in order, each within its budget, and keeps the output folder current."""

    def __init__(self, out: Path, work: Path, cfg: Settings, stages: tuple[str, ...], python: str = sys.executable):
        self.out, self.work, self.cfg, self.stages, self.python = out, work, cfg, stages, python
        self.start = time.monotonic()
        self.records: list[StageRecord] = []
        self.facts: dict = {}
        self.bench: list[dict] = []
        self.profiles: list[dict] = []
        self.tests: dict = {}
        self.train: dict = {}
        out.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        self.log_path = out / "log.txt"
        self.log(f"mabl gpu check: device={cfg.device} quick={cfg.quick} budget={cfg.budget_s:.0f}s "
                 f"stages={','.join(stages)} out={out} work={work}")

    # ---------------------------------------------------------------- plumbing
    def log(self, line: str) -> None:
        stamp = f"[{time.monotonic() - self.start:7.1f}s] "
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(stamp + line + "\n")
        print(stamp + line, flush=True)

    def left(self) -> float:
        return self.cfg.budget_s - (time.monotonic() - self.start)

    def write_json(self, name: str, data) -> None:
        assert name in OUTPUT_FILES
        tmp = self.out / f".{name}.tmp"
        tmp.write_text(json.dumps(data, indent=2, default=str))
        os.replace(tmp, self.out / name)

    def write_text(self, name: str, text: str) -> None:
        assert name in OUTPUT_FILES
        tmp = self.out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.out / name)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join([src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX (SMAX) must not take the GPU's memory
        return env

    def run_process(self, args: list[str], timeout: float, cwd: Path | None = None) -> tuple[int | None, float]:
        """Run ``args`` with stdout and stderr appended to log.txt; kill its process group at
        ``timeout``. Returns (exit code or None on timeout, seconds)."""
        t0 = time.monotonic()
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(args)}\n")
            log.flush()
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                    cwd=str(cwd) if cwd else None, start_new_session=True)
            try:
                code = proc.wait(timeout=max(timeout, 1.0))
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                code = None
        return code, time.monotonic() - t0

    def budget(self, stage: str) -> float:
        """This stage's budget, cut to what is left of the whole (5 s kept for the summary)."""
        return min(self.cfg.stage_budget_s[stage], self.left() - 5.0)

    def worker(self, record: StageRecord, name: str, params: dict, budget: float) -> dict | None:
        """Run worker ``name`` in its own process; its result, or None (status and detail set)."""
        slug = "".join(c if c.isalnum() else "_" for c in record.name)
        result = self.work / f"{len(self.records):02d}_{slug}.json"
        args = [self.python, "-m", "mabl.gpu_check", "--worker", name, "--params", json.dumps(params),
                "--result", str(result)]
        code, seconds = self.run_process(args, budget)
        record.seconds, record.budget_s = seconds, budget
        if code is None:
            record.status, record.detail = "timeout", f"stopped at its budget of {budget:.0f} s"
            return None
        try:
            data = json.loads(result.read_text()) if result.exists() else None
        except (OSError, json.JSONDecodeError):
            data = None  # cut short: reported as a failure with its exit code
        if code != 0 or data is None or "error" in data:
            record.status = "failed"
            record.detail = (data or {}).get("error") or f"exit code {code}; see log.txt"
            return None
        record.status = "ok"
        return data["result"]

    def begin(self, name: str, stage: str) -> tuple[StageRecord, float]:
        record = StageRecord(name)
        self.records.append(record)
        budget = self.budget(stage)
        if budget < 10.0:
            record.status, record.detail = "skipped", f"out of time ({max(self.left(), 0):.0f} s left of the whole budget)"
            self.log(f"stage {name}: skipped, out of time")
            return record, 0.0
        self.log(f"stage {name}: budget {budget:.0f} s")
        return record, budget

    def end(self, record: StageRecord) -> None:
        self.log(f"stage {record.name}: {record.status} in {record.seconds:.1f} s"
                 + (f" ({record.detail})" if record.detail else ""))
        self.write_summary()

    # ---------------------------------------------------------------- stages
    def run(self) -> list[StageRecord]:
        for stage in self.stages:
            try:
                getattr(self, "stage_" + stage.replace("-", "_"))()
            except Exception as exc:  # noqa: BLE001 -- a driver bug in one stage must not lose the others
                record = StageRecord(stage, "failed", detail=f"driver error: {type(exc).__name__}: {exc}")
                self.records.append(record)
                self.end(record)
        self.write_summary()
        return self.records

    def stage_facts(self) -> None:
        record, budget = self.begin("facts", "facts")
        if budget:
            data = self.worker(record, "facts", {"device": self.cfg.device, "matmul_size": self.cfg.matmul_size}, budget)
            self.facts = data or {}
        self.write_json("facts.json", {"stage": dataclasses.asdict(record), **self.facts})
        self.end(record)

    def _bench(self, modes: tuple[str, ...], stage: str, maps: tuple[str, ...] | None = None) -> None:
        for mode in modes:
            for map_name in maps or self.cfg.maps:
                record, budget = self.begin(f"bench {map_name} {mode}", stage)
                entry = {"map": map_name, "mode": mode, "preset": self.cfg.bench_preset,
                         "overrides": self.cfg.bench_overrides}
                if budget:
                    params = {"map_name": map_name, "mode": mode, "device": self.cfg.device,
                              "preset": self.cfg.bench_preset, "model_repeats": self.cfg.model_repeats,
                              "policy_repeats": self.cfg.policy_repeats, "overrides": self.cfg.bench_overrides,
                              "matmul_size": self.cfg.matmul_size}
                    result = self.worker(record, "bench", params, budget)
                    if result is not None:
                        entry["result"] = result
                        entry["share_of_matmul_rate"] = self._shares(result)
                entry["stage"] = dataclasses.asdict(record)
                self.bench.append(entry)
                self.write_json("bench.json", {"runs": self.bench, "note": BENCH_NOTE})
                self.end(record)

    def _shares(self, result: dict) -> dict | None:
        """Each phase's achieved FLOP/s over the facts stage's matmul rate in the run's precision."""
        rates = self.facts.get("matmul_gflops") or {}
        rate = rates.get("bf16" if result.get("amp") else "fp32")
        if not rate:
            return None
        return {phase: gflops / rate for phase, gflops in result["achieved_gflops"].items()}

    def stage_bench(self) -> None:
        self._bench(tuple(m for m in self.cfg.modes if not MODES[m][1]), "bench")

    def not_selected(self, name: str, file: str) -> None:
        record = StageRecord(name, "off", detail="bf16+compile not among --modes (--quick leaves it out)")
        self.records.append(record)
        if file == "bench.json":
            self.bench.append({"mode": "bf16+compile", "stage": dataclasses.asdict(record)})
            self.write_json(file, {"runs": self.bench, "note": BENCH_NOTE})
        else:
            self.profiles.append({"map": "3s_vs_4z", "mode": "bf16+compile", "stage": dataclasses.asdict(record)})
            self.write_profiles()
        self.end(record)

    def stage_bench_compiled(self) -> None:
        modes = tuple(m for m in self.cfg.modes if MODES[m][1])
        if not modes:
            return self.not_selected("bench bf16+compile", "bench.json")
        self._bench(modes, "bench-compiled", self.cfg.compiled_maps[:1])

    def stage_bench_compiled_more(self) -> None:
        modes = tuple(m for m in self.cfg.modes if MODES[m][1])
        if modes and self.cfg.compiled_maps[1:]:
            self._bench(modes, "bench-compiled", self.cfg.compiled_maps[1:])

    def _profile(self, mode: str, stage: str) -> None:
        record, budget = self.begin(f"profile 3s_vs_4z {mode}", stage)
        entry: dict = {"map": "3s_vs_4z", "mode": mode}
        if budget:
            params = {"map_name": "3s_vs_4z", "mode": mode, "device": self.cfg.device, "preset": self.cfg.bench_preset,
                      "overrides": self.cfg.bench_overrides}
            result = self.worker(record, "profile", params, budget)
            if result is not None:
                entry.update(result)
        entry["stage"] = dataclasses.asdict(record)
        self.profiles.append(entry)
        self.write_profiles()
        self.end(record)

    def write_profiles(self) -> None:
        """profile.json (the numbers; the tables only in profile.txt) and profile.txt."""
        def without_table(p: dict) -> dict:
            phases = {k: {kk: vv for kk, vv in v.items() if kk != "table"} for k, v in p.get("phases", {}).items()}
            return {**p, "phases": phases}

        self.write_json("profile.json", {"profiles": [without_table(p) for p in self.profiles]})
        self.write_text("profile.txt", profile_text(self.profiles))

    def stage_profile(self) -> None:
        self._profile("bf16", "profile")

    def stage_profile_compiled(self) -> None:
        if "bf16+compile" not in self.cfg.modes:
            return self.not_selected("profile 3s_vs_4z bf16+compile", "profile.json")
        self._profile("bf16+compile", "profile-compiled")

    def stage_tests(self) -> None:
        record, budget = self.begin("tests (pytest -m gpu)", "tests")
        if budget:
            repo = Path(__file__).resolve().parents[3]
            junit = self.work / "tests.xml"
            if not (repo / "tests").is_dir():
                record.status, record.detail = "failed", f"no tests folder at {repo / 'tests'}"
            else:
                args = [self.python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rfEs",
                        f"--junitxml={junit}", *gpu_test_files(repo / "tests")]
                code, seconds = self.run_process(args, budget, cwd=repo)
                record.seconds, record.budget_s = seconds, budget
                self.tests = {"command": " ".join(args[1:]), "exit_code": code, **parse_junit(junit)}
                counts = self.tests.get("counts", {})
                if code is None:
                    record.status, record.detail = "timeout", f"stopped at its budget of {budget:.0f} s"
                elif code in (0, 5) and not counts.get("failed") and not counts.get("error"):
                    record.status = "ok"  # 5: nothing selected
                else:
                    record.status = "failed"
                record.detail = (record.detail + "; " if record.detail else "") + ", ".join(
                    f"{v} {k}" for k, v in counts.items())
        self.write_json("tests.json", {"stage": dataclasses.asdict(record), **self.tests})
        self.end(record)

    def stage_train(self) -> None:
        cfg = self.cfg
        record, budget = self.begin(f"train {cfg.train_env} {cfg.train_preset}", "train")
        run_dir = self.work / "train_run"
        args = [self.python, "-m", "mabl", "train", "--env", cfg.train_env, "--preset", cfg.train_preset,
                "--steps", str(cfg.train_steps), "--device", cfg.device, "--amp", str(cfg.train_amp).lower(),
                "--compile", str(cfg.train_compile).lower(), "--run-dir", str(run_dir), "--progress", "false",
                "--eval-every", "0", "--checkpoint-every", str(10 * cfg.train_steps), "--seed", "0"]
        if budget:
            if run_dir.exists():
                shutil.rmtree(run_dir)
            code, seconds = self.run_process(args, budget)
            record.seconds, record.budget_s = seconds, budget
            metrics = run_dir / "metrics.jsonl"
            config = run_dir / "config.json"
            schedule = json.loads(config.read_text())["schedule"] if config.exists() else {}
            summary = summarise_training(metrics, schedule, seconds) if metrics.exists() else None
            self.train = {"command": " ".join(args[1:]), "exit_code": code, "stopped_at_budget": code is None,
                          **(summary or {})}
            if summary is None:
                record.status, record.detail = ("timeout" if code is None else "failed"), "no metrics were written"
            elif code not in (0, None):
                record.status, record.detail = "failed", f"exit code {code}; see log.txt"
            else:
                record.status = "ok"
                record.detail = (f"stopped at its budget of {budget:.0f} s after {summary['env_steps']} steps"
                                 if code is None else f"{summary['env_steps']} steps")
        self.write_json("train.json", {"stage": dataclasses.asdict(record), **self.train})
        self.end(record)

    # ---------------------------------------------------------------- summary
    def write_summary(self) -> None:
        self.write_text("summary.md", summary_markdown(self))


def gpu_test_files(tests: Path) -> list[str]:
    """The test files that hold ``gpu``-marked tests (relative to the repository): only these are
    collected, so that test modules of optional packages missing on the GPU machine (pettingzoo,
    flatland, mujoco) cannot stop the run, and collection stays short."""
    files = sorted(p for p in tests.rglob("test_*.py") if "mark.gpu" in p.read_text(encoding="utf-8"))
    return [str(p.relative_to(tests.parent)) for p in files]


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop a stage's process and its children (its own process group, started by us)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue
