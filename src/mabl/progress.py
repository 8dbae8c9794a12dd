"""The trainer's progress display: a tqdm bar on a terminal, plain lines without one."""

from __future__ import annotations

import sys

from mabl.config import RunConfig


class _Bar:
    """tqdm's bar on a terminal; its rate (env steps/s) is the only rate shown."""

    shows_rate = True

    def __init__(self, cfg: RunConfig, initial: int):
        from tqdm import tqdm

        self.tqdm = tqdm(total=cfg.steps, initial=min(initial, cfg.steps), unit="step", dynamic_ncols=True,
                         desc=cfg.env, smoothing=0.05)

    def update(self, steps: int, status: str) -> None:
        self.tqdm.update(steps)
        self.tqdm.set_postfix_str(status, refresh=False)

    def write(self, line: str) -> None:
        self.tqdm.write(line)

    def close(self) -> None:
        self.tqdm.close()


class _Lines:
    """Without a terminal (nohup, a log file): one plain line each time another ``every`` env steps
    are done, instead of a bar's carriage returns."""

    shows_rate = False

    def __init__(self, cfg: RunConfig, initial: int, every: int):
        self.total, self.every, self.step = cfg.steps, every, initial

    def update(self, steps: int, status: str) -> None:
        before, self.step = self.step, self.step + steps
        if self.step // self.every > before // self.every or self.step >= self.total > before:
            print(f"step {min(self.step, self.total)}/{self.total} ({min(self.step / self.total, 1):.0%}) | {status}",
                  flush=True)

    def write(self, line: str) -> None:
        print(line, flush=True)

    def close(self) -> None:
        pass


def progress_display(cfg: RunConfig, initial: int):
    """``--progress true``: a tqdm bar where stderr is a terminal, else a plain line every 5% of the
    steps; ``false``: None (the evaluation and checkpoint lines still print)."""
    if not cfg.progress:
        return None
    if sys.stderr.isatty():
        return _Bar(cfg, initial)
    return _Lines(cfg, initial, max(1, cfg.steps // 20))
