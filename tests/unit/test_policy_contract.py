"""The acting step and the file layout every exported policy shares (``mabl.policy_contract``).

Expected values are written out by hand (numpy softmax, the Gaussian's clip-and-scale, a second
generator seeded alike for the draws), so each test fails if the shared step drew differently,
took its greedy action from the other tensor, or wrote the payload's keys in another order.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from mabl.envs.base import EnvSpec
from mabl.errors import MablError
from mabl.policy_contract import (
    POLICY_FORMAT,
    POLICY_VERSION,
    act_discrete,
    act_from_output,
    check_policy_payload,
    policy_generator,
    policy_payload,
    policy_spec,
)

DISCRETE = EnvSpec(name="d", n_agents=2, obs_dim=3, state_dim=4, discrete=True, n_actions=3)
CONTINUOUS = EnvSpec(name="c", n_agents=2, obs_dim=3, state_dim=4, discrete=False, action_dim=2,
                     action_low=-2.0, action_high=4.0)


def test_discrete_sampling_is_one_multinomial_draw_with_the_policy_generator():
    logits = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.0, -3.0]])
    e = np.exp(logits.numpy() - logits.numpy().max(-1, keepdims=True))
    want_probs = e / e.sum(-1, keepdims=True)
    generator, twin = policy_generator(7, torch.device("cpu")), torch.Generator().manual_seed(7)
    action, actions, info = act_discrete(logits, False, generator)
    want = torch.multinomial(torch.from_numpy(want_probs).float(), 1, generator=twin).squeeze(-1)
    np.testing.assert_allclose(info["probs"], want_probs, rtol=1e-6)
    assert actions.tolist() == want.tolist() == action.tolist()
    # the stream advanced by exactly that one draw: both generators give the same next number
    assert torch.rand(1, generator=generator).item() == torch.rand(1, generator=twin).item()


def test_no_seed_samples_with_torchs_global_rng():
    assert policy_generator(None, torch.device("cpu")) is None
    logits = torch.tensor([[0.3, 0.2, 0.1]] * 2)
    torch.manual_seed(3)
    _, first, _ = act_discrete(logits, False, None)
    torch.manual_seed(3)
    want = torch.multinomial(torch.softmax(logits, -1), 1).squeeze(-1)
    assert first.tolist() == want.tolist()


def test_greedy_action_is_the_argmax_of_probs_unless_asked_for_the_logits():
    # two logits 1e-8 apart: their float32 probabilities are equal (a tie), the logits are not
    logits = torch.tensor([[0.0, 1e-8, -5.0]])
    probs = torch.softmax(logits, -1)
    assert probs[0, 0] == probs[0, 1]
    generator = policy_generator(0, torch.device("cpu"))
    state = generator.get_state()
    assert act_discrete(logits, True, generator)[1].tolist() == [0]  # first of the tied probabilities
    assert act_discrete(logits, True, generator, greedy_on_logits=True)[1].tolist() == [1]  # QMIX: on Q
    assert torch.equal(generator.get_state(), state)  # greedy draws nothing


def test_continuous_step_clips_and_scales_the_gaussian_sample():
    spec = policy_spec(CONTINUOUS)
    mean = torch.tensor([[0.5, -1.5], [2.0, 0.0]])
    log_std = torch.tensor([-1.0, 9.0])  # 9 is clamped to LOG_STD_MAX = 2
    std = np.exp(np.array([-1.0, 2.0]))
    u, actions, info = act_from_output(spec, mean, log_std, True, None)
    scale = lambda x: -2.0 + (np.clip(x, -1.0, 1.0) + 1.0) * 3.0  # [-1, 1] -> [-2, 4]
    assert torch.equal(u, mean)
    np.testing.assert_allclose(actions, scale(mean.numpy()), rtol=1e-6)
    assert actions.dtype == np.float32
    np.testing.assert_allclose(info["std"], std, rtol=1e-6)
    np.testing.assert_array_equal(info["mean"], mean.numpy())
    twin = torch.Generator().manual_seed(4)
    u, actions, _ = act_from_output(spec, mean, log_std, False, policy_generator(4, torch.device("cpu")))
    want_u = mean.numpy() + std * torch.randn(mean.shape, generator=twin).numpy()
    np.testing.assert_allclose(u.numpy(), want_u, rtol=1e-5)
    np.testing.assert_allclose(actions, scale(want_u), rtol=1e-5)


def test_discrete_output_without_log_std_takes_the_discrete_step():
    logits = torch.tensor([[1.0, 3.0, 2.0], [4.0, 0.0, 0.0]])
    action, actions, info = act_from_output(policy_spec(DISCRETE), logits, None, True, None)
    assert actions.tolist() == [1, 0] == action.tolist() and set(info) == {"probs"}


def test_payload_keys_come_in_the_file_formats_order():
    net = nn.Linear(2, 3)
    plain = policy_payload("mappo", DISCRETE, net, hidden=64)
    assert list(plain) == ["format", "version", "algo", "spec", "hidden", "actor"]
    assert (plain["format"], plain["version"], plain["algo"], plain["hidden"]) == ("mabl-policy", 1, "mappo", 64)
    assert plain["spec"]["n_actions"] == 3 and plain["spec"]["name"] == "d"
    assert set(plain["actor"]) == {"weight", "bias"}
    assert torch.equal(plain["actor"]["weight"], net.weight) and not plain["actor"]["weight"].requires_grad
    latent = policy_payload("mabl", DISCRETE, net, "decentralized", model={}, policy_hidden=8, encoder={})
    assert list(latent) == ["format", "version", "algo", "execution", "spec", "model", "policy_hidden",
                            "encoder", "actor"]


@pytest.mark.parametrize("change, message", [
    ({"format": "other"}, "not a mabl MLP policy (export one with `mabl export` from a --algo mappo/ippo run)"),
    ({"algo": "rmappo"}, "not a mabl MLP policy"),
    ({"version": 99}, f"policy format version 99; this mabl reads {POLICY_VERSION}"),
])
def test_a_foreign_payload_is_refused_in_one_line(change, message):
    payload = {"format": POLICY_FORMAT, "version": POLICY_VERSION, "algo": "mappo", **change}
    with pytest.raises(MablError, match="^" + re.escape(message)):
        check_policy_payload(payload, "mlp", "MLP")


def test_a_payload_of_the_right_kind_passes():
    for algo in ("mappo", "ippo"):
        check_policy_payload({"format": "mabl-policy", "version": 1, "algo": algo}, "mlp", "MLP")
    check_policy_payload({"format": "mabl-policy", "version": 1, "algo": "rmappo"}, "gru", "GRU")
