"""``--compile``: the world-model loss and imagination, each compiled as one graph, give the eager
loss, gradients and imagined rollouts (issue 6: the GPU path, tested on the CPU; on CUDA the same
graphs run as CUDA graphs).

The compiled graph uses plain dense one-hot products and the plain balanced-KL formula where
eager mode uses gathers, sparse table gradients and the fused KL, so this also checks those
rewrites against the plain forms once more. Inductor's own random numbers are switched to torch's
(``fallback_random``) so that both draw the same latent samples. The ``cuda`` variants (marked
``gpu``, skipped without a GPU) compile with ``mode="reduce-overhead"``, i.e. as CUDA graphs; their
float tolerances are wider (GPU kernels sum in other orders than the CPU's).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch._inductor.config as inductor_config

from mabl.algo import build_learner
from mabl.algo.agent import MablAgent, without_mha_fastpath
from mabl.envs.base import EnvSpec
from mabl.presets import build_config
from mabl.replay import SequenceReplay

# torch.compile takes minutes on a cold cache: not part of the fast unit tier
pytestmark = pytest.mark.integration

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
MIXER_ALGOS = [pytest.param("mamba", marks=pytest.mark.slow), pytest.param("mag", marks=pytest.mark.slow)]
"""World models with MAMBA's transformer over agents: minutes of compile time each on 2 cores (mag's
planned imagination: ~6 min), so they run with ``-m slow``."""
PLAIN_ALGOS = ["mabl", "mabl-sg", "dreamer"]
"""World models without the transformer over agents: compiled in the default suite."""
TOLERANCE = {"cpu": {"value": (1e-5, 1e-6), "grad": (1e-4, 1e-6)},
             "cuda": {"value": (1e-4, 1e-5), "grad": (1e-3, 1e-5)}}
"""(rtol, atol) of compiled vs eager values and gradients per device type."""

SPEC = EnvSpec("compile-test", n_agents=2, obs_dim=5, state_dim=7, discrete=True, n_actions=3,
               has_action_mask=True, episode_limit=20)


def _replay(rng: np.random.Generator) -> SequenceReplay:
    replay = SequenceReplay(SPEC, 1000)
    while replay.real_rows < 200:
        length = int(rng.integers(3, 12))
        avail = rng.random((length, 2, 3)) < 0.7
        avail[..., 0] = True
        replay.add_episode({"obs": rng.normal(size=(length, 2, 5)).astype(np.float32),
                            "state": rng.normal(size=(length, 7)).astype(np.float32),
                            "action": rng.integers(0, 3, size=(length, 2)),
                            "reward": rng.normal(size=length).astype(np.float32),
                            "done": np.arange(length) == length - 1, "avail": avail},
                           terminated=bool(rng.random() < 0.5), rng=rng)
    return replay


def _loss_and_grads(agent: MablAgent, fn, batch, seed: int):
    torch.manual_seed(seed)
    agent.world_model.zero_grad(set_to_none=True)
    agent.world_model.train()
    loss, metrics = fn(batch)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in agent.world_model.named_parameters() if p.grad is not None}
    return loss.detach(), metrics, grads


@pytest.mark.parametrize("algo,device", [(algo, "cpu") for algo in PLAIN_ALGOS]
                         + [pytest.param("mabl", "cuda", marks=pytest.mark.gpu)])
def test_compiled_world_model_loss_matches_eager(algo, device):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    # short windows keep the unrolled graph (and its compile time on 2 cores) small
    cfg = build_config("debug", {"algo": algo, "compile": True, "model.seq_len": 5, "model.batch_size": 3,
                                 "device": device})
    agent = build_learner(SPEC, cfg, torch.device(device))
    assert isinstance(agent, MablAgent)
    assert agent.model_loss is not agent.eager_model_loss
    assert agent.cuda_graphs == (device == "cuda")
    batch = agent.to_batch(_replay(rng).sample(3, 5, rng))
    (vr, va), (gr, ga) = TOLERANCE[device]["value"], TOLERANCE[device]["grad"]
    with inductor_config.patch(fallback_random=True):
        compiled = _loss_and_grads(agent, agent.model_loss, batch, seed=1)
    eager = _loss_and_grads(agent, agent.eager_model_loss, batch, seed=1)
    assert compiled[0].device.type == device
    torch.testing.assert_close(compiled[0], eager[0], rtol=vr, atol=va)
    assert compiled[1].keys() == eager[1].keys()
    for name in eager[1]:
        torch.testing.assert_close(compiled[1][name], eager[1][name], rtol=vr, atol=va, msg=name)
    assert compiled[2].keys() == eager[2].keys() and len(eager[2]) == len(list(agent.world_model.parameters()))
    for name, grad in eager[2].items():
        torch.testing.assert_close(compiled[2][name], grad, rtol=gr, atol=ga, msg=name)
    # a different seed draws different latents: the comparison above is not vacuous
    other = _loss_and_grads(agent, agent.eager_model_loss, batch, seed=2)
    assert not torch.equal(other[0], eager[0])
    # and a whole update (optimizer step included) runs through the compiled loss
    metrics = agent.train_world_model(_replay(rng).sample(3, 5, rng))
    assert all(torch.isfinite(v).all() for v in metrics.values())


@pytest.mark.parametrize("algo", MIXER_ALGOS)
def test_compiled_mixer_world_model_loss_matches_eager(algo):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = build_config("debug", {"algo": algo, "compile": True, "model.seq_len": 5, "model.batch_size": 3,
                                 "device": "cpu"})
    agent = build_learner(SPEC, cfg, torch.device("cpu"))
    batch = agent.to_batch(_replay(rng).sample(3, 5, rng))
    (vr, va), (gr, ga) = TOLERANCE["cpu"]["value"], TOLERANCE["cpu"]["grad"]
    with inductor_config.patch(fallback_random=True):
        compiled = _loss_and_grads(agent, agent.model_loss, batch, seed=1)
    eager = _loss_and_grads(agent, agent.eager_model_loss, batch, seed=1)
    torch.testing.assert_close(compiled[0], eager[0], rtol=vr, atol=va)
    assert compiled[2].keys() == eager[2].keys()
    for name, grad in eager[2].items():
        torch.testing.assert_close(compiled[2][name], grad, rtol=gr, atol=ga, msg=name)


def test_compiled_graphs_run_without_the_fused_transformer_path():
    seen = []

    def probe(x):
        seen.append(torch.backends.mha.get_fastpath_enabled())
        if x is None:
            raise ValueError("boom")
        return x

    assert torch.backends.mha.get_fastpath_enabled()
    assert without_mha_fastpath(probe)(3) == 3
    with pytest.raises(ValueError, match="boom"):
        without_mha_fastpath(probe)(None)
    assert seen == [False, False] and torch.backends.mha.get_fastpath_enabled()  # restored, also after an error


@pytest.mark.parametrize("algo,device", [(algo, "cpu") for algo in PLAIN_ALGOS]
                         + [pytest.param("mabl", "cuda", marks=pytest.mark.gpu),
                                         pytest.param("mamba", "cpu", marks=pytest.mark.slow),
                                         pytest.param("mag", "cpu", marks=pytest.mark.slow)])
def test_compiled_imagination_matches_eager(algo, device):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = build_config("debug", {"algo": algo, "compile": True, "model.seq_len": 4, "policy.batch_size": 3,
                                 "policy.horizon": 3, "device": device})
    agent = build_learner(SPEC, cfg, torch.device(device))
    vr, va = TOLERANCE[device]["value"]
    batch = agent.to_batch(_replay(rng).sample(3, 4, rng))
    torch.manual_seed(1)
    with inductor_config.patch(fallback_random=True):
        compiled = agent.imagine_fn(batch)
    torch.manual_seed(1)
    eager = agent.imagine_batch(batch)
    assert compiled.action.shape == eager.action.shape == (2 * 2 * 3, 2)  # (H-1) x (T-1) x B rows, N agents
    torch.testing.assert_close(compiled.action, eager.action, rtol=0, atol=0)  # the same sampled actions
    torch.testing.assert_close(compiled.avail, eager.avail, rtol=0, atol=0)
    for field in ("log_prob", "value", "returns", "reward"):
        torch.testing.assert_close(getattr(compiled, field), getattr(eager, field), rtol=vr, atol=va, msg=field)
    for got, want in zip(compiled.latent, eager.latent):
        torch.testing.assert_close(got, want, rtol=vr, atol=va)
    torch.manual_seed(2)
    assert not torch.equal(agent.imagine_batch(batch).action, eager.action)  # other seeds, other rollouts
