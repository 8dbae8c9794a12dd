"""Is the critic optimistic, and where? Critic value and imagined lambda-return of posterior states
against the observed discounted return from the same replay row, grouped by how many units are alive.

    python benchmarks/value_by_alive.py --run-dir RUN [--windows 300] [--seed 0]

Uses ``mabl.diagnose``'s window draw, filtering and imagination (as ``mabl diagnose``'s
``imagination`` block, which pools all rows): ``--windows`` non-overlapping 20-row windows of the
newest checkpoint's replay, steps j >= 4, absorbing rows excluded. A unit is alive where its action
mask allows more than one action (on SMAX a dead unit may only stop). The replay holds older
policies' episodes, so the observed returns are not the current policy's alone.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--windows", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from mabl import diagnose as dg
    loaded = dg.load_run(args.run_dir)
    agent, rows, length = loaded.agent, loaded.data.rows, 20
    if rows.get("avail") is None:
        raise SystemExit("this run's env has no action masks: alive units cannot be told apart")
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    starts, windows = dg.sample_windows(loaded.data, length, args.windows, rng)
    returns, complete = dg.discounted_returns(np.asarray(rows["reward"]), np.asarray(rows["done"]), rows["last"],
                                              loaded.cfg.policy.gamma)
    index = (starts[None, :] + np.arange(length)[:, None])[1:]
    model = agent.world_model
    model.eval()
    with torch.no_grad():
        _, _, filt = dg.filter_windows(agent, windows)
        mask = ~np.asarray(windows["fake"], bool)[1:]
        mask[:dg.BURN_IN] = False
        start = dg.posterior_starts(filt.post, mask)
        lam, value, _ = dg.imagine_from(agent, start)  # the env's units, those of the observed returns
    keep = mask.reshape(-1)
    observed, done_in_data = returns[index].reshape(-1)[keep], complete[index].reshape(-1)[keep]
    avail = np.asarray(windows["avail"])[1:].reshape(-1, *np.asarray(windows["avail"]).shape[2:])[keep]
    alive = (avail.sum(-1) > 1).sum(-1)
    print(f"{args.run_dir}: {len(lam)} states, {int(done_in_data.sum())} with their episode's end in the replay")
    print("alive  states  value  lambda-return  observed  value - observed")
    for k in sorted(set(alive.tolist())):
        m = (alive == k) & done_in_data
        if m.any():
            print(f"{k:5d}  {int(m.sum()):6d}  {value[m].mean():5.3f}  {lam[m].mean():13.3f}  {observed[m].mean():8.3f}"
                  f"  {value[m].mean() - observed[m].mean():+16.3f}")


if __name__ == "__main__":
    main()
