"""The command line's tool commands: ``mabl bench``, ``sweep``, ``report``, ``archive``, ``diagnose``
and ``experiment`` (their parsers and what they run); :mod:`mabl.cli` parses and dispatches.

    mabl bench speed [--algo mabl] [--preset paper] [--env smax:3s_vs_4z] [--amp [BOOL]] [--compile [BOOL]] [--json]
    mabl bench compare --a "compile=true" --b "" [--phase model|policy|call] [--pairs N] [--json]
    mabl bench env --env NAME [--steps N]
    mabl bench gpu [--out DIR] [--device cuda|cpu] [--quick] ...   (python -m mabl.gpu_check)
    mabl sweep --algos mabl,mappo --envs smax:3m --seeds 0,1,2 [--preset P] [--steps N] [--workers W] --out DIR
    mabl report DIR [DIR ...] --out REPORT_DIR | --bins W [--end STEP] | --loss-terms [--bins W] [--at STEPS]
    mabl archive DIR [DIR ...] --out ARCHIVE_DIR
    mabl diagnose --run-dir DIR [--data DIR|FILE] [--by-alive] [--advantages] [--attack-masks] [--json] [--out DIR]
    mabl experiment representation {collect,train,score,time} --out DIR ...
    mabl experiment reward-loss --run-dir DIR [--updates 400] [--losses smooth_l1,mse]
"""

from __future__ import annotations

import argparse
import sys

from mabl.algo import ALGORITHMS
from mabl.errors import MablError


def parse_bool(text: str) -> bool:
    """A flag's boolean, written as on `mabl train`: true/false, 1/0, yes/no, on/off."""
    low = str(text).lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true or false)")


