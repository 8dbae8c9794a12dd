"""Finding and reading run directories (``config.json`` + ``metrics.jsonl``) for reports.

A log may also be stored gzip-compressed (``metrics.jsonl.gz``, ``eval.jsonl.gz``), as
:mod:`mabl.archive` writes them: run logs kept in git beside the results they back.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mabl.errors import MablError

ALGO_ORDER = ("mabl", "mabl-sg", "dreamer", "mamba", "mappo", "ippo", "mag")
"""Column order of the tables and legends; algorithms not listed follow, sorted by name."""

RUN_FILES = ("config.json", "metrics.jsonl")
"""A directory holding both files is a run directory (``metrics.jsonl.gz`` counts as ``metrics.jsonl``)."""


def log_path(run_dir: Path, name: str) -> Path | None:
    """``run_dir/name`` if it is a file, else ``run_dir/name.gz`` if that is, else None."""
    for path in (run_dir / name, run_dir / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def base_algo(label: str) -> str:
    """The algorithm of a cell label ``algo [variant]`` (:attr:`RunData.label`)."""
    return label.split(" [", 1)[0]


def algo_rank(algo: str) -> tuple[int, tuple]:
    """Sort key of an algorithm or of a cell label ``algo [variant]`` (:mod:`mabl.report.variants`):
    :data:`ALGO_ORDER` first, the variants of one algorithm together, by label."""
    base = base_algo(algo)
    natural = tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", algo))  # 5 before 15
    return (ALGO_ORDER.index(base) if base in ALGO_ORDER else len(ALGO_ORDER), natural)


def order_algos(algos: Iterable[str]) -> list[str]:
    """Algorithms in column order: mabl, mabl-sg, dreamer, mamba, mappo, ippo, mag, then others by name."""
    return sorted(set(algos), key=algo_rank)


@dataclass
class RunData:
    """One run directory: its config and its logged episodes (numpy arrays in episode order)."""

    run_dir: Path
    env: str
    algo: str
    seed: int
    steps: int
    preset: str | None
    config: dict[str, Any]
    env_step: np.ndarray
    """int64, cumulative env steps at the end of each episode."""
    returns: np.ndarray
    """float64, each episode's return (NaN where the log holds null)."""
    win: np.ndarray | None
    """bool per episode where the env defines wins, else None."""
    arrived: np.ndarray | None = None
    """float64 fraction of trains that arrived in each episode (Flatland's ``arrived_fraction``; NaN
    where an episode line lacks it), None for logs without it."""
    learner: list[dict[str, Any]] = field(default_factory=list)
    eval: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Tolerated problems, e.g. an ignored torn last line."""
    lengths: np.ndarray | None = None
    """float64 env steps of each episode (NaN where the log holds none); None for logs without lengths."""
    variant: str = ""
    """The settings that set this run apart from other runs of its algorithm on its task in one report
    (``""`` when they share them; :func:`mabl.report.variants.assign_variants`)."""

    @property
    def task(self) -> str:
        return self.env

    @property
    def label(self) -> str:
        """The report's name for the run's cell: the algorithm, with its variant in brackets if any."""
        return f"{self.algo} [{self.variant}]" if self.variant else self.algo

    @property
    def final_env_step(self) -> int:
        return int(self.env_step[-1])

    def time_s(self, key: str) -> float | None:
        """``wall_s`` or ``cpu_s`` of the last learner line that logs it: the run's training time so
        far, summed over resumes (runs written before mabl 0.2 log neither: None)."""
        for record in reversed(self.learner):
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        return None

    def values(self, metric: str) -> np.ndarray:
        """Per-episode values: ``100 * win`` for ``metric == "win_rate"``, ``100 * arrived_fraction``
        (arrived %) for ``metric == "arrived"``, else the returns."""
        if metric == "win_rate":
            if self.win is None:
                raise ValueError(f"run {self.run_dir} logs no win flags")
            return self.win.astype(np.float64) * 100.0
        if metric == "arrived":
            if self.arrived is None:
                raise ValueError(f"run {self.run_dir} logs no arrived_fraction")
            return self.arrived * 100.0
        return self.returns


@dataclass
class SkippedRun:
    run_dir: str
    reason: str


class _SkipRun(Exception):
    """Internal: the run directory cannot be used; the message is the reason."""


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The JSON objects of a JSONL file; True as second item when a torn final line was ignored.

    Raises _SkipRun for an invalid line that is not the last non-empty one.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _SkipRun(f"cannot read {path.name}: {exc.strerror or exc}") from None
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise _SkipRun(f"{path.name} is not a complete gzip file ({exc})") from None
    text = data.decode("utf-8", errors="replace")
    lines = [(n, line) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    records, torn = [], False
    for i, (n, line) in enumerate(lines):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            if i == len(lines) - 1:
                torn = True
                break
            raise _SkipRun(f"{path.name} line {n} is not a JSON object") from None
        records.append(record)
    return records, torn


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def load_run(run_dir: str | os.PathLike) -> RunData:
    """Read one run directory. Raises :class:`MablError` (one line) when it cannot be used."""
    try:
        return _load_run(Path(run_dir))
    except _SkipRun as exc:
        raise MablError(f"cannot use run {run_dir}: {exc}") from None


def _load_run(run_dir: Path) -> RunData:
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise _SkipRun("config.json is not readable JSON") from None
    if not isinstance(config, dict):
        raise _SkipRun("config.json is not a JSON object")
    for key in ("env", "algo", "seed"):
        if key not in config:
            raise _SkipRun(f"config.json lacks '{key}'")
    metrics_path = log_path(run_dir, "metrics.jsonl")
    if metrics_path is None:
        raise _SkipRun("metrics.jsonl is missing")
    records, torn = _read_jsonl(metrics_path)
    notes = [f"ignored a torn last line of {metrics_path.name}"] if torn else []
    if not records:
        raise _SkipRun(f"{metrics_path.name} is empty" if not torn else f"{metrics_path.name} holds only a torn line")
    episodes = [r for r in records if r.get("kind") == "episode"]
    if not episodes:
        raise _SkipRun("metrics.jsonl has no episode lines")
    for r in episodes:
        if isinstance(r.get("env_step"), bool) or not isinstance(r.get("env_step"), (int, float)):
            raise _SkipRun(f"an episode line of metrics.jsonl lacks a numeric env_step (episode {r.get('episode')})")
    env_step = np.array([int(r["env_step"]) for r in episodes], dtype=np.int64)
    returns = np.array([_as_float(r.get("return")) for r in episodes], dtype=np.float64)
    win = None
    if any(r.get("win") is not None for r in episodes):
        win = np.array([bool(r.get("win")) for r in episodes], dtype=bool)
    arrived = None
    if any(r.get("arrived_fraction") is not None for r in episodes):
        arrived = np.array([_as_float(r.get("arrived_fraction")) for r in episodes], dtype=np.float64)
    lengths = None
    if any(r.get("length") is not None for r in episodes):
        lengths = np.array([_as_float(r.get("length")) for r in episodes], dtype=np.float64)
    order = np.argsort(env_step, kind="stable")  # logs are in order already; this guards odd files
    env_step, returns = env_step[order], returns[order]
    if lengths is not None:
        lengths = lengths[order]
    if win is not None:
        win = win[order]
    if arrived is not None:
        arrived = arrived[order]
    learner = [r for r in records if r.get("kind") == "learner" and isinstance(r.get("env_step"), (int, float))]
    evals: list[dict[str, Any]] = []
    eval_path = log_path(run_dir, "eval.jsonl")
    if eval_path is not None:
        try:
            evals, eval_torn = _read_jsonl(eval_path)
            if eval_torn:
                notes.append(f"ignored a torn last line of {eval_path.name}")
        except _SkipRun as exc:
            notes.append(f"ignored {eval_path.name}: {exc}")
    try:
        seed = int(config["seed"])
        steps = int(config.get("steps", 0))
    except (TypeError, ValueError):
        raise _SkipRun("config.json has a non-integer seed or steps") from None
    preset = config.get("preset")
    return RunData(run_dir=run_dir, env=str(config["env"]), algo=str(config["algo"]), seed=seed, steps=steps,
                   preset=None if preset is None else str(preset), config=config, env_step=env_step,
                   returns=returns, win=win, arrived=arrived, learner=learner, eval=evals, notes=notes,
                   lengths=lengths)


def _is_run_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and log_path(path, "metrics.jsonl") is not None


def discover_run_dirs(root: Path) -> list[Path]:
    """Run directories at or below ``root`` (a run directory's own subfolders are not searched)."""
    if _is_run_dir(root):
        return [root]
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if here != root and _is_run_dir(here):
            found.append(here)
            dirnames[:] = []
            continue
        dirnames.sort()
    return sorted(found)


def run_dirs_under(root: Path) -> list[Path]:
    """:func:`discover_run_dirs` for a path the user named; raises :class:`MablError` (one line) when
    it does not exist, is not a directory or holds no run directory."""
    if not root.exists():
        raise MablError(f"no such run or sweep directory: {root}")
    if not root.is_dir():
        raise MablError(f"{root} is not a directory; pass run or sweep directories")
    found = discover_run_dirs(root)
    if not found:
        raise MablError(f"no runs under {root}: expected directories holding {' and '.join(RUN_FILES)}")
    return found


def find_runs(paths: str | os.PathLike | Iterable[str | os.PathLike],
              skipped: list[SkippedRun] | None = None) -> list[RunData]:
    """Load the runs in any mix of run and sweep directories, sorted by (env, label, seed, run_dir),
    each with its variant label set (:func:`mabl.report.variants.assign_variants`).

    Runs are found recursively as directories holding both ``config.json`` and ``metrics.jsonl``;
    the same directory reached twice is read once. Unusable runs (see the module docstring) are
    left out and, when ``skipped`` is given, appended to it. Raises :class:`MablError` when a path
    does not exist, is not a directory or holds no run directory.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    seen: set[Path] = set()
    runs: list[RunData] = []
    for raw in paths:
        for run_dir in run_dirs_under(Path(raw)):
            key = run_dir.resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                runs.append(_load_run(run_dir))
            except _SkipRun as exc:
                if skipped is not None:
                    skipped.append(SkippedRun(str(run_dir), str(exc)))
    from mabl.report.variants import assign_variants

    assign_variants(runs)
    runs.sort(key=lambda r: (r.env, algo_rank(r.label), r.seed, str(r.run_dir)))
    return runs
