"""Multi-seed sweeps: the cross product algorithms x tasks x seeds, each an ordinary run directory.

    mabl sweep --algos mabl,mappo --envs smax:3m,smax:3s_vs_4z --seeds 0,1,2 --preset paper \\
               --steps 100000 --workers 3 --out DIR [--set model.hidden=128 ...] [--file sweep.toml]
               [--ray-address ADDR|auto]

Layout: ``DIR/<env>/<algo>/seed<k>/`` is the run directory of one run (``mabl train --run-dir``),
with the run's console output in ``train.log`` beside its metrics; ``DIR/sweep.json`` records the
sweep's description and the latest status of every run.

Every run is a separate ``python -m mabl train`` process, so a crash (or a bad environment) stops
only that run; its log stays, the others go on, and the sweep reports it at the end. Re-running the
same sweep skips runs whose newest checkpoint is at or past ``--steps`` and resumes the others
(re-running ``mabl train`` on a run directory resumes it).

Locally, ``--workers`` runs go at once (at most the CPU count); each gets ``--threads`` torch
threads (default: CPUs / workers). On a GPU machine the runs share the GPU (``--device auto``). With
``--ray-address`` the runs are Ray tasks on an existing cluster instead (one task per run, asking
for ``--threads`` CPUs and ``--gpus-per-run`` GPUs), and ``--out`` must be a path every node sees.
Ray is imported only then.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mabl.checkpoint import atomic_write_bytes, latest_checkpoint
from mabl.errors import MablError


@dataclass(frozen=True)
class SweepSpec:
    """What to run. ``overrides`` are config fields (``model.hidden``) to values, as on the CLI."""

    algos: tuple[str, ...]
    envs: tuple[str, ...]
    seeds: tuple[int, ...]
    preset: str = "quick"
    steps: int = 100_000
    overrides: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    env: str
    algo: str
    seed: int
    run_dir: Path


@dataclass
class Outcome:
    run: str
    status: str  # finished | skipped | failed
    returncode: int
    seconds: float
    log: str


FILE_KEYS = {"algos", "envs", "seeds", "preset", "steps", "set"}


def load_spec_file(path: str) -> dict:
    """Read a sweep description from TOML: ``algos``, ``envs``, ``seeds``, ``preset``, ``steps`` and
    a ``[set]`` table of config overrides. Command-line flags override the file."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise MablError("reading a sweep file needs Python >= 3.11 or `pip install tomli`") from None
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MablError(f"sweep file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MablError(f"sweep file {path} is not valid TOML: {exc}") from None
    unknown = set(data) - FILE_KEYS
    if unknown:
        raise MablError(f"sweep file {path} has unknown keys {sorted(unknown)}; allowed: {sorted(FILE_KEYS)}")
    return data


def make_spec(algos, envs, seeds, preset: str, steps: int, overrides: dict) -> SweepSpec:
    """Validate a sweep description (every run's config is built once, so a bad value fails here)."""
    from mabl.algo import ALGORITHMS
    from mabl.presets import build_config

    def as_list(value, name: str) -> list:
        items = value.split(",") if isinstance(value, str) else list(value or [])
        items = [item.strip() if isinstance(item, str) else item for item in items]
        if not items or any(item == "" for item in items):
            raise MablError(f"--{name} needs a comma-separated list, e.g. --{name} " +
                            {"algos": "mabl,mappo", "envs": "smax:3m,smax:3s_vs_4z", "seeds": "0,1,2"}[name])
        return items

    algos, envs = as_list(algos, "algos"), as_list(envs, "envs")
    try:
        seeds = [int(s) for s in as_list(seeds, "seeds")]
    except ValueError:
        raise MablError(f"--seeds={seeds!r} must be integers, e.g. --seeds 0,1,2") from None
    for algo in algos:
        if algo not in ALGORITHMS:
            raise MablError(f"unknown algorithm '{algo}' in --algos; available: {', '.join(ALGORITHMS)}")
    for name, items in (("algos", algos), ("envs", envs), ("seeds", seeds)):
        if len(set(items)) != len(items):
            raise MablError(f"--{name} lists an entry twice: {items}")
    overrides = {str(k): str(v) for k, v in (overrides or {}).items()}
    reserved = {"algo", "env", "seed", "preset", "steps", "run_dir", "progress", "threads"} & set(overrides)
    if reserved:
        raise MablError(f"--set cannot set {sorted(reserved)}; use the sweep's own flags")
    for algo in algos:
        for env in envs:
            build_config(preset, {**overrides, "algo": algo, "env": env, "steps": steps})
    return SweepSpec(tuple(algos), tuple(envs), tuple(seeds), preset, int(steps), overrides)


def plan(spec: SweepSpec, out: Path) -> list[Run]:
    """Every run of the sweep with its run directory, envs outermost, seeds innermost."""
    return [Run(env, algo, seed, out / env.replace(":", "_").replace("/", "_") / algo / f"seed{seed}")
            for env in spec.envs for algo in spec.algos for seed in spec.seeds]


def is_finished(run_dir: Path, steps: int) -> bool:
    path = latest_checkpoint(run_dir) if run_dir.is_dir() else None
    return path is not None and int(path.stem.split("_")[1]) >= steps


def train_command(spec: SweepSpec, run: Run, threads: int, device: str) -> list[str]:
    cmd = [sys.executable, "-m", "mabl", "train", "--algo", run.algo, "--env", run.env, "--seed", str(run.seed),
           "--preset", spec.preset, "--steps", str(spec.steps), "--run-dir", str(run.run_dir),
           "--progress", "false", "--threads", str(threads), "--device", device]
    for path, value in spec.overrides.items():
        cmd += [f"--{path}", value]
    return cmd


def execute(cmd: list[str], run_dir: str) -> tuple[int, float]:
    """Run one training process, appending its output to ``run_dir/train.log``. Also the Ray task body."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(Path(run_dir) / "train.log", "ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    return rc, time.perf_counter() - start


def run_sweep(spec: SweepSpec, out: str | Path, workers: int = 1, threads: int = 0, device: str = "auto",
              ray_address: str | None = None, gpus_per_run: float = 0.0, echo=print) -> list[Outcome]:
    """Run (or continue) a sweep; returns one :class:`Outcome` per run in :func:`plan` order."""
    out = Path(out)
    cpus = os.cpu_count() or 1
    if workers <= 0:
        raise MablError(f"--workers={workers} must be > 0")
    if ray_address is None and workers > cpus:
        raise MablError(f"--workers={workers} is more than this machine's {cpus} CPUs")
    threads = threads or max(1, cpus // workers)
    runs = plan(spec, out)
    outcomes: dict[Run, Outcome] = {}
    todo = []
    for run in runs:
        if is_finished(run.run_dir, spec.steps):
            outcomes[run] = Outcome(_name(run, out), "skipped", 0, 0.0, str(run.run_dir / "train.log"))
        else:
            todo.append(run)
    echo(f"sweep {out}: {len(runs)} runs, {len(runs) - len(todo)} already finished, {len(todo)} to run"
         + (f" on Ray at {ray_address}" if ray_address else f" with {min(workers, max(len(todo), 1))} workers")
         + f", {threads} threads each")
    _write_status(out, spec, runs, outcomes)
    commands = {run: train_command(spec, run, threads, device) for run in todo}

    def record(run: Run, rc: int, seconds: float) -> None:
        status = "finished" if rc == 0 and is_finished(run.run_dir, spec.steps) else "failed"
        outcomes[run] = Outcome(_name(run, out), status, rc, seconds, str(run.run_dir / "train.log"))
        echo(f"  {status:8s} {_name(run, out)} ({seconds:.0f} s)" + (f": exit {rc}, see {outcomes[run].log}"
                                                                      if status == "failed" else ""))
        _write_status(out, spec, runs, outcomes)

    if todo and ray_address:
        _run_on_ray(todo, commands, ray_address, threads, gpus_per_run, record)
    elif todo:
        with ThreadPoolExecutor(max_workers=workers) as pool:  # threads only wait on child processes
            futures = {pool.submit(execute, commands[run], str(run.run_dir)): run for run in todo}
            for future in as_completed(futures):
                record(futures[future], *future.result())
    return [outcomes[run] for run in runs]


def _run_on_ray(todo: list[Run], commands: dict, address: str, threads: int, gpus: float, record) -> None:
    try:
        import ray
    except ImportError:
        raise MablError("--ray-address needs Ray: pip install 'mabl[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise MablError(f"cannot connect to the Ray cluster at {address}: {str(exc).splitlines()[0]}") from None
    task = ray.remote(num_cpus=threads, num_gpus=gpus)(execute)
    pending = {task.remote(commands[run], str(run.run_dir)): run for run in todo}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        run = pending.pop(done[0])
        try:
            rc, seconds = ray.get(done[0])
        except Exception as exc:  # the task itself died (node lost, ...): a failed run, not a failed sweep
            rc, seconds = -1, 0.0
            with open(run.run_dir / "train.log", "a") as log:
                log.write(f"\nray task failed: {exc}\n")
        record(run, rc, seconds)


def _name(run: Run, out: Path) -> str:
    return str(run.run_dir.relative_to(out))


def _write_status(out: Path, spec: SweepSpec, runs: list[Run], outcomes: dict) -> None:
    status = {"spec": asdict(spec), "runs": [
        {"env": r.env, "algo": r.algo, "seed": r.seed, "run_dir": _name(r, out),
         **({k: v for k, v in asdict(outcomes[r]).items() if k != "run"} if r in outcomes else {"status": "pending"})}
        for r in runs]}
    atomic_write_bytes(out / "sweep.json", json.dumps(status, indent=2).encode())
