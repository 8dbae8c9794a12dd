"""Run-directory logs: ``metrics.jsonl``, ``eval.jsonl`` and the optional sinks of ``--log``.

JSONL files are appended line by line and flushed. A checkpoint records how many lines each file
had; resuming truncates the files back to that point, so a resumed run's logs equal an
uninterrupted run's (TensorBoard is purged from the checkpoint's step likewise; ``metrics.csv`` and
``eval.csv`` are rebuilt from the truncated JSONL files).

The JSONL files are always written: resuming and ``mabl report`` read them. ``--log`` adds sinks
that receive the same numbers (:data:`LOGGERS`):

- ``tensorboard``: ``tb/`` event files, one scalar per numeric key, tagged ``<file>/<key>``
  (``metrics/return``, ``eval/win_rate``), at the line's ``env_step``.
- ``csv``: ``metrics.csv`` (every ``metrics.jsonl`` line) and ``eval.csv``. One file holds the
  episode, learner and diagnose lines together under the union of their keys (a ``kind`` column
  tells them apart; a key a line lacks is an empty cell): when a line brings a key not seen yet,
  the file is rewritten once with the wider header. List values (eval's per-episode values) are
  left out.
- ``wandb``: a Weights & Biases run under ``<run_dir>/wandb`` (``WANDB_MODE=offline`` works with no
  network), keys as in TensorBoard, one row per line with its ``env_step`` as the x axis; the run's
  id is kept in ``wandb_id.txt`` so a resumed run continues it.
- ``mlflow``: an MLflow run in a file store under ``<run_dir>/mlruns``, or at ``MLFLOW_TRACKING_URI``
  when that is set (the config as params, keys
  as in TensorBoard, ``step=env_step``); the run's id is kept in ``mlflow_id.txt``.

``wandb`` and ``mlflow`` are optional extras, imported only when asked for.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

from mabl.checkpoint import atomic_write_bytes
from mabl.errors import MablError

JSONL_FILES = ("metrics.jsonl", "eval.jsonl")
LOGGERS = ("jsonl", "tensorboard", "csv", "wandb", "mlflow")
"""What ``--log`` accepts (a comma list); ``jsonl`` is always on."""


def parse_loggers(text: str) -> tuple[str, ...]:
    """``"jsonl,csv"`` -> ``("jsonl", "csv")``; an unknown name is a one-line error."""
    names = tuple(dict.fromkeys(part.strip() for part in str(text).split(",") if part.strip()))
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise MablError(f"--log={text!r}: unknown logger {', '.join(unknown)}; choose from {', '.join(LOGGERS)} "
                        "(comma-separated, e.g. --log jsonl,tensorboard,csv)")
    return names


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def scalars(name: str, record: dict[str, Any]) -> dict[str, float]:
    """The numeric keys of a log line as ``{"<file>/<key>": float}`` (bools as 0/1; ``env_step``, the
    x axis, strings, lists and None left out): what TensorBoard, W&B and MLflow receive."""
    prefix = name.split(".")[0]
    out = {}
    for key, value in record.items():
        if key == "env_step" or value is None or isinstance(value, (str, list, dict)):
            continue
        if isinstance(value, (bool, int, float)):
            out[f"{prefix}/{key}"] = float(value)
    return out


class _TensorBoard:
    def __init__(self, run_dir: Path, purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=purge_step)

    def write(self, name: str, record: dict[str, Any], step: int) -> None:
        for key, value in scalars(name, record).items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class _Csv:
    """``metrics.csv`` / ``eval.csv``: one row per JSONL line, the union of the keys as header."""

    def __init__(self, run_dir: Path):
        self.paths = {name: run_dir / name.replace(".jsonl", ".csv") for name in JSONL_FILES}
        self.header: dict[str, list[str]] = {}
        for name in self.paths:  # rebuilt from the (already truncated) JSONL lines
            records = []
            source = run_dir / name
            if source.exists():
                for line in source.read_text(encoding="utf-8").splitlines():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError:
                        break
            self.header[name] = []
            for record in records:
                self._widen(name, record)
            self._rewrite(name, records)

    @staticmethod
    def _keys(record: dict[str, Any]) -> list[str]:
        return [k for k, v in record.items() if not isinstance(v, (list, dict))]

    def _widen(self, name: str, record: dict[str, Any]) -> bool:
        new = [k for k in self._keys(record) if k not in self.header[name]]
        self.header[name] += new
        return bool(new)

    def _row(self, name: str, record: dict[str, Any]) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(["" if record.get(k) is None else record[k]
                                                       for k in self.header[name]])
        return buf.getvalue()

    def _rewrite(self, name: str, records: list[dict[str, Any]]) -> None:
        if not records:
            self.paths[name].unlink(missing_ok=True)
            return
        text = ",".join(self.header[name]) + "\n" + "".join(self._row(name, r) for r in records)
        atomic_write_bytes(self.paths[name], text.encode())

    def write(self, name: str, record: dict[str, Any], step: int | None) -> None:
        path = self.paths[name]
        if self._widen(name, record) or not path.exists():
            records = []
            if path.exists():  # re-read the rows written so far under the wider header
                with open(path, newline="", encoding="utf-8") as f:
                    records = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
            self._rewrite(name, records + [record])
            return
        with open(path, "a", encoding="utf-8") as f:
            f.write(self._row(name, record))

    def close(self) -> None:
        pass


def _saved_id(path: Path) -> str | None:
    return path.read_text().strip() or None if path.exists() else None


class _Wandb:
    def __init__(self, run_dir: Path, config: dict[str, Any] | None):
        try:
            import wandb
        except ImportError:
            raise MablError("--log wandb needs the wandb package: pip install 'mabl[wandb]'") from None
        self.wandb = wandb
        id_path = run_dir / "wandb_id.txt"
        run_id = _saved_id(id_path) or uuid.uuid4().hex[:8]
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "mabl"), name=run_dir.name, id=run_id,
                              resume="allow", dir=str(run_dir), config=config or {})
        atomic_write_bytes(id_path, (run_id + "\n").encode())
        # One W&B row per log line, plotted against env_step: several lines at one env step (two
        # learner calls due at once) would otherwise overwrite each other in W&B's step-keyed rows.
        self.run.define_metric("env_step")
        self.run.define_metric("*", step_metric="env_step")

    def write(self, name: str, record: dict[str, Any], step: int) -> None:
        values = scalars(name, record)
        if values:
            self.run.log({"env_step": step, **values})

    def close(self) -> None:
        self.run.finish()


class _Mlflow:
    def __init__(self, run_dir: Path, config: dict[str, Any] | None):
        try:
            import mlflow
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise MablError("--log mlflow needs the mlflow-skinny package: pip install 'mabl[mlflow]'") from None
        # MLFLOW_TRACKING_URI (a server, a database) wins; else a file store in the run directory, which
        # MLflow >= 3.x allows only with MLFLOW_ALLOW_FILE_STORE set
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (run_dir / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        self.entities = mlflow.entities
        id_path = run_dir / "mlflow_id.txt"
        run_id = _saved_id(id_path)
        if run_id is None:
            experiment = self.client.get_experiment_by_name("mabl")
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment("mabl")
            run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
            params = [self.entities.Param(k, str(v)[:500]) for k, v in _flatten(config or {}).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(run_id, params=params[i:i + 100])
            atomic_write_bytes(id_path, (run_id + "\n").encode())
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id

    def write(self, name: str, record: dict[str, Any], step: int) -> None:
        import time

        now = int(time.time() * 1000)
        metrics = [self.entities.Metric(k, v, now, step) for k, v in scalars(name, record).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class RunLogger:
    """The JSONL files plus the sinks named in ``loggers`` (:data:`LOGGERS`). ``config``: the run's
    config as a dict, which W&B and MLflow record with the run."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, purge_step: int | None = None,
                 loggers: tuple[str, ...] | None = None, config: dict[str, Any] | None = None):
        self.run_dir = run_dir
        if loggers is None:
            loggers = ("jsonl", "tensorboard") if tensorboard else ("jsonl",)
        self.files = {name: open(run_dir / name, "a", encoding="utf-8") for name in JSONL_FILES}
        self.lines = {name: count_lines(run_dir / name) for name in JSONL_FILES}
        self.sinks: list[Any] = []
        try:
            if "tensorboard" in loggers:
                try:
                    self.sinks.append(_TensorBoard(run_dir, purge_step))
                except ImportError:  # tensorboard is a dependency; keep logging JSONL if it is missing
                    pass
            if "csv" in loggers:
                self.sinks.append(_Csv(run_dir))
            if "wandb" in loggers:
                self.sinks.append(_Wandb(run_dir, config))
            if "mlflow" in loggers:
                self.sinks.append(_Mlflow(run_dir, config))
        except BaseException:
            self.close()
            raise

    @property
    def tb(self):
        """The TensorBoard writer, or None."""
        return next((s.writer for s in self.sinks if isinstance(s, _TensorBoard)), None)

    def write(self, name: str, record: dict[str, Any], step: int | None = None) -> None:
        record = {k: _clean(v) for k, v in record.items()}
        self.files[name].write(json.dumps(record) + "\n")
        self.files[name].flush()
        self.lines[name] += 1
        for sink in self.sinks:
            if step is not None or isinstance(sink, _Csv):
                sink.write(name, record, step)

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        for sink in self.sinks:
            sink.close()
        self.sinks = []


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