def add_tool_parsers(sub) -> None:
    """The subparsers of the tool commands, on ``sub`` (the ``mabl`` parser's subparsers)."""
    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    speed = bench_sub.add_parser("speed", help="learner speed on synthetic batches of a map's sizes")
    speed.add_argument("--preset", default="paper", help="preset whose sizes and schedule are timed (default paper)")
    speed.add_argument("--algo", default="mabl", choices=[n for n, a in ALGORITHMS.items() if a.world_model],
                       help="world-model algorithm whose learner is timed (default mabl)")
    speed.add_argument("--env", "--map", dest="env", default="smax:3s_vs_4z",
                       help="the task whose sizes are timed: smax:3s_vs_4z (N=3,A=10,O=42,G=61) or smac:corridor "
                            "(the family prefix may be left out; --map is the older name of this flag)")
    speed.add_argument("--device", default="auto", help="'auto' (CUDA when present, as everywhere in mabl), cpu, cuda "
                       "or cuda:K (default auto)")
    speed.add_argument("--amp", nargs="?", const=True, default=False, type=parse_bool, metavar="BOOL",
                       help="bf16 autocast for the learner, as `mabl train --amp true` (--amp alone means true)")
    speed.add_argument("--compile", nargs="?", const=True, default=False, type=parse_bool, metavar="BOOL",
                       help="compile the world-model loss and imagination (as `mabl train --compile true`; --compile "
                            "alone means true); compiling is not timed")
    speed.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    speed.add_argument("--repeats", type=int, default=10,
                       help="timed world-model updates; the median is reported (default 10)")
    speed.add_argument("--policy-repeats", type=int, default=3,
                       help="timed policy iterations; the median is reported (default 3)")
    speed.add_argument("--json", action="store_true", help="print one JSON object")
    cmp = bench_sub.add_parser("compare", help="two learner variants timed in interleaved pairs in one process "
                               "(median of the per-pair ratios)", description=(
        "Builds the learner of each variant on random episodes of a map's sizes (as `mabl bench speed`) and times one "
        "phase of both alternately (A B, B A, ...) after warm-up pairs, so that a drift of the machine falls on both "
        "alike. A variant is FIELD=VALUE,... on the preset (config paths as `mabl train` flags without the dashes; amp, "
        "compile and algo too); '' is the preset itself. E.g. --a compile=true --b '' or --a algo=mag --b algo=mamba."))
    cmp.add_argument("--a", required=True, metavar="FIELD=VALUE,...", help="variant A ('' = the preset)")
    cmp.add_argument("--b", required=True, metavar="FIELD=VALUE,...", help="variant B ('' = the preset)")
    cmp.add_argument("--preset", default="quick", help="preset both variants start from (default quick)")
    cmp.add_argument("--algo", default="mabl", help="world-model algorithm of both unless a variant sets algo= "
                     "(default mabl)")
    cmp.add_argument("--env", "--map", dest="env", default="smax:3s_vs_4z",
                     help="the task whose sizes are timed, as for `bench speed` (default smax:3s_vs_4z)")
    cmp.add_argument("--phase", choices=("model", "imagination", "policy", "call"), default="model",
                     help="one timed repeat: a world-model update (default), an imagination, a policy iteration "
                          "(imagination + PPO), or a learner call of the preset's schedule")
    cmp.add_argument("--pairs", type=int, default=10, help="timed pairs (default 10)")
    cmp.add_argument("--warmup", type=int, default=1, help="untimed pairs first (default 1; a compiled variant "
                     "compiles there)")
    cmp.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:K or auto")
    cmp.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    cmp.add_argument("--json", action="store_true", help="print one JSON object (with every timed repeat)")
    gpu = bench_sub.add_parser("gpu", help="the GPU check: benchmarks, profiles and validates mabl on one GPU into one "
                               "folder (`mabl bench gpu --help`; docs/PERFORMANCE.md, GPU check)", add_help=False)
    gpu.add_argument("rest", nargs=argparse.REMAINDER, metavar="FLAG ...", help="its flags, e.g. --out DIR --quick")
    envb = bench_sub.add_parser("env", help="env-steps/s of an environment adapter under uniform random actions")
    envb.add_argument("--env", required=True, help="env name, e.g. flatland:5_agents (see `mabl envs`)")
    envb.add_argument("--steps", type=int, default=2000, help="timed env steps (default 2000)")
    envb.add_argument("--seed", type=int, default=0)
    envb.add_argument("--json", action="store_true", help="print one JSON object")

    sw = sub.add_parser("sweep", help="run algorithms x tasks x seeds, locally or on a Ray cluster", description=(
        "Each run is an ordinary run directory OUT/<env>/<algo>/seed<k>. Re-running the same sweep skips "
        "finished runs and resumes interrupted ones; a crashed run is reported and the others go on."))
    sw.add_argument("--algos", help="comma-separated algorithms, e.g. mabl,mappo")
    sw.add_argument("--envs", help="comma-separated tasks, e.g. smax:3m,smax:3s_vs_4z")
    sw.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    sw.add_argument("--preset", help="preset of every run (default quick)")
    sw.add_argument("--steps", type=int, help="env steps per run (default 100000)")
    sw.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="config override for every run, e.g. --set model.hidden=128 (repeatable)")
    sw.add_argument("--file", help="TOML file with algos, envs, seeds, preset, steps and a [set] table; flags win")
    sw.add_argument("--out", required=True, help="sweep directory")
    sw.add_argument("--workers", type=int, default=1, help="runs at once on this machine (default 1)")
    sw.add_argument("--threads", type=int, default=0, help="torch threads (Ray: CPUs) per run (default CPUs/workers)")
    sw.add_argument("--device", default="auto", help="device of every run (default auto: the GPU is shared)")
    sw.add_argument("--ray-address", help="run on this Ray cluster ('auto' or host:port) instead of locally")
    sw.add_argument("--gpus-per-run", type=float, default=0.0, help="Ray: GPUs requested per run (e.g. 0.25)")

    rp = sub.add_parser("report", help="Table 1-style table and learning curves from run or sweep directories")
    rp.add_argument("dirs", nargs="+", metavar="DIR", help="run or sweep directories")
    rp.add_argument("--out", help="report directory (table.md, summary.json, PNG curves); needed unless --bins or "
                    "--loss-terms prints tables instead")
    rp.add_argument("--window", type=int, default=15_000, help="final env steps the table averages over (default 15000)")
    rp.add_argument("--ema", type=float, default=0.9, help="EMA smoothing of the curves, weight of the past (default 0.9)")
    rp.add_argument("--metric", choices=("auto", "return"), default="auto", help="table and curve metric: auto = win "
                    "rate where the task logs wins, arrived %% where it logs Flatland's arrived_fraction, else return "
                    "(default); return = the episode return everywhere")
    rp.add_argument("--bins", type=float, metavar="W", help="print, per run and per window (end - W, end] of env steps, "
                    "the training episodes ending in it: count, mean return, win %%, mean length")
    rp.add_argument("--end", type=float, metavar="STEP", help="with --bins: last env step covered (default each run's "
                    "last episode), e.g. to compare an unfinished run with finished ones over the same steps")
    rp.add_argument("--loss-terms", action="store_true", help="print instead, per run and window (width --bins, "
                    "default 2500), the mean of each world-model loss term over the learner calls in it and its share "
                    "of the loss")
    rp.add_argument("--at", metavar="STEPS", help="with --loss-terms: only the windows ending at these env steps, "
                    "comma-separated (default every window)")

    ar = sub.add_parser("archive", help="copy the logs of runs (config, gzip-compressed metrics and eval) without "
                        "their checkpoints, e.g. to keep a study's results in git; 'mabl report' reads the copy")
    ar.add_argument("dirs", nargs="+", metavar="DIR", help="run or sweep directories")
    ar.add_argument("--out", required=True, help="archive directory; runs keep their paths relative to each DIR")

    dg = sub.add_parser("diagnose", help="look inside a run's world model: global-information probe, open-loop "
                        "prediction, imagination fidelity, latent health (docs/DIAGNOSTICS.md)")
    dg.add_argument("--run-dir", "--run_dir", dest="run_dir", required=True,
                    help="run directory of mabl, mabl-sg, dreamer or mamba (newest checkpoint)")
    dg.add_argument("--data", help="score on this data instead of the run's replay: another run directory (its "
                    "replay) or a dataset .npz (`mabl experiment representation collect`); same env sizes")
    dg.add_argument("--windows", type=int, default=None, help="non-overlapping windows drawn (default 100, or as many "
                    "as fit in a short run's replay; half fit the probes, half score them)")
    dg.add_argument("--length", type=int, default=20, help="rows per window (default 20)")
    dg.add_argument("--horizon", type=int, default=8, help="open-loop steps k = 1..H (default 8)")
    dg.add_argument("--stack", type=int, default=4, help="observations stacked for the raw-observation reference "
                    "probe (default 4)")
    dg.add_argument("--seed", type=int, default=0, help="seed of the window draw, the probe split and the model's "
                    "sampling")
    dg.add_argument("--split", choices=["random", "data_order"], default="random",
                    help="probe windows: a random half fits, the rest score (default); data_order: the earlier half "
                    "fits, the later half scores (extrapolation across the policies that wrote the data)")
    dg.add_argument("--draws", type=int, default=5, help="window draws (seeds SEED .. SEED+DRAWS-1) over which the "
                    "state probes' spread is reported (default 5; 1: none)")
    dg.add_argument("--device", default="auto", help="'auto' (CUDA when present, as everywhere in mabl), cpu, cuda "
                    "or cuda:K (default auto)")
    dg.add_argument("--json", action="store_true", help="print one JSON object")
    dg.add_argument("--out", help="also write diagnose.json and PNG plots (error vs k; probe R^2 per state feature)")
    dg.add_argument("--by-alive", action="store_true", help="add a block: critic value and imagined lambda-return "
                    "against the observed return, grouped by the number of living units (on 300 windows)")
    dg.add_argument("--advantages", action="store_true", help="add a block: the raw imagined advantages' spread "
                    "before PPO's normalisation (on 64 windows)")
    dg.add_argument("--attack-masks", action="store_true", help="add a block (SMAX): the probability that a sampled "
                    "action mask lets a living unit attack, filtered and open loop, by what the env allowed (on 300 "
                    "windows; open loop from a 10-step context)")
    dg.add_argument("--living", action="store_true", help="add a block (action masks): living units and survival k "
                    "steps after a real state, in the replay, in the model under the replay's actions and in the model "
                    "under the actor (on 300 windows; a 10-step context)")
    dg.add_argument("--living-horizon", type=int, default=30, metavar="K", help="steps k = 1..K of --living (default 30)")
    dg.add_argument("--living-fresh", type=int, default=0, metavar="EPISODES", help="--living on this many new "
                    "episodes of the run's policy, played as training collects (default 0: the run's replay, "
                    "written by older policies too)")
    dg.add_argument("--only-blocks", action="store_true", help="with --by-alive/--advantages/--attack-masks/--living: "
                    "print only those blocks (skips the probes and the open loop)")

    ex = sub.add_parser("experiment", help="controlled experiments: representation = the world models of mabl, mabl-sg "
                        "and dreamer trained on one fixed dataset and scored by diagnose (docs/DIAGNOSTICS.md); "
                        "reward-loss = a run's world model trained on under each reward loss (docs/PERFORMANCE.md)")
    ex.add_argument("name", choices=("representation", "reward-loss"), help="the experiment")
    ex.add_argument("rest", nargs=argparse.REMAINDER, metavar="...", help="its flags (representation: a step first, "
                    "collect, train, score or time); `mabl experiment NAME --help`")



