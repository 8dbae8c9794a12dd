"""MABL's learner state: world model, actor, critic, their optimizers, and the two learner steps.

The trainer (``train.py``) calls :meth:`MablAgent.train_world_model` and
:meth:`MablAgent.train_policy` in the order of the paper's Algorithm 1.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import torch
from torch.utils._pytree import tree_map

from mabl.algo.guard import UpdateGuard, params_finite
from mabl.algo.imagination import Imagined, imagine
from mabl.algo.imagined_ppo import ImaginedPpo
from mabl.algo.optim import adam
from mabl.algo.world_model_loss import SequenceBatch, action_input, shift_window, world_model_loss
from mabl.config import RunConfig
from mabl.envs.base import EnvSpec
from mabl.errors import MablError
from mabl.models.actor_critic import Actor, AttentionCritic
from mabl.models.world_model import VARIANTS, BiLevelWorldModel
from mabl.policy import DecentralizedPolicy, latent_policy, latent_policy_payload


def without_mha_fastpath(fn):
    """``fn`` called with PyTorch's fused transformer fast path off, restored afterwards.

    The fast path (``aten._transformer_encoder_layer_fwd``, taken by an eval-mode, no-grad
    ``nn.TransformerEncoderLayer``) has a fake kernel whose strides are wrong under torch.compile:
    compiling mag's imagination (its mixer inside the planner) ended in an ``assert_size_stride``
    error (torch 2.13, CPU). Off, the layers trace their plain path: the same math. Compiled graphs
    of ``--compile`` are traced and called through this, so they never see the fused kernel.
    """

    @functools.wraps(fn)
    def call(*args, **kwargs):
        enabled = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.backends.mha.set_fastpath_enabled(enabled)

    return call


class MablAgent:
    """The learner of every world-model algorithm (``mabl``, ``mabl-sg``, ``dreamer``, ``mamba``;
    ``mag`` subclasses it): the variant (:data:`VARIANTS`) decides which parts the world model and
    the critic have."""

    def __init__(self, spec: EnvSpec, cfg: RunConfig, device: torch.device):
        self.spec, self.cfg, self.device = spec, cfg, device
        self.variant = VARIANTS[cfg.algo]
        self.world_model = self.build_world_model().to(device)
        # Dropout (MAMBA's mixer) is on in world-model training only; acting and imagination are eval.
        self.world_model.eval()
        sizes = (self.world_model.latent_dim, cfg.model.n_classes, cfg.model.deter, cfg.policy.hidden)
        zero_bias = cfg.model.bias_init == "zeros"
        self.actor = Actor(*sizes, spec.action_size, continuous=not spec.discrete, init_std=cfg.policy.init_std,
                           zero_bias=zero_bias).to(device)
        levels = 2 if self.world_model.has_global else 1
        self.critic = AttentionCritic(*sizes, cfg.policy.attn_heads, spec.n_agents, levels, zero_bias).to(device)
        self.model_opt = adam(self.world_model.parameters(), lr=cfg.model.lr)
        self.model_guard = UpdateGuard("world-model", device, f"try a lower --model.lr (now {cfg.model.lr:g}) "
                                       f"or --model.grad_clip (now {cfg.model.grad_clip:g})")
        self.ppo = ImaginedPpo(self.actor, self.critic, cfg.policy)
        self.guards = {"model": self.model_guard, **self.ppo.guards}
        """The divergence guard of each learner (:mod:`mabl.algo.guard`), read by the trainer."""
        self.model_loss, self.imagine_fn = self.eager_model_loss, self.imagine_batch
        self.cuda_graphs = cfg.compile and device.type == "cuda"  # compiled graphs replayed as CUDA graphs
        if cfg.compile:  # one graph each for the loss and imagination; CUDA graphs on a GPU (no host reads inside)
            options = {"fullgraph": True, "dynamic": False, "mode": "reduce-overhead" if self.cuda_graphs else None}
            self.model_loss = without_mha_fastpath(torch.compile(self.eager_model_loss, **options))
            self.imagine_fn = without_mha_fastpath(torch.compile(self.imagine_batch, **options))

    @staticmethod
    def check_config(cfg: RunConfig) -> None:
        """What a run's config must satisfy for this learner (:func:`mabl.algo.registry.check_config`):
        the agent mixer's attention heads divide its width."""
        if VARIANTS[cfg.algo].agent_mixer and cfg.model.hidden % cfg.model.mixer_heads:
            raise MablError(f"--model.hidden={cfg.model.hidden} must be divisible by --model.mixer_heads="
                            f"{cfg.model.mixer_heads} for --algo {cfg.algo}")

    def build_world_model(self) -> BiLevelWorldModel:
        """The world model of the variant (``mag`` builds its per-agent local models here)."""
        return BiLevelWorldModel(self.spec, self.cfg.model, self.variant)

    def eager_model_loss(self, batch: SequenceBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The world-model loss and its per-term metrics (what ``--compile`` compiles)."""
        loss, metrics, _ = world_model_loss(self.world_model, batch, self.cfg.model.kl_balance)
        return loss, metrics

    def autocast(self):
        """bf16 autocast for the learner when ``--amp`` is on (matrix work only; losses stay fp32)."""
        if not self.cfg.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def policy(self) -> DecentralizedPolicy:
        """The acting path over the live networks (no copies): e_o, agent GRU, agent posterior, actor
        (a :class:`~mabl.policy.JointPolicy` for MAMBA)."""
        return latent_policy(self.world_model.agent, self.actor, self.spec, self.device)

    def policy_payload(self, cfg: RunConfig) -> dict:
        """Export hook (:mod:`mabl.algo.contract`): the policy file of the run of ``cfg``."""
        return latent_policy_payload(self.world_model.agent, self.actor, self.spec, cfg.model, cfg.policy.hidden,
                                     cfg.algo)

    def to_batch(self, rows: dict[str, np.ndarray | torch.Tensor]) -> SequenceBatch:
        """Replay rows ``[L, B, ...]`` (numpy, or tensors already on the device) -> shifted torch batch
        on the device."""
        tensors = {k: torch.as_tensor(v).to(self.device, non_blocking=True) for k, v in rows.items()}
        return shift_window(tensors, self.cfg.model.reward_scale)

    def train_world_model(self, rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """One world-model update on sampled windows (Alg. 1 lines 6-7)."""
        batch = self.to_batch(rows)
        self.world_model.train()
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # each call is a new step of the CUDA graphs
        with self.autocast():
            loss, metrics = self.model_loss(batch)
        if self.cfg.compile:  # a compiled graph's outputs may live in memory its next call overwrites
            metrics = {k: v.clone() for k, v in metrics.items()}
        # a non-finite loss or gradient norm skips the step on the device (mabl.algo.guard)
        grad_norm, skipped = self.model_guard.step(self.model_opt, self.world_model.parameters(), loss,
                                                   self.cfg.model.grad_clip,
                                                   {f"model/{k}": v for k, v in metrics.items()})
        self.world_model.eval()
        return {"loss": loss.detach(), **metrics, "grad_norm": grad_norm.detach(), "skipped": skipped.float()}

    def after_world_model(self, sample) -> list[dict[str, torch.Tensor]]:
        """Extra steps after a learner call's world-model updates, on windows drawn with
        ``sample()``; their metrics are logged under ``mag/``. None here (MAG's error predictor)."""
        return []

    def params_finite(self) -> dict[str, torch.Tensor]:
        """Per network, a device bool: all its weights are finite."""
        return {"world model": params_finite([self.world_model]), "actor": params_finite([self.actor]),
                "critic": params_finite([self.critic])}

    def train_policy(self, rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """One policy iteration (Alg. 1 lines 10-13): imagine from fresh windows, then MAPPO."""
        rollout = self.imagine(rows)
        with self.autocast():
            metrics = self.ppo.update(rollout)
        metrics["imagined_rows"] = torch.tensor(float(rollout.action.shape[0]))  # counted by the trainer
        metrics["imagined_reward"] = rollout.reward.mean()
        metrics["imagined_return"] = rollout.returns.mean()
        metrics["entropy_coef"] = torch.tensor(self.ppo.entropy_coef)
        return metrics

    def imagine(self, rows: dict[str, np.ndarray]) -> Imagined:
        """Filter fresh windows and imagine from every posterior state but the last of each window."""
        batch = self.to_batch(rows)
        if not self.cuda_graphs:
            return self.imagine_fn(batch)
        torch.compiler.cudagraph_mark_step_begin()
        # (a copy: the graph's outputs live in memory its next replay overwrites)
        return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, self.imagine_fn(batch))

    @torch.no_grad()
    def imagine_batch(self, batch: SequenceBatch) -> Imagined:
        """:meth:`imagine` on a batch already on the device."""
        with self.autocast():
            prev_action = action_input(batch.prev_action, self.spec)
            filt = self.world_model.observe(batch.obs, batch.state, prev_action, batch.first)
            # SPEC §3: the first T-1 posterior states of each window: [T-1, B, N, .] -> [M, N, .]
            start = filt.post.map(lambda t: t[:-1].float()).flatten(0, 1)
            return imagine(self.world_model, self.actor, self.critic, start,
                           self.cfg.policy.horizon, self.cfg.policy.gamma, self.cfg.policy.lam,
                           self.cfg.policy.continuation == "per_agent", self.ppo.target_critic,
                           self.cfg.policy.empty_avail)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        return {
            "world_model": self.world_model.state_dict(),
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "model_opt": self.model_opt.state_dict(),
            "mappo": self.ppo.state_dict(),  # (the key older checkpoints hold)
            "guards": {k: g.state_dict() for k, g in self.guards.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.world_model.load_state_dict(state["world_model"])
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.model_opt.load_state_dict(state["model_opt"])
        self.ppo.load_state_dict(state["mappo"])
        for key, guard in self.guards.items():  # (checkpoints from before the guard have none)
            guard.load_state_dict(state.get("guards", {}).get(key))