ENV_PACKAGES = ("jax", "jaxmarl", "pettingzoo", "mpe2", "flatland", "gymnasium", "gymnasium_robotics", "mujoco", "smac")
"""Modules whose versions ``run_info.json`` records when the run imported them (the env's packages)."""
_DISTRIBUTIONS = {"flatland": "flatland-rl", "gymnasium_robotics": "gymnasium-robotics"}


def _version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(_DISTRIBUTIONS.get(module, module))
    except metadata.PackageNotFoundError:
        import sys

        return getattr(sys.modules.get(module), "__version__", None)


def git_commit(path: Path) -> str | None:
    """The commit of the git clone holding ``path`` (with ``+dirty`` when it has uncommitted changes), or
    None outside a clone or without git."""
    import subprocess

    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()

        commit = git("rev-parse", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _command(argv: list[str]) -> list[str]:
    """The command line, with ``python -m mabl``'s ``.../mabl/__main__.py`` shown as ``mabl``."""
    if not argv:
        return []
    head = "mabl" if argv[0].endswith(("__main__.py", "/mabl")) or argv[0] == "mabl" else argv[0]
    return [head, *argv[1:]]


def run_info(env_step: int) -> dict[str, Any]:
    """What ran: mabl's version and git commit (when mabl is imported from a clone), the command line,
    Python, torch and the versions of the env packages imported so far; ``env_step``: where this
    start began (0, or the step a resume continued from)."""
    import platform
    import sys

    import torch

    import mabl

    return {"mabl": mabl.__version__, "git_commit": git_commit(Path(mabl.__file__).resolve().parent),
            "command": _command(sys.argv),
            "python": platform.python_version(), "torch": torch.__version__,
            "packages": {m: _version(m) for m in ENV_PACKAGES if m in sys.modules}, "start_env_step": int(env_step)}


def record_run_info(run_dir: Path, env_step: int) -> dict[str, Any]:
    """Append this start's :func:`run_info` to ``run_dir/run_info.json`` (``{"starts": [...]}``, one
    entry per start of the run: the first, then each resume)."""
    path = run_dir / "run_info.json"
    starts = []
    if path.exists():
        try:
            starts = json.loads(path.read_text()).get("starts", [])
        except (json.JSONDecodeError, AttributeError):
            starts = []
    info = run_info(env_step)
    atomic_write_bytes(path, (json.dumps({"starts": starts + [info]}, indent=2) + "\n").encode())
    return info
