"""The timestep convention end to end: replay rows, absorbing rows, window sampling, the shift by one,
and the filter's reset at episode starts (SPEC §2, §5; timeline in ``algo/world_model_loss.py``).

Rows are built by hand so that every real row encodes its own number ``g`` (obs = state = g + 1,
action = g, reward = 100 + g); absorbing rows hold zeros there.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mabl.algo.world_model_loss import shift_window
from mabl.envs.base import EnvSpec
from mabl.models.world_model import BiLevelWorldModel
from mabl.presets import build_config
from mabl.replay import SequenceReplay

N_AGENTS, OBS, STATE, ACTIONS = 2, 3, 2, 40
SPEC = EnvSpec(name="fake", n_agents=N_AGENTS, obs_dim=OBS, state_dim=STATE, discrete=True, n_actions=ACTIONS,
               has_action_mask=True, episode_limit=50)
# (length, terminated) of the episodes, appended in this order.
EPISODES = [(4, True), (3, False), (5, True), (2, False)]


def _episode(first_id: int, length: int, terminated: bool) -> dict[str, np.ndarray]:
    ids = np.arange(first_id, first_id + length)
    avail = np.zeros((length, N_AGENTS, ACTIONS), bool)
    for t, g in enumerate(ids):
        avail[t, :, g % ACTIONS] = True  # one encoded available action
        avail[t, :, (g + 1) % ACTIONS] = True
    done = np.zeros(length, bool)
    done[-1] = terminated
    return {
        "obs": np.repeat((ids + 1.0)[:, None, None], N_AGENTS, 1).repeat(OBS, 2).astype(np.float32),
        "state": np.repeat((ids + 1.0)[:, None], STATE, 1).astype(np.float32),
        "action": np.repeat(ids[:, None], N_AGENTS, 1).astype(np.int64),
        "reward": (100.0 + ids).astype(np.float32),
        "done": done,
        "avail": avail,
    }


def _expected_layout() -> list[dict]:
    """What each physical row must hold, derived from EPISODES by hand (no wrap-around)."""
    layout, real_id = [], 0
    for length, terminated in EPISODES:
        for t in range(length):
            layout.append({"id": real_id, "fake": False, "episode_start": t == 0,
                           "done": terminated and t == length - 1, "last": (t == length - 1) and not terminated})
            real_id += 1
        if terminated:
            layout.append({"id": None, "fake": True, "episode_start": False, "done": True, "last": False})
            layout.append({"id": None, "fake": True, "episode_start": False, "done": True, "last": True})
    return layout


def _filled_replay(capacity: int = 100, seed: int = 0) -> SequenceReplay:
    replay = SequenceReplay(SPEC, capacity)
    rng = np.random.default_rng(seed)
    first_id = 0
    for length, terminated in EPISODES:
        replay.add_episode(_episode(first_id, length, terminated), terminated, rng)
        first_id += length
    return replay


def test_rows_absorbing_and_last_flags():
    replay = _filled_replay()
    layout = _expected_layout()
    assert len(layout) == 4 + 2 + 3 + 5 + 2 + 2
    assert len(replay) == len(layout)
    assert replay.real_rows == sum(length for length, _ in EPISODES)
    data = replay.data
    for row, exp in enumerate(layout):
        assert bool(data["fake"][row]) == exp["fake"], row
        assert bool(data["last"][row]) == exp["last"], row
        assert bool(data["done"][row]) == exp["done"], row
        if exp["fake"]:
            assert np.all(data["obs"][row] == 0.0) and np.all(data["state"][row] == 0.0)
            assert data["reward"][row] == 0.0
            assert np.all(data["avail"][row])
            assert data["action"][row].shape == (N_AGENTS,)
            assert np.all((data["action"][row] >= 0) & (data["action"][row] < ACTIONS))
        else:
            g = exp["id"]
            assert np.all(data["obs"][row] == g + 1.0) and np.all(data["state"][row] == g + 1.0)
            assert np.all(data["action"][row] == g)
            assert data["reward"][row] == 100.0 + g
            assert data["avail"][row].sum() == 2 * N_AGENTS
    # Rows: ep 0-3, absorbing 4-5, ep 6-8 (truncated), ep 9-13, absorbing 14-15, ep 16-17 (truncated).
    assert np.flatnonzero(data["fake"][: len(layout)]).tolist() == [4, 5, 14, 15]
    assert np.flatnonzero(data["last"][: len(layout)]).tolist() == [5, 8, 15, 17]
    assert np.flatnonzero(data["done"][: len(layout)]).tolist() == [3, 4, 5, 13, 14, 15]


def test_absorbing_actions_come_from_the_rng():
    a = _filled_replay(seed=1).data["action"][[4, 5, 14, 15]]
    b = _filled_replay(seed=1).data["action"][[4, 5, 14, 15]]
    c = _filled_replay(seed=2).data["action"][[4, 5, 14, 15]]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def _chronological(replay: SequenceReplay) -> dict[str, np.ndarray]:
    oldest = replay.pos if len(replay) == replay.capacity else 0
    order = (oldest + np.arange(len(replay))) % replay.capacity
    return {k: v[order] for k, v in replay.data.items()}


def _window_starts(window: dict[str, np.ndarray], chrono: dict[str, np.ndarray], b: int) -> list[int]:
    length = window["reward"].shape[0]
    total = chrono["reward"].shape[0]
    return [s for s in range(total - length + 1)
            if all(np.array_equal(window[k][:, b], chrono[k][s : s + length]) for k in chrono)]


@pytest.mark.parametrize("capacity", [100, 13])
def test_sample_windows_are_consecutive_rows(capacity):
    replay = _filled_replay(capacity=capacity)
    if capacity == 13:
        assert len(replay) == 13 and replay.pos == 18 % 13  # the ring wrapped
    chrono = _chronological(replay)
    seq_len, batch = 5, 400
    window = replay.sample(batch, seq_len, np.random.default_rng(3))
    assert window["obs"].shape == (seq_len, batch, N_AGENTS, OBS)
    assert window["reward"].shape == (seq_len, batch)
    seen = set()
    for b in range(batch):
        starts = _window_starts(window, chrono, b)
        assert len(starts) == 1, (b, starts)  # consecutive, never across the write head
        seen.add(starts[0])
    # Uniform over every valid start: with 400 draws all of them show up.
    assert seen == set(range(len(replay) - seq_len + 1))


def _torch_rows(replay: SequenceReplay, start: int, length: int) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v[start : start + length][:, None].copy()) for k, v in replay.data.items()}


@pytest.mark.parametrize("k", [0, 2, 5, 7, 9, 11])
def test_shift_window_pairs(k):
    replay = _filled_replay()
    layout = _expected_layout()
    length = 7
    batch = shift_window(_torch_rows(replay, k, length))
    steps = length - 1
    assert batch.obs.shape == (steps, 1, N_AGENTS, OBS)
    assert batch.prev_action.shape == (steps, 1, N_AGENTS)
    data = replay.data
    for j in range(steps):
        obs_row, act_row = k + j + 1, k + j
        assert np.array_equal(batch.obs[j, 0].numpy(), data["obs"][obs_row])
        assert np.array_equal(batch.state[j, 0].numpy(), data["state"][obs_row])
        assert np.array_equal(batch.avail[j, 0].numpy(), data["avail"][obs_row])
        assert np.array_equal(batch.prev_action[j, 0].numpy(), data["action"][act_row])
        assert batch.reward[j, 0].item() == data["reward"][act_row]
        assert batch.done[j, 0].item() == float(data["done"][act_row])
        assert batch.fake[j, 0].item() == float(layout[obs_row]["fake"])
        # first[j]: obs[j] is the first row of an episode (the row before it was an episode's last).
        assert bool(batch.first[j, 0]) == layout[obs_row]["episode_start"], (k, j)
        # Inside an episode the previous action is the one taken at the row just before obs[j],
        # and reward[j] is what that action earned.
        if not layout[obs_row]["fake"] and not layout[obs_row]["episode_start"]:
            g = layout[obs_row]["id"]
            assert np.all(batch.prev_action[j, 0].numpy() == g - 1)
            assert batch.reward[j, 0].item() == 100.0 + g - 1


def test_shift_window_first_covers_every_episode_start():
    replay = _filled_replay()
    layout = _expected_layout()
    batch = shift_window(_torch_rows(replay, 0, len(layout)))
    first_rows = [j + 1 for j in range(len(layout) - 1) if bool(batch.first[j, 0])]
    expected = [row for row, exp in enumerate(layout) if exp["episode_start"] and row > 0]
    assert first_rows == expected == [6, 9, 16]


# ----------------------------------------------------------------------------- filter resets
def _model(seed: int = 0, episode_reset: str = "carried_state") -> BiLevelWorldModel:
    torch.manual_seed(seed)
    spec = EnvSpec(name="fake", n_agents=3, obs_dim=7, state_dim=9, discrete=True, n_actions=5,
                   has_action_mask=True, episode_limit=50)
    return BiLevelWorldModel(spec, build_config("debug", {"model.episode_reset": episode_reset}).model)


def _filter_inputs(seed: int, steps: int = 6, batch: int = 2):
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(steps, batch, 3, 7, generator=gen)
    state = torch.randn(steps, batch, 9, generator=gen)
    action = F.one_hot(torch.randint(0, 5, (steps, batch, 3), generator=gen), 5).float()
    return obs, state, action


def _observe(model, obs, state, action, first, seed=42):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.observe(obs, state, action, first)


@pytest.mark.parametrize("reset", ["carried_state", "start_state"])
@pytest.mark.parametrize("reset_at", [1, 3, 5])
def test_first_step_does_not_depend_on_the_past(reset_at, reset):
    """Nothing before an episode start reaches the filter after it, except, with the released
    reading (carried_state), the stored previous action of the start row itself."""
    model = _model(episode_reset=reset)
    obs, state, action = _filter_inputs(1)
    first = torch.zeros(6, 2, dtype=torch.bool)
    first[reset_at, 0] = True  # only batch column 0 starts an episode there
    base = _observe(model, obs, state, action, first)

    obs2, state2, action2 = _filter_inputs(2)  # a different past everywhere
    obs2[reset_at:], state2[reset_at:] = obs[reset_at:], state[reset_at:]
    # prev_action[reset_at] is the old episode's last action: read after a carried_state reset
    kept_from = reset_at if reset == "carried_state" else reset_at + 1
    action2[kept_from:] = action[kept_from:]
    other = _observe(model, obs2, state2, action2, first)

    for name in ("post_a_logits", "post_g_logits", "prior_a_logits", "prior_g_logits"):
        torch.testing.assert_close(getattr(other, name)[reset_at:, 0], getattr(base, name)[reset_at:, 0],
                                   rtol=1e-5, atol=1e-5, msg=name)
        # Column 1 has no reset: there the past matters.
        assert (getattr(other, name)[reset_at, 1] - getattr(base, name)[reset_at, 1]).abs().max() > 1e-3, name
    torch.testing.assert_close(other.post.h_a[reset_at:, 0], base.post.h_a[reset_at:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(other.post.h_g[reset_at:, 0], base.post.h_g[reset_at:, 0], rtol=1e-5, atol=1e-5)


def test_without_reset_the_past_matters():
    model = _model()
    obs, state, action = _filter_inputs(1)
    first = torch.zeros(6, 2, dtype=torch.bool)
    base = _observe(model, obs, state, action, first)
    obs2 = obs.clone()
    obs2[:3] = torch.randn(3, 2, 3, 7)
    other = _observe(model, obs2, state, action, first)
    assert (other.post_a_logits[3] - base.post_a_logits[3]).abs().max() > 1e-3
    # ... and the previous action alone matters too (the same obs, another a_{j-1}).
    action2 = action.clone()
    action2[3] = action[3].roll(1, dims=-1)
    other = _observe(model, obs, state, action2, first)
    torch.testing.assert_close(other.post_a_logits[:3], base.post_a_logits[:3])
    assert (other.post_a_logits[3] - base.post_a_logits[3]).abs().max() > 1e-3


def test_carried_state_reset_zeroes_the_state_and_reads_the_stored_action():
    """Released code (rnns.py rollout_representation): the carried state is multiplied by 1 - last,
    then the step's transition reads the stored previous action; the reward/continuation heads of
    the step before read that same post-reset transition (loss.py: post.deter[1:])."""
    model = _model()
    obs, state, action = _filter_inputs(3)
    first = torch.zeros(6, 2, dtype=torch.bool)
    first[2, 0] = True
    out = _observe(model, obs, state, action, first)
    agent = model.agent
    with torch.no_grad():  # by hand: GRU(ReLU(W_action a + b), h = 0); the zero latent adds nothing
        w = agent.agent_input.weight  # [hid, A + z]
        x = torch.relu(action[2, 0] @ w[:, :5].t() + agent.agent_input.bias)
        cell = agent.agent_gru
        h = torch.zeros(3, model.deter)
        gi, gh = x @ cell.weight_ih.t() + cell.bias_ih, h @ cell.weight_hh.t() + cell.bias_hh
        r = torch.sigmoid(gi[:, :model.deter] + gh[:, :model.deter])
        u = torch.sigmoid(gi[:, model.deter:2 * model.deter] + gh[:, model.deter:2 * model.deter])
        n = torch.tanh(gi[:, 2 * model.deter:] + r * gh[:, 2 * model.deter:])
        expected = (1 - u) * n + u * h
        # the global chain alike, from the joint action
        wg = model.global_input.weight
        xg = torch.relu(action[2, 0].flatten() @ wg[:, :15].t() + model.global_input.bias)
        expected_g = model.global_gru(xg[None], torch.zeros(1, model.deter))[0]
    torch.testing.assert_close(out.post.h_a[2, 0], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.h_a_trans[2, 0], out.post.h_a[2, 0])  # what the heads of step 1 read
    for i in range(3):
        torch.testing.assert_close(out.post.h_g[2, 0, i], expected_g, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.h_g_trans[2, 0], out.post.h_g[2, 0])
    # the check can fail: two resets with different stored actions give different states
    first[4, 1] = True
    out = _observe(model, obs, state, action, first)
    assert not torch.equal(action[2, 0], action[4, 1])
    assert (out.post.h_a[2, 0] - out.post.h_a[4, 1]).abs().max() > 1e-4


def test_carried_state_ignores_the_first_rows_flag():
    """The window's row 0 starts from the zero state anyway, so its episode-start flag changes
    nothing (the released code drops it: DreamerMemory.py last[1:]); with start_state it zeroes
    the previous action there."""
    obs, state, action = _filter_inputs(5)
    first = torch.zeros(6, 2, dtype=torch.bool)
    flagged = first.clone()
    flagged[0] = True
    for reset, same in (("carried_state", True), ("start_state", False)):
        model = _model(episode_reset=reset)
        a, b = _observe(model, obs, state, action, first), _observe(model, obs, state, action, flagged)
        assert torch.equal(a.post.h_a, b.post.h_a) == same, reset
        assert torch.equal(a.post_a_logits, b.post_a_logits) == same, reset


def test_reset_state_is_the_same_for_every_reset_position():
    """--model.episode_reset start_state: every reset restarts from the acting path's first state."""
    model = _model(episode_reset="start_state")
    obs, state, action = _filter_inputs(3)
    first = torch.zeros(6, 2, dtype=torch.bool)
    first[2, 0] = True
    first[4, 1] = True
    out = _observe(model, obs, state, action, first)
    torch.testing.assert_close(out.post.h_a[2, 0], out.post.h_a[4, 1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.post.h_g[2, 0], out.post.h_g[4, 1], rtol=1e-6, atol=1e-6)
    # The transition state (used by the reward head of the step before) is NOT reset.
    assert (out.h_a_trans[2, 0] - out.post.h_a[2, 0]).abs().max() > 1e-4


def test_acting_path_first_step_matches_filter_reset_state():
    """Acting starts an episode from h=0, z=0, a=0; with --model.episode_reset start_state the
    filter's reset state is the same (an all-zero latent contributes nothing, it is not class 0 of
    every categorical). The released reading (carried_state) feeds the stored action instead."""
    model = _model(episode_reset="start_state")
    obs, state, action = _filter_inputs(4)
    first = torch.zeros(6, 2, dtype=torch.bool)
    first[2] = True
    out = _observe(model, obs, state, action, first)
    n, deter, latent = 3, model.deter, model.latent_dim
    with torch.no_grad():
        h_a, _ = model.agent.step(torch.zeros(n, deter), torch.zeros(n, latent), torch.zeros(n, 5), obs[2, 0],
                                  deterministic=True)
    torch.testing.assert_close(h_a, out.post.h_a[2, 0], rtol=1e-5, atol=1e-5)
