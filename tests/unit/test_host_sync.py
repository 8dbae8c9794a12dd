"""The learner's updates never read a device value back to the host (issue 6: no host
synchronisation inside an update, so a GPU runs an update without waiting and the fixed-shape
loops can be captured).

On a GPU such a read stalls the host until the device has finished all queued work. The CPU has
nothing to wait for, but the same operators are dispatched, so a dispatch mode here sees every op
that would synchronise: reading a scalar (``.item()``, ``bool(t)``, ``int(t)``, Python control flow on
a tensor) and ops whose output size depends on values. The updates run with the GPU's dense
one-hot table gradients (the CPU's sparse form sizes its index arrays on the host by design).

The ``gpu`` variants (skipped without a GPU) run the same detector with the learner on CUDA, and
add CUDA's own detector: ``torch.cuda.set_sync_debug_mode("error")`` raises at any call that
synchronises the host with the device (scalar reads, blocking copies), with the windows gathered
from a replay copy on the GPU as in training.
"""

from __future__ import annotations

import collections
import traceback

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import mabl.models.onehot as onehot
from mabl.algo import build_learner
from mabl.envs.base import EnvSpec
from mabl.presets import build_config
from mabl.replay import SequenceReplay

SYNCING_OPS = {
    "_local_scalar_dense",  # .item(), bool(), int(), float() of a tensor
    "is_nonzero", "equal",  # Python truth of a tensor, torch.equal
    "nonzero", "masked_select", "unique", "_unique", "_unique2", "unique_consecutive", "unique_dim",
    "bincount", "repeat_interleave", "masked_scatter", "histc",  # output sizes from values
}


class HostReads(TorchDispatchMode):
    """Records each syncing op with the innermost mabl source lines that issued it."""

    def __init__(self):
        super().__init__()
        self.hits: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._overloadpacket.__name__
        if name in SYNCING_OPS:
            where = [f"{f.filename.split('src/')[-1]}:{f.lineno}" for f in traceback.extract_stack()
                     if "/mabl/" in f.filename]
            self.hits[f"{name} at {' <- '.join(reversed(where[-3:]))}"] += 1
        return func(*args, **(kwargs or {}))


DISCRETE = EnvSpec("sync-discrete", n_agents=3, obs_dim=6, state_dim=9, discrete=True, n_actions=4,
                   has_action_mask=True, episode_limit=30)
CONTINUOUS = EnvSpec("sync-continuous", n_agents=2, obs_dim=5, state_dim=7, discrete=False, action_dim=3,
                     action_low=-0.4, action_high=0.4, episode_limit=30)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _replay(spec: EnvSpec, rng: np.random.Generator, device: torch.device | None = None) -> SequenceReplay:
    replay = SequenceReplay(spec, 2000, device=device)
    n = spec.n_agents
    while replay.real_rows < 400:
        length = int(rng.integers(5, 30))
        if spec.discrete:
            avail = rng.random((length, n, spec.n_actions)) < 0.7
            avail[..., 0] = True
            action = rng.integers(0, spec.n_actions, size=(length, n))
        else:
            avail = None
            action = rng.uniform(spec.action_low, spec.action_high, (length, n, spec.action_dim)).astype(np.float32)
        rows = {"obs": rng.normal(size=(length, n, spec.obs_dim)).astype(np.float32),
                "state": rng.normal(size=(length, spec.state_dim)).astype(np.float32),
                "action": action, "reward": rng.normal(size=length).astype(np.float32),
                "done": np.arange(length) == length - 1}
        if avail is not None:
            rows["avail"] = avail
        replay.add_episode(rows, terminated=bool(rng.random() < 0.5), rng=rng)
    return replay


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("algo", ["mabl", "mabl-sg", "dreamer", "mamba", "mag"])
@pytest.mark.parametrize("spec", [DISCRETE, CONTINUOUS], ids=["discrete", "continuous"])
@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_learner_updates_never_read_device_values(monkeypatch, algo, spec, amp, device):
    monkeypatch.setattr(onehot, "SPARSE_ONEHOT_GRAD", False)  # the GPU's form
    if algo in ("mamba", "mag") and amp:
        # Under a dispatch mode, the no-grad transformer layers (MAMBA's mixer in imagination) take
        # their fused fast path even inside bf16 autocast, which that kernel does not support;
        # without the mode they take the unfused path, which this turns on.
        monkeypatch.setattr(torch.backends.mha, "get_fastpath_enabled", lambda: False)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = build_config("debug", {"algo": algo, "amp": amp, "device": device})
    agent = build_learner(spec, cfg, torch.device(device))
    replay = _replay(spec, rng)
    model_rows = replay.sample(cfg.model.batch_size, cfg.model.seq_len, rng)
    policy_rows = replay.sample(cfg.policy.batch_size, cfg.model.seq_len, rng)
    agent.train_world_model(model_rows)  # warm-up: lazily built caches may read once
    agent.train_policy(policy_rows)
    reads = HostReads()
    with reads:
        model_metrics = agent.train_world_model(model_rows)
        policy_metrics = agent.train_policy(policy_rows)
    assert not reads.hits, "host reads inside an update:\n" + "\n".join(f"{n} x {k}" for k, n in reads.hits.items())
    # the updates did run: every metric is a finite tensor (still on the device)
    for metrics in (model_metrics, policy_metrics):
        assert all(isinstance(v, torch.Tensor) and torch.isfinite(v).all() for v in metrics.values())


