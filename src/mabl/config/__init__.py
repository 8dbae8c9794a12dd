"""Typed, frozen configuration.

Every field carries its documentation (``metadata["help"]``); the CLI turns each field into a flag
(``--model.hidden 128``) and prints the help text. Presets (``presets.py``) are sets of overrides on
these defaults. Defaults equal the ``paper`` preset: SPEC.md sizes, the authors' released code where
the paper is silent. Tags in the help text: [paper], [code] (released code), [ours].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mabl.config.envs import FlatlandConfig, MamujocoConfig, SmaxConfig, env_family, env_options
from mabl.config.fields import coerce, field_type, get_path, iter_fields, replace_path
from mabl.config.fields import option as _f
from mabl.config.files import load_config_file
from mabl.config.learners import (
    MagConfig,
    MappoConfig,
    ModelConfig,
    PolicyConfig,
    QmixConfig,
    RmappoConfig,
    ScheduleConfig,
)
from mabl.errors import MablError

__all__ = ["RunConfig", "ModelConfig", "PolicyConfig", "ScheduleConfig", "MappoConfig", "RmappoConfig", "QmixConfig",
           "MagConfig", "SmaxConfig", "FlatlandConfig", "MamujocoConfig", "coerce", "env_family", "env_options",
           "field_type", "get_path", "iter_fields", "load_config_file", "replace_path", "to_dict"]


@dataclass(frozen=True)
class RunConfig:
    """One training run. Nested sections are flags too: ``--model.hidden``, ``--policy.lr`` ..."""

    env: str = _f("smax:3m", "task, e.g. smax:3s_vs_4z, smax:3m, mpe:simple_spread")
    algo: str = _f(
        "mabl",
        "algorithm: mabl (bi-level world model), mabl-sg (one shared global latent), dreamer (agent "
        "level only), mamba (agent level, transformer over agents: centralized execution), mag (MAMBA's "
        "model, one parameter set per agent, predictions planned against a learned error: centralized "
        "execution), mappo (model-free, real data), ippo (mappo with each agent's critic on its own "
        "observation; reads the mappo.* flags), rmappo (mappo with GRU actor and critic, Yu et al.'s "
        "recurrent MAPPO; reads the mappo.* and rmappo.* flags), qmix (QMIX as pymarl runs it: value "
        "decomposition with a monotonic mixing network, off-policy on an episode replay); checked against "
        "mabl.algo.registry",
    )
    preset: str = _f("quick", "named preset applied before the flags", ("paper", "quick", "cpu", "debug"))
    steps: int = _f(100_000, "environment steps to train for")
    seed: int = _f(0, "seed of every random number generator of the run")
    run_dir: str = _f("", "run directory (default runs/<env>_<algo>_s<seed>); re-running resumes")
    device: str = _f("auto", "'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:K'")
    threads: int = _f(0, "torch CPU threads (0 = torch default)")
    amp: bool = _f(False, "bf16 autocast for the learner's matrix work [ours]")
    compile: bool = _f(
        False,
        "torch.compile the world-model loss (forward and backward, the whole filter loop) and imagination, "
        "each as one graph with plain dense one-hot products; on CUDA as CUDA graphs (mode reduce-overhead). "
        "Compiles once per run (minutes on a CPU); same values as eager up to rounding; world-model "
        "algorithms [ours]")
    checkpoint_every: int = _f(10_000, "env steps between checkpoints (also one at the end)")
    max_skipped_updates: int = _f(
        20,
        "divergence guard: an update whose loss or gradient norm is not finite is never applied; after this "
        "many consecutive skipped updates of one learner the run stops with one line (0 = never stop) [ours]")
    eval_every: int = _f(10_000, "env steps between evaluation rounds (0 = never)")
    eval_episodes: int = _f(10, "episodes per evaluation round")
    diagnose_every: int = _f(
        0,
        "log the cheap world-model diagnostics (mabl.diagnose: state probe R^2 on the learner call's windows, "
        "open-loop errors k=1..5, KL per level) as kind 'diagnose' lines every this many learner calls; 0 = off. "
        "Leaves every random state alone, so results do not change [ours]",
    )
    progress: bool = _f(
        True,
        "show a progress bar (without a terminal: a plain status line every 5% of the steps); either way one line "
        "per evaluation and checkpoint")
    log: str = _f(
        "jsonl,tensorboard",
        "loggers, comma-separated: jsonl (always on: metrics.jsonl, eval.jsonl), tensorboard (tb/), csv "
        "(metrics.csv, eval.csv), wandb (offline with WANDB_MODE=offline; extra mabl[wandb]), mlflow (file store "
        "<run_dir>/mlruns; extra mabl[mlflow])")
    model: ModelConfig = field(default_factory=ModelConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    mappo: MappoConfig = field(default_factory=MappoConfig)
    rmappo: RmappoConfig = field(default_factory=RmappoConfig)
    qmix: QmixConfig = field(default_factory=QmixConfig)
    mag: MagConfig = field(default_factory=MagConfig)
    smax: SmaxConfig = field(default_factory=SmaxConfig)
    flatland: FlatlandConfig = field(default_factory=FlatlandConfig)
    mamujoco: MamujocoConfig = field(default_factory=MamujocoConfig)

    def validate(self) -> RunConfig:
        """Check values; raise a one-line MablError naming the field and what is allowed."""
        for path, f, value in iter_fields(self):
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise MablError(f"--{path}={value!r} is not allowed; choose one of {', '.join(map(str, choices))}")
        positive = [
            "steps", "eval_episodes", "model.hidden", "model.deter", "model.n_categoricals",
            "model.n_classes", "model.encoder_layers", "model.batch_size", "model.lr", "model.reward_scale",
            "policy.hidden", "policy.attn_heads", "policy.batch_size", "policy.epochs",
            "policy.minibatch", "policy.actor_lr", "policy.critic_lr", "schedule.replay_capacity",
            "schedule.model_updates", "schedule.policy_iterations", "checkpoint_every",
            "model.mixer_layers", "model.mixer_heads", "mappo.n_envs", "mappo.rollout_steps", "mappo.hidden",
            "mappo.lr", "mappo.adam_eps", "mappo.epochs", "mappo.minibatches", "mappo.huber_delta",
            "rmappo.chunk_length", "rmappo.epochs",
            "mag.candidates", "mag.plan_horizon", "mag.error_layers", "mag.error_lr",
            "qmix.hidden", "qmix.buffer_episodes", "qmix.batch_episodes", "qmix.epsilon_anneal_steps", "qmix.lr",
            "qmix.optim_eps", "qmix.target_update_interval", "qmix.mixing_embed", "qmix.hypernet_embed",
        ]
        for path in positive:
            if not get_path(self, path) > 0:  # also refuses NaN
                raise MablError(f"--{path}={get_path(self, path)} must be > 0")
        nonneg = ["threads", "eval_every", "diagnose_every", "max_skipped_updates", "policy.target_critic",
                  "schedule.learning_starts", "schedule.train_every",
                  "model.grad_clip", "policy.grad_clip", "policy.entropy", "policy.clip",
                  "policy.actor_weight_decay", "policy.target_entropy", "policy.entropy_rate",
                  "mappo.clip", "mappo.entropy", "mappo.grad_clip", "mag.error_updates", "mag.lr", "qmix.grad_clip"]
        for path in nonneg:
            if not get_path(self, path) >= 0:
                raise MablError(f"--{path}={get_path(self, path)} must be >= 0")
        from mabl.run_log import parse_loggers

        parse_loggers(self.log)
        if self.model.seq_len < 3:
            raise MablError(f"--model.seq_len={self.model.seq_len} must be >= 3 (windows are shifted by one)")
        if self.policy.horizon < 2:
            raise MablError(f"--policy.horizon={self.policy.horizon} must be >= 2")
        for path in ["policy.gamma", "policy.lam", "model.kl_balance", "policy.entropy_decay",
                     "model.mixer_dropout", "mappo.gamma", "mappo.gae_lambda", "qmix.gamma", "qmix.epsilon_start",
                     "qmix.epsilon_finish", "qmix.optim_alpha"]:
            if not 0.0 <= get_path(self, path) <= 1.0:
                raise MablError(f"--{path}={get_path(self, path)} must be in [0, 1]")
        if self.schedule.mode == "steps" and self.schedule.train_every <= 0:
            raise MablError("--schedule.mode=steps needs --schedule.train_every > 0")
        if self.policy.hidden % self.policy.attn_heads:
            raise MablError(
                f"--policy.hidden={self.policy.hidden} must be divisible by --policy.attn_heads="
                f"{self.policy.attn_heads}"
            )
        return self


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def __getattr__(name: str) -> Any:
    """``ADDED_FIELDS`` and ``from_dict`` (the reading of configs saved by earlier versions) live in
    :mod:`mabl.config_migration`, which sits above this module; they are still importable from here."""
    if name in ("ADDED_FIELDS", "from_dict"):
        from mabl import config_migration

        return getattr(config_migration, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
