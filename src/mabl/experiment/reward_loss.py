"""``mabl experiment reward-loss``: does the reward loss decide what the reward head learns?

Continues training a run's world model on the run's own replay, once per ``--model.reward_loss``
reading, and prints ``mabl diagnose``'s ``reward_head`` block (one step from the posterior: the rows
with the largest 2 % of rewards, the other non-zero rows, the zero rows) before, half-way and after.

Each loss starts from the same checkpoint (world model and its optimizer state) and sees the same
sequence of sampled windows (the run's batch size and window length, numpy seed ``--seed``). The
block is measured on 400 fixed windows of 20 rows (seed 123), the same for every line: the training
replay, since the question is what each loss can fit, not how it generalises.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import numpy as np
import torch

from mabl.errors import MablError

BLOCK_WINDOWS = 400
BLOCK_LENGTH = 20


def reward_block(agent, data, count: int = BLOCK_WINDOWS, length: int = BLOCK_LENGTH) -> dict[str, Any]:
    """The ``reward_head`` block of ``agent`` on ``count`` windows of ``data`` (seed 123; fewer where
    fewer fit)."""
    from mabl import diagnose as dg

    count = min(count, data.n_rows // length)
    _, windows = dg.sample_windows(data, length, count, np.random.default_rng(123))
    torch.manual_seed(0)
    agent.world_model.eval()
    with torch.no_grad():
        batch, _, filt = dg.filter_windows(agent, windows)
        fake = np.asarray(windows["fake"], bool)
        fake = fake.any(-1) if fake.ndim == 3 else fake  # per-agent absorbing rows (Flatland): any agent
        step_mask = ~fake[1:]  # as diagnose_windows: real rows, after the burn-in
        step_mask[:dg.BURN_IN] = False
        block = dg.reward_head_block(agent.world_model, filt, batch, step_mask)
    agent.world_model.train()
    return block


def format_line(label: str, block: dict[str, Any]) -> str:
    groups = "  ".join(f"{name} {g['pred_mean']:.3f}/{g['real_mean']:.3f} (n={g['n']})"
                       for name in ("largest", "other", "zero") if (g := block.get(name)))
    return f"{label:<24} corr {block['corr']:.3f}  mae {block['mae']:.4f}  predicted/real: {groups}"


def run(run_dir: str, losses: list[str], updates: int, seed: int = 7, emit=print) -> list[dict[str, Any]]:
    """For each reward loss: the block at 0, ``updates // 2`` and ``updates`` updates; each line is
    also passed to ``emit`` as it is measured."""
    from mabl import diagnose as dg
    from mabl.algo.world_model_loss import REWARD_LOSSES

    bad = [loss for loss in losses if loss not in REWARD_LOSSES]
    if bad:
        raise MablError(f"--losses: unknown {', '.join(bad)}; choose among {', '.join(REWARD_LOSSES)}")
    if updates < 2:
        raise MablError(f"--updates={updates} must be >= 2")
    out = []
    for loss in losses:
        loaded = dg.load_run(run_dir)
        if loaded.data is None:
            raise MablError(f"{run_dir} holds no replay to continue training on")
        agent, cfg = loaded.agent, loaded.cfg
        agent.world_model.cfg = dataclasses.replace(agent.world_model.cfg, reward_loss=loss)
        rng = np.random.default_rng(seed)
        for k in range(updates + 1):
            if k:
                _, rows = dg.sample_windows(loaded.data, cfg.model.seq_len, cfg.model.batch_size, rng)
                agent.train_world_model(rows)
            if k in (0, updates // 2, updates):
                block = reward_block(agent, loaded.data)
                out.append({"loss": loss, "updates": k, "block": block})
                emit(format_line(f"{loss}, {k} updates", block))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mabl experiment reward-loss", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", "--run_dir", dest="run_dir", required=True,
                        help="run directory of a world-model algorithm with a replay (newest checkpoint)")
    parser.add_argument("--updates", type=int, default=400, help="world-model updates per loss (default 400)")
    parser.add_argument("--losses", default="smooth_l1,mse", help="comma-separated --model.reward_loss readings "
                        "(default smooth_l1,mse)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the training windows' draw (default 7)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    run(args.run_dir, [x.strip() for x in args.losses.split(",") if x.strip()], args.updates, args.seed,
        emit=lambda line: print(line, flush=True))
    return 0