@pytest.mark.gpu
@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_learner_updates_do_not_synchronise_cuda(amp):
    device = torch.device("cuda")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = build_config("debug", {"amp": amp, "device": "cuda"})
    agent = build_learner(DISCRETE, cfg, device)
    replay = _replay(DISCRETE, rng, device)
    model_rows = replay.sample(cfg.model.batch_size, cfg.model.seq_len, rng)
    policy_rows = replay.sample(cfg.policy.batch_size, cfg.model.seq_len, rng)
    assert all(v.device.type == "cuda" for v in model_rows.values())
    agent.train_world_model(model_rows)  # warm-up
    agent.train_policy(policy_rows)
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        model_metrics = agent.train_world_model(model_rows)
        policy_metrics = agent.train_policy(policy_rows)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    for metrics in (model_metrics, policy_metrics):
        assert all(torch.isfinite(v).all() for v in metrics.values())


@pytest.mark.gpu
def test_cuda_sync_detector_sees_a_host_read():
    x = torch.ones(3, device="cuda")
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError):
            x.sum().item()
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def test_the_detector_sees_a_host_read():
    reads = HostReads()
    x = torch.ones(3)
    with reads:
        if x.sum() > 0:  # Python control flow on a tensor
            torch.nonzero(x)
    assert any(k.startswith("_local_scalar_dense") for k in reads.hits) or any(
        k.startswith("is_nonzero") for k in reads.hits)
    assert any(k.startswith("nonzero") for k in reads.hits)


@pytest.mark.parametrize("spec", [DISCRETE, CONTINUOUS], ids=["discrete", "continuous"])
def test_skipped_updates_never_read_device_values(monkeypatch, spec):
    """The divergence guard decides on the device: a non-finite update is skipped without a host read."""
    monkeypatch.setattr(onehot, "SPARSE_ONEHOT_GRAD", False)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = build_config("debug", {"algo": "mabl"})
    agent = build_learner(spec, cfg, torch.device("cpu"))
    replay = _replay(spec, rng)
    model_rows = replay.sample(cfg.model.batch_size, cfg.model.seq_len, rng)
    policy_rows = replay.sample(cfg.policy.batch_size, cfg.model.seq_len, rng)
    agent.train_world_model(model_rows)
    agent.train_policy(policy_rows)
    loss_fn, imagine = agent.model_loss, agent.imagine
    monkeypatch.setattr(agent, "model_loss", lambda batch: (lambda lm: (lm[0] * float("nan"), lm[1]))(loss_fn(batch)))
    monkeypatch.setattr(agent, "imagine", lambda rows: imagine(rows)._replace(returns=imagine(rows).returns * float("inf")))
    weights = [p.detach().clone() for m in (agent.world_model, agent.actor, agent.critic) for p in m.parameters()]
    reads = HostReads()
    with reads:
        model_metrics = agent.train_world_model(model_rows)
        policy_metrics = agent.train_policy(policy_rows)
        counters = [g.counters() for g in agent.guards.values()]
        finite = agent.params_finite()
    assert not reads.hits, "host reads in a skipped update:\n" + "\n".join(f"{n} x {k}" for k, n in reads.hits.items())
    assert model_metrics["skipped"].item() == 1.0 and policy_metrics["critic_skipped"].item() > 0
    assert all(c[0].item() > 0 for c in counters) and all(bool(v) for v in finite.values())
    after = [p for m in (agent.world_model, agent.actor, agent.critic) for p in m.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(weights, after))
