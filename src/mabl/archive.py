"""Keep the logs of runs, without their checkpoints: ``mabl archive DIR [DIR ...] --out DST``.

A 100k-step run directory holds tens of MB of checkpoints (weights, optimiser states, the replay)
and a few MB of logs. The results published in docs/ rest on the logs alone, so this copies, for
every run directory found under each DIR (the way ``mabl report`` finds them):

- ``config.json`` as it is (the run's whole configuration, seed included), and ``run_info.json``
  (the mabl version, git commit, command line and package versions of each start) where the run has one;
- ``metrics.jsonl`` and ``eval.jsonl`` gzip-compressed (``*.jsonl.gz``, ~6x smaller, byte-for-byte
  the same for the same log: no timestamp in the gzip header).

into ``DST`` under the run's path relative to its DIR (a DIR that is itself a run directory goes
under its own name). ``mabl report DST`` reads the archive as it reads the runs. An archive is
refreshed by archiving again; every file is written atomically.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

from mabl.checkpoint import atomic_write_bytes
from mabl.errors import MablError
from mabl.report.runs import log_path, run_dirs_under


@dataclass(frozen=True)
class Archived:
    run: str
    """The run's path inside the archive."""
    bytes_in: int
    bytes_out: int


def _compressed(path: Path) -> bytes:
    data = path.read_bytes()
    return data if path.suffix == ".gz" else gzip.compress(data, compresslevel=9, mtime=0)


def archive_runs(dirs: list[str | os.PathLike], out: str | os.PathLike) -> list[Archived]:
    """Copy the logs of every run directory under ``dirs`` into ``out``; one :class:`Archived` per run."""
    out = Path(out)
    done: list[Archived] = []
    targets: dict[Path, Path] = {}
    for raw in dirs:
        root = Path(raw)
        for run_dir in run_dirs_under(root):
            rel = Path(root.resolve().name) if run_dir == root else run_dir.relative_to(root)
            dest = out / rel
            if dest.resolve() == run_dir.resolve() or out.resolve() in run_dir.resolve().parents:
                raise MablError(f"--out {out} holds the run {run_dir}; archive into another directory")
            if dest in targets and targets[dest] != run_dir.resolve():
                raise MablError(f"runs {targets[dest]} and {run_dir} would both be archived as {dest}")
            targets[dest] = run_dir.resolve()
    for dest, run_dir in targets.items():
        bytes_in = bytes_out = 0
        files = {"config.json": run_dir / "config.json"}
        if (run_dir / "run_info.json").exists():
            files["run_info.json"] = run_dir / "run_info.json"
        for name in ("metrics.jsonl", "eval.jsonl"):
            path = log_path(run_dir, name)
            if path is not None:
                files[f"{name}.gz"] = path
        dest.mkdir(parents=True, exist_ok=True)
        for name, path in files.items():
            data = _compressed(path) if name.endswith(".gz") else path.read_bytes()
            bytes_in += path.stat().st_size
            bytes_out += len(data)
            atomic_write_bytes(dest / name, data)
            stale = dest / name.removesuffix(".gz")
            if name.endswith(".gz") and stale.exists():  # an older plain copy would shadow the new log
                stale.unlink()
        done.append(Archived(str(dest.relative_to(out)), bytes_in, bytes_out))
    return done
