"""A controlled comparison of what the world models of mabl, mabl-sg and dreamer learn, on a CPU.

Every model is trained on ONE fixed dataset for the same number of world-model updates (no policy
learning, so no model's data depends on its own policy), at the paper preset's sizes, and all are
scored by ``mabl diagnose`` on the same held-out windows. Three steps, each resumable:

    # (a) a fixed dataset: a briefly trained mappo (30k env steps) + random play on smax:3s_vs_4z;
    #     every 5th episode is held out. Writes OUT/train.npz, OUT/heldout.npz (+ provenance), OUT/mappo/
    #     (docs/DIAGNOSTICS.md's table: add --smax.reward jaxmarl --smax.state jaxmarl --smax.walls lethal)
    mabl experiment representation collect --out bench/repr
    # (b) world models, world-model updates only, as run directories OUT/models/<algo>/seed<k>
    mabl experiment representation train --out bench/repr --algos mabl,mabl-sg,dreamer --seeds 0,1,2
    # (c) mabl diagnose --data OUT/heldout.npz on the same windows for every model; OUT/scores/table.md
    mabl experiment representation score --out bench/repr
    # the per-update time at the chosen preset on this machine
    mabl experiment representation time --out bench/repr --updates 10

Budget. A paper-size world-model update (40 windows x 20 rows, 32x32 latents, GRU 256) at
smax:3s_vs_4z's sizes (N=3, O=88, A=9; G=84, JaxMARL's state), fp32, measured on an idle 2-core AVX-512 CPU with ``time
--updates 5 --threads 1`` on the collected dataset (median): mabl 1.65 s, mabl-sg 1.50 s, dreamer
0.88 s. bf16 autocast (``--amp``) was ~3x slower with one thread (mabl 4.9 s, dreamer 2.6 s). The
default of 1,000 updates per model is therefore ~27 / 25 / 15 min of one core for mabl / mabl-sg /
dreamer, the nine models ~3.4 core-hours (two ``train`` processes of one thread each share the 2
cores). Time it again with ``time`` on the machine that will do the work. For scale, a paper-preset
run makes 60 updates per episode: 1,000 updates are ~17 episodes' worth of learner calls.

Data size. ``collect --policy-episodes 150 --random-episodes 100`` gave 10,137 training and 2,734
held-out rows (mean episode length ~50; mappo 30k steps, mean return 0.47 against random's 0.31).
1,000 updates of 40 x 20 rows would pass over 10k rows ~80 times, so the defaults collect 400 +
200 episodes (~25k training rows, ~32 passes) to keep paper-size models from memorising the data.

``train`` writes ordinary checkpoints (config, spec, the learner's state) without a replay:
``mabl diagnose --run-dir OUT/models/mabl/seed0 --data OUT/heldout.npz`` reads them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mabl.algo import build_learner
from mabl.checkpoint import atomic_write_bytes, latest_checkpoint, load_checkpoint, save_checkpoint
from mabl.config import from_dict, to_dict
from mabl.diagnose import Data, diagnose, episode_rows, load_dataset, replay_rows, save_dataset
from mabl.errors import MablError
from mabl.presets import build_config
from mabl.replay import SequenceReplay
from mabl.run_log import count_lines, truncate_logs

ALGOS = ("mabl", "mabl-sg", "dreamer")
DEFAULT_UPDATES = 1000


# ------------------------------------------------------------------------------ (a) collect
class RandomPolicy:
    """Uniform random actions: over the available ones (discrete) or inside the bounds (continuous)."""

    def __init__(self, spec, seed: int):
        self.spec, self.rng = spec, np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def act(self, obs, avail=None, deterministic: bool = False):
        spec = self.spec
        if not spec.discrete:
            return self.rng.uniform(spec.action_low, spec.action_high, (spec.n_agents, spec.action_dim)), {}
        if avail is None:
            return self.rng.integers(0, spec.n_actions, spec.n_agents), {}
        return np.array([self.rng.choice(np.flatnonzero(row)) for row in avail]), {}


def _learner_of(run_dir: Path):
    state = load_checkpoint(latest_checkpoint(run_dir))
    cfg = dataclasses.replace(from_dict(state["config"]), device="cpu")
    from mabl.envs.base import EnvSpec

    agent = build_learner(EnvSpec(**state["spec"]), cfg, torch.device("cpu"))
    agent.load_state_dict(state["agent"])
    return agent, state


def _mean(values: list) -> float | None:
    return float(np.mean(values)) if values else None


def collect(args) -> None:
    from mabl.config import env_options
    from mabl.envs import make_env
    from mabl.rollout import run_episode
    from mabl.train import episode_seed, train

    out = Path(args.out)
    mappo_dir = out / "mappo"
    readings = {f"smax.{option}": getattr(args, option) for option in ("reward", "state", "walls")
                if getattr(args, option) is not None}
    cfg = build_config(args.mappo_preset, {"env": args.env, "algo": "mappo", "steps": args.mappo_steps,
                                           "seed": args.seed, "run_dir": str(mappo_dir), "progress": False,
                                           "eval_every": 0, "device": "cpu", "threads": args.threads, **readings})
    t0 = time.perf_counter()
    train(cfg)  # resumes / returns at once when already trained
    mappo_s = time.perf_counter() - t0
    agent, state = _learner_of(mappo_dir)
    env = make_env(args.env, seed=args.seed, options=env_options(cfg))  # the mappo run's readings
    sources = ["mappo"] * args.policy_episodes + ["random"] * args.random_episodes
    order = np.random.default_rng(args.seed).permutation(len(sources))  # interleave the two sources
    policies = {"mappo": agent.policy(), "random": RandomPolicy(env.spec, args.seed)}
    episodes = []
    for i, which in enumerate(sources[j] for j in order):
        ep = run_episode(env, policies[which], episode_seed(args.seed, 7, i))
        episodes.append((which, ep))
    rng = np.random.default_rng(args.seed + 1)  # the absorbing rows' random actions
    parts = {"train": [e for i, e in enumerate(episodes) if i % args.heldout_every != args.heldout_every - 1],
             "heldout": [e for i, e in enumerate(episodes) if i % args.heldout_every == args.heldout_every - 1]}
    for name, eps in parts.items():
        rows = episode_rows(env.spec, [ep for _, ep in eps], rng)
        provenance = {
            "env": args.env, "split": name, "heldout_every": args.heldout_every, "seed": args.seed,
            "episodes": {s: sum(w == s for w, _ in eps) for s in ("mappo", "random")},
            "transitions": int(sum(ep.length for _, ep in eps)), "rows": len(rows["reward"]),
            "mean_return": {s: _mean([ep.ret for w, ep in eps if w == s]) for s in ("mappo", "random")},
            "win_rate": {s: _mean([bool(ep.win) for w, ep in eps if w == s and ep.win is not None])
                         for s in ("mappo", "random")} if env.spec.has_win else None,
            "mappo_run": {"dir": str(mappo_dir), "preset": args.mappo_preset, "steps": state["counters"]["env_step"],
                          "seconds_this_call": round(mappo_s, 1)},
            "mappo_policy": "stochastic (sampled actions)", "random_policy": "uniform over available actions",
        }
        save_dataset(out / f"{name}.npz", rows, env.spec, provenance)
        print(f"{out / f'{name}.npz'}: {provenance['rows']} rows, episodes {provenance['episodes']}, "
              f"mean return {provenance['mean_return']}")


# ------------------------------------------------------------------------------ (b) train
def _replay_of(data: Data) -> SequenceReplay:
    """The dataset's rows as a full replay (windows never wrap: it holds exactly the rows)."""
    replay = SequenceReplay(data.spec, data.n_rows)
    for key, array in replay.data.items():
        array[:] = data.rows[key]
    replay.pos, replay.size = 0, data.n_rows
    replay.real_rows = int((~data.rows["fake"]).sum())
    return replay


