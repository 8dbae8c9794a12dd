"""Weight-for-weight oracle: our MABL world model and learner against the released code, one batch.

Run (prints the table and writes it to ``--out``)::

    MABL_RELEASED_CODE=/path/to/aravindvenu7-MABL OMP_NUM_THREADS=1 PYTHONPATH=src \\
        python tests/oracle/mabl_oracle.py --out docs/oracle/mabl_oracle.txt

``MABL_RELEASED_CODE`` is a checkout of github.com/aravindvenu7/MABL (the directory that holds
``mabl/``). It is imported read-only; the only changes are on this side (module attributes patched
for the duration of a call, never a file of it):

- a no-op ``wandb`` module in ``sys.modules`` whose ``log`` records what ``loss.py`` logs, and
  ``loss.py``'s ``np`` replaced by a shim whose ``random.randint`` always returns 4, so that
  ``model_loss`` logs its terms on every call (``loss.py:62``);
- a bare ``configs`` package (no ``__init__``: the real one imports the Flatland configs);
- the sampling functions ``torch.multinomial`` / ``torch.bernoulli`` (released categorical and
  Bernoulli samples) and ``torch.rand`` inside our ``sample_onehot`` replaced by draws from one
  shared noise source (:class:`Noise`), keyed by (phase, role, step), where a role is which
  network's sample it is. Both sides then draw every categorical latent, mask and action from the
  same uniforms by the same inverse-CDF rule, so every difference left is one of computation.

Ours runs with its defaults (``--model.loss_divisor all_rows``, ``--model.episode_reset carried_state``,
``--policy.empty_avail keep``), nothing of it patched but the sampling noise above. A section whose
title says "option" runs ours with an earlier reading instead (a named config option, not the
default) and shows that option's size of difference from the released code; those are expected to
differ.

Sizes: SMAC's ``3s_vs_4z`` (3 agents, 10 actions, observation 42, state 61; ENVIRONMENTS.md), the
released SMAC configuration (``configs/dreamer/DreamerAgentConfig.py``, ``DreamerLearnerConfig.py``)
and our ``paper`` preset, which agree on every size (hidden 256, 32 x 32 latents, horizon 15).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from name_map import (  # noqa: E402
    RELEASED_UNUSED,
    actor_pairs,
    check_coverage,
    copy_weights,
    critic_pairs,
    world_model_pairs,
)

N_AGENTS, N_ACTIONS, OBS_DIM, STATE_DIM = 3, 10, 42, 61  # SMAC 3s_vs_4z
SEQ_LEN, BATCH = 20, 8
TOL = 1e-5
"""Relative tolerance of every real-valued quantity in fp32. Losses, logits, latents, values and
returns: ``max |ours - released| / max |released|``. Gradients: ``||ours - released||_2 /
||released||_2`` over the tensor (the gradient-check norm), because a gradient sums rows through
ReLUs, and a pre-activation within a last-bit rounding of 0 (about one in 10^6 at these sizes) flips
its unit in one row: one element then differs by that row's whole contribution. (Measured: our critic
fed the same features once as one-hot floats and once as class indices, its two input forms, differs
from itself by 3.4e-4 in the max-relative measure of its embedding gradient, 2e-7 in the norm one.)
Both measures are printed for every quantity."""
POLICY_GRAD_TOL = 1e-2
"""Norm-relative tolerance of our actor/critic gradients on our own imagined batch against the
released ones on theirs. The two batches agree to ~1e-6 but not bit for bit (the released latents
read ``one_hot + probs - probs.detach()`` = 1 +- 6e-8, ours exactly 1; the transformer and GRU sums
round differently), and the PPO gradient, a mean of terms A * grad(rho) with mean(A) = 0, cancels
most of its terms, so its norm is small and one ReLU unit flipped in one row (a pre-activation within
the inputs' last bits of 0) is a large part of it. Measured: 2.5e-5 for MABL; 2.7e-3 for MAMBA with
its agent-index encoding, all of it in the actor's first layer, one element of its bias gradient
(unit 178, whose pre-activation in one row is 8.8e-8 on the released features; the other 255 agree
within 4e-9). The computation itself is held to :data:`TOL`: every section also feeds our losses the
released imagined batch bit for bit ("ours on the released imagined batch")."""

ORIG_MULTINOMIAL, ORIG_BERNOULLI, ORIG_RAND = torch.multinomial, torch.bernoulli, torch.rand


# ---------------------------------------------------------------------------------------------- noise
class Noise:
    """Uniform noise shared by both sides: a draw is a pure function of (seed, phase, role, step,
    numel). Each (phase, role) keeps a step counter; a draw that covers several steps at once (our
    filter samples the global prior of all T steps in one call) concatenates the per-step draws."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.phase = "filter"
        self.roles: list[str] = []
        self.override: str | None = None
        self.counters: dict[tuple[str, str], int] = {}

    def reset(self, phase: str = "filter") -> None:
        self.phase, self.counters, self.roles, self.override = phase, {}, [], None

    def role(self, default: str) -> str:
        return self.override or (self.roles[-1] if self.roles else default)

    def draw(self, role: str, numel: int, steps: int = 1) -> torch.Tensor:
        key = (self.phase, role)
        first = self.counters.get(key, 0)
        self.counters[key] = first + steps
        per_step = numel // steps
        assert per_step * steps == numel, (role, numel, steps)
        parts = []
        for step in range(first, first + steps):
            seed = zlib.crc32(f"{self.seed}/{self.phase}/{role}/{step}".encode())
            parts.append(ORIG_RAND(per_step, generator=torch.Generator().manual_seed(seed)))
        return torch.cat(parts)


NOISE = Noise()


def _inverse_cdf(probs_2d: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The first class whose cumulative probability reaches u (our ``_SampleOneHot`` rule)."""
    return torch.searchsorted(probs_2d.float().cumsum(-1), u[:, None].contiguous()).clamp_max_(probs_2d.shape[-1] - 1)


def _multinomial(probs, num_samples, replacement=False, *, generator=None, out=None):
    assert num_samples == 1 and probs.dim() == 2, (num_samples, probs.shape)
    return _inverse_cdf(probs, NOISE.draw(NOISE.role("action"), probs.shape[0]))


def _bernoulli(probs, *args, generator=None, out=None):
    u = NOISE.draw(NOISE.role("avail"), probs.numel()).view(probs.shape)
    return (u < probs).to(probs.dtype)


@contextlib.contextmanager
def patched(*triples):
    """Set ``(obj, attr, value)`` for the duration of the block."""
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in triples]
    try:
        for obj, attr, value in triples:
            setattr(obj, attr, value)
        yield
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)


def shared_sampling():
    return patched((torch, "multinomial", _multinomial), (torch, "bernoulli", _bernoulli))


@contextlib.contextmanager
def role(name: str):
    NOISE.roles.append(name)
    try:
        yield
    finally:
        NOISE.roles.pop()


@contextlib.contextmanager
def override(name: str):
    saved, NOISE.override = NOISE.override, name
    try:
        yield
    finally:
        NOISE.override = saved


# ---------------------------------------------------------------------------------------------- released code
WANDB_LOG: list[dict] = []


RELEASED_PACKAGES = ("agent", "networks", "environments", "configs", "env")
"""Top-level module names of the released code (MABL's and MAMBA's alike)."""


def import_released(src: str) -> None:
    """Make ``src`` the released code that ``import agent...`` finds: forget the modules of any other
    checkout imported before (MABL's and MAMBA's share their top-level names), put ``src`` first on
    ``sys.path``, and install the harness-side stand-ins (``wandb``, a bare ``configs``)."""
    for name in list(sys.modules):
        if name.split(".")[0] in RELEASED_PACKAGES:
            del sys.modules[name]
    sys.path[:] = [p for p in sys.path if p not in _RELEASED_PATHS]
    _RELEASED_PATHS.append(src)
    sys.path.insert(0, src)
    wandb = types.ModuleType("wandb")
    wandb.init = lambda *a, **k: None
    wandb.log = lambda values, *a, **k: WANDB_LOG.append(dict(values))
    sys.modules["wandb"] = wandb
    configs = types.ModuleType("configs")
    configs.__path__ = [str(Path(src) / "configs")]
    sys.modules["configs"] = configs


_RELEASED_PATHS: list[str] = []


def load_released_mabl(root: str) -> types.SimpleNamespace:
    """Import the released code (``<root>/mabl``) with the harness-side patches of the module docstring."""
    src = str(Path(root) / "mabl")
    if not Path(src, "agent", "optim", "loss.py").exists():
        raise SystemExit(f"MABL_RELEASED_CODE={root}: no mabl/agent/optim/loss.py there")
    import_released(src)
    import agent.optim.loss as loss
    import agent.optim.utils as utils
    import networks.dreamer.rnns as rnns
    from agent.learners.DreamerLearner import initialize_weights
    from agent.models.DreamerModel import DreamerModel
    from configs.dreamer.DreamerLearnerConfig import DreamerLearnerConfig
    from environments import Env
    from networks.dreamer.action import Actor
    from networks.dreamer.critic import MADDPGCritic

    loss.np = types.SimpleNamespace(random=types.SimpleNamespace(randint=lambda n: 4))
    return types.SimpleNamespace(loss=loss, utils=utils, rnns=rnns, DreamerModel=DreamerModel, Actor=Actor,
                                 MADDPGCritic=MADDPGCritic, DreamerLearnerConfig=DreamerLearnerConfig, Env=Env,
                                 initialize_weights=initialize_weights, root=root)


def released_config(rel):
    """The released SMAC learner configuration at 3s_vs_4z sizes (what ``train.py`` ``get_env_info`` sets)."""
    import io
    with contextlib.redirect_stdout(io.StringIO()):  # DreamerLearnerConfig prints its learning rates
        cfg = rel.DreamerLearnerConfig()
    cfg.IN_DIM, cfg.STATE_DIM, cfg.ACTION_SIZE, cfg.N_AGENTS = OBS_DIM, STATE_DIM, N_ACTIONS, N_AGENTS
    cfg.ENV_TYPE, cfg.DEVICE = rel.Env.STARCRAFT, "cpu"
    return cfg


def _pop_role(module, inputs, output) -> None:  # (a forward hook that returns a value replaces the output)
    NOISE.roles.pop()


def build_released(rel, seed: int):
    """DreamerModel, Actor, MADDPGCritic as ``DreamerLearner.__init__`` builds them (xavier weights)."""
    cfg = released_config(rel)
    torch.manual_seed(seed)
    model = rel.DreamerModel(cfg)
    actor = rel.Actor(cfg.FEAT, cfg.ACTION_SIZE, cfg.ACTION_HIDDEN, cfg.ACTION_LAYERS)
    critic = rel.MADDPGCritic(cfg.GLOBAL_FEAT + cfg.FEAT, cfg.HIDDEN, global_feat=cfg.GLOBAL)
    for module in (model, actor, critic):
        rel.initialize_weights(module, mode="xavier")
    roles = {"representation.agent_stochastic_posterior_model": "agent_post",
             "representation.global_stochastic_posterior_model": "global_post",
             "transition.global_stochastic_prior_model": "global_prior",
             "transition.agent_stochastic_prior_model": "agent_prior"}
    modules = dict(model.named_modules())
    for name, tag in roles.items():
        modules[name].register_forward_pre_hook(lambda m, i, tag=tag: NOISE.roles.append(tag))
        modules[name].register_forward_hook(_pop_role)
    # Actor.forward draws a sample that rollout_policy discards (it re-samples under the mask)
    actor.register_forward_pre_hook(lambda m, i: NOISE.roles.append("discarded"))
    actor.register_forward_hook(_pop_role)
    return cfg, model, actor, critic


# ---------------------------------------------------------------------------------------------- ours
def build_ours(overrides: dict | None = None):
    from mabl.algo.agent import MablAgent
    from mabl.envs.base import EnvSpec
    from mabl.presets import build_config

    spec = EnvSpec(name="smac:3s_vs_4z", n_agents=N_AGENTS, obs_dim=OBS_DIM, state_dim=STATE_DIM, discrete=True,
                   n_actions=N_ACTIONS, has_action_mask=True, episode_limit=200, has_win=True)
    # one PPO minibatch holding every imagined row, one epoch, no clipping: one gradient to compare
    cfg = build_config("paper", {"policy.epochs": 1, "policy.minibatch": 1_000_000, "policy.grad_clip": 1e30,
                                 **(overrides or {})})
    agent = MablAgent(spec, cfg, torch.device("cpu"))
    # optimizers that do not move the weights: the guarded step leaves each gradient in .grad
    agent.ppo.actor_opt = torch.optim.SGD(agent.actor.parameters(), lr=0.0)
    agent.ppo.critic_opt = torch.optim.SGD(agent.critic.parameters(), lr=0.0)
    roles = {"agent.agent_posterior": "agent_post", "global_posterior": "global_post",
             "global_prior": "global_prior", "agent_prior": "agent_prior"}
    modules = dict(agent.world_model.named_modules())
    for name, tag in roles.items():
        if name not in modules:  # (no global level: mamba, dreamer)
            continue
        head = modules[name]
        original = head.from_pre

        def tagged(pre, original=original, tag=tag):
            out = original(pre)
            out._oracle_role = tag
            return out

        head.from_pre = tagged  # LatentHead.forward calls self.from_pre, so both paths are tagged
    return agent


def ours_sampling():
    """Our ``sample_onehot`` (as the world model calls it) with its uniforms from :data:`NOISE`."""
    import mabl.models.world_model as wm

    original = wm.sample_onehot

    def sample(logits, *args, **kwargs):
        tag = getattr(logits, "_oracle_role", None)
        assert tag is not None, "a latent sample of ours from an untagged head"
        steps = logits.shape[0] if logits.dim() == 5 else 1  # [T, B, N, C, K]: all steps at once
        u = NOISE.draw(NOISE.role(tag), logits[..., 0].numel(), steps)
        with patched((torch, "rand", lambda shape, **kw: u.view(shape))):
            return original(logits, *args, **kwargs)

    return patched((wm, "sample_onehot", sample))


# ---------------------------------------------------------------------------------------------- batch
BATCHES = {
    "clean": "batch without episode starts or absorbing rows",
    "absorbing": "batch with absorbing rows at a window's end only (no reset inside any window)",
    "reset": "batch with an episode start inside a window only (time limit: last, no done, no absorbing row)",
    "both": "batch WITH episode starts and absorbing rows (terminated episodes, absorbing rows, new episodes)",
}
"""The replay batches the oracle compares on (:func:`make_rows`)."""


def make_rows(kind: str, seed: int = 1) -> dict[str, np.ndarray]:
    """One replay batch of ``SEQ_LEN`` rows x ``BATCH`` windows in our replay's layout (``replay.py``),
    one of :data:`BATCHES`.

    - clean: every window lies inside one episode (no done, fake or last row).
    - absorbing: window 0 ends with a terminated episode (done on row 17) and its two absorbing rows
      (18-19: zero observation and state, done, fake, every action available; ``last`` on row 19,
      which neither side reads as a reset inside the window).
    - reset: window 1 holds an episode cut by the time limit at row 12 (last, not done) and the next
      episode from row 13.
    - both: window 0 a terminated episode (done on row 6), absorbing rows 7-8 (last on 8) and a new
      episode from row 9; window 1 as in 'reset'; window 2 a terminated episode (done on row 16),
      absorbing rows 17-18 (last on 18) and a new episode on row 19.
    """
    rng = np.random.default_rng(seed)
    L, B, N = SEQ_LEN, BATCH, N_AGENTS
    rows = {
        "obs": rng.normal(size=(L, B, N, OBS_DIM)).astype(np.float32),
        "state": rng.normal(size=(L, B, STATE_DIM)).astype(np.float32),
        "avail": rng.random((L, B, N, N_ACTIONS)) < 0.7,
        "action": np.zeros((L, B, N), np.int64),
        "reward": rng.normal(size=(L, B)).astype(np.float32),
        "done": np.zeros((L, B), bool),
        "fake": np.zeros((L, B), bool),
        "last": np.zeros((L, B), bool),
    }
    rows["avail"][..., 0] = True  # no-op always available, as SMAC's dead units
    for idx in np.ndindex(L, B, N):  # the taken action was available
        rows["action"][idx] = rng.choice(np.flatnonzero(rows["avail"][idx]))

    def terminate(b, done_row, absorbing):
        rows["done"][done_row, b] = True
        for r in absorbing:
            rows["obs"][r, b] = 0.0
            rows["state"][r, b] = 0.0
            rows["avail"][r, b] = True
            rows["reward"][r, b] = 0.0
            rows["done"][r, b] = True
            rows["fake"][r, b] = True
        rows["last"][absorbing[-1], b] = True

    if kind == "absorbing":
        terminate(0, 17, [18, 19])
    if kind in ("reset", "both"):
        rows["last"][12, 1] = True
    if kind == "both":
        terminate(0, 6, [7, 8])
        terminate(2, 16, [17, 18])
    assert kind in BATCHES, kind
    return rows


def released_inputs(rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The same rows as ``DreamerMemory.get_transitions`` hands them to the learner (``DreamerMemory.py``:
    observation, global state, fake, last, av_action from rows 1..L-1; action, reward, done from rows
    0..L-2; per agent ``[T, B, N, 1]``; the global state ``[T, B, 1, G]``; one-hot actions)."""
    t = {k: torch.as_tensor(v) for k, v in rows.items()}
    N = N_AGENTS

    def per_agent(x):
        return x.float()[..., None, None].expand(*x.shape, N, 1).contiguous()

    return {
        "observation": t["obs"][1:].float(),
        "global_state": t["state"][1:].float()[:, :, None],
        "reward": per_agent(t["reward"])[:-1],
        "action": F.one_hot(t["action"], N_ACTIONS).float()[:-1],
        "done": per_agent(t["done"])[:-1],
        "fake": per_agent(t["fake"])[1:],
        "last": per_agent(t["last"])[1:],
        "av_action": t["avail"].float()[1:],
    }


# ---------------------------------------------------------------------------------------------- comparison
class Table:
    def __init__(self):
        self.rows: list[dict] = []

    def real(self, section: str, name: str, ours, released, tol: float = TOL, measure: str = "max",
             scale: float | None = None) -> dict:
        """``measure``: which relative difference is held to ``tol``, 'max' or 'norm' (see :data:`TOL`);
        ``scale`` replaces max |released| as the denominator of 'max' (a loss that is a small difference
        of large terms)."""
        ours = torch.as_tensor(ours).detach().double()
        released = torch.as_tensor(released).detach().double()
        assert ours.shape == released.shape, (name, ours.shape, released.shape)
        if scale is None:
            scale = released.abs().max().item() if released.numel() else 0.0
        diff = (ours - released).abs().max().item() if released.numel() else 0.0
        rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        norm = released.norm().item()
        norm_diff = (ours - released).norm().item()
        nrel = norm_diff / norm if norm > 0 else (0.0 if norm_diff == 0 else float("inf"))
        held = rel if measure == "max" else nrel
        row = {"section": section, "name": name, "kind": "real", "ours": _summary(ours), "released": _summary(released),
               "abs": diff, "rel": rel, "nrel": nrel, "measure": measure, "tol": tol, "ok": held <= tol}
        self.rows.append(row)
        return row

    def equal(self, section: str, name: str, ours, released) -> dict:
        ours, released = torch.as_tensor(ours), torch.as_tensor(released)
        assert ours.shape == released.shape, (name, ours.shape, released.shape)
        same = (ours == released).double().mean().item()
        row = {"section": section, "name": name, "kind": "equal", "ours": f"{same:.4%} equal", "released": "",
               "abs": 1.0 - same, "rel": 1.0 - same, "nrel": 1.0 - same, "measure": "exact", "tol": 0.0,
               "ok": same == 1.0}
        self.rows.append(row)
        return row

    def note(self, section: str, name: str, text: str) -> None:
        self.rows.append({"section": section, "name": name, "kind": "note", "ours": text, "released": "", "abs": 0.0,
                          "rel": 0.0, "nrel": 0.0, "measure": "", "tol": 0.0, "ok": True})

    def format(self) -> str:
        lines = [f"{'quantity':58s} {'ours':>14s} {'released':>14s} {'max abs diff':>12s} {'max rel':>10s} "
                 f"{'norm rel':>10s} {'tol':>13s}  status",
                 "(max rel = max|ours - released| / max|released|; norm rel = ||ours - released|| / ||released||; "
                 "tol names the measure held to it)"]
        section = None
        for r in self.rows:
            if r["section"] != section:
                section = r["section"]
                lines.append(f"\n== {section}")
            if r["kind"] == "note":
                lines.append(f"{r['name']:58s} {r['ours']}")
                continue
            if r["kind"] == "equal":
                lines.append(f"{r['name']:58s} {r['ours']:>29s} {r['abs']:12.3e} {'':>10s} {'':>10s} {'exact':>13s}  "
                             f"{'ok' if r['ok'] else 'MISMATCH'}")
                continue
            tol = f"{r['measure']} {r['tol']:.1e}"
            lines.append(f"{r['name']:58s} {r['ours']:>14s} {r['released']:>14s} {r['abs']:12.3e} {r['rel']:10.3e} "
                         f"{r['nrel']:10.3e} {tol:>13s}  {'ok' if r['ok'] else 'MISMATCH'}")
        return "\n".join(lines)


def _summary(x: torch.Tensor) -> str:
    if x.numel() == 1:
        return f"{x.item():.6g}"
    return f"|max| {x.abs().max().item():.4g}"


# ---------------------------------------------------------------------------------------------- the oracle
def setup(rel, seed: int = 0, overrides: dict | None = None):
    """Released networks and ours with the released weights copied in (the name map checked first);
    ``overrides``: config options of ours other than the defaults (an "option" section)."""
    cfg, model, actor, critic = build_released(rel, seed)
    agent = build_ours(overrides)
    z = cfg.N_CATEGORICALS * cfg.N_CLASSES
    maps = {
        "world_model": (model, agent.world_model, world_model_pairs(N_AGENTS, N_ACTIONS, z, cfg.DETERMINISTIC, cfg.HIDDEN)),
        "actor": (actor, agent.actor, actor_pairs(z, cfg.DETERMINISTIC)),
        "critic": (critic, agent.critic, critic_pairs(z, cfg.DETERMINISTIC)),
    }
    for key, (released, ours, pairs) in maps.items():
        problems = check_coverage(released, ours, pairs, RELEASED_UNUSED[key])
        if problems:
            raise AssertionError(f"{key} name map:\n" + "\n".join(problems))
        copy_weights(released, ours, pairs)
    return cfg, model, actor, critic, agent, maps


def run_world_model(rel, cfg, model, agent, rows, table: Table, section: str, maps) -> dict:
    """Both world-model losses on one batch: every term, the total, every mapped gradient, the
    filter's logits and samples."""
    from mabl.algo.world_model_loss import world_model_loss

    inputs = released_inputs(rows)
    captured = {}
    original_rollout = rel.loss.rollout_representation

    def rollout(*args, **kwargs):
        out = original_rollout(*args, **kwargs)
        captured["rollout"] = out
        return out

    WANDB_LOG.clear()
    NOISE.reset("filter")
    model.train()
    model.zero_grad(set_to_none=True)
    with shared_sampling(), patched((rel.loss, "rollout_representation", rollout)):
        released_loss = rel.loss.model_loss(cfg, model, inputs["observation"], inputs["global_state"], inputs["action"],
                                            inputs["av_action"], inputs["reward"], inputs["done"], inputs["fake"],
                                            inputs["last"])
    released_loss.backward()
    terms = {key.split("/", 1)[1]: value for key, value in WANDB_LOG[-1].items()}  # loss.py:63
    model.eval()

    wm = agent.world_model
    NOISE.reset("filter")
    wm.train()
    wm.zero_grad(set_to_none=True)
    batch = agent.to_batch(rows)
    with shared_sampling(), ours_sampling():
        loss, metrics, filt = world_model_loss(wm, batch, agent.cfg.model.kl_balance)
    loss.backward()
    wm.eval()

    names = [("kl_agent", "agent_div"), ("kl_global", "global_div"), ("obs", "reconstruction_loss"),
             ("reward", "reward_loss"), ("cont", "pcont_loss"), ("avail", "av_action_loss"), ("action", "info_loss")]
    out = {}
    for ours_name, released_name in names:
        out[ours_name] = table.real(section, f"loss {ours_name} (released {released_name})", metrics[ours_name],
                                    terms[released_name])
    out["total"] = table.real(section, "loss total", loss, released_loss)

    cut = batch.obs.shape[0] - 1
    agent_prior, agent_post, agent_deters, global_prior, global_post, global_deters = captured["rollout"]
    k = cfg.N_CLASSES
    table.equal(section, "filter: agent posterior samples (steps 0..T-2)",
                filt.post.z_a[:cut].unflatten(-1, (-1, k)).argmax(-1), agent_post.stoch.unflatten(-1, (-1, k)).argmax(-1))
    table.equal(section, "filter: global posterior samples (steps 0..T-2)",
                filt.post.z_g[:cut].unflatten(-1, (-1, k)).argmax(-1), global_post.stoch.unflatten(-1, (-1, k)).argmax(-1))
    table.real(section, "filter: agent posterior logits", filt.post_a_logits[:cut].flatten(-2), agent_post.logits)
    table.real(section, "filter: agent prior logits", filt.prior_a_logits[:cut].flatten(-2), agent_prior.logits)
    table.real(section, "filter: global posterior logits", filt.post_g_logits[:cut].flatten(-2), global_post.logits)
    table.real(section, "filter: global prior logits", filt.prior_g_logits[:cut].flatten(-2), global_prior.logits)
    table.real(section, "filter: h^a (posterior deter)", filt.post.h_a[:cut], agent_post.deter)
    table.real(section, "filter: h^a_{j+1} read by reward/cont", filt.h_a_trans[1:], agent_deters)
    table.real(section, "filter: h^g_{j+1} read by cont", filt.h_g_trans[1:], global_deters)
    for name, ours_t, rel_t in (("h^a", filt.post.h_a[:cut], agent_post.deter),
                                ("h^a_{j+1}", filt.h_a_trans[1:], agent_deters)):
        where = first_differences(ours_t, rel_t)
        table.note(section, f"filter: first differing step of {name} per window",
                   ", ".join(f"window {b}: step {j}" for b, j in where) or "none")

    # start states of imagination (posteriors j = 0..T-2) that agree on both levels: [T-1, B]
    def close(a, b):
        return ((a.detach() - b.detach()).abs().flatten(2).amax(-1) <= TOL * b.detach().abs().max())

    def same_class(a, b):
        return (a.unflatten(-1, (-1, k)).argmax(-1) == b.unflatten(-1, (-1, k)).argmax(-1)).flatten(2).all(-1)

    out["starts_ok"] = (close(filt.post.h_a[:cut], agent_post.deter) & close(filt.post.h_g[:cut], global_post.deter)
                        & same_class(filt.post.z_a[:cut], agent_post.stoch)
                        & same_class(filt.post.z_g[:cut], global_post.stoch))
    released_model, ours_model, pairs = maps["world_model"]
    out["grads"] = compare_grads(table, section, "grad world model", released_model, ours_model, pairs)

    return out


def first_differences(ours: torch.Tensor, released: torch.Tensor, tol: float = TOL) -> list[tuple[int, int]]:
    """``(window, first step)`` of every window ``[T, B, ...]`` where ours and released differ by more
    than ``tol`` relative to the largest released value."""
    diff = (ours.detach().double() - released.detach().double()).abs().flatten(2).amax(-1)  # [T, B]
    bad = diff > tol * released.detach().abs().max().item()
    return [(b, int(bad[:, b].nonzero()[0])) for b in range(bad.shape[1]) if bad[:, b].any()]


def compare_grads(table: Table, section: str, prefix: str, released, ours, pairs, tol: float = TOL) -> list[dict]:
    rel_params = dict(released.named_parameters())
    our_params = dict(ours.named_parameters())
    rows = []
    for pair in pairs:
        g_rel = rel_params[pair.released].grad
        g_our = our_params[pair.ours].grad
        g_rel = torch.zeros_like(rel_params[pair.released]) if g_rel is None else g_rel
        g_our = torch.zeros_like(our_params[pair.ours]) if g_our is None else g_our
        cols = "" if pair.start is None else f"[:, {pair.start}:{pair.stop}]"
        rows.append(table.real(section, f"{prefix} {pair.ours} <- {pair.released}{cols}", g_our, pair.take(g_rel),
                               tol=tol, measure="norm"))
    return rows


def released_mask_counter(empty_rows: list):
    """A forward hook for the released ``av_action`` head that counts, into ``empty_rows``, the rows
    where its ``sample()`` (``rnns.py`` rollout_policy) gives no action available. It changes
    nothing: the sample is returned as drawn."""

    def hook(module, inputs, dist):
        sample = dist.sample

        def counted(*args):
            avail = sample(*args)
            empty_rows.append(int((avail.sum(-1) == 0).sum()))
            return avail

        dist.sample = counted
        return dist

    return hook


def imagination_capture(cap: dict) -> list:
    """Patches for one imagination of ours: record the inputs of our lambda-returns in
    ``cap["ours_return_inputs"]`` and switch the shared noise to its imagination phase when our
    ``imagine`` starts (used by this oracle and by ``mamba_oracle.py``)."""
    import mabl.algo.agent as agent_module
    import mabl.algo.imagination as imagination

    orig_lambda, orig_imagine = imagination.lambda_returns, agent_module.imagine

    def lambda_returns(reward, continuation, value, gamma, lam):
        cap["ours_return_inputs"] = (reward, continuation, value)
        return orig_lambda(reward, continuation, value, gamma, lam)

    def imagine(*args, **kwargs):
        NOISE.phase = "imagine"
        return orig_imagine(*args, **kwargs)

    return [(imagination, "lambda_returns", lambda_returns), (agent_module, "imagine", imagine)]


def run_policy(rel, cfg, model, actor, critic, agent, rows, table: Table, section: str, maps,
               starts_ok: torch.Tensor | None = None) -> dict:
    """One imagination from the batch's posterior states on both sides (latents, masks, actions,
    rewards, continuations, values, lambda-returns), then the actor and critic losses and gradients
    on each side's imagined batch (one minibatch of every row, as one PPO step)."""

    inputs = released_inputs(rows)
    cap = {}
    loss = rel.loss
    orig_policy, orig_next, orig_return = loss.rollout_policy, loss.calculate_next_reward, loss.compute_return

    def rollout_policy(*args, **kwargs):
        NOISE.phase = "imagine"
        out = orig_policy(*args, **kwargs)
        cap["items"] = out
        return out

    def next_reward(*args, **kwargs):  # its transition's samples are discarded (only deter is read)
        with override("discarded"):
            return orig_next(*args, **kwargs)

    def compute_return(reward, value, discount, bootstrap, **kwargs):
        cap["return_inputs"] = (reward, value, discount, bootstrap)
        return orig_return(reward, value, discount, bootstrap, **kwargs)

    NOISE.reset("filter")
    empty_rows: list[int] = []
    mask_hook = model.av_action.register_forward_hook(released_mask_counter(empty_rows))
    try:
        with shared_sampling(), patched((loss, "rollout_policy", rollout_policy), (loss, "compute_return", compute_return),
                                        (loss, "calculate_next_reward", next_reward)):
            actions, av_actions, old_policy, agent_feat, global_feat, returns = loss.actor_rollout(
                inputs["observation"], inputs["global_state"], inputs["action"], inputs["last"], model, actor, critic, cfg)
    finally:
        mask_hook.remove()
    # DreamerLearner.train_agent (DreamerLearner.py:383-401) for one minibatch of every row, without the step
    adv = returns.detach() - critic(agent_feat, global_feat, actions).detach()
    adv = rel.utils.advantage(adv)
    actor.zero_grad(set_to_none=True)
    critic.zero_grad(set_to_none=True)
    with override("discarded"), shared_sampling():
        actor_loss = loss.actor_loss(agent_feat, actions, av_actions, old_policy, adv, actor, cfg.ENTROPY)
    actor_loss.backward()
    value_loss = loss.value_loss(critic, actions, agent_feat, global_feat, returns)
    value_loss.backward()

    NOISE.reset("filter")
    with shared_sampling(), ours_sampling(), patched(*imagination_capture(cap)):
        imagined = agent.imagine(rows)
    agent.actor.zero_grad(set_to_none=True)
    agent.critic.zero_grad(set_to_none=True)
    metrics = agent.ppo.update(imagined)

    # ---- the imagined batch: rows r = k * M + m (step k of start m), agents on axis 1
    table.note(section, "imagined masks with no action available", empty_mask_note(empty_rows, av_actions, agent))
    k = cfg.N_CLASSES
    z = cfg.N_CATEGORICALS * k
    r_rel, v_rel, c_rel, boot_rel = cap["return_inputs"]
    r_our, c_our, v_our = cap["ours_return_inputs"]
    v_rel_all = torch.cat([v_rel, boot_rel[None]]).squeeze(-1)
    starts = r_our.shape[1]
    selections = [("", torch.ones(starts, dtype=torch.bool))]
    if starts_ok is not None and not bool(starts_ok.all()):
        ok = starts_ok.flatten()  # start m = t * B + b
        selections.append((f" [from the {int(ok.sum())} of {starts} start states whose filter agrees]", ok))
    for suffix, ok in selections:
        rows_ok = ok.repeat(imagined.action.shape[0] // starts)  # rows r = k * M + m

        def sel(x, rows_ok=rows_ok):
            return x[rows_ok]

        table.equal(section, "imagined z^a (steps 0..H-2, class per categorical)" + suffix,
                    sel(imagined.latent.z_a), sel(agent_feat[..., :z].unflatten(-1, (-1, k)).argmax(-1)))
        table.real(section, "imagined h^a (steps 0..H-2)" + suffix, sel(imagined.latent.h_a), sel(agent_feat[..., z:]))
        table.equal(section, "imagined z^g (steps 0..H-2, class per categorical)" + suffix,
                    sel(imagined.latent.z_g), sel(global_feat[..., :z].unflatten(-1, (-1, k)).argmax(-1)))
        table.real(section, "imagined h^g (steps 0..H-2)" + suffix, sel(imagined.latent.h_g), sel(global_feat[..., z:]))
        table.equal(section, "imagined action masks" + suffix, sel(imagined.avail.float()), sel(av_actions))
        table.equal(section, "imagined actions" + suffix, sel(imagined.action), sel(actions.argmax(-1)))
        released_log_prob = F.log_softmax(old_policy, -1).gather(-1, actions.argmax(-1, keepdim=True)).squeeze(-1)
        table.real(section, "imagined log pi_old(a)" + suffix, sel(imagined.log_prob), sel(released_log_prob))
        table.real(section, "imagined rewards (team mean)" + suffix, r_our[:, ok], r_rel.squeeze(-2)[:, ok])
        table.real(section, "imagined continuation probabilities" + suffix, c_our[:, ok], c_rel.squeeze(-1)[:, ok])
        table.real(section, "imagined values V_0..V_{H-1}" + suffix, v_our[:, ok], v_rel_all[:, ok])
        table.real(section, "lambda-returns" + suffix, imagined.returns.view(-1, starts, N_AGENTS)[:, ok],
                   returns.squeeze(-1).view(-1, starts, N_AGENTS)[:, ok])
    advantage = normalized_advantage(imagined.returns, imagined.value, True)
    scale = float(advantage.abs().mean())  # the surrogate's terms are ratio x A: the actor loss is a small mean of them
    table.real(section, "actor loss (relative to mean |advantage|)", metrics["actor_loss"], actor_loss, scale=scale)
    table.real(section, "critic loss", metrics["critic_loss"], value_loss)
    for key, module in (("actor", actor), ("critic", critic)):
        _, ours_module, pairs = maps[key]
        compare_grads(table, section, f"grad {key}", module, ours_module, pairs, tol=POLICY_GRAD_TOL)
    released_grads = {"actor loss": actor_loss.detach(), "critic loss": value_loss.detach(),
                      **{f"actor.{n}": p.grad.clone() for n, p in actor.named_parameters()},
                      **{f"critic.{n}": p.grad.clone() for n, p in critic.named_parameters() if p.grad is not None}}
    ours_on_released_features(agent, cfg, table, section, maps, released_grads, agent_feat, global_feat, actions,
                              av_actions, old_policy, adv, returns)
    return {"imagined": imagined}


def empty_mask_note(empty_rows: list[int], av_actions, agent) -> str:
    """How many imagined (agent, row) masks came out empty on the released side, and what each side
    does there."""
    empty = sum(empty_rows[:-1])  # rollout_policy samples a mask at all H states; the last state's is dropped
    keep = agent.cfg.policy.empty_avail == "keep"
    ours = ("ours (--policy.empty_avail keep) keeps them empty, as the released code: every action masked, "
            "the action uniform" if keep else
            "ours (--policy.empty_avail most_likely) makes the most likely action available there; the released "
            "code keeps them empty and draws the action uniformly")
    return f"{empty} of {av_actions.shape[0] * av_actions.shape[1]} (agent, row) pairs on the released side; {ours}"


def normalized_advantage(returns, value, normalize):
    from mabl.algo.imagined_ppo import normalized_advantage as ours

    return ours(returns, value, normalize)


def ours_on_released_features(agent, cfg, table: Table, section: str, maps, released_grads: dict, agent_feat,
                               global_feat, actions, av_actions, old_policy, adv, returns) -> None:
    """Our actor and critic losses (``mappo.py``: ``ppo_actor_loss`` and the critic's squared error)
    and gradients on the released imagined batch itself, bit for bit: its features (latents as the
    released ``one_hot + probs - probs.detach()`` floats, which read 1 +- 6e-8 where ours read 1),
    actions, masks, old policy, normalised advantages and returns. Where the main rows differ only
    by last-bit differences of their inputs meeting a ReLU kink, these agree."""
    from mabl.algo.imagined_ppo import ppo_actor_loss
    from mabl.models.world_model import level_features

    z = cfg.N_CATEGORICALS * cfg.N_CLASSES
    sub = f"{section}; ours on the released imagined batch"
    agent.actor.zero_grad(set_to_none=True)
    agent.critic.zero_grad(set_to_none=True)
    action = actions.argmax(-1)
    old_log_prob = F.log_softmax(old_policy, -1).gather(-1, action[..., None]).squeeze(-1)
    dist = agent.actor.dist(agent_feat[..., :z], agent_feat[..., z:], av_actions.bool())
    actor_loss, _ = ppo_actor_loss(dist, action, old_log_prob, adv.squeeze(-1), agent.cfg.policy.clip,
                                   agent.cfg.policy.entropy)
    actor_loss.backward()
    if global_feat is None:  # one level (mamba)
        value = agent.critic(agent_feat[..., :z], agent_feat[..., z:])
    else:
        value = agent.critic(*level_features(agent_feat[..., :z], agent_feat[..., z:], global_feat[..., :z],
                                             global_feat[..., z:]))
    critic_loss = 0.5 * (value - returns.squeeze(-1)).pow(2).mean()
    critic_loss.backward()
    table.real(sub, "actor loss (relative to mean |advantage|)", actor_loss, released_grads["actor loss"],
               scale=float(adv.abs().mean()))
    table.real(sub, "critic loss", critic_loss, released_grads["critic loss"])
    for key in ("actor", "critic"):
        _, ours_module, pairs = maps[key]
        our_params = dict(ours_module.named_parameters())
        for pair in pairs:
            cols = "" if pair.start is None else f"[:, {pair.start}:{pair.stop}]"
            table.real(sub, f"grad {key} {pair.ours} <- {pair.released}{cols}", our_params[pair.ours].grad,
                       pair.take(released_grads[f"{key}.{pair.released}"]), measure="norm")


OPTIONS = (
    ("absorbing", "model.loss_divisor", "unmasked_rows", "world model"),
    ("reset", "model.episode_reset", "start_state", "world model"),
    ("both", "model.episode_reset", "start_state", "world model"),
    ("clean", "policy.empty_avail", "most_likely", "imagination and policy"),
)
"""The earlier readings of ours, each run on a batch where it matters: ``(batch, option, value, part)``."""


def option_label(option: str, value: str) -> str:
    return f"OPTION --{option} {value} (earlier mabl, not the default; expected to differ)"


def oracle(root: str, seed: int = 0) -> Table:
    torch.set_num_threads(1)
    rel = load_released_mabl(root)
    table = Table()
    for key, prefixes in RELEASED_UNUSED.items():
        for prefix, why in prefixes.items():
            table.note("name map", f"released {key} {prefix}* (no counterpart)", why)
    for kind, label in BATCHES.items():
        cfg, model, actor, critic, agent, maps = setup(rel, seed)
        rows = make_rows(kind)
        wm_out = run_world_model(rel, cfg, model, agent, rows, table, f"world model, {label}", maps)
        run_policy(rel, cfg, model, actor, critic, agent, rows, table, f"imagination and policy, {label}", maps,
                   starts_ok=wm_out["starts_ok"])
    for kind, option, value, part in OPTIONS:
        cfg, model, actor, critic, agent, maps = setup(rel, seed, {option: value})
        section = f"{part}, {BATCHES[kind]}; {option_label(option, value)}"
        if part == "world model":
            run_world_model(rel, cfg, model, agent, make_rows(kind), table, section, maps)
        else:
            run_policy(rel, cfg, model, actor, critic, agent, make_rows(kind), table, section, maps)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="also write the table here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = os.environ.get("MABL_RELEASED_CODE")
    if not root:
        raise SystemExit("set MABL_RELEASED_CODE to a checkout of github.com/aravindvenu7/MABL")
    table = oracle(root, args.seed)
    text = table.format()
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
