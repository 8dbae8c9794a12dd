"""Run-directory logs: ``metrics.jsonl``, ``eval.jsonl`` and TensorBoard events.

JSONL files are appended line by line and flushed. A checkpoint records how many lines each file
had; resuming truncates the files back to that point, so a resumed run's logs equal an
uninterrupted run's (TensorBoard is purged from the checkpoint's step likewise).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mabl.checkpoint import atomic_write_bytes

JSONL_FILES = ("metrics.jsonl", "eval.jsonl")


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLogger:
    def __init__(self, run_dir: Path, tensorboard: bool = True, purge_step: int | None = None):
        self.run_dir = run_dir
        self.files = {name: open(run_dir / name, "a", encoding="utf-8") for name in JSONL_FILES}
        self.lines = {name: count_lines(run_dir / name) for name in JSONL_FILES}
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is a dependency; keep logging JSONL if it is missing
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=purge_step)

    def write(self, name: str, record: dict[str, Any], step: int | None = None) -> None:
        record = {k: _clean(v) for k, v in record.items()}
        self.files[name].write(json.dumps(record) + "\n")
        self.files[name].flush()
        self.lines[name] += 1
        if self.tb is not None and step is not None:
            prefix = name.split(".")[0]
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "env_step":
                    self.tb.add_scalar(f"{prefix}/{key}", value, step)
                elif isinstance(value, bool):
                    self.tb.add_scalar(f"{prefix}/{key}", float(value), step)

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        if self.tb is not None:
            self.tb.close()


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if line.endswith(b"\n"))


def truncate_logs(run_dir: Path, lines: dict[str, int]) -> None:
    """Cut each JSONL file back to ``lines[name]`` complete lines (atomically)."""
    for name in JSONL_FILES:
        path = run_dir / name
        if not path.exists():
            continue
        keep = lines.get(name, 0)
        with open(path, "rb") as f:
            content = f.read().split(b"\n")
        complete = content[:-1]  # the part after the final newline is torn or empty
        if len(complete) != keep or content[-1]:
            atomic_write_bytes(path, b"".join(line + b"\n" for line in complete[:keep]))
