"""One prepared command that measures and validates mabl on a GPU: ``benchmarks/gpu_check.sh``.

    python -m mabl.gpu_check [--out DIR] [--device cuda|cpu] [--quick] [--budget SECONDS] [--stages ...]

Stages, in this order (each one in its own process with its own time budget, cut to what is left of
the whole budget; a stage that fails, times out or finds no time left is recorded as such and the
next one runs; every result is written to the output folder as soon as it exists):

1. ``facts``: GPU name, driver, memory, torch / CUDA / cuDNN / JAX / jaxmarl versions, and the
   measured fp32 and bf16 matmul rates (one large square product, best of 5).
2. ``bench``: ``mabl bench speed`` at 3s_vs_4z and corridor sizes, fp32, bf16 (``--amp``) and
   bf16 + ``--compile`` (CUDA graphs on a GPU): each phase's time, its FLOP/s against the matmul
   rate of ``facts``, peak memory. The compiled run of 3s_vs_4z comes right after the eager runs,
   that of corridor near the end (compiling takes minutes; see :data:`STAGES`).
3. ``profile``: torch.profiler over one world-model update and one policy iteration (3s_vs_4z,
   bf16, eager; and compiled at the end): top ops/kernels by self time, kernel launches per update.
4. ``tests``: ``pytest -m gpu`` (compiled vs eager, device replay vs host, the host-sync detectors
   on CUDA; all skipped without a GPU).
5. ``train``: a short real run (``smax:3m``, paper preset, a few thousand steps on a GPU; the debug
   preset and a few hundred steps with ``--quick``), stopped at its budget if not done; env-steps/s,
   learner seconds per episode, and an extrapolation to 100k steps labelled as such.

The output folder holds at most eight files, a fixed set that is easy to copy back: ``facts.json``,
``bench.json``, ``profile.txt``, ``profile.json``, ``tests.json``, ``train.json``, ``summary.md``
and ``log.txt`` (every stage's output). Scratch files (the training run, pytest's report) go to
``--work`` (default: a new temporary folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from mabl.errors import MablError

OUTPUT_FILES = ("facts.json", "bench.json", "profile.txt", "profile.json", "tests.json", "train.json",
                "summary.md", "log.txt")
"""Everything the check writes into the output folder (scratch files go to ``--work``)."""

STAGES = ("facts", "bench", "bench-compiled", "profile", "tests", "train", "bench-compiled-more", "profile-compiled")
"""In order of value per second: the compiled bench of the first map (the number the GPU targets are
about) before the profile, the tests and the training run; the other map's compiled bench and the
compiled profile last, where the whole budget may cut them."""
MODES = {"fp32": (False, False), "bf16": (True, False), "bf16+compile": (True, True)}
"""bench mode -> (amp, compile)."""
MAPS = ("3s_vs_4z", "corridor")
TARGET_STEPS = 100_000
QUICK_MODES = ("fp32", "bf16")
QUICK_OVERRIDES = {"model.seq_len": 4, "policy.horizon": 3}
"""--quick: shorter windows and imagination on top of the debug preset, so that compiling (the
unrolled filter and imagination loops) takes a few minutes less on a small CPU."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one check runs; :func:`settings` makes the GPU and the ``--quick`` versions."""

    device: str
    quick: bool
    budget_s: float
    """The whole check (all stages) stops at this many seconds."""
    bench_preset: str
    bench_overrides: dict
    """Config overrides of the bench and profile runs on top of ``bench_preset``."""
    maps: tuple[str, ...]
    compiled_maps: tuple[str, ...]
    """The maps of the compiled bench runs (compiling takes minutes per map)."""
    modes: tuple[str, ...]
    model_repeats: int
    policy_repeats: int
    matmul_size: int
    train_env: str
    train_preset: str
    train_steps: int
    train_amp: bool
    train_compile: bool
    stage_budget_s: dict[str, float]
    """Upper bound of each stage (one bench run, one profile, the tests, the training run)."""