def cmd_bench(args: argparse.Namespace) -> None:
    if args.bench_command == "gpu":
        from mabl.gpu_check import main as gpu_check

        code = gpu_check(args.rest)
        if code:
            raise SystemExit(code)
        return
    if args.bench_command == "env":
        import json

        from mabl.bench import bench_env

        if args.steps <= 0:
            raise MablError(f"--steps={args.steps} must be > 0")
        result = bench_env(args.env, args.steps, args.seed)
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{result['env']}: {result['env_steps_per_s']:.0f} env-steps/s ({result['steps']} steps, "
                  f"{result['episodes']} episodes, reset {result['reset_ms']:.1f} ms, random actions)")
        return
    import torch

    from mabl.bench import bench_speed, format_result

    map_name = args.env.partition(":")[2] if ":" in args.env else args.env
    if args.bench_command == "compare":
        import json

        from mabl.bench_compare import bench_compare, format_compare

        if args.threads:
            torch.set_num_threads(args.threads)
        result = bench_compare(args.a, args.b, args.preset, map_name, args.device, args.algo, args.phase, args.pairs,
                               args.warmup)
        print(json.dumps(result) if args.json else format_compare(result))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.repeats <= 0 or args.policy_repeats <= 0:
        raise MablError("--repeats and --policy-repeats must be > 0")
    result = bench_speed(args.preset, map_name, args.device, args.amp, args.repeats, args.policy_repeats,
                         compile=args.compile, algo=args.algo)
    print(format_result(result, as_json=args.json))


