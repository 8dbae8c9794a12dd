"""Command line: parse, dispatch, and turn input errors into one line.

    mabl train [--config FILE.yaml] [--env smax:3s_vs_4z] [--preset paper] [--steps N] [--seed S] [--run-dir DIR]
               [--log jsonl,tensorboard,csv,wandb,mlflow] [--model.hidden 128 ...]
    mabl eval --run-dir DIR [--checkpoint STEP] | --policy FILE(.pt|.onnx) [--episodes N] [--json]
    mabl export --run-dir DIR --out FILE
    mabl bench speed [--algo mabl] [--preset paper] [--env smax:3s_vs_4z] [--device auto|cpu|cuda] [--amp [BOOL]]
                     [--compile [BOOL]] [--json]
    mabl sweep --algos mabl,mappo --envs smax:3m --seeds 0,1,2 [--preset P] [--steps N] [--workers W] --out DIR
    mabl report DIR [DIR ...] --out REPORT_DIR
    mabl archive DIR [DIR ...] --out ARCHIVE_DIR
    mabl diagnose --run-dir DIR [--data DIR|FILE] [--windows K] [--split random|data_order] [--draws D]
                  [--device auto|cpu|cuda] [--json] [--out DIR]
    mabl envs
"""

from __future__ import annotations

import argparse
import sys

from mabl.algo import ALGORITHMS
from mabl.algo.loading import checkpoint_step
from mabl.config import RunConfig, iter_fields
from mabl.errors import MablError


def _bool(text: str) -> bool:
    """A flag's boolean, written as on `mabl train`: true/false, 1/0, yes/no, on/off."""
    low = str(text).lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true or false)")