def settings(device: str, quick: bool, budget_s: float | None = None, maps: tuple[str, ...] = MAPS,
             modes: tuple[str, ...] | None = None, train_steps: int | None = None,
             train_compile: bool = False) -> Settings:
    """The GPU settings (fit in 9 minutes with compiling) or, with ``quick``, tiny ones for a CPU.
    ``modes`` defaults to all three, but ``--quick`` leaves compiling out (on a small shared CPU,
    compiling even the debug preset's graphs took over 15 minutes): pass them to include it."""
    modes = modes or (QUICK_MODES if quick else tuple(MODES))
    unknown = [m for m in maps if m not in MAPS] + [m for m in modes if m not in MODES]
    if unknown:
        raise MablError(f"unknown map or mode {', '.join(unknown)}; maps: {', '.join(MAPS)}; "
                        f"modes: {', '.join(MODES)}")
    if quick:
        return Settings(device=device, quick=True, budget_s=budget_s or 600.0, bench_preset="debug", maps=maps,
                        bench_overrides=QUICK_OVERRIDES,
                        compiled_maps=maps[:1], modes=modes, model_repeats=2, policy_repeats=1, matmul_size=512,
                        train_env="smax:3m", train_preset="debug", train_steps=train_steps or 300, train_amp=False,
                        train_compile=train_compile,
                        stage_budget_s={"facts": 60, "bench": 90, "bench-compiled": 240, "profile": 90,
                                        "profile-compiled": 120, "tests": 120, "train": 150})
    return Settings(device=device, quick=False, budget_s=budget_s or 530.0, bench_preset="paper", maps=maps,
                    bench_overrides={},
                    compiled_maps=maps, modes=modes, model_repeats=20, policy_repeats=5, matmul_size=8192,
                    train_env="smax:3m", train_preset="paper", train_steps=train_steps or 3000, train_amp=True,
                    train_compile=train_compile,
                    stage_budget_s={"facts": 60, "bench": 60, "bench-compiled": 150, "profile": 60,
                                    "profile-compiled": 90, "tests": 130, "train": 110})


# ----------------------------------------------------------------------------- stage workers
# Each runs in its own process (python -m mabl.gpu_check --worker NAME --params JSON --result FILE).

def worker_facts(device: str, matmul_size: int) -> dict:
    """Versions and the device's measured matmul rates."""
    from importlib import metadata

    import torch

    from mabl.bench import matmul_rate
    from mabl.device import resolve_device

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    dev = resolve_device(device)
    facts: dict = {
        "device": str(dev), "python": platform.python_version(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "jax": version("jax"), "jaxlib": version("jaxlib"), "jaxmarl": version("jaxmarl"), "numpy": version("numpy"),
        "triton": version("triton"), "torch_threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "wheels": os.environ.get("MABL_WHEELS", "not reported (run through benchmarks/gpu_check.sh)"),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        facts.update(gpu_name=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                     gpu_multiprocessors=props.multi_processor_count,
                     compute_capability=f"{props.major}.{props.minor}", driver=_nvidia_smi_driver())
    else:
        facts.update(gpu_name=None, driver=None)
    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        rates[name] = matmul_rate(dev, dtype, size=matmul_size) / 1e9
    facts["matmul_gflops"] = rates
    facts["matmul_size"] = matmul_size
    return facts


def _nvidia_smi_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def worker_bench(map_name: str, mode: str, device: str, preset: str, model_repeats: int, policy_repeats: int,
                 overrides: dict | None = None, matmul_size: int | None = None) -> dict:
    """One ``mabl bench speed`` run; its JSON fields."""
    from mabl.bench import bench_speed

    amp, compile = MODES[mode]
    result = bench_speed(preset, map_name, device, amp, model_repeats, policy_repeats, compile=compile,
                         overrides=overrides, matmul_size=matmul_size)
    return {**dataclasses.asdict(result), "achieved_gflops": result.achieved_gflops()}


LAUNCH_PREFIXES = ("cudaLaunch", "cuLaunch", "cudaGraphLaunch", "cuGraphLaunch")
"""CUDA runtime/driver calls that launch work (the profiler records them as CPU-side events)."""
SYNC_PREFIXES = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy",
                 "cuStreamSynchronize", "cuCtxSynchronize")
"""Calls that make the host wait (cudaMemcpy without Async; cudaMemcpyAsync is counted apart)."""