def model_config(args, algo: str, seed: int, env: str, run_dir: Path):
    overrides = {"env": env, "algo": algo, "seed": seed, "run_dir": str(run_dir), "device": args.device,
                 "threads": args.threads, "progress": False, "amp": args.amp}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise MablError(f"--set {item!r} must look like FIELD=VALUE")
        overrides[key.strip()] = value.strip()
    return build_config(args.preset, overrides)


def train_one(args, data: Data, algo: str, seed: int) -> Path:
    """World-model updates only, on windows of the fixed dataset; checkpoints every
    ``--checkpoint-every`` updates and at the end; resumes from the newest checkpoint."""
    from mabl.run_log import RunLogger

    env = data.provenance["env"]
    run_dir = Path(args.out) / "models" / algo / f"seed{seed}"
    cfg = model_config(args, algo, seed, env, run_dir)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    agent = build_learner(data.spec, cfg, device)
    replay = _replay_of(data)
    done = 0
    path = latest_checkpoint(run_dir)
    if path is not None:
        state = load_checkpoint(path)
        if state["config"] != to_dict(cfg):
            raise MablError(f"{run_dir} was trained with other settings; use another --out")
        agent.load_state_dict(state["agent"])
        torch.set_rng_state(state["rng"]["torch"])
        rng.bit_generator.state = json.loads(state["rng"]["numpy"])
        done = state["counters"]["model_updates"]
        truncate_logs(run_dir, state["log_lines"])
    elif (run_dir / "metrics.jsonl").exists():
        truncate_logs(run_dir, {})
    if done >= args.updates:
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "config.json", json.dumps(to_dict(cfg), indent=2).encode())
    log = RunLogger(run_dir, tensorboard=False)
    window: list[dict] = []
    t_window = time.perf_counter()
    for update in range(done + 1, args.updates + 1):
        rows = replay.sample(cfg.model.batch_size, cfg.model.seq_len, rng)
        window.append({k: float(v) for k, v in agent.train_world_model(rows).items()})
        if update % args.log_every == 0 or update == args.updates:
            seconds = (time.perf_counter() - t_window) / len(window)
            log.write("metrics.jsonl", {"kind": "learner", "model_updates": update, "env_step": update,
                                        **{f"model/{k}": float(np.mean([w[k] for w in window])) for k in window[0]},
                                        "update_s": seconds})
            window, t_window = [], time.perf_counter()
        if update % args.checkpoint_every == 0 or update == args.updates:
            save_checkpoint(run_dir, update, {
                "config": to_dict(cfg), "spec": dataclasses.asdict(data.spec), "agent": agent.state_dict(),
                "replay": None, "counters": {"model_updates": update, "env_step": update},
                "rng": {"torch": torch.get_rng_state(), "numpy": json.dumps(rng.bit_generator.state)},
                "log_lines": {"metrics.jsonl": count_lines(run_dir / "metrics.jsonl"), "eval.jsonl": 0},
                "dataset": str(args.data)})
    log.close()
    return run_dir


