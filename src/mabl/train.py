"""The training loop: the paper's Algorithm 1, read top to bottom.

    For the world-model algorithms (mabl, mabl-sg, dreamer, mamba):

    repeat until `steps` env steps:
        collect one episode with the current decentralized actor        (Alg. 1 line 3)
        append it to the replay (+ absorbing rows if it terminated)     (line 4)
        for each learner call that is due (after `learning_starts` transitions):
            `model_updates` world-model updates on sampled windows      (lines 5-8)
            `policy_iterations` x (filter, imagine, MAPPO)              (lines 9-14)
        evaluate / checkpoint when due

An on-policy learner (--algo mappo, ippo) collects from its own envs (`mappo.n_envs` of them, until
`mappo.rollout_steps` env steps are in for mappo), then makes one update on that data
(mabl.algo.contract.OnPolicyLearner).

Learner calls happen at episode boundaries: one per episode in the paper's 'episode' mode, or one
per `train_every` env steps elapsed in 'steps' mode. Checkpoints are written at episode boundaries
too, so resuming needs no mid-episode env state: episode e is always reset with a seed derived
from (seed, e). Re-running the same command on the same run directory resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

from mabl.algo import algorithm
from mabl.algo.guard import divergence_message, read_guard
from mabl.checkpoint import atomic_write_bytes, resume_checkpoint, save_checkpoint
from mabl.config import RunConfig, env_family, env_options, iter_fields, to_dict
from mabl.config_migration import from_dict
from mabl.device import per_agent_targets, replay_device, resolve_device
from mabl.envs import make_env
from mabl.errors import MablError
from mabl.evaluate import episode_seed, evaluate_policy
from mabl.learner_metrics import mean_metrics
from mabl.progress import progress_display
from mabl.replay import SequenceReplay, stored_episode
from mabl.rollout import run_episode
from mabl.run_lock import LOCK_NAME, RunLock
from mabl.run_log import RunLogger, parse_loggers, record_run_info, truncate_logs

RESUMABLE = {"steps", "progress", "log", "device", "threads", "checkpoint_every", "eval_every", "eval_episodes", "run_dir",
             "diagnose_every", "max_skipped_updates"}
"""Fields a resumed run may change; anything else must match the run directory's config. (The
diagnostics only add log lines: they draw no windows and restore the torch random state.)"""
TIMING_KEYS = ("sps", "learner_s", "wall_s", "cpu_s")
"""Metric keys that measure time: the only ones that differ between two runs with the same seed."""


def default_run_dir(cfg: RunConfig) -> Path:
    return Path("runs") / f"{cfg.env.replace(':', '_').replace('/', '_')}_{cfg.algo}_s{cfg.seed}"


@dataclasses.dataclass
class Counters:
    env_step: int = 0
    episode: int = 0
    learner_calls: int = 0
    model_updates: int = 0
    policy_iterations: int = 0
    eval_rounds: int = 0
    real_samples: int = 0
    """Real transitions the learner consumed: replay rows sampled for world-model windows and for
    imagination starts (model-based), or transitions x PPO epochs (mappo)."""
    imagined_samples: int = 0
    """Imagined joint transitions (rows of all N agents) that policy learning consumed."""
    wall_s: float = 0.0
    """Wall-clock seconds of training up to the newest checkpoint, summed over the processes of a
    resumed run (time after the last checkpoint of a killed process is lost with its logs)."""
    cpu_s: float = 0.0
    """CPU seconds (this process, all threads: ``time.process_time``), summed the same way."""


def check_run_dir_config(run_dir: Path, cfg: RunConfig) -> None:
    """A run directory belongs to one experiment: refuse to resume it with different settings.

    Compared: every top-level field and the config sections the run reads (its algorithm's
    registry ``config_sections`` and its env family's section); the sections of other algorithms
    and env families play no part in the run, so a later default there does not block a resume."""
    path = run_dir / "config.json"
    if not path.exists():
        return
    try:
        saved = from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, MablError) as exc:
        raise MablError(f"{path} is not a mabl config ({exc}); use another --run-dir") from None
    read = set(algorithm(cfg.algo).config_sections) | {env_family(cfg.env)}
    for (field_path, _, old), (_, _, new) in zip(iter_fields(saved), iter_fields(cfg)):
        section, dotted, _ = field_path.partition(".")
        if field_path not in RESUMABLE and old != new and (not dotted or section in read or saved.algo != cfg.algo):
            raise MablError(
                f"run dir {run_dir} was created with {field_path}={old!r}, not {new!r}; "
                "re-run with the same settings to resume, or use another --run-dir")


class Trainer:
    """Owns the env, the agent, the replay and the run directory of one training run."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
        entry = algorithm(cfg.algo)  # (a one-line MablError for an unknown name)
        created = not self.run_dir.exists()
        self.lock = RunLock(self.run_dir).acquire()  # one training process per run directory
        try:
            self._build(cfg, entry)
        except BaseException:
            self.lock.release()
            if created:  # leave no empty run directory behind a refused start
                (self.run_dir / LOCK_NAME).unlink(missing_ok=True)
                if not any(self.run_dir.iterdir()):
                    self.run_dir.rmdir()
            raise

    def _build(self, cfg: RunConfig, entry) -> None:
        self.device = resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.env_options = env_options(cfg)
        self.env = make_env(cfg.env, seed=cfg.seed, options=self.env_options)
        spec = self.spec = self.env.spec
        check_run_dir_config(self.run_dir, cfg)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.agent = entry.build(spec, cfg, self.device)
        self.model_free = not entry.world_model  # an on-policy learner collects its own episodes (mabl.algo.contract)
        self.agent_reward, self.agent_done = per_agent_targets(cfg, spec)
        self.replay = None if self.model_free else SequenceReplay(
            spec, cfg.schedule.replay_capacity, device=replay_device(cfg, spec, self.device),
            agent_reward=self.agent_reward, agent_done=self.agent_done)
        # An on-policy learner may step several envs in lockstep; episodes are seeded the same way.
        n_envs = entry.learner_class().n_envs(cfg) if self.model_free else 1
        self.envs = [self.env] + [make_env(cfg.env, seed=cfg.seed + i, options=self.env_options)
                                  for i in range(1, n_envs)]
        self.counters = Counters()
        self.eval_env = None
        self.recent = deque(maxlen=20)  # (return, win) of the latest episodes, for the progress bar
        self._resume()  # (RunLock.acquire created the run directory)
        config_bytes = json.dumps(to_dict(cfg), indent=2).encode()
        atomic_write_bytes(self.run_dir / "config.json", config_bytes)
        record_run_info(self.run_dir, self.counters.env_step)
        # TensorBoard drops the events after the checkpoint's step (the lines logged at that step came
        # before the checkpoint and are kept, as in metrics.jsonl)
        purge = self.counters.env_step + 1 if self.counters.env_step else None
        self.log = RunLogger(self.run_dir, purge_step=purge, loggers=parse_loggers(cfg.log), config=to_dict(cfg))

    def train(self) -> Path:
        """Train to ``cfg.steps`` env steps (:meth:`_algorithm_1`); the run-directory lock is released
        however it ends."""
        try:
            return self._algorithm_1()
        finally:
            self.lock.release()

    # ---------------------------------------------------------------- Algorithm 1
    def _algorithm_1(self) -> Path:
        cfg, c = self.cfg, self.counters
        bar = self.bar = progress_display(cfg, c.env_step)
        self.say(f"run directory: {self.run_dir}")
        if c.env_step:
            self.say(f"resumed from step {c.env_step} (episode {c.episode}); training to {cfg.steps}")
        start_wall, start_step = time.perf_counter(), c.env_step
        self._clock = (start_wall, time.process_time(), c.wall_s, c.cpu_s)
        learner_total = 0.0  # learner seconds in this process, for the progress bar
        while c.env_step < cfg.steps:
            if self.model_free:  # MAPPO: whole episodes from all envs, then one PPO update on them
                episodes, batch = self.agent.collect(self.envs, self._seeds())
            else:
                episodes = [run_episode(self.env, self.agent.policy(), episode_seed(cfg.seed, c.episode),  # line 3
                                        first_step=c.env_step)]
                rows = stored_episode(episodes[0], cfg.schedule.time_limit_done, self.agent_reward, self.agent_done)
                self.replay.add_episode(*rows, self.rng)  # line 4
            collected = 0
            for episode in episodes:
                c.env_step += episode.length
                c.episode += 1
                collected += episode.length
                self.recent.append((episode.ret, episode.win))
                sps = (c.env_step - start_step) / max(time.perf_counter() - start_wall, 1e-9)
                record = {"kind": "episode", "env_step": c.env_step, "episode": c.episode,
                          "return": episode.ret, "length": episode.length, "sps": sps}
                if episode.win is not None:
                    record["win"] = episode.win
                record.update(episode.metrics or {})
                self.log.write("metrics.jsonl", record, step=c.env_step)

            if self.model_free:
                learner_total += self._model_free_update(batch)
            else:
                for _ in range(self._learner_calls_due()):  # lines 5-14
                    learner_total += self._learner_call()
            if cfg.eval_every and c.env_step >= (c.eval_rounds + 1) * cfg.eval_every:
                result = self.evaluate_round()
                self.say(f"step {c.env_step}: evaluation over {result['episodes']} episodes: "
                         f"mean return {result['mean_return']:.3f}"
                         + (f", win rate {result['win_rate']:.0%}" if "win_rate" in result else ""))
            if c.env_step >= cfg.steps or self._crossed(collected, cfg.checkpoint_every):
                path = self.save()
                self.say(f"step {c.env_step}: checkpoint {path}")
            if bar is not None:
                bar.update(collected, self._status(sps, learner_total, rate=not bar.shows_rate))
        if bar is not None:
            bar.close()
        self.bar = None
        self.log.close()
        return self.run_dir

    def _seeds(self):
        """Seeds for the episodes a collection starts, in order: episode e gets (seed, e)."""
        index = self.counters.episode

        def next_seed() -> int:
            nonlocal index
            index += 1
            return episode_seed(self.cfg.seed, index - 1)

        return next_seed

    def _model_free_update(self, batch) -> float:
        """One MAPPO update on the episodes just collected; logs its losses. Returns seconds."""
        c = self.counters
        t0 = time.perf_counter()
        self._new_learner_call()
        metrics = self.agent.update(batch)
        if set(metrics) == {"samples"}:  # no step made (QMIX before its replay holds a batch): nothing to log
            return time.perf_counter() - t0
        c.learner_calls += 1
        c.policy_iterations += 1
        samples = metrics.pop("samples")
        losses, extra, stop = self._read({"policy/": [metrics]}, [samples])
        c.real_samples += int(extra[0])
        return self._log_learner(t0, losses, stop)

    def _learner_calls_due(self) -> int:
        cfg, c = self.cfg.schedule, self.counters
        if self.replay.real_rows < cfg.learning_starts or not self.replay.can_sample(self.cfg.model.seq_len):
            return 0
        if cfg.mode == "episode":
            return 1
        return max(0, c.env_step // cfg.train_every - c.learner_calls)

    def _learner_call(self) -> float:
        """World-model updates, then policy iterations; logs their mean losses. Returns seconds."""
        cfg, c = self.cfg, self.counters
        t0 = time.perf_counter()
        self._new_learner_call()
        model_metrics = []
        for _ in range(cfg.schedule.model_updates):  # lines 5-8
            rows = self.replay.sample(cfg.model.batch_size, cfg.model.seq_len, self.rng)
            c.real_samples += math.prod(rows["last"].shape)
            model_metrics.append(self.agent.train_world_model(rows))

        def sample_model_rows():
            rows = self.replay.sample(cfg.model.batch_size, cfg.model.seq_len, self.rng)
            c.real_samples += math.prod(rows["last"].shape)
            return rows

        after_metrics = self.agent.after_world_model(sample_model_rows)  # MAG's error predictor
        policy_metrics = []
        for _ in range(cfg.schedule.policy_iterations):  # lines 9-14
            rows = self.replay.sample(cfg.policy.batch_size, cfg.model.seq_len, self.rng)
            c.real_samples += math.prod(rows["last"].shape)
            metrics = self.agent.train_policy(rows)
            c.imagined_samples += int(metrics.pop("imagined_rows"))  # (a host number, no read)
            policy_metrics.append(metrics)
        c.learner_calls += 1
        c.model_updates += cfg.schedule.model_updates
        c.policy_iterations += cfg.schedule.policy_iterations
        losses, _, stop = self._read({"model/": model_metrics, "mag/": after_metrics, "policy/": policy_metrics}, [])
        elapsed = self._log_learner(t0, losses, stop)
        if cfg.diagnose_every and c.learner_calls % cfg.diagnose_every == 0:
            from mabl.diagnose import training_diagnostics  # on this call's last windows; no RNG is touched

            self.log.write("metrics.jsonl", {"kind": "diagnose", "env_step": c.env_step, "learner_call": c.learner_calls,
                                             **training_diagnostics(self.agent, rows)}, step=c.env_step)
        return elapsed

    # ---------------------------------------------------------------- divergence guard
    def _new_learner_call(self) -> None:
        for guard in self.agent.guards.values():
            guard.new_call()

    def _read(self, groups: dict[str, list[dict[str, torch.Tensor]]], extra: list[torch.Tensor]
              ) -> tuple[dict[str, float], list[float], str | None]:
        """Read one learner call's numbers from the device at once: the mean metrics of each group
        (:func:`mabl.learner_metrics.mean_metrics`), ``extra`` tensors, the divergence guards' counters and whether every
        network's weights are finite. The third result is the one line that stops the run (after
        its learner line is logged) when a guard's run of consecutive skipped updates reached
        ``max_skipped_updates`` or a network is not finite; else None."""
        guards = self.agent.guards
        finite = self.agent.params_finite()
        tail = [torch.stack([t.float().reshape(()) for t in extra]) if extra else None,
                *(g.counters() for g in guards.values()), torch.stack(list(finite.values())).float()]
        losses, values = mean_metrics(groups, [t for t in tail if t is not None])
        extra_values = values.pop(0) if extra else []
        reports = {key: read_guard(g, v) for (key, g), v in zip(guards.items(), values)}
        c, limit = self.counters, self.cfg.max_skipped_updates
        for key, report in reports.items():
            if limit and report["max_run"] >= limit:
                return losses, extra_values, divergence_message(guards[key], report, limit, c.env_step, c.learner_calls)
        broken = [name for name, ok in zip(finite, values[-1]) if not ok]
        if broken:
            return losses, extra_values, (
                f"training diverged: the {' and '.join(broken)} weights became non-finite (env step {c.env_step}, "
                f"learner call {c.learner_calls}); the last checkpoint is intact; try lower learning rates "
                "(--model.lr, --policy.actor_lr, --policy.critic_lr, --mappo.lr, --qmix.lr)")
        return losses, extra_values, None

    def _log_learner(self, t0: float, losses: dict[str, float], stop: str | None = None) -> float:
        """Write one learner line (counters, mean losses, seconds since ``t0``); returns the seconds.
        ``stop``: the divergence guard's line, raised as a MablError once the line is written."""
        c = self.counters
        elapsed = time.perf_counter() - t0
        self._tick()
        record = {"kind": "learner", "env_step": c.env_step, "learner_call": c.learner_calls,
                  "model_updates": c.model_updates, "policy_iterations": c.policy_iterations,
                  "real_samples": c.real_samples, "imagined_samples": c.imagined_samples,
                  **losses, "learner_s": elapsed, "wall_s": c.wall_s, "cpu_s": c.cpu_s}
        self.log.write("metrics.jsonl", record, step=c.env_step)
        if stop is not None:
            self.log.close()
            raise MablError(stop)
        return elapsed

    def _tick(self) -> None:
        """Bring the run's cumulative wall-clock and CPU seconds up to now."""
        wall0, cpu0, wall_base, cpu_base = self._clock
        self.counters.wall_s = wall_base + time.perf_counter() - wall0
        self.counters.cpu_s = cpu_base + time.process_time() - cpu0

    def _crossed(self, length: int, every: int) -> bool:
        step = self.counters.env_step
        return step // every > (step - length) // every

    # ---------------------------------------------------------------- evaluation
    def evaluate_round(self) -> dict:
        """``eval_episodes`` greedy episodes with their own seeds; appends to eval.jsonl."""
        cfg, c = self.cfg, self.counters
        if self.eval_env is None:
            self.eval_env = make_env(cfg.env, seed=cfg.seed + 1, options=self.env_options)
        policy = self.agent.policy()
        policy.generator = torch.Generator(device=self.device).manual_seed(episode_seed(cfg.seed, 1, c.eval_rounds))
        result = evaluate_policy(self.eval_env, policy, cfg.eval_episodes,
                                 [episode_seed(cfg.seed, 2, c.eval_rounds, i) for i in range(cfg.eval_episodes)])
        c.eval_rounds += 1
        self.log.write("eval.jsonl", {"env_step": c.env_step, **result}, step=c.env_step)
        return result

    # ---------------------------------------------------------------- checkpoints
    def save(self) -> Path:
        c = self.counters
        if hasattr(self, "_clock"):
            self._tick()
        payload = {
            "config": to_dict(self.cfg),
            "spec": dataclasses.asdict(self.spec),
            "agent": self.agent.state_dict(),
            "replay": None if self.replay is None else self.replay.state_dict(),
            "counters": dataclasses.asdict(c),
            "rng": {"torch": torch.get_rng_state(), "numpy": json.dumps(self.rng.bit_generator.state),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []},
            "log_lines": dict(self.log.lines),
            "recent": [[r, -1 if w is None else int(w)] for r, w in self.recent],
        }
        return save_checkpoint(self.run_dir, c.env_step, payload)

    def _resume(self) -> None:
        """Load the newest usable checkpoint of the run directory, if there is one (a damaged or
        non-finite newer one is renamed aside with one line: :func:`mabl.checkpoint.resume_checkpoint`)."""
        found = resume_checkpoint(self.run_dir, report=lambda line: print(line, file=sys.stderr))
        if found is None:
            if (self.run_dir / "metrics.jsonl").exists():  # crashed before the first checkpoint
                truncate_logs(self.run_dir, {})
            return
        path, state = found
        # (a spec saved before a capability flag existed lacks it; the flag does not size anything)
        if {**dataclasses.asdict(self.spec), **state["spec"]} != dataclasses.asdict(self.spec):
            raise MablError(f"checkpoint {path} was made for env spec {state['spec']['name']} with other sizes")
        try:
            self.agent.load_state_dict(state["agent"])
            if self.replay is not None:
                self.replay.load_state_dict(state["replay"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise MablError(f"checkpoint {path} does not fit this config: {str(exc).splitlines()[0][:160]}") from None
        self.counters = Counters(**state["counters"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.rng.bit_generator.state = json.loads(state["rng"]["numpy"])
        self.recent.extend((r, None if w < 0 else bool(w)) for r, w in state["recent"])
        truncate_logs(self.run_dir, state["log_lines"])

    def say(self, line: str) -> None:
        """Print one line of progress (above the progress bar when there is one)."""
        if getattr(self, "bar", None) is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def _status(self, sps: float, learner_total: float, rate: bool = True) -> str:
        """The recent episodes' return (and win rate), the env steps per second of this process
        (``rate``; left out where tqdm shows its own) and the learner's seconds."""
        returns = [r for r, _ in self.recent]
        wins = [w for _, w in self.recent if w is not None]
        text = f"ep {self.counters.episode} ret {np.mean(returns):.2f}"
        if wins:
            text += f" win {np.mean(wins):.0%}"
        return text + (f" | {sps:.0f} env-steps/s" if rate else "") + f" | learner {learner_total:.0f}s"


def train(cfg: RunConfig) -> Path:
    """Train (or resume) one run; returns its run directory."""
    return Trainer(cfg).train()
