"""In imagination, may a unit attack an enemy it could not attack on the env? The world model's
action-availability head on SMAX replay rows, filtered (posterior) and open loop (prior, k steps
after the last filtered row, under the replay's own actions), split by whether the env allowed an
attack and by whether the unit was the team's last one alive.

    python benchmarks/avail_open_loop.py --run-dir RUN [--windows 300] [--context 10] [--horizon 8] [--seed 0]

Imagination samples each action's availability from this head (independent Bernoulli; SPEC.md
section 3), so ``P(attack)`` = 1 - prod over enemies of (1 - p_attack) is the probability that a
sampled mask lets the unit attack. SMAX action layout: 0-3 move, 4 stop, 5.. attack enemy 0..; a
unit is alive where it may move (a dead one may only stop). Uses ``mabl.diagnose``'s window draw:
``--windows`` non-overlapping 20-row windows of the newest checkpoint's replay; filtered rows j >= 4,
open-loop rows only within the context's episode; absorbing rows excluded.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

FIRST_ATTACK = 5
"""SMAX's action layout: 0-3 move, 4 stop, 5.. attack enemy 0.."""


def attack_rates(p: np.ndarray, avail: np.ndarray, ok: np.ndarray) -> list[tuple[float | None, int]]:
    """``p [.., N, A]`` the head's availability probabilities, ``avail [.., N, A]`` the env's masks,
    ``ok [..]`` the rows to count. For units alive on those rows (they may move): the mean
    probability that a sampled mask allows some attack, 1 - prod(1 - p_attack), and the number of
    unit-rows, in four groups: env allowed no attack / some attack, each for all living units and
    for the team's last living unit only. ``None`` where a group is empty."""
    alive = avail[..., :4].any(-1) & ok[..., None]
    last = alive & (alive.sum(-1, keepdims=True) == 1)
    may = avail[..., FIRST_ATTACK:].any(-1)
    p_attack = 1.0 - np.prod(1.0 - p[..., FIRST_ATTACK:], -1)
    return [(float(p_attack[m].mean()) if m.any() else None, int(m.sum()))
            for m in (alive & ~may, alive & may, last & ~may, last & may)]


def _cells(rates: list[tuple[float | None, int]]) -> str:
    return " | ".join("- (0)" if mean is None else f"{mean:.3f} ({n})" for mean, n in rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--windows", type=int, default=300)
    parser.add_argument("--context", type=int, default=10)
    parser.add_argument("--horizon", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    length = 20
    if args.context <= 4 or args.horizon < 1 or args.context + args.horizon > length - 1:
        raise SystemExit(f"--context {args.context} + --horizon {args.horizon} must fit in {length - 1} rows, context > 4")

    from mabl import diagnose as dg
    loaded = dg.load_run(args.run_dir)
    spec, rows, model = loaded.spec, loaded.data.rows, loaded.agent.world_model
    if not spec.name.startswith("smax:") or rows.get("avail") is None:
        raise SystemExit(f"{args.run_dir} is a {spec.name} run; this script reads SMAX's action layout and masks")
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)  # the prior steps sample their latents
    starts, windows = dg.sample_windows(loaded.data, length, min(args.windows, loaded.data.n_rows // length), rng)
    model.eval()
    with torch.no_grad():
        batch, prev, filt = dg.filter_windows(loaded.agent, windows)
        filtered = torch.sigmoid(model.avail_logits(filt.post)).float().numpy()  # [T, B, N, A]
        ahead = dg.open_loop_predictions(model, filt.post, prev, args.context, args.horizon)["avail"]
    avail = batch.avail.numpy().astype(bool)  # [T, B, N, A], aligned with filt.post
    real = ~np.asarray(windows["fake"], bool)[1:]
    ok = real.copy()
    ok[:dg.BURN_IN] = False
    print(f"{args.run_dir}: {len(starts)} windows; P(a sampled mask lets the unit attack), (rows of living units)")
    print("| rows | env: no attack | env: attack | last unit, env: no attack | last unit, env: attack |")
    print("|---|---|---|---|---|")
    print("| filtered (posterior) | " + _cells(attack_rates(filtered, avail, ok)) + " |")
    sl = slice(args.context, args.context + args.horizon)
    same_episode = ~np.cumsum(batch.first.numpy()[sl], 0).astype(bool)
    for k in range(args.horizon):
        print(f"| open loop, k = {k + 1} | " + _cells(attack_rates(ahead[k], avail[sl][k], (real[sl] & same_episode)[k]))
              + " |")


if __name__ == "__main__":
    main()