def train_all(args) -> None:
    args.data = args.data or str(Path(args.out) / "train.npz")
    data = load_dataset(args.data)
    for algo in args.algos.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            t0 = time.perf_counter()
            run_dir = train_one(args, data, algo, seed)
            print(f"{run_dir}: {args.updates} updates ({time.perf_counter() - t0:.0f} s in this call)", flush=True)


def time_updates(args) -> None:
    """Median seconds of ``--updates`` world-model updates (after one warm-up) per algorithm."""
    path = Path(args.data or Path(args.out) / "train.npz")
    if path.exists():
        data = load_dataset(path)
    else:  # the update's cost does not depend on the rows' values: random rows of the env's sizes
        from mabl.bench import fill_random_episodes
        from mabl.envs import make_env

        spec = make_env(args.env).spec
        replay = SequenceReplay(spec, 12_000)
        fill_random_episodes(replay, (spec.n_agents, spec.n_actions, spec.obs_dim, spec.state_dim),
                             np.random.default_rng(0), rows=10_000)
        data = Data(replay_rows(replay), spec, "random rows", {"env": args.env})
        print(f"{path} does not exist: timing on random rows of {args.env}'s sizes", flush=True)
    env = data.provenance["env"]
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {}
    for algo in args.algos.split(","):
        cfg = model_config(args, algo, 0, env, Path("unused"))
        agent = build_learner(data.spec, cfg, torch.device(args.device))
        replay, rng = _replay_of(data), np.random.default_rng(0)
        agent.train_world_model(replay.sample(cfg.model.batch_size, cfg.model.seq_len, rng))
        times, cpu = [], []
        for _ in range(args.updates):
            rows = replay.sample(cfg.model.batch_size, cfg.model.seq_len, rng)
            t0, c0 = time.perf_counter(), time.process_time()
            agent.train_world_model(rows)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        # CPU seconds: what the update costs this process, near its wall time on an idle machine with
        # 1 thread even when other jobs share the cores
        result[algo] = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                        "median_cpu_s": statistics.median(cpu), "updates": args.updates,
                        "threads": torch.get_num_threads(), "preset": args.preset, "amp": args.amp}
        print(f"{algo}: median {result[algo]['median_s'] * 1000:.0f} ms per world-model update "
              f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}; CPU {statistics.median(cpu) * 1000:.0f} ms; "
              f"{args.updates} updates, {torch.get_num_threads()} threads, preset {args.preset})", flush=True)
    print(json.dumps(result))


