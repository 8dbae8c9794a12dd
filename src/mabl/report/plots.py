"""PNG learning and world-model-loss curves (matplotlib, imported only here and only when plotting)."""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mabl.errors import MablError
from mabl.report.markdown import metric_label
from mabl.report.runs import ALGO_ORDER, algo_rank, order_algos
from mabl.report.stats import MODEL_KEY_ORDER, Curve, Curves


class WrittenPlots(list):
    """The paths of the written PNGs (a list of :class:`~pathlib.Path`), plus ``labels``: per path,
    the legend labels (algorithms) of the lines drawn in that figure, in drawing order."""

    def __init__(self) -> None:
        super().__init__()
        self.labels: dict[Path, list[str]] = {}


def safe_name(task: str) -> str:
    """A file-name-safe form of a task name: ``smax:3m`` -> ``smax_3m``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", task).strip("_.")
    return name or "task"


_MATPLOTLIB_MISSING = "mabl report needs matplotlib: pip install 'mabl[report]'"


def _import_matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MablError(_MATPLOTLIB_MISSING) from None
    return Figure, FigureCanvasAgg


def _atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        mask = os.umask(0o022)  # (read the umask: set it, put it back; mabl.checkpoint imports torch)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # what open() would give it, not mkstemp's owner-only mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _colors(algos: Sequence[str]) -> dict[str, str]:
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
               "tab:gray", "tab:olive", "tab:cyan"]
    others = [a for a in algos if a not in ALGO_ORDER]
    colors = {a: palette[i] for i, a in enumerate(ALGO_ORDER)}
    colors.update({a: palette[(len(ALGO_ORDER) + i) % len(palette)] for i, a in enumerate(others)})
    return colors


def _draw(ax, curves: Sequence[Curve], colors: dict[str, str]) -> list[str]:
    labels = []
    for curve in curves:
        color = colors[curve.algo]
        ax.plot(curve.steps, curve.mean, color=color, label=curve.algo, linewidth=1.6)
        ax.fill_between(curve.steps, curve.min, curve.max, color=color, alpha=0.2, linewidth=0)
        labels.append(curve.algo)
    ax.grid(True, alpha=0.3)
    ax.set_xlabel("env steps")
    return labels


def plot_curves(curves: Curves, out_dir: str | os.PathLike) -> WrittenPlots:
    """Write ``curve_<task>.png`` per task and ``model_loss_<task>.png`` per task with world-model
    losses into ``out_dir`` (task names made file-safe by :func:`safe_name`).

    Curve figures: x = env steps, y = win rate % or return; one line per algorithm (mean over
    seeds) with a shaded min–max band over seeds. Loss figures: one panel per ``model/*`` key,
    lines likewise. Returns the written paths; ``.labels`` maps each path to its legend labels.
    Needs matplotlib (Agg canvas, no pyplot state); raises :class:`MablError` without it.
    """
    Figure, FigureCanvasAgg = _import_matplotlib()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = WrittenPlots()
    tasks = sorted({task for task, _ in curves.metric} | {task for task, _ in curves.losses})
    colors = _colors(order_algos(algo for _, algo in [*curves.metric, *curves.losses]))
    used: set[str] = set()

    def file_for(prefix: str, task: str) -> Path:
        base = f"{prefix}_{safe_name(task)}"
        name, n = base, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        return out / f"{name}.png"

    def save(fig, path: Path, labels: list[str]) -> None:
        FigureCanvasAgg(fig)
        _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
        written.append(path)
        written.labels[path] = labels

    def cell_order(items):
        return sorted(items, key=lambda c: algo_rank(c.algo))

    for task in tasks:
        metric_curves = cell_order(c for (t, _), c in curves.metric.items() if t == task)
        if metric_curves:
            fig = Figure(figsize=(7, 4.5))
            ax = fig.add_subplot(1, 1, 1)
            labels = _draw(ax, metric_curves, colors)
            metric = metric_curves[0].key
            ax.set_ylabel(metric_label(metric))
            if metric in ("win_rate", "arrived"):
                ax.set_ylim(-2, 102)
            ax.set_title(f"{task}: {metric_label(metric)}, EMA {curves.ema:g}, mean and min–max over seeds")
            ax.legend(loc="best")
            fig.tight_layout()
            save(fig, file_for("curve", task), labels)

        cells = {algo: keyed for (t, algo), keyed in curves.losses.items() if t == task and keyed}
        if cells:
            keys = [k for k in MODEL_KEY_ORDER if any(k in keyed for keyed in cells.values())]
            keys += sorted({k for keyed in cells.values() for k in keyed} - set(keys))
            ncols = min(4, len(keys))
            nrows = math.ceil(len(keys) / ncols)
            fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows))
            labels: list[str] = []
            for i, key in enumerate(keys):
                ax = fig.add_subplot(nrows, ncols, i + 1)
                drawn = _draw(ax, cell_order(keyed[key] for keyed in cells.values() if key in keyed), colors)
                labels += [a for a in drawn if a not in labels]
                ax.set_title(key, fontsize=10)
                if i == 0:
                    ax.legend(loc="best", fontsize=8)
            fig.suptitle(f"{task}: world-model losses, EMA {curves.ema:g}, mean and min–max over seeds")
            fig.tight_layout()
            save(fig, file_for("model_loss", task), order_algos(labels))
    return written
