"""Command line: parse, dispatch, and turn input errors into one line.

    mabl train [--config FILE.yaml] [--env smax:3s_vs_4z] [--preset paper] [--steps N] [--seed S] [--run-dir DIR]
               [--log jsonl,tensorboard,csv,wandb,mlflow] [--model.hidden 128 ...]
    mabl eval --run-dir DIR [--checkpoint STEP] | --policy FILE(.pt|.onnx) | --scripted NAME [--episodes N] [--trace]
              [--json]
    mabl export --run-dir DIR --out FILE
    mabl envs
    mabl bench | sweep | report | archive | diagnose | experiment ...   (mabl.cli_tools)
"""

from __future__ import annotations

import argparse
import sys

from mabl.algo import ALGORITHMS
from mabl.algo.loading import checkpoint_step
from mabl.cli_tools import TOOL_COMMANDS, add_tool_parsers
from mabl.config import RunConfig, iter_fields
from mabl.errors import MablError
from mabl.scripted import SCRIPTED


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
    src.add_argument("--scripted", choices=SCRIPTED,
                     help="a scripted SMAX team, a floor for learned ones: focus = each unit attacks the "
                     "lowest-numbered enemy it may attack, else moves; random_attack = a random enemy it may attack, "
                     "else moves; random = any available action; focus_lowest = the enemy in range with the least "
                     "health, else moves; kite = focus_lowest, but a unit an enemy shot at whose weapon cannot fire "
                     "within the next step steps away from it (--env default smax:3m; the readings from --smax.*)")
    ev.add_argument("--checkpoint", type=int, metavar="STEP",
                    help="with --run-dir: the checkpoint of this env step (checkpoints/step_*.pt; default the newest)")
    ev.add_argument("--env", help="task to play (default: the run's / the policy's task)")
    ev.add_argument("--episodes", type=int, default=20, help="episodes to play (default 20)")
    ev.add_argument("--seed", type=int, default=12345, help="seed of the evaluation episodes")
    ev.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the most likely")
    ev.add_argument("--json", action="store_true", help="print one JSON object (with each episode's values)")
    ev.add_argument("--trace", action="store_true", help="print every episode step by step: the joint action and team "
                    "reward of each step, and where one unit is left its action mask and action probabilities")
    from mabl.envs.smax import SMAX_OPTIONS

    for option, choices in SMAX_OPTIONS.items():
        ev.add_argument(f"--smax.{option}", dest=f"smax_{option}", choices=choices, help=f"with --scripted: SMAX's "
                        f"{option} reading (default {choices[0]}, as `mabl train`'s; a run or policy plays on its own)")
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

    add_tool_parsers(sub)

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
    readings = {k[len("smax_"):]: v for k, v in vars(args).items() if k.startswith("smax_") and v is not None}
    if readings and not args.scripted:
        raise MablError("--smax.* readings go with --scripted; a run or an exported policy plays on its own readings")
    if args.scripted:
        from mabl.scripted import ScriptedPolicy

        env_name = args.env or "smax:3m"
        if not env_name.startswith("smax:"):
            raise MablError(f"--scripted plays SMAX's action layout; --env={env_name} is not a smax: task")
        options, source = readings, {"scripted": args.scripted, "readings": readings}
        policy = ScriptedPolicy(args.scripted, args.seed)
        spec = None
    elif args.run_dir:
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
    if spec is None:
        spec = env.spec
    if args.trace and not env.spec.discrete:
        raise MablError(f"--trace prints discrete joint actions; {env_name} has continuous actions")
    if (env.spec.n_agents, env.spec.obs_dim, env.spec.action_size) != (spec.n_agents, spec.obs_dim, spec.action_size):
        raise MablError(f"env {env_name} has sizes (N={env.spec.n_agents}, O={env.spec.obs_dim}, "
                        f"A={env.spec.action_size}); the policy was trained for (N={spec.n_agents}, "
                        f"O={spec.obs_dim}, A={spec.action_size})")
    import torch

    if hasattr(policy, "generator"):  # (an ONNX policy has its own numpy generator, seeded above)
        policy.generator = torch.Generator().manual_seed(args.seed)
    seeds = [episode_seed(args.seed, 3, i) for i in range(args.episodes)]
    if args.trace:
        from mabl.scripted import format_trace, trace_episode

        traces = [trace_episode(env, policy, seed, deterministic=not args.stochastic) for seed in seeds]
        if args.json:
            import json

            print(json.dumps({"env": env_name, **source, "seed": args.seed, "episodes": traces}))
        else:
            print("\n".join(format_trace(t, i) for i, t in enumerate(traces)))
        return
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
            else f"scripted policy {args.scripted}" if args.scripted else f"policy {args.policy}")
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


def cmd_envs(args: argparse.Namespace) -> None:
    from mabl.envs import list_envs
    from mabl.envs.registry import ALIASES, FAMILY_REWARDS

    # a joint split's '|' is shown as '+', which make_env reads the same and a shell needs no quotes for
    names = [(name.replace("|", "+"), ALIASES.get(name, name).partition(":")[0]) for name in list_envs()]
    width = max(len(name) for name, _ in names)
    for name, family in names:
        print(f"{name:<{width}}  reward: {FAMILY_REWARDS[family]}")


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "export": cmd_export, "envs": cmd_envs, **TOOL_COMMANDS}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "rest", None) is not None:  # `bench gpu` / `experiment`: their own parser reads them
        args.rest = extra + args.rest
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
