"""Complete, atomic checkpoints of a run, and safe loading.

A checkpoint holds everything needed to continue exactly: networks, optimizers, the replay buffer,
counters, RNG states, the config and a schema version. Files are written to a temporary name,
fsynced and renamed, so a crash leaves either the old or the new file, never a torn one. Loading
uses ``torch.load(weights_only=True)``: a checkpoint cannot run code.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import torch

from mabl.errors import MablError

CHECKPOINT_KIND = "mabl-checkpoint"
SCHEMA_VERSION = 1
KEEP = 2
_NAME = re.compile(r"^step_(\d{9,})\.pt$")


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Write to a temporary file beside ``path``; on success fsync and rename it over ``path``.

    A crash at any point leaves either the old file or the new one, never a torn one. The file's
    permissions follow the umask, as a file made by ``open`` (``0o666 & ~umask``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; the file gets what open() would give it
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    with atomic_open(path) as f:
        torch.save(obj, f)


def safe_torch_load(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` with one-line errors for missing/truncated/foreign files."""
    path = Path(path)
    if not path.is_file():
        raise MablError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for torn or foreign files
        raise MablError(f"{what} {path} is unreadable (truncated or not a mabl file: {short_reason(exc)})") from None


def short_reason(exc: BaseException, limit: int = 120) -> str:
    """The first line of an exception's message, shortened at a word boundary (never mid-word)."""
    text = str(exc).strip()
    reason = text.splitlines()[0].strip() if text else type(exc).__name__
    if len(reason) <= limit:
        return reason
    cut = reason[:limit].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + " ..."


def nonfinite_tensors(tree: Any, prefix: str = "") -> list[str]:
    """Paths (``agent.world_model.obs_encoder.0.weight``) of floating tensors in a nested
    dict/list of ``tree`` that hold a NaN or an infinity."""
    if isinstance(tree, torch.Tensor):
        return [prefix or "tensor"] if tree.is_floating_point() and not torch.isfinite(tree).all() else []
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return []
    found = []
    for key, value in items:
        found += nonfinite_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    return found


def describe_nonfinite(paths: list[str], shown: int = 3) -> str:
    """``a, b, c and 4 more`` for a list of tensor paths."""
    text = ", ".join(paths[:shown])
    return text + (f" and {len(paths) - shown} more" if len(paths) > shown else "")


def checkpoint_files(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def save_checkpoint(run_dir: str | os.PathLike, env_step: int, payload: dict[str, Any]) -> Path:
    """Write ``checkpoints/step_<env_step>.pt`` atomically, then keep only the newest :data:`KEEP`."""
    path = Path(run_dir) / "checkpoints" / f"step_{env_step:09d}.pt"
    bad = nonfinite_tensors(payload)
    if bad:  # never write a checkpoint that cannot be trusted (the divergence guard should stop first)
        raise MablError(f"refusing to write checkpoint {path.name}: non-finite values in {describe_nonfinite(bad)}; "
                        "the previous checkpoints are intact")
    atomic_torch_save({"kind": CHECKPOINT_KIND, "schema": SCHEMA_VERSION, **payload}, path)
    for old in checkpoint_files(run_dir)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    state = safe_torch_load(path)
    if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
        raise MablError(f"checkpoint {path} is not a mabl training checkpoint")
    if state.get("schema") != SCHEMA_VERSION:
        raise MablError(f"checkpoint {path} has schema {state.get('schema')}; this mabl reads {SCHEMA_VERSION}")
    return state


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    files = checkpoint_files(run_dir)
    return files[-1] if files else None


def load_finite_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """:func:`load_checkpoint`, refusing one whose networks or optimizer states hold NaN or infinity."""
    state = load_checkpoint(path)
    bad = nonfinite_tensors(state.get("agent"), "agent")
    if bad:
        raise MablError(f"checkpoint {path} holds non-finite weights ({describe_nonfinite(bad)})")
    return state


def _newest_usable(run_dir: str | os.PathLike) -> tuple[Path | None, dict[str, Any] | None, list[tuple[Path, str]]]:
    """The newest checkpoint that loads and is finite (None, None when there is none), its state,
    and every newer checkpoint that failed with its reason. Reads only."""
    failures: list[tuple[Path, str]] = []
    for path in reversed(checkpoint_files(run_dir)):
        try:
            return path, load_finite_checkpoint(path), failures
        except MablError as exc:
            failures.append((path, str(exc)))
    return None, None, failures


def _no_usable(run_dir, failures: list[tuple[Path, str]], remedy: str) -> MablError:
    reasons = "; ".join(reason for _, reason in failures)
    return MablError(f"run directory {run_dir} has no usable checkpoint: {reasons}. {remedy}")


def resume_checkpoint(run_dir: str | os.PathLike, report=print) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of a run that loads and is finite, and its state; None without checkpoints.

    Newer checkpoints that fail are renamed aside (``step_N.pt.damaged``, never deleted), each
    with one line given to ``report``. When none is usable, nothing is renamed and a one-line
    MablError names every checkpoint and why it failed.
    """
    path, state, failures = _newest_usable(run_dir)
    if path is None:
        if not failures:
            return None
        raise _no_usable(run_dir, failures, "Nothing was renamed or deleted; move the checkpoints folder aside "
                                            "or use another --run-dir to start afresh.")
    for bad_path, reason in failures:
        aside = bad_path.with_name(bad_path.name + ".damaged")
        os.replace(bad_path, aside)
        report(f"mabl: {reason}; renamed it to {aside.name} and resumed from {path.name}")
    return path, state


def read_checkpoint(run_dir: str | os.PathLike, report=print) -> tuple[Path, dict[str, Any]] | None:
    """What a reader of a run (``mabl diagnose``) opens: the checkpoint :func:`resume_checkpoint` would
    resume from, without renaming anything. Each newer checkpoint it skips gets one line to ``report``;
    None without checkpoints; a one-line MablError when none is usable."""
    path, state, failures = _newest_usable(run_dir)
    if path is None:
        if not failures:
            return None
        raise _no_usable(run_dir, failures, "Nothing was renamed or deleted.")
    for _, reason in failures:
        report(f"mabl: {reason}; skipped it and read {path.name}")
    return path, state