# ------------------------------------------------------------------------------ (c) score
COLUMNS = [
    ("state R^2 [z^a,h^a]", lambda r: r["probe_state_r2"]["mean"]),
    ("state R^2 obs", lambda r: r["probe_state_r2_obs"]["current"]["mean"]),
    ("state R^2 4 obs", lambda r: r["probe_state_r2_obs"]["stacked"]["mean"]),
    ("state R^2 [z^g,h^g]", lambda r: (r["probe_state_r2_global"] or {}).get("mean")),
    ("others' obs R^2 [z^a,h^a]", lambda r: r["probe_others_obs_r2"]["agent"]["mean"]),
    ("obs MSE k=1", lambda r: r["open_loop"][0]["obs_error"]),
    ("obs MSE k=H", lambda r: r["open_loop"][-1]["obs_error"]),
    ("reward corr k=1", lambda r: r["open_loop"][0]["reward_corr"]),
    ("cont Brier k=1", lambda r: r["open_loop"][0]["cont_brier"]),
    ("KL agent", lambda r: r["latents"]["agent"]["kl"]),
    ("KL global", lambda r: (r["latents"]["global"] or {}).get("kl")),
]


def _cell(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def _updates_of(run_dir: Path) -> int:
    path = latest_checkpoint(run_dir)
    return 0 if path is None else int(path.stem.split("_")[-1])


def score(args) -> None:
    """Score every model that has exactly ``--updates`` updates (others are named and skipped); a
    model's scores/<algo>_<seed>.json is reused while its checkpoint and the scoring settings are the same."""
    data = args.data or str(Path(args.out) / "heldout.npz")
    models = Path(args.out) / "models"
    out = Path(args.out) / "scores"
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.windows == 0:
        args.windows = load_dataset(data).n_rows // args.length
    settings = {"data": str(Path(data)), "windows": args.windows, "length": args.length, "horizon": args.horizon,
                "seed": args.seed, "split": args.split}
    results: dict[str, list[dict]] = {}
    for algo_dir in sorted(p for p in models.iterdir() if p.is_dir()) if models.is_dir() else []:
        for run_dir in sorted(p for p in algo_dir.iterdir() if p.is_dir()):
            done = _updates_of(run_dir)
            if done != args.updates:
                print(f"skipped {run_dir}: {done} of {args.updates} updates", flush=True)
                continue
            cached = out / f"{algo_dir.name}_{run_dir.name}.json"
            res = json.loads(cached.read_text()) if cached.exists() else None
            if res is None or res["meta"]["checkpoint"] != str(latest_checkpoint(run_dir)) or any(
                    res["meta"].get(k) != v for k, v in settings.items()):
                # world-model updates only: the actor and critic never trained, so no imagination block
                res = diagnose(run_dir, data, args.windows, args.length, args.horizon, args.seed, args.device,
                               imagination=False, split=args.split, draws=1)
                atomic_write_bytes(cached, json.dumps(res, indent=1).encode())
                print(f"scored {run_dir}", flush=True)
            results.setdefault(algo_dir.name, []).append(res)
    if not results:
        raise MablError(f"no model under {models} has {args.updates} updates; run `train` first (or pass the "
                        "--updates its models were trained for)")
    first = next(iter(results.values()))[0]["meta"]
    lines = [f"World models after {args.updates} updates each, on the same held-out windows ({data}: "
             f"{first['windows']} windows of {first['length']} rows, seed {first['seed']}; open loop H={first['horizon']}). "
             "Mean ± std over seeds (population std); "
             + ("probe R^2 on a random half of the windows, fitted on the other half."
                if first.get("split", "data_order") == "random" else
                "probe R^2 on the later half of the windows, fitted on the earlier half."), "",
             "| algo | seeds | " + " | ".join(name for name, _ in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for algo, runs in results.items():
        lines.append(f"| {algo} | {len(runs)} | " + " | ".join(_cell([get(r) for r in runs]) for _, get in COLUMNS) + " |")
    table = "\n".join(lines) + "\n"
    atomic_write_bytes(out / "table.md", table.encode())
    print(table)


# ------------------------------------------------------------------------------ CLI
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mabl experiment representation",
                                description="controlled world-model comparison on one fixed dataset: (a) collect, "
                                            "(b) train, (c) score, each resumable; time: ms per world-model update")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="(a) the fixed dataset: mappo + random play")
    c.add_argument("--out", required=True)
    c.add_argument("--env", default="smax:3s_vs_4z")
    c.add_argument("--mappo-steps", type=int, default=30_000, help="env steps of mappo training (default 30000)")
    c.add_argument("--mappo-preset", default="quick", help="preset of the mappo run (default quick)")
    c.add_argument("--policy-episodes", type=int, default=400, help="episodes played by the mappo policy (default 400)")
    c.add_argument("--random-episodes", type=int, default=200, help="episodes of uniform random play (default 200)")
    c.add_argument("--heldout-every", type=int, default=5, help="every k-th episode goes to heldout.npz")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--threads", type=int, default=2)
    for option in ("reward", "state", "walls"):
        c.add_argument(f"--smax.{option}", dest=option, help=f"SMAX's {option} reading for the mappo run and the "
                       "collected episodes (default: mabl train's)")
    for name, helptext in (("train", "(b) world models on the dataset"), ("time", "per-update time")):
        t = sub.add_parser(name, help=helptext)
        t.add_argument("--out", required=True)
        t.add_argument("--data", help="dataset (default OUT/train.npz)")
        t.add_argument("--algos", default=",".join(ALGOS))
        t.add_argument("--preset", default="paper", help="sizes of the world models (default paper)")
        t.add_argument("--updates", type=int, default=DEFAULT_UPDATES if name == "train" else 10)
        t.add_argument("--device", default="cpu")
        t.add_argument("--threads", type=int, default=2)
        t.add_argument("--amp", action="store_true", help="bf16 autocast (default fp32)")
        t.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="config override")
        if name == "time":
            t.add_argument("--env", default="smax:3s_vs_4z", help="sizes to time when there is no dataset yet")
        if name == "train":
            t.add_argument("--seeds", default="0,1,2")
            t.add_argument("--checkpoint-every", type=int, default=250)
            t.add_argument("--log-every", type=int, default=50)
    s = sub.add_parser("score", help="(c) mabl diagnose on the held-out windows; scores/table.md")
    s.add_argument("--out", required=True)
    s.add_argument("--data", help="dataset (default OUT/heldout.npz)")
    s.add_argument("--windows", type=int, default=0,
                   help="held-out windows (default 0: as many as fit without overlap, i.e. every held-out row)")
    s.add_argument("--length", type=int, default=20)
    s.add_argument("--horizon", type=int, default=8)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--split", choices=["random", "data_order"], default="random",
                   help="the probes' split of the windows (mabl diagnose --split)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--updates", type=int, default=DEFAULT_UPDATES, help="score models with exactly this many updates")
    return p


def main(argv: list[str] | None = None) -> int:
    """``mabl experiment representation STEP ...``; bad input raises :class:`MablError` (one line)."""
    args = parser().parse_args(argv)
    for name in ("updates", "checkpoint_every", "log_every", "mappo_steps", "heldout_every", "windows"):
        if getattr(args, name, 1) < (0 if name == "windows" and args.command == "score" else 1):
            raise MablError(f"--{name.replace('_', '-')}={getattr(args, name)} must be > 0")
    {"collect": collect, "train": train_all, "time": time_updates, "score": score}[args.command](args)
    return 0