def _flag(path: str) -> str:
    return "--" + path.replace("_", "-") if "." not in path else "--" + path


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field; help text from the field's documentation. The default shown is what
    a plain `mabl train` uses: the quick preset's value where it sets the field, with the paper's
    (the field's own default) beside it."""
    from mabl.presets import DEFAULT_PRESET, PRESETS

    preset = PRESETS[DEFAULT_PRESET]
    groups: dict[str, argparse._ArgumentGroup] = {}
    for path, field, default in iter_fields(RunConfig()):
        section = path.split(".")[0] if "." in path else "run"
        if section not in groups:
            readers = [name for name, entry in ALGORITHMS.items() if section in entry.config_sections]
            groups[section] = parser.add_argument_group(
                f"{section} options" + (f" (read by --algo {', '.join(readers)})" if readers else ""))
        help_text = field.metadata.get("help", "")
        choices = tuple(ALGORITHMS) if path == "algo" else field.metadata.get("choices")  # (the registry's)
        metavar = "{" + ",".join(map(str, choices)) + "}" if choices else type(default).__name__.upper()
        flags = [_flag(path)] + ([f"--{path}"] if "_" in path and "." not in path else [])
        shown = (f"default: {preset[path]} from the {DEFAULT_PRESET} preset; paper: {default}"
                 if path in preset and preset[path] != default else f"default: {default}")
        groups[section].add_argument(
            *flags, dest=path, default=argparse.SUPPRESS, metavar=metavar,
            help=f"{help_text} ({shown})".replace("%", "%%"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mabl", description="MABL: bi-level world model for multi-agent RL")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train (or resume) a run", description=(
        "Train MABL. Re-running the same command on an existing run directory resumes it. "
        "Without --preset the quick preset applies (smaller networks, 20k steps: a fast operating point, not the "
        "paper's); --preset paper gives the paper's sizes and schedule. Settings apply in this order: the preset, "
        "the task's own defaults (Flatland's), --config FILE.yaml, then the flags. The defaults shown are what a "
        "plain `mabl train` uses."))
    train.add_argument("--config", metavar="FILE.yaml",
                       help="YAML file of any of the flags below (dotted keys or nested mappings, e.g. configs/"
                            "smax_3s_vs_4z.yaml); flags given on the command line win")
    _add_config_flags(train)

    ev = sub.add_parser("eval", help="play episodes with a trained policy and report win rate / return")
    src = ev.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", "--run_dir", dest="run_dir",
                     help="run directory (its newest checkpoint, or --checkpoint STEP)")
    src.add_argument("--policy", help="exported policy file (from `mabl export`: .pt, or .onnx with the onnx extra)")
    ev.add_argument("--checkpoint", type=int, metavar="STEP",
                    help="with --run-dir: the checkpoint of this env step (checkpoints/step_*.pt; default the newest)")
    ev.add_argument("--env", help="task to play (default: the run's / the policy's task)")
    ev.add_argument("--episodes", type=int, default=20, help="episodes to play (default 20)")
    ev.add_argument("--seed", type=int, default=12345, help="seed of the evaluation episodes")
    ev.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the most likely")
    ev.add_argument("--json", action="store_true", help="print one JSON object (with each episode's values)")
    ev.add_argument("--render", metavar="OUT.gif", help="also write a GIF of the first evaluated episode (smax: "
                    "JaxMARL's visualiser; mpe/pettingzoo: the env's rgb_array frames)")
    ev.add_argument("--render-steps", "--render_steps", dest="render_steps", type=int, metavar="N",
                    help="with --render: at most N env steps of the episode (default: all of it)")

    ex = sub.add_parser("export", help="write the policy of a run to one file (decentralized; joint for mamba, mag)")
    ex.add_argument("--run-dir", "--run_dir", dest="run_dir", required=True)
    ex.add_argument("--out", required=True, help="output file, e.g. policy.pt (or policy.onnx)")
    ex.add_argument("--format", choices=("torch", "onnx"), default="torch",
                    help="torch: a file for mabl.load_policy (default); onnx: one agent's execution path as an "
                         "ONNX graph for onnxruntime (mabl.onnx_policy; needs the onnx extra)")

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
    speed.add_argument("--amp", nargs="?", const=True, default=False, type=_bool, metavar="BOOL",
                       help="bf16 autocast for the learner, as `mabl train --amp true` (--amp alone means true)")
    speed.add_argument("--compile", nargs="?", const=True, default=False, type=_bool, metavar="BOOL",
                       help="compile the world-model loss and imagination (as `mabl train --compile true`; --compile "
                            "alone means true); compiling is not timed")
    speed.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    speed.add_argument("--repeats", type=int, default=10,
                       help="timed world-model updates; the median is reported (default 10)")
    speed.add_argument("--policy-repeats", type=int, default=3,
                       help="timed policy iterations; the median is reported (default 3)")
    speed.add_argument("--json", action="store_true", help="print one JSON object")
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
    rp.add_argument("--out", required=True, help="report directory (table.md, summary.json, PNG curves)")
    rp.add_argument("--window", type=int, default=15_000, help="final env steps the table averages over (default 15000)")
    rp.add_argument("--ema", type=float, default=0.9, help="EMA smoothing of the curves, weight of the past (default 0.9)")
    rp.add_argument("--metric", choices=("auto", "return"), default="auto", help="table and curve metric: auto = win "
                    "rate where the task logs wins, arrived %% where it logs Flatland's arrived_fraction, else return "
                    "(default); return = the episode return everywhere")

    ar = sub.add_parser("archive", help="copy the logs of runs (config, gzip-compressed metrics and eval) without "
                        "their checkpoints, e.g. to keep a study's results in git; 'mabl report' reads the copy")
    ar.add_argument("dirs", nargs="+", metavar="DIR", help="run or sweep directories")
    ar.add_argument("--out", required=True, help="archive directory; runs keep their paths relative to each DIR")

    dg = sub.add_parser("diagnose", help="look inside a run's world model: global-information probe, open-loop "
                        "prediction, imagination fidelity, latent health (docs/DIAGNOSTICS.md)")
    dg.add_argument("--run-dir", "--run_dir", dest="run_dir", required=True,
                    help="run directory of mabl, mabl-sg, dreamer or mamba (newest checkpoint)")
    dg.add_argument("--data", help="score on this data instead of the run's replay: another run directory (its "
                    "replay) or a dataset .npz (benchmarks/representation.py); same env sizes")
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

    sub.add_parser("envs", help="list the known tasks")
    return parser


def cmd_train(args: argparse.Namespace) -> None:
    from mabl.presets import DEFAULT_PRESET, build_config
    from mabl.train import train

    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    if args.config:
        from mabl.config import load_config_file

        overrides = {**load_config_file(args.config), **overrides}  # the command line wins
    preset = overrides.pop("preset", DEFAULT_PRESET)
    cfg = build_config(preset, overrides)
    run_dir = train(cfg)
    print(f"finished; run directory: {run_dir}")


def _agent_from_run(run_dir: str):
    """Rebuild the agent of a run from its newest checkpoint (no env needed): ``(agent, cfg, spec)``."""
    return _agent_from_checkpoint(run_dir)[:3]


def _agent_from_checkpoint(run_dir: str, step: int | None = None):
    """Rebuild the agent of a run from its newest checkpoint, or the one of env step ``step``, on the
    CPU (no env needed; :func:`mabl.algo.load_learner`). Returns ``(agent, cfg, spec, path)``,
    ``path`` the checkpoint read."""
    from mabl.algo import load_learner

    loaded = load_learner(run_dir, step)
    return loaded.learner, loaded.cfg, loaded.spec, loaded.checkpoint


def _onnx_policy(path: str, seed: int):
    """An exported ONNX policy (mabl.onnx_policy), its sizes in the form eval compares."""
    from types import SimpleNamespace

    from mabl.onnx_policy import OnnxPolicy, OnnxPolicyError

    try:
        policy = OnnxPolicy(path, seed=seed)
    except OnnxPolicyError as exc:
        raise MablError(str(exc)) from None
    spec = policy.spec
    return policy, SimpleNamespace(name=policy.env_name, n_agents=spec.n_agents, obs_dim=spec.obs_dim,
                                   action_size=spec.n_actions or spec.action_dim)


def cmd_eval(args: argparse.Namespace) -> None:
    from mabl.envs import make_env
    from mabl.evaluate import episode_seed, evaluate_policy
    from mabl.policy import load_policy

    if args.episodes <= 0:
        raise MablError(f"--episodes={args.episodes} must be > 0")
    if args.render_steps is not None and args.render_steps <= 0:
        raise MablError(f"--render-steps={args.render_steps} must be > 0")
    if args.checkpoint is not None and not args.run_dir:
        raise MablError("--checkpoint STEP picks a checkpoint of --run-dir; an exported --policy file has one")
    options: dict = {}
    source: dict = {}
    if args.run_dir:
        import dataclasses

        from mabl.config import env_options

        agent, cfg, spec, path = _agent_from_checkpoint(args.run_dir, args.checkpoint)
        policy, env_name = agent.policy(), args.env or cfg.env
        source = {"run_dir": args.run_dir, "checkpoint": str(path), "checkpoint_step": checkpoint_step(path)}
        # The env as the run trained on it (e.g. SMAX's reward and walls), on the task asked for.
        options = env_options(dataclasses.replace(cfg, env=env_name))
    elif args.policy.endswith(".onnx"):
        policy, spec = _onnx_policy(args.policy, args.seed)
        env_name = args.env or spec.name
        source = {"policy": args.policy}
    else:
        policy = load_policy(args.policy)
        spec, env_name = policy.env_spec, args.env or policy.env_spec.name
        source = {"policy": args.policy}
    env = make_env(env_name, seed=args.seed, options=options)
    if (env.spec.n_agents, env.spec.obs_dim, env.spec.action_size) != (spec.n_agents, spec.obs_dim, spec.action_size):
        raise MablError(f"env {env_name} has sizes (N={env.spec.n_agents}, O={env.spec.obs_dim}, "
                        f"A={env.spec.action_size}); the policy was trained for (N={spec.n_agents}, "
                        f"O={spec.obs_dim}, A={spec.action_size})")
    import torch

    if hasattr(policy, "generator"):  # (an ONNX policy has its own numpy generator, seeded above)
        policy.generator = torch.Generator().manual_seed(args.seed)
    seeds = [episode_seed(args.seed, 3, i) for i in range(args.episodes)]
    result = evaluate_policy(env, policy, args.episodes, seeds, deterministic=not args.stochastic)
    if args.render:
        from mabl.render import render_episode

        if hasattr(policy, "generator"):
            policy.generator = torch.Generator().manual_seed(args.seed)
        rendered = render_episode(env_name, options, policy, seeds[0], args.render, args.render_steps,
                                  deterministic=not args.stochastic)
        source["render"] = rendered
    if args.json:
        import json

        print(json.dumps({"env": env_name, **source, "seed": args.seed, "stochastic": args.stochastic, **result}))
        return
    what = (f"checkpoint of step {source['checkpoint_step']} ({source['checkpoint']})" if "checkpoint" in source
            else f"policy {args.policy}")
    print(f"evaluating {what}")
    text = f"{env_name}: {result['episodes']} episodes, mean return {result['mean_return']:.3f}"
    if "win_rate" in result:
        text += f", win rate {result['win_rate']:.1%}"
    for key in sorted(k for k in result if k.startswith("mean_") and k not in ("mean_return", "mean_length")):
        text += f", {key.replace('_', ' ')} {result[key]:.3f}"
    print(text + f", mean length {result['mean_length']:.1f}")
    if args.render:
        print(f"wrote {args.render}: {rendered['env_steps']} env steps ({rendered['frames']} frames) of the episode "
              f"with seed {seeds[0]}, return {rendered['return']:.3f}")


def cmd_export(args: argparse.Namespace) -> None:
    from mabl.checkpoint import atomic_torch_save, latest_checkpoint

    agent, cfg, spec = _agent_from_run(args.run_dir)
    latest = latest_checkpoint(args.run_dir)
    of_step = f" of checkpoint step {checkpoint_step(latest)}" if latest is not None else ""
    if args.format == "onnx":
        from mabl.onnx_export import export_onnx

        meta = export_onnx(agent, cfg, spec, args.out)
        state = "recurrent state as inputs/outputs" if "h" in meta["inputs"] else "no recurrent state"
        print(f"wrote ONNX policy ({cfg.algo}: one agent's step, {state}){of_step} "
              f"for {spec.name} to {args.out}; run it with mabl.onnx_policy.OnnxPolicy or mabl eval --policy")
        return
    policy = agent.policy()
    atomic_torch_save(agent.policy_payload(cfg), args.out)
    if policy.spec.centralized:
        print(f"wrote JOINT policy{of_step} ({cfg.algo}: centralized execution, every act() needs all {spec.n_agents} "
              f"agents' observations of the same step) for {spec.name} to {args.out}")
    else:
        print(f"wrote decentralized policy{of_step} ({cfg.algo}) for {spec.name} ({spec.n_agents} agents) to {args.out}")


def cmd_bench(args: argparse.Namespace) -> None:
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

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.repeats <= 0 or args.policy_repeats <= 0:
        raise MablError("--repeats and --policy-repeats must be > 0")
    map_name = args.env.partition(":")[2] if ":" in args.env else args.env
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


def cmd_report(args: argparse.Namespace) -> None:
    from mabl.report import write_report

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


def cmd_diagnose(args: argparse.Namespace) -> None:
    import json

    from mabl.diagnose import diagnose, format_table, write_outputs

    result = diagnose(args.run_dir, args.data, args.windows, args.length, args.horizon, args.seed, args.device,
                      args.stack, split=args.split, draws=args.draws)
    if args.windows is None and result["meta"]["windows"] < 100:
        print(f"mabl diagnose: the data holds {result['meta']['data_rows']} rows, room for {result['meta']['windows']} "
              f"windows of {args.length} rows, not the default 100: using {result['meta']['windows']}", file=sys.stderr)
    if args.out:
        write_outputs(result, args.out)
    print(json.dumps(result) if args.json else format_table(result))


def cmd_envs(args: argparse.Namespace) -> None:
    from mabl.envs import list_envs
    from mabl.envs.registry import ALIASES, FAMILY_REWARDS

    # a joint split's '|' is shown as '+', which make_env reads the same and a shell needs no quotes for
    names = [(name.replace("|", "+"), ALIASES.get(name, name).partition(":")[0]) for name in list_envs()]
    width = max(len(name) for name, _ in names)
    for name, family in names:
        print(f"{name:<{width}}  reward: {FAMILY_REWARDS[family]}")


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "export": cmd_export, "bench": cmd_bench, "sweep": cmd_sweep,
            "report": cmd_report, "archive": cmd_archive, "diagnose": cmd_diagnose, "envs": cmd_envs}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except MablError as exc:
        print(f"mabl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mabl: interrupted (the latest checkpoint is intact; re-run the command to resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
