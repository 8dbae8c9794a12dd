"""An independent check of ``mabl diagnose``'s global-information probe: a plain ridge regression with
a random split, written without the probe's code, on the same kind of windows.

    python benchmarks/probe_check.py --run-dir RUN [--data RUN_OR_DATASET] [--draws 5] [--windows 100]

For each draw: ``--windows`` non-overlapping windows of ``--length`` rows at random start rows of the
data (any row, not a tiling), the run's world model filters them (``diagnose.filter_windows``: the
features have to come from the model), and for each agent a ridge regression from ``[z^a, h^a]``
(steps ``j >= 4`` whose row is real) to the global state is fitted on a random half of the windows
(penalty chosen on a random fifth of those, from the same grid) and scored on the other half by
pooled R^2 (``1 - total SSE / total SST``); the agents' values are averaged. The same for the raw own
observation. Printed beside it: ``mabl diagnose``'s ``probe_spread`` on the same run and data (its
random split, cross-validated penalty), so the two can be compared within their spreads.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

LAMBDAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)
BURN = 4


def random_windows(n_rows: int, length: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` start rows, each window ``length`` rows, no two overlapping: random candidates kept
    when they clear every window kept so far."""
    taken = np.zeros(n_rows, bool)
    starts = []
    for s in rng.permutation(n_rows - length + 1):
        if not taken[s:s + length].any():
            taken[s:s + length] = True
            starts.append(int(s))
            if len(starts) == count:
                return np.sort(np.array(starts))
    raise SystemExit(f"only {len(starts)} windows of {length} rows fit without overlap")


def ridge_r2(x_fit, y_fit, x_val, y_val, x_test, y_test) -> float:
    """Pooled held-out R^2 of ridge regression; the penalty minimises the validation SSE."""
    mu, sd = x_fit.mean(0), x_fit.std(0)
    sd[sd < 1e-8] = 1.0
    ym = y_fit.mean(0)

    def solve(lam, x, y):
        xs = (x - mu) / sd
        return np.linalg.solve(xs.T @ xs + lam * np.eye(xs.shape[1]), xs.T @ (y - ym))

    def sse(coef, x, y):
        return float(((y - ym - ((x - mu) / sd) @ coef) ** 2).sum())

    best = min(LAMBDAS, key=lambda lam: sse(solve(lam, x_fit, y_fit), x_val, y_val))
    x_all, y_all = np.concatenate([x_fit, x_val]), np.concatenate([y_fit, y_val])
    coef = solve(best, x_all, y_all)
    keep = y_test.var(0) > 1e-10
    resid = ((y_test - ym - ((x_test - mu) / sd) @ coef) ** 2).sum(0)
    total = ((y_test - y_test.mean(0)) ** 2).sum(0)
    return float(1.0 - resid[keep].sum() / total[keep].sum())


def one_draw(agent, rows: dict, length: int, count: int, rng: np.random.Generator) -> dict[str, float]:
    from mabl.diagnose import filter_windows

    starts = random_windows(len(rows["reward"]), length, count, rng)
    index = starts[None, :] + np.arange(length)[:, None]
    windows = {k: np.asarray(v)[index] for k, v in rows.items()}
    with torch.no_grad():
        _, _, filt = filter_windows(agent, windows)
    agent_feats = torch.cat([filt.post.z_a, filt.post.h_a], -1).float().cpu().numpy()  # [T, B, N, F]
    obs = np.asarray(windows["obs"], np.float64)[1:]
    state = np.asarray(windows["state"], np.float64)[1:]  # [T, B, G]
    fake = np.asarray(windows["fake"], bool)
    fake = fake.any(-1) if fake.ndim == 3 else fake
    use = ~fake[1:]
    use[:BURN] = False
    perm = rng.permutation(count)
    score, fit = perm[: count // 2], perm[count // 2:]
    val, fit = fit[: len(fit) // 5], fit[len(fit) // 5:]
    out = {}
    for name, feats in (("agent", agent_feats), ("obs", obs)):
        values = []
        for i in range(feats.shape[2]):
            def rows_of(ws, i=i, feats=feats):
                m = use[:, ws]
                return feats[:, ws, i][m].astype(np.float64), state[:, ws][m]
            values.append(ridge_r2(*rows_of(fit), *rows_of(val), *rows_of(score)))
        out[name] = float(np.mean(values))
    return out


def main() -> None:
    from mabl import diagnose as dg

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--data", help="another run directory or a dataset .npz (default: the run's replay)")
    ap.add_argument("--windows", type=int, default=100)
    ap.add_argument("--length", type=int, default=20)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    loaded = dg.load_run(args.run_dir)
    data = dg.load_data(args.data) if args.data else loaded.data
    loaded.agent.world_model.eval()
    plain = []
    for d in range(args.draws):
        torch.manual_seed(10_000 + args.seed + d)
        plain.append(one_draw(loaded.agent, data.rows, args.length, args.windows,
                              np.random.default_rng(10_000 + args.seed + d)))
    ours = dg.diagnose(args.run_dir, args.data, args.windows, args.length, seed=args.seed, draws=args.draws,
                       imagination=False)["probe_spread"]
    report = {"run_dir": args.run_dir, "data": data.source, "draws": args.draws, "windows": args.windows}
    for name in ("agent", "obs"):
        values = np.array([p[name] for p in plain])
        report[name] = {"plain_random_split": [round(v, 4) for v in values],
                        "plain_mean": round(float(values.mean()), 4), "plain_std": round(float(values.std()), 4),
                        "diagnose_mean": round(ours[name]["pooled_mean"], 4),
                        "diagnose_std": round(ours[name]["pooled_std"], 4),
                        "diagnose_range": [round(ours[name]["pooled_min"], 4), round(ours[name]["pooled_max"], 4)]}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
