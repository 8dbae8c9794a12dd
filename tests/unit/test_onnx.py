"""ONNX export (issue 17): one agent's execution path as an ONNX graph, run with numpy and
onnxruntime only, equals the PyTorch policy; agents stay independent; mamba and mag (joint policies) are refused."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from mabl.algo import build_learner  # noqa: E402
from mabl.envs.base import EnvSpec  # noqa: E402
from mabl.errors import MablError  # noqa: E402
from mabl.onnx_export import export_onnx  # noqa: E402
from mabl.onnx_policy import OnnxPolicy, OnnxPolicyError  # noqa: E402
from mabl.presets import build_config  # noqa: E402

DISCRETE = EnvSpec("onnx-discrete", n_agents=3, obs_dim=6, state_dim=9, discrete=True, n_actions=5,
                   has_action_mask=True, episode_limit=60)
CONTINUOUS = EnvSpec("onnx-continuous", n_agents=2, obs_dim=5, state_dim=7, discrete=False, action_dim=3,
                     action_low=-0.4, action_high=0.8, episode_limit=60)
STEPS = 50


def _learner(spec: EnvSpec, algo: str, **overrides):
    torch.manual_seed(0)
    cfg = build_config("debug", {"algo": algo, **overrides})
    agent = build_learner(spec, cfg, torch.device("cpu"))
    with torch.no_grad():  # spread the weights beyond their initialisation, so latents and actions vary
        for p in agent.actor.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return agent, cfg


def _episode(spec: EnvSpec, rng: np.random.Generator):
    obs = rng.normal(size=(STEPS, spec.n_agents, spec.obs_dim)).astype(np.float32) * 2
    if not spec.discrete:
        return obs, [None] * STEPS
    avail = rng.random((STEPS, spec.n_agents, spec.n_actions)) < 0.6
    avail[..., 0] = True
    return obs, list(avail)


@pytest.mark.slow
@pytest.mark.parametrize("spec", [DISCRETE, CONTINUOUS], ids=["discrete", "continuous"])
def test_the_dynamo_exporter_gives_the_same_graph_outputs(spec, tmp_path, monkeypatch):
    """The graph from torch's dynamo exporter (the fallback where the torchscript one is gone)."""
    import mabl.onnx_export

    agent, cfg = _learner(spec, "mabl")
    monkeypatch.setattr(mabl.onnx_export, "EXPORTER", "dynamo")
    export_onnx(agent, cfg, spec, tmp_path / "dynamo.onnx")
    monkeypatch.setattr(mabl.onnx_export, "EXPORTER", "torchscript")
    export_onnx(agent, cfg, spec, tmp_path / "torchscript.onnx")
    obs, avail = _episode(spec, np.random.default_rng(4))
    a, b = OnnxPolicy(str(tmp_path / "dynamo.onnx")), OnnxPolicy(str(tmp_path / "torchscript.onnx"))
    for t in range(STEPS):
        _, got = a.act(obs[t], avail[t], deterministic=True)
        _, want = b.act(obs[t], avail[t], deterministic=True)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export per (spec, algo), shared by the tests (exporting takes seconds)."""
    cache = {}

    def get(spec: EnvSpec, algo: str):
        if (spec.name, algo) not in cache:
            agent, cfg = _learner(spec, algo)
            path = tmp_path_factory.mktemp("onnx") / f"{spec.name}-{algo}.onnx"
            meta = export_onnx(agent, cfg, spec, path)
            cache[spec.name, algo] = agent, cfg, path, meta
        return cache[spec.name, algo]

    return get


@pytest.mark.parametrize("spec, algo", [(DISCRETE, "mabl"), (CONTINUOUS, "mabl"), (DISCRETE, "mappo"),
                                        (CONTINUOUS, "mappo"), (DISCRETE, "ippo")],
                         ids=["mabl-discrete", "mabl-continuous", "mappo-discrete", "mappo-continuous", "ippo-discrete"])
def test_deterministic_episode_equals_the_pytorch_policy(exported, spec, algo):
    agent, _, path, meta = exported(spec, algo)
    assert meta["algo"] == algo and meta["spec"]["n_agents"] == spec.n_agents and meta["version"] == 1
    torch_policy, onnx_policy = agent.policy(), OnnxPolicy(str(path))
    torch_policy.reset()
    onnx_policy.reset()
    obs, avail = _episode(spec, np.random.default_rng(1))
    seen = set()
    for t in range(STEPS):
        want_action, want = torch_policy.act(obs[t], avail[t], deterministic=True)
        got_action, got = onnx_policy.act(obs[t], avail[t], deterministic=True)
        if spec.discrete:  # the same action; continuous: the same up to float rounding
            np.testing.assert_array_equal(got_action, want_action, err_msg=f"step {t}")
        else:
            np.testing.assert_allclose(got_action, want_action, rtol=0, atol=1e-5, err_msg=f"step {t}")
            seen.add(round(float(got["mean"][0, 0]), 3))
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-5, err_msg=f"{key} at step {t}")
        if spec.discrete:
            assert np.all(got["probs"][~avail[t]] == 0.0)  # masked actions are never chosen
            seen.update(got_action.tolist())
        if onnx_policy.recurrent:
            np.testing.assert_allclose(onnx_policy.h, torch_policy.h.numpy(), atol=1e-5)
            np.testing.assert_array_equal(onnx_policy.z, torch_policy.z.numpy())
    assert len(seen) > 1  # the comparison is not of a constant policy


def test_sampled_latents_equal_the_pytorch_sampler_given_the_same_uniforms(exported):
    """Stochastic mode: the graph samples z^a by inverse CDF from the 'noise' input exactly as mabl
    samples from its uniform numbers."""
    import onnxruntime as ort

    agent, cfg, path, meta = exported(DISCRETE, "mabl")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    encoder, n, c = agent.world_model.agent, DISCRETE.n_agents, cfg.model.n_categoricals
    rng = np.random.default_rng(3)
    prev = torch.zeros(n, DISCRETE.n_actions)
    prev[:, 1] = 1.0
    differ = 0
    # one explicit step from a known state, compared output by output
    h0 = torch.randn(n, encoder.deter, generator=torch.Generator().manual_seed(4))
    z0 = torch.zeros(n, encoder.latent_dim)
    obs = torch.as_tensor(rng.normal(size=(n, DISCRETE.obs_dim)).astype(np.float32))
    for seed in range(5):
        uniform = torch.rand((n, c, 1), generator=torch.Generator().manual_seed(seed))[..., 0]
        with torch.no_grad():
            h1, z1 = encoder.step(h0, z0, prev, obs, deterministic=False,
                                  generator=torch.Generator().manual_seed(seed))
            _, z_mode = encoder.step(h0, z0, prev, obs, deterministic=True)
        out = session.run(["h_next", "z_next"], {
            "obs": obs.numpy(), "prev_action": prev.numpy(), "h": h0.numpy(), "z": z0.numpy(),
            "noise": uniform.numpy(), "deterministic": np.zeros(1, np.float32),
            "avail": np.ones((n, DISCRETE.n_actions), np.float32)})
        np.testing.assert_allclose(out[0], h1.numpy(), atol=1e-5)
        np.testing.assert_array_equal(out[1], z1.numpy())
        differ += int(not torch.equal(z1, z_mode))
    assert differ > 0  # some samples are not the mode: the sampling path was exercised


@pytest.mark.parametrize("algo", ["mabl", "mappo"])
def test_an_agents_outputs_do_not_depend_on_other_agents_inputs(exported, algo):
    agent, _, path, _ = exported(DISCRETE, algo)
    obs, avail = _episode(DISCRETE, np.random.default_rng(2))
    team, other = OnnxPolicy(str(path), seed=5), OnnxPolicy(str(path), seed=5)
    alone = OnnxPolicy(str(path), agents=[0])
    changed_obs, changed_avail = obs.copy(), [a.copy() for a in avail]
    changed_obs[:, 1:] = np.random.default_rng(9).normal(size=changed_obs[:, 1:].shape) * 5
    for a in changed_avail:
        a[1:] = True
    for t in range(20):
        _, mine = team.act(obs[t], avail[t], deterministic=True)
        _, theirs = other.act(changed_obs[t], changed_avail[t], deterministic=True)
        _, single = alone.act(obs[t][:1], avail[t][:1], deterministic=True)
        np.testing.assert_allclose(theirs["probs"][0], mine["probs"][0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(single["probs"][0], mine["probs"][0], rtol=0, atol=1e-6)
        assert not np.allclose(theirs["probs"][1:], mine["probs"][1:])  # the others did change


def test_nonfinite_observations_and_bad_shapes_are_one_line(exported):
    _, _, path, _ = exported(DISCRETE, "mabl")
    policy = OnnxPolicy(str(path))
    obs = np.zeros((DISCRETE.n_agents, DISCRETE.obs_dim), np.float32)
    obs[2, 1] = np.inf
    with pytest.raises(OnnxPolicyError, match=r"obs of agent\(s\) \[2\] hold NaN or infinite"):
        policy.act(obs)
    with pytest.raises(OnnxPolicyError, match=r"obs has shape \(3, 2\), expected \(3, 6\)"):
        policy.act(np.zeros((3, 2)))


@pytest.mark.parametrize("algo", ["mamba", "mag"])
def test_joint_policies_are_refused_with_one_line(tmp_path, algo):
    agent, cfg = _learner(DISCRETE, algo)
    with pytest.raises(MablError, match=f"{algo}'s policy is joint") as info:
        export_onnx(agent, cfg, DISCRETE, tmp_path / "p.onnx")
    assert "\n" not in str(info.value) and not (tmp_path / "p.onnx").exists()


def test_the_runner_imports_neither_torch_nor_the_rest_of_mabl():
    code = ("import sys, mabl.onnx_policy; "
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.') "
            "or (m.startswith('mabl') and m not in ('mabl', 'mabl.onnx_policy'))); "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_export_format_onnx(tmp_path, monkeypatch, capsys):
    """``mabl export --format onnx`` on a run directory: one line, a graph the runner acts with."""
    import mabl.cli

    agent, cfg = _learner(DISCRETE, "dreamer")
    monkeypatch.setattr(mabl.cli, "_agent_from_run", lambda run_dir: (agent, cfg, DISCRETE))
    out = tmp_path / "policy.onnx"
    assert mabl.cli.main(["export", "--run-dir", str(tmp_path), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert len(printed.out.strip().splitlines()) == 1 and "ONNX policy (dreamer" in printed.out, printed
    policy = OnnxPolicy(str(out), seed=0)
    actions, info = policy.act(np.zeros((DISCRETE.n_agents, DISCRETE.obs_dim), np.float32))
    assert actions.shape == (DISCRETE.n_agents,) and np.allclose(info["probs"].sum(-1), 1.0, atol=1e-6)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(OnnxPolicyError, match="is not a readable ONNX file"):
        OnnxPolicy(str(bad))


def test_the_runner_samples_actions_from_the_probabilities_and_never_a_masked_one(exported):
    _, _, path, _ = exported(DISCRETE, "mappo")
    policy = OnnxPolicy(str(path), seed=11)
    obs = np.random.default_rng(5).normal(size=(DISCRETE.n_agents, DISCRETE.obs_dim)).astype(np.float32)
    avail = np.ones((DISCRETE.n_agents, DISCRETE.n_actions), bool)
    avail[:, 1] = avail[0, 4] = False
    draws = np.stack([policy.act(obs, avail)[0] for _ in range(3000)])
    probs = policy.act(obs, avail)[1]["probs"]
    for i in range(DISCRETE.n_agents):
        freq = np.bincount(draws[:, i], minlength=DISCRETE.n_actions) / len(draws)
        np.testing.assert_allclose(freq, probs[i], atol=0.04)
        assert freq[~avail[i]].sum() == 0.0
    again = OnnxPolicy(str(path), seed=11)
    assert np.array_equal(np.stack([again.act(obs, avail)[0] for _ in range(50)]), draws[:50])  # seeded