def worker_profile(map_name: str, mode: str, device: str, preset: str, overrides: dict | None = None,
                   top: int = 25) -> dict:
    """torch.profiler over one world-model update and one policy iteration (after a warm-up of each,
    two when compiled):
    per phase, the wall time, the top ops by self time (device time on a GPU, CPU time otherwise),
    the number of kernels run and of launch calls, and the profiler's table as text."""
    from torch.profiler import ProfilerActivity, profile

    from mabl.bench import _sync, bench_learner

    amp, compile = MODES[mode]
    bench = bench_learner(preset, map_name, device, amp, compile, overrides=overrides)
    dev = bench.device
    for _ in range(2 if compile or dev.type == "cuda" else 1):  # warm-up: lazy init (compiling, CUDA graphs: 2)
        bench.model_update()
        bench.ppo(bench.imagination())
    _sync(dev)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])

    def policy_iteration() -> None:
        bench.ppo(bench.imagination())

    phases = {}
    for name, fn in (("world_model_update", bench.model_update), ("policy_iteration", policy_iteration)):
        with profile(activities=activities) as prof:
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            wall = time.perf_counter() - t0
        phases[name] = _summarise_profile(prof, dev.type, wall, top)
    return {"map": map_name, "mode": mode, "preset": preset, "overrides": overrides or {}, "device": str(dev),
            "phases": phases}


def _summarise_profile(prof, device_type: str, wall_s: float, top: int) -> dict:
    """Numbers of one profiled phase; each part guarded so that one profiler API change costs one field."""
    import torch

    out: dict = {"wall_ms": wall_s * 1e3, "errors": []}
    cuda = device_type == "cuda"
    sort_key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    try:
        out["table"] = prof.key_averages().table(sort_by=sort_key, row_limit=top)
    except Exception as exc:  # noqa: BLE001 -- a profiler quirk must not lose the other numbers
        out["table"] = f"(no table: {exc})"
        out["errors"].append(f"table: {exc}")
    try:
        rows = []
        for avg in prof.key_averages():
            self_dev = _first_attr(avg, ("self_device_time_total", "self_cuda_time_total"))
            rows.append({"name": avg.key, "calls": avg.count, "self_cpu_us": avg.self_cpu_time_total,
                         "self_device_us": self_dev})
        key = "self_device_us" if cuda else "self_cpu_us"
        rows.sort(key=lambda r: -(r[key] or 0))
        out["top"] = rows[:top]
    except Exception as exc:  # noqa: BLE001
        out["errors"].append(f"top: {exc}")
    try:
        events = prof.events()
        cpu_names = [e.name for e in events if e.device_type == torch.autograd.DeviceType.CPU]
        out["aten_ops"] = sum(name.startswith("aten::") for name in cpu_names)
        if cuda:
            kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
            out["device_events"] = len(kernels)
            out["device_busy_ms"] = sum(e.time_range.elapsed_us() for e in kernels) / 1e3
            out["device_busy_share"] = out["device_busy_ms"] / out["wall_ms"] if out["wall_ms"] else None
            out["launch_calls"] = _count_by_name(cpu_names, LAUNCH_PREFIXES)
            graph = {k: v for k, v in out["launch_calls"].items() if "Graph" in k}
            out["graph_launches"] = sum(graph.values())
            out["kernel_launches"] = sum(out["launch_calls"].values()) - out["graph_launches"]
            out["sync_calls"] = {k: v for k, v in _count_by_name(cpu_names, SYNC_PREFIXES).items()
                                 if not k.startswith("cudaMemcpyAsync")}
    except Exception as exc:  # noqa: BLE001
        out["errors"].append(f"events: {exc}")
    return out