def cmd_sweep(args: argparse.Namespace) -> None:
    from mabl.sweep import load_spec_file, make_spec, run_sweep

    data = load_spec_file(args.file) if args.file else {}
    overrides = dict(data.get("set", {}))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MablError(f"--set {item!r} must look like FIELD=VALUE, e.g. --set model.hidden=128")
        overrides[key.strip()] = value.strip()
    pick = lambda flag, key, default: flag if flag is not None else data.get(key, default)  # noqa: E731
    spec = make_spec(pick(args.algos, "algos", None), pick(args.envs, "envs", None), pick(args.seeds, "seeds", None),
                     pick(args.preset, "preset", "quick"), pick(args.steps, "steps", 100_000), overrides)
    if spec.steps <= 0:
        raise MablError(f"--steps={spec.steps} must be > 0")
    outcomes = run_sweep(spec, args.out, args.workers, args.threads, args.device, args.ray_address, args.gpus_per_run)
    failed = [o for o in outcomes if o.status == "failed"]
    counts = {k: sum(o.status == k for o in outcomes) for k in ("finished", "skipped", "failed")}
    print(f"sweep {args.out}: {counts['finished']} finished, {counts['skipped']} already done, {counts['failed']} failed"
          + "".join(f"\n  failed: {o.run} (exit {o.returncode}); log {o.log}" for o in failed))
    if failed:
        raise SystemExit(1)


def _report_tables(args: argparse.Namespace) -> None:
    from mabl.report.runs import find_runs
    from mabl.report.windows import format_episode_windows, format_loss_terms

    width = args.bins if args.bins is not None else 2500.0
    if width <= 0:
        raise MablError(f"--bins={width:g} must be > 0 env steps")
    if args.end is not None and args.end <= 0:
        raise MablError(f"--end={args.end:g} must be > 0 env steps")
    ends = None
    if args.at:
        try:
            ends = [float(x) for x in args.at.split(",")]
        except ValueError:
            raise MablError(f"--at={args.at!r}: expected comma-separated env steps, e.g. --at 5000,20000") from None
    tables = []
    for run in find_runs(args.dirs):
        tables.append(format_loss_terms(run, width, ends) if args.loss_terms
                      else format_episode_windows(run, width, args.end))
    print("\n".join(tables))


