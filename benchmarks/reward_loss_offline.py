"""Does the reward loss decide what the reward head learns? Continue training a run's world model on
the run's own replay, once per ``--model.reward_loss``, and print ``mabl diagnose``'s reward-head
block (one step from the posterior; zero rows, the largest 2 % of rows, the others) before and after.

    python benchmarks/reward_loss_offline.py --run-dir RUN [--updates 400] [--losses smooth_l1,mse]

Each loss starts from the same checkpoint (world model, its optimizer state) and sees the same
sequence of sampled windows (the run's batch size and window length, numpy seed ``--seed``). The
block is measured on 400 fixed windows of 20 rows (seed 123), the same for every line. It is the
training replay: the question is what each loss can fit, not how it generalises.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch


def reward_block(agent, data, count: int = 400, length: int = 20) -> dict:
    from mabl import diagnose as dg

    _, windows = dg.sample_windows(data, length, count, np.random.default_rng(123))
    torch.manual_seed(0)
    agent.world_model.eval()
    with torch.no_grad():
        batch, _, filt = dg.filter_windows(agent, windows)
        fake = np.asarray(windows["fake"], bool)
        fake = fake.any(-1) if fake.ndim == 3 else fake  # per-agent absorbing rows (Flatland): any agent
        step_mask = ~fake[1:]  # as diagnose_windows: real rows, after the burn-in
        step_mask[:dg.BURN_IN] = False
        return dg.reward_head_block(agent.world_model, filt, batch, step_mask)


def line(label: str, block: dict) -> str:
    groups = "  ".join(f"{name} {g['pred_mean']:.3f}/{g['real_mean']:.3f} (n={g['n']})"
                       for name in ("largest", "other", "zero") if (g := block[name]))
    return f"{label:<24} corr {block['corr']:.3f}  mae {block['mae']:.4f}  predicted/real: {groups}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--updates", type=int, default=400)
    parser.add_argument("--losses", default="smooth_l1,mse")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.updates < 2:
        raise SystemExit(f"--updates={args.updates} must be >= 2")
    torch.set_num_threads(args.threads)

    from mabl import diagnose as dg

    for loss in args.losses.split(","):
        loaded = dg.load_run(args.run_dir)
        agent, cfg = loaded.agent, loaded.cfg
        agent.world_model.cfg = dataclasses.replace(agent.world_model.cfg, reward_loss=loss)
        print(line(f"{loss}, 0 updates", reward_block(agent, loaded.data)), flush=True)
        rng = np.random.default_rng(args.seed)
        for k in range(1, args.updates + 1):
            _, rows = dg.sample_windows(loaded.data, cfg.model.seq_len, cfg.model.batch_size, rng)
            agent.train_world_model(rows)
            if k in (args.updates // 2, args.updates):
                print(line(f"{loss}, {k} updates", reward_block(agent, loaded.data)), flush=True)


if __name__ == "__main__":
    main()