def _count_by_name(names: list[str], prefixes: tuple[str, ...]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        if name.startswith(prefixes):
            counts[name] = counts.get(name, 0) + 1
    return counts


def _first_attr(obj, names: tuple[str, ...]):
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None


WORKERS = {"facts": worker_facts, "bench": worker_bench, "profile": worker_profile}


# ----------------------------------------------------------------------------- the driver

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
        src = str(Path(__file__).resolve().parents[1])
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
            repo = Path(__file__).resolve().parents[2]
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


BENCH_NOTE = ("mabl bench speed on synthetic batches of each map's sizes; times are medians; "
              "share_of_matmul_rate = achieved GFLOP/s of each phase / the facts stage's matmul rate in the "
              "run's precision (the result's own matmul_gflops is measured again by the bench). "
              "FLOPs are counted on the eager path, also for compiled runs.")

EXTRAPOLATION_NOTE = ("EXTRAPOLATION, not a measurement: 100k env steps at the measured rates, assuming the episode "
                      "length (hence the learner calls per env step: one per episode in the paper's schedule), "
                      "the seconds per learner call and the acting time per env step stay as measured "
                      "(the first learner call, which includes warm-up and compiling, is left out of the "
                      "per-call time). On smax:3m episodes change length as the policy learns, and the "
                      "15-minute target is for smax:3s_vs_4z.")


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


def parse_junit(path: Path) -> dict:
    """Counts and per-test outcomes from pytest's JUnit XML (empty when it was not written)."""
    if not path.exists():
        return {"counts": {}, "tests": []}
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return {"counts": {}, "tests": [], "error": f"unreadable JUnit XML: {exc}"}
    tests = []
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or "")[:500]
                break
        tests.append({"id": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time") or 0.0), "message": message})
    counts: dict[str, int] = {}
    for t in tests:
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    return {"counts": counts, "tests": tests}


def summarise_training(metrics_path: Path, schedule: dict, process_s: float,
                       target_steps: int = TARGET_STEPS) -> dict | None:
    """Rates of a (possibly interrupted) training run from its metrics.jsonl and its config's
    ``schedule`` section, and their extrapolation to ``target_steps`` env steps (labelled as such)."""
    episodes, calls = [], []
    for line in metrics_path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the stop at the budget
        (episodes if rec.get("kind") == "episode" else calls if rec.get("kind") == "learner" else []).append(rec)
    if not episodes:
        return None
    steps = episodes[-1]["env_step"]
    learner_s = [c["learner_s"] for c in calls]
    # The loop's wall time: each episode record's sps is env steps over the wall time since the loop
    # started, taken before that episode's learner calls; add the calls made after the last record.
    loop_s = steps / episodes[-1]["sps"] + sum(c["learner_s"] for c in calls if c["env_step"] >= steps)
    acting_s = max(loop_s - sum(learner_s), 0.0)
    out = {
        "env_steps": steps, "episodes": len(episodes), "learner_calls": len(calls),
        "mean_episode_length": statistics.fmean(e["length"] for e in episodes),
        "process_s": process_s, "loop_s": loop_s, "startup_s": max(process_s - loop_s, 0.0),
        "env_steps_per_s": steps / loop_s if loop_s > 0 else None,
        "learner_s_total": sum(learner_s), "acting_s_total": acting_s,
        "acting_ms_per_env_step": 1e3 * acting_s / steps,
        "first_learner_call_s": learner_s[0] if learner_s else None,
    }
    steady = learner_s[1:]
    if steady:
        per_call = statistics.fmean(steady)
        # Learner calls per env step by the schedule: one per `train_every` steps, or (the paper's
        # 'episode' mode) one per episode, i.e. 1 / the mean length of the episodes since learning began.
        learning = [e["length"] for e in episodes if e["env_step"] >= schedule.get("learning_starts", 0)]
        episode_length = statistics.fmean(learning or [e["length"] for e in episodes])
        calls_per_step = (1.0 / schedule["train_every"] if schedule.get("mode") == "steps"
                          else 1.0 / episode_length)
        learner_target = target_steps * calls_per_step * per_call
        acting_target = target_steps * acting_s / steps
        out.update({
            "learner_s_per_call_mean": per_call, "learner_s_per_call_median": statistics.median(steady),
            "learner_calls_per_env_step": calls_per_step, "episode_length_since_learning": episode_length,
            "learner_s_per_episode": per_call * calls_per_step * episode_length,
            "extrapolated": {"note": EXTRAPOLATION_NOTE, "env_steps": target_steps,
                             "learner_s": learner_target, "acting_s": acting_target,
                             "total_s": learner_target + acting_target,
                             "total_min": (learner_target + acting_target) / 60},
        })
    return out


def profile_text(profiles: list[dict]) -> str:
    parts = []
    for p in profiles:
        stage = p.get("stage", {})
        parts.append(f"=== profile {p.get('map')} {p.get('mode')} preset={p.get('preset')} device={p.get('device')}"
                     f" [{stage.get('status')}{': ' + stage['detail'] if stage.get('detail') else ''}]")
        for phase, data in p.get("phases", {}).items():
            head = f"--- {phase}: {data.get('wall_ms', 0):.1f} ms wall (profiled), {data.get('aten_ops')} aten ops"
            if "device_events" in data:
                head += (f", {data.get('device_events')} device events, {data.get('kernel_launches')} kernel"
                         f" launch calls, {data.get('graph_launches')} CUDA-graph launches, device busy"
                         f" {data.get('device_busy_ms', 0):.1f} ms, sync calls {data.get('sync_calls')}")
            parts.append(head)
            parts.append(data.get("table", ""))
    return "\n".join(parts) + "\n"


def summary_markdown(check: Check) -> str:
    cfg, facts = check.cfg, check.facts
    quick = " (quick mode: tiny settings, not a measurement of the paper sizes)" if cfg.quick else ""
    lines = ["# mabl GPU check", "",
             f"Device `{cfg.device}`{quick},"
             f" whole budget {cfg.budget_s:.0f} s, {time.monotonic() - check.start:.0f} s used.", ""]
    if facts:
        rates = facts.get("matmul_gflops", {})
        lines += [f"- GPU: {facts.get('gpu_name')} (driver {facts.get('driver')}, {facts.get('gpu_memory_gib')} GiB);"
                  f" torch {facts.get('torch')} (CUDA {facts.get('torch_cuda')}), JAX {facts.get('jax')},"
                  f" jaxmarl {facts.get('jaxmarl')}, Python {facts.get('python')}",
                  f"- matmul rate ({facts.get('matmul_size')}^3): fp32 {rates.get('fp32', 0):.0f} GFLOP/s,"
                  f" bf16 {rates.get('bf16', 0):.0f} GFLOP/s", ""]
    lines += ["## Stages", "", "| stage | status | seconds | budget | detail |", "|---|---|---|---|---|"]
    for r in check.records:
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.budget_s:.0f} | {r.detail.replace('|', '/')} |")
    runs = [b for b in check.bench if "result" in b]
    if runs:
        lines += ["", f"## Learner speed (`mabl bench speed`, preset {cfg.bench_preset}; medians)", "",
                  "| map | mode | world-model update ms | policy iteration ms (imag. + PPO) | learner s/episode |"
                  " model / imag. / PPO share of matmul rate | peak MB |", "|---|---|---|---|---|---|---|"]
        for b in runs:
            r, share = b["result"], b.get("share_of_matmul_rate") or {}
            shares = " / ".join(f"{share[k]:.1%}" for k in ("model_update", "imagination", "ppo") if k in share) or "-"
            lines.append(f"| {b['map']} | {b['mode']} | {r['model_update_ms']:.1f} | {r['policy_iteration_ms']:.1f}"
                         f" ({r['imagination_ms']:.1f} + {r['ppo_ms']:.1f}) | {r['learner_s_per_episode']:.2f} |"
                         f" {shares} | {r['peak_memory_mb']:.0f} |")
    profiled = [(p, phase, data) for p in check.profiles for phase, data in p.get("phases", {}).items()]
    if profiled:
        lines += ["", "## Profile (details in profile.txt)", ""]
    for p, phase, data in profiled:
        top = ", ".join(t["name"] for t in (data.get("top") or [])[:5])
        text = f"- {p['mode']} {phase}: {data.get('wall_ms', 0):.1f} ms, {data.get('aten_ops')} aten ops"
        if data.get("device_busy_share") is not None:
            text += (f", {data.get('kernel_launches')} kernel launch calls, {data.get('graph_launches')} CUDA-graph"
                     f" launches, device busy {data['device_busy_share']:.0%} of the wall time")
        lines.append(text + f"; top by self time: {top}")
    if check.tests:
        counts = check.tests.get("counts", {})
        failed = [t["id"] for t in check.tests.get("tests", []) if t["outcome"] in ("failed", "error")]
        lines += ["", "## Tests on the device (`pytest -m gpu`)", "",
                  f"{', '.join(f'{v} {k}' for k, v in counts.items()) or 'no report'}"
                  + (f"; failed: {', '.join(failed)}" if failed else "")]
    t = check.train
    if t.get("env_steps"):
        lines += ["", f"## Training run ({cfg.train_env}, preset {cfg.train_preset}, amp {cfg.train_amp},"
                  f" compile {cfg.train_compile})", "",
                  f"- measured: {t['env_steps']} env steps, {t['episodes']} episodes (mean length"
                  f" {t['mean_episode_length']:.1f}), {t['learner_calls']} learner calls in {t['loop_s']:.1f} s of"
                  f" training loop ({t['env_steps_per_s']:.1f} env-steps/s)"
                  + (", stopped at its budget" if t.get("stopped_at_budget") else "")]
        if "extrapolated" in t:
            e = t["extrapolated"]
            lines += [f"- learner {t['learner_s_per_call_mean']:.2f} s per call, {t['learner_s_per_episode']:.2f} s per"
                      f" episode (first call {t['first_learner_call_s']:.1f} s, left out); acting"
                      f" {t['acting_ms_per_env_step']:.1f} ms per env step",
                      f"- **extrapolated** to {e['env_steps']} env steps: {e['total_min']:.1f} min"
                      f" (learner {e['learner_s']:.0f} s + acting {e['acting_s']:.0f} s). {e['note']}"]
    lines += ["", "Files: " + ", ".join(OUTPUT_FILES) + "."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- entry point

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mabl.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="output folder (default: $OUT)")
    p.add_argument("--work", help="scratch folder for the training run and pytest's report (default: a new temp folder)")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:K or cpu")
    p.add_argument("--quick", action="store_true", help="tiny settings (debug preset, few steps): a CPU run in minutes")
    p.add_argument("--budget", type=float, help="seconds for the whole check (default 530; 600 with --quick)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--maps", default=",".join(MAPS), help="bench map sizes (default 3s_vs_4z,corridor)")
    p.add_argument("--modes", help="bench modes among fp32,bf16,bf16+compile (default all three; fp32,bf16 with --quick)")
    p.add_argument("--train-steps", type=int, help="env steps of the training run (default 3000; 300 with --quick)")
    p.add_argument("--train-compile", action="store_true", help="train with --compile true (compiling takes minutes)")
    p.add_argument("--worker", choices=tuple(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--params", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p


def _run_worker(name: str, params: str, result: str) -> int:
    try:
        data = {"result": WORKERS[name](**json.loads(params))}
        code = 0
    except MablError as exc:
        data, code = {"error": str(exc)}, 2
    except Exception as exc:  # noqa: BLE001 -- recorded in the output, the check goes on
        import traceback

        traceback.print_exc()
        data, code = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]}, 1
    Path(result).write_text(json.dumps(data, default=str))
    return code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        return _run_worker(args.worker, args.params, args.result)
    try:
        out = args.out or os.environ.get("OUT")
        if not out:
            raise MablError("no output folder: pass --out DIR or set $OUT")
        stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
        bad = [s for s in stages if s not in STAGES]
        if bad:
            raise MablError(f"unknown stage {', '.join(bad)}; choose among {', '.join(STAGES)}")
        if args.device != "cpu" and not args.device.startswith("cuda"):
            raise MablError(f"--device={args.device!r}: use cuda, cuda:K or cpu")
        modes = tuple(args.modes.split(",")) if args.modes else None
        cfg = settings(args.device, args.quick, args.budget, tuple(args.maps.split(",")), modes, args.train_steps,
                       args.train_compile)
        out_path = Path(out)
        if out_path.exists() and any(out_path.iterdir()):
            leftovers = [p.name for p in out_path.iterdir() if p.name not in OUTPUT_FILES]
            if leftovers:
                raise MablError(f"output folder {out_path} holds other files ({', '.join(leftovers[:3])}); "
                                "use an empty or new folder")
            for name in OUTPUT_FILES:  # an earlier check's files: replaced, never mixed with this one's
                (out_path / name).unlink(missing_ok=True)
        work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mabl-gpu-check-"))
    except MablError as exc:
        print(f"mabl gpu check: error: {exc}", file=sys.stderr)
        return 2
    records = Check(out_path, work, cfg, stages).run()
    failed = [r.name for r in records if r.status not in ("ok", "off")]
    print(f"mabl gpu check: {sum(r.status == 'ok' for r in records)} of {len(records)} stages ok"
          + (f"; not ok: {', '.join(failed)}" if failed else "") + f"; results in {out_path}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