def cmd_report(args: argparse.Namespace) -> None:
    from mabl.report import write_report

    if args.bins is None and not args.loss_terms:
        for flag, value in (("--end", args.end), ("--at", args.at)):
            if value is not None:
                raise MablError(f"{flag} goes with --bins or --loss-terms")
        if args.out is None:
            raise MablError("give --out REPORT_DIR (the report), or --bins W / --loss-terms (tables on stdout)")
    else:
        if args.at is not None and not args.loss_terms:
            raise MablError("--at picks windows of --loss-terms")
        if args.end is not None and args.loss_terms:
            raise MablError("--end goes with the episode table of --bins (--loss-terms: --at)")
        _report_tables(args)
        if args.out is None:
            return
    if args.window <= 0:
        raise MablError(f"--window={args.window} must be > 0")
    if not 0.0 <= args.ema < 1.0:
        raise MablError(f"--ema={args.ema} must be in [0, 1)")
    summary = write_report(args.dirs, args.out, window=args.window, ema=args.ema, metric=args.metric)
    files = summary["files"]
    skipped = summary.get("skipped") or []
    print(f"report {args.out}: {files['table']}, {files['summary']}, {files['marl_eval']}, {len(files['plots'])} plots"
          + (f"; skipped {len(skipped)} runs (see {files['summary']})" if skipped else ""))


def cmd_archive(args: argparse.Namespace) -> None:
    from mabl.archive import archive_runs

    for item in archive_runs(args.dirs, args.out):
        print(f"archived {item.run}: {item.bytes_in / 1e6:.2f} MB of logs -> {item.bytes_out / 1e6:.2f} MB")


def _unit_blocks(args: argparse.Namespace) -> dict:
    """The optional blocks asked for (mabl.diagnose.units), on the run's own replay."""
    from mabl.diagnose import load_run, units

    wanted = [name for name, on in (("by_alive", args.by_alive), ("advantages", args.advantages),
                                    ("attack_masks", args.attack_masks), ("living", args.living)) if on]
    if not wanted:
        if args.only_blocks:
            raise MablError("--only-blocks goes with --by-alive, --advantages, --attack-masks or --living")
        return {}
    if args.data:
        raise MablError("--by-alive, --advantages, --attack-masks and --living read the run's own replay; leave out "
                        "--data")
    loaded = load_run(args.run_dir, args.device)
    blocks = {}
    for name in wanted:
        if name == "by_alive":
            blocks[name] = units.by_alive(loaded, 300 if args.windows is None else args.windows, args.length, args.seed)
        elif name == "advantages":
            blocks[name] = units.advantages(loaded, 64 if args.windows is None else args.windows, args.length, args.seed)
        elif name == "living":
            from mabl.diagnose.living import living

            blocks[name] = living(loaded, 300 if args.windows is None else args.windows, args.living_horizon, args.seed,
                                  args.living_fresh)
        else:
            blocks[name] = units.attack_masks(loaded, 300 if args.windows is None else args.windows, args.length,
                                              context=10, horizon=args.horizon,
                                              seed=args.seed)
    return blocks


def _format_blocks(blocks: dict) -> str:
    from mabl.diagnose.living import format_living
    from mabl.diagnose.units import format_units

    text = [format_units(blocks)]
    if "living" in blocks:
        text.append(format_living(blocks["living"]))
    return "\n".join(filter(None, text))


def cmd_diagnose(args: argparse.Namespace) -> None:
    import json

    from mabl.diagnose import diagnose, format_table, write_outputs

    blocks = _unit_blocks(args)
    if args.only_blocks:
        print(json.dumps(blocks) if args.json else _format_blocks(blocks))
        return
    result = diagnose(args.run_dir, args.data, args.windows, args.length, args.horizon, args.seed, args.device,
                      args.stack, split=args.split, draws=args.draws)
    if args.windows is None and result["meta"]["windows"] < 100:
        print(f"mabl diagnose: the data holds {result['meta']['data_rows']} rows, room for {result['meta']['windows']} "
              f"windows of {args.length} rows, not the default 100: using {result['meta']['windows']}", file=sys.stderr)
    result.update(blocks)
    if args.out:
        write_outputs(result, args.out)
    print(json.dumps(result) if args.json else "\n".join(filter(None, [format_table(result), _format_blocks(blocks)])))


def cmd_experiment(args: argparse.Namespace) -> None:
    if args.name == "representation":
        from mabl.experiment.representation import main as experiment
    else:
        from mabl.experiment.reward_loss import main as experiment
    code = experiment(args.rest)
    if code:
        raise SystemExit(code)


TOOL_COMMANDS = {"bench": cmd_bench, "sweep": cmd_sweep, "report": cmd_report, "archive": cmd_archive,
                 "diagnose": cmd_diagnose, "experiment": cmd_experiment}
