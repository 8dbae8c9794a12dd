"""The Flatland mend (SPEC §8): each agent's own reward and done, absorbed agents, no mask head, no
advantage normalisation, a target copy of the critic -- each checked against an independent
computation, with the team readings (every other env) unchanged."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mabl.algo.agent import MablAgent
from mabl.algo.imagination import imagine
from mabl.algo.imagined_ppo import ImaginedPpo
from mabl.algo.world_model_loss import shift_window, world_model_loss
from mabl.config import ADDED_FIELDS, RunConfig, from_dict, to_dict
from mabl.envs.base import EnvSpec
from mabl.errors import MablError
from mabl.models.world_model import VARIANTS, BiLevelWorldModel, Latent
from mabl.presets import build_config
from mabl.replay import SequenceReplay, stored_episode
from mabl.rollout import Episode
from mabl.train import per_agent_targets

N, A, OBS, G = 3, 4, 5, 6
SPEC = EnvSpec(name="trains", n_agents=N, obs_dim=OBS, state_dim=G, discrete=True, n_actions=A,
               has_action_mask=True, episode_limit=50, per_agent_reward=True, per_agent_done=True)
TEAM_SPEC = EnvSpec(name="team", n_agents=N, obs_dim=OBS, state_dim=G, discrete=True, n_actions=A,
                    has_action_mask=True, episode_limit=50)
FLATLAND = {"model.reward_target": "per_agent", "model.done_target": "per_agent", "model.avail_head": False,
            "policy.normalize_advantages": False, "policy.target_critic": 1}


def _episode(length: int, arrive: dict[int, int], terminated: bool, seed: int = 0) -> Episode:
    """An episode where agent i is done from row ``arrive[i]`` on; agents' rewards differ."""
    rng = np.random.default_rng(seed)
    agent_done = np.zeros((length, N), bool)
    for agent, row in arrive.items():
        agent_done[row:, agent] = True
    if terminated:
        agent_done[-1] = True
    agent_reward = rng.standard_normal((length, N)).astype(np.float32) * np.array([1.0, 3.0, -2.0], np.float32)
    done = np.zeros(length, bool)
    done[-1] = terminated
    rows = {"obs": rng.standard_normal((length, N, OBS)).astype(np.float32) + 2.0,
            "state": rng.standard_normal((length, G)).astype(np.float32),
            "action": rng.integers(0, A, (length, N)), "reward": agent_reward.sum(1), "done": done,
            "avail": np.ones((length, N, A), bool), "agent_reward": agent_reward, "agent_done": agent_done}
    return Episode(rows, terminated, float(agent_reward.sum()), length, None)


# ------------------------------------------------------------------ replay
def test_an_arrived_agent_is_absorbed_while_the_others_go_on():
    replay = SequenceReplay(SPEC, 100, agent_reward=True, agent_done=True)
    episode = _episode(6, {1: 2}, terminated=True)
    replay.add_episode(*stored_episode(episode, "terminal", True, True), np.random.default_rng(0))
    assert replay.size == 6 + 2  # terminated: two absorbing rows for everyone
    fake, done = replay.data["fake"][:8], replay.data["done"][:8]
    # agent 1 is done on row 2, so absorbed on rows 3.. ; the others only on the absorbing rows
    assert fake[:, 1].tolist() == [False] * 3 + [True] * 5
    assert fake[:, 0].tolist() == fake[:, 2].tolist() == [False] * 6 + [True] * 2
    assert done[:, 1].tolist() == [False] * 2 + [True] * 6
    assert done[:, 0].tolist() == [False] * 5 + [True] * 3
    obs = replay.data["obs"][:8]
    assert (obs[3:, 1] == 0).all() and (obs[:3, 1] == episode.rows["obs"][:3, 1]).all()
    np.testing.assert_array_equal(obs[:6, 0], episode.rows["obs"][:, 0])
    np.testing.assert_array_equal(replay.data["reward"][:6], episode.rows["agent_reward"])
    assert (replay.data["reward"][6:8] == 0).all()
    # a time-out under 'terminal' marks every agent done on the last row, without absorbing rows
    timed_out = _episode(4, {0: 1}, terminated=False, seed=1)
    replay.add_episode(*stored_episode(timed_out, "terminal", True, True), np.random.default_rng(0))
    assert replay.size == 8 + 4
    assert replay.data["done"][8:12].tolist() == [[False] * 3, [True, False, False], [True, False, False], [True] * 3]
    assert replay.data["fake"][8:12, 0].tolist() == [False, False, True, True]


def test_per_agent_rows_survive_a_checkpoint_and_the_device_copy():
    rng = np.random.default_rng(3)
    host = SequenceReplay(SPEC, 40, agent_reward=True, agent_done=True)
    device = SequenceReplay(SPEC, 40, device=torch.device("cpu"), agent_reward=True, agent_done=True)
    for k in range(8):
        episode = _episode(int(rng.integers(3, 9)), {k % N: 1}, terminated=bool(k % 2), seed=k)
        for replay in (host, device):
            replay.add_episode(*stored_episode(episode, "terminal", True, True), np.random.default_rng(k))
    restored = SequenceReplay(SPEC, 40, device=torch.device("cpu"), agent_reward=True, agent_done=True)
    restored.load_state_dict(host.state_dict())
    a = host.sample(5, 4, np.random.default_rng(9))
    for other in (device, restored):
        b = other.sample(5, 4, np.random.default_rng(9))
        for key in a:
            np.testing.assert_array_equal(b[key].numpy(), a[key], err_msg=key)
    assert a["reward"].shape == (4, 5, N) and a["fake"].shape == (4, 5, N) and a["last"].shape == (4, 5)


def test_team_runs_store_the_team_rows_as_before():
    episode = _episode(5, {1: 2}, terminated=True)
    rows, terminated = stored_episode(episode, "terminal")
    assert set(rows) == {"obs", "state", "action", "reward", "done", "avail"} and terminated
    np.testing.assert_array_equal(rows["reward"], episode.rows["reward"])
    replay = SequenceReplay(TEAM_SPEC, 20)
    replay.add_episode(rows, terminated, np.random.default_rng(0))
    assert replay.data["reward"].shape == (20,) and replay.data["fake"].shape == (20,)
    with pytest.raises(ValueError, match="episode reward rows"):
        replay.add_episode(stored_episode(episode, "terminal", True, False)[0], True, np.random.default_rng(0))


# ------------------------------------------------------------------ world-model loss
def _huber(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return np.where(ax < 1.0, 0.5 * x * x, ax - 0.5)


def _bce(logit: np.ndarray, target: np.ndarray) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-logit))
    return -(target * np.log(p) + (1 - target) * np.log(1 - p))


def test_each_agent_learns_its_own_reward_and_done_and_skips_its_absorbed_rows():
    cfg = build_config("debug", {"model.avail_head": "false"})
    torch.manual_seed(0)
    model = BiLevelWorldModel(SPEC, cfg.model)
    replay = SequenceReplay(SPEC, 60, agent_reward=True, agent_done=True)
    for k, arrive in enumerate([{1: 2}, {0: 1, 2: 3}, {}]):
        episode = _episode(7, arrive, terminated=k < 2, seed=k)
        replay.add_episode(*stored_episode(episode, "terminal", True, True), np.random.default_rng(k))
    rows = {k: torch.as_tensor(v) for k, v in replay.sample(6, 8, np.random.default_rng(1)).items()}
    batch = shift_window(rows)
    t, b = batch.obs.shape[:2]
    # Known head outputs (different per agent), so the targets and masks are all that is tested.
    gen = torch.Generator().manual_seed(5)
    known = {"reward": torch.randn(t - 1, b, N, 1, generator=gen), "cont": torch.randn(t - 1, b, N, 1, generator=gen),
             "obs": torch.randn(t - 1, b, N, OBS, generator=gen), "action": torch.randn(t - 1, b, N, A, generator=gen)}
    heads = model.loss_heads
    model.loss_heads = lambda *args: {**heads(*args), **known}
    _, terms, _ = world_model_loss(model, batch, cfg.model.kl_balance)
    assert "avail" not in terms  # no mask head

    np_rows = {k: v.numpy() for k, v in rows.items()}
    reward = np_rows["reward"][1:-1]  # r_{k+1} .. : reward[j+1] of the shifted batch, j = 0 .. T-2
    done = np_rows["done"][1:-1].astype(np.float64)
    fake = np_rows["fake"][1:-1].astype(np.float64)  # fake[j] = fake_{k+j+1}
    assert (reward[..., 0] != reward[..., 1]).any() and fake.any() and not fake.all(axis=-1).all()
    expected_reward = _huber(known["reward"][..., 0].numpy() - reward).mean()
    expected_cont = _bce(known["cont"][..., 0].numpy().astype(np.float64), 1.0 - done).mean()
    obs_err = _huber(known["obs"].numpy() - np_rows["obs"][1:-1]).sum(-1)  # [T-1, B, N]
    expected_obs = (obs_err * (1 - fake)).sum() / fake.size  # divided by all rows (released code, utils.py)
    logits = known["action"].numpy().astype(np.float64)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    taken = np_rows["action"][:-2]  # prev_act[j] = a_{k+j}
    action_err = -np.take_along_axis(log_p, taken[..., None], -1)[..., 0]
    scored = 1 - fake
    scored[0] = 0  # not the window's first step
    expected_action = (action_err * scored).sum() / scored[1:].size  # the rows j = 1 .. T-2, all of them
    for key, expected in [("reward", expected_reward), ("cont", expected_cont), ("obs", expected_obs),
                          ("action", expected_action)]:
        assert terms[key].item() == pytest.approx(expected, rel=1e-5), key
    # the team reading would learn something else from the same rows
    team = _huber(known["reward"][..., 0].numpy() - reward.sum(-1, keepdims=True)).mean()
    assert abs(team - expected_reward) > 1e-3


@pytest.mark.parametrize("algo", ["mabl", "mabl-sg", "dreamer"])
def test_team_rows_give_the_loss_they_gave_before(algo):
    """A team batch ``[T, B]`` gives the same loss as the same rows broadcast per agent, and its reward
    and continuation terms are the earlier formula (the team value as every agent's target)."""
    cfg = build_config("debug", {"algo": algo})
    torch.manual_seed(0)
    model = BiLevelWorldModel(TEAM_SPEC, cfg.model, VARIANTS[algo])
    replay = SequenceReplay(TEAM_SPEC, 60)
    for k in range(3):
        episode = _episode(7, {}, terminated=k < 2, seed=k)
        replay.add_episode(*stored_episode(episode, "terminal"), np.random.default_rng(k))
    rows = {k: torch.as_tensor(v) for k, v in replay.sample(6, 8, np.random.default_rng(1)).items()}
    team = shift_window(rows)
    wide = team._replace(reward=team.reward[..., None].expand(-1, -1, N), done=team.done[..., None].expand(-1, -1, N),
                         fake=team.fake[..., None].expand(-1, -1, N))
    torch.manual_seed(2)
    _, team_terms, filt = world_model_loss(model, team, cfg.model.kl_balance)
    torch.manual_seed(2)
    _, wide_terms, _ = world_model_loss(model, wide, cfg.model.kl_balance)
    for key in team_terms:
        torch.testing.assert_close(wide_terms[key], team_terms[key], rtol=1e-6, atol=1e-7, msg=key)
    torch.manual_seed(2)
    heads = model.loss_heads(filt.post.map(lambda x: x[:-1]), filt.h_a_trans[1:],
                             None if filt.h_g_trans is None else filt.h_g_trans[1:])
    old_reward = nn.functional.smooth_l1_loss(heads["reward"].squeeze(-1), team.reward[1:, :, None].expand(-1, -1, N))
    old_cont = nn.functional.binary_cross_entropy_with_logits(
        heads["cont"].squeeze(-1), (1.0 - team.done[1:, :, None]).expand(-1, -1, N))
    torch.testing.assert_close(team_terms["reward"], old_reward.detach())
    torch.testing.assert_close(team_terms["cont"], old_cont.detach())


# ------------------------------------------------------------------ target critic
def _imagined_batch(agent: MablAgent, rows: int, gen: torch.Generator):
    from mabl.algo.imagination import Imagined

    latent = Latent(torch.randint(0, 4, (rows, N, 4), generator=gen), torch.randn(rows, N, 32, generator=gen),
                    torch.randint(0, 4, (rows, N, 4), generator=gen), torch.randn(rows, N, 32, generator=gen))
    return Imagined(latent, torch.randint(0, A, (rows, N), generator=gen), torch.full((rows, N), -math.log(A)),
                    None, torch.randn(rows, N, generator=gen), torch.randn(rows, N, generator=gen), torch.zeros(rows))


@pytest.mark.parametrize("every", [1, 3])
def test_the_target_critic_is_refreshed_as_the_released_code_does(every):
    cfg = build_config("debug", {"policy.target_critic": every, "model.avail_head": "false"})
    torch.manual_seed(0)
    agent = MablAgent(SPEC, cfg, torch.device("cpu"))
    learner: ImaginedPpo = agent.ppo
    target = learner.target_critic
    assert target is not None and target is not agent.critic
    assert all(not p.requires_grad for p in target.parameters())
    copies, load = [], target.load_state_dict
    target.load_state_dict = lambda state: (copies.append(learner.update_count), load(state))[1]
    before = {k: v.clone() for k, v in target.state_dict().items()}
    rows = 70
    learner.update(_imagined_batch(agent, rows, torch.Generator().manual_seed(1)))
    steps = cfg.policy.epochs * math.ceil(rows / cfg.policy.minibatch)
    # DreamerLearner: cur_update starts at 1 and grows by one per minibatch; copy when it divides by K
    assert copies == [c for c in range(2, steps + 2) if c % every == 0]
    last = copies[-1] == steps + 1
    same = all(torch.equal(v, agent.critic.state_dict()[k]) for k, v in target.state_dict().items())
    assert same == last and not all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    # the copy and its counter travel with a checkpoint
    other = MablAgent(SPEC, cfg, torch.device("cpu"))
    other.load_state_dict(agent.state_dict())
    assert other.ppo.update_count == learner.update_count == steps + 1
    for k, v in target.state_dict().items():
        torch.testing.assert_close(other.ppo.target_critic.state_dict()[k], v)


def test_imagined_returns_read_the_target_critic_and_advantages_the_critic():
    cfg = build_config("debug", {"policy.target_critic": 1})
    torch.manual_seed(0)
    agent = MablAgent(SPEC, cfg, torch.device("cpu"))
    model, critic, target = agent.world_model, agent.critic, agent.ppo.target_critic
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.3 * torch.randn_like(p))  # make the copy differ from the critic
    gen = torch.Generator().manual_seed(1)
    z = lambda: nn.functional.one_hot(torch.randint(0, 4, (6, N, 4), generator=gen), 4).float().flatten(-2)  # noqa: E731
    start = Latent(z(), torch.randn(6, N, 32, generator=gen), z(), torch.randn(6, N, 32, generator=gen))
    args = (start, cfg.policy.horizon, cfg.policy.gamma, cfg.policy.lam)
    torch.manual_seed(3)
    with_target = imagine(model, agent.actor, critic, *args, target_critic=target)
    torch.manual_seed(3)
    reading_target = imagine(model, agent.actor, target, *args)  # same samples, the copy as the critic
    torch.manual_seed(3)
    reading_critic = imagine(model, agent.actor, critic, *args)
    torch.testing.assert_close(with_target.returns, reading_target.returns)
    torch.testing.assert_close(with_target.value, reading_critic.value)
    assert (with_target.returns - reading_critic.returns).abs().max() > 1e-3
    assert with_target.avail is not None  # the avail head is on unless configured off


def test_without_the_mask_head_imagined_actions_are_unmasked():
    cfg = build_config("debug", {"model.avail_head": "false"})
    agent = MablAgent(SPEC, cfg, torch.device("cpu"))
    assert agent.world_model.avail_head is None and agent.ppo.target_critic is None
    start = agent.world_model.initial((4,), torch.device("cpu"))
    out = imagine(agent.world_model, agent.actor, agent.critic, start, 3, 0.99, 0.95)
    assert out.avail is None


# ------------------------------------------------------------------ config
def test_flatland_gets_the_released_codes_readings_and_flags_still_win():
    cfg = build_config("debug", {"env": "flatland:5_agents"})
    assert {path: _get(cfg, path) for path in FLATLAND} == FLATLAND
    flagged = build_config("debug", {"env": "flatland:10_agents", "policy.target_critic": "0",
                                     "model.reward_target": "team"})
    assert flagged.policy.target_critic == 0 and flagged.model.reward_target == "team"
    assert flagged.model.done_target == "per_agent"
    for env in ("smax:3m", "mpe:simple_spread", "mamujoco:Humanoid-9|8"):
        cfg = build_config("paper", {"env": env})
        assert (cfg.model.reward_target, cfg.model.done_target, cfg.model.avail_head,
                cfg.policy.normalize_advantages, cfg.policy.target_critic) == ("team", "team", True, True, 0)
    assert to_dict(build_config("debug", {"env": "flatland:5_agents"}))["model"]["reward_target"] == "per_agent"


def test_old_run_dirs_keep_the_team_readings():
    saved = to_dict(build_config("debug", {"env": "flatland:5_agents"}))
    for path in FLATLAND:
        if path in ADDED_FIELDS:
            section, leaf = path.split(".")
            del saved[section][leaf]
    saved["policy"]["normalize_advantages"] = True  # what every earlier run dir holds
    cfg = from_dict(saved)
    assert (cfg.model.reward_target, cfg.model.done_target, cfg.model.avail_head, cfg.policy.target_critic,
            cfg.policy.normalize_advantages) == ("team", "team", True, 0, True)


def test_a_per_agent_reading_needs_an_env_that_reports_it():
    assert per_agent_targets(build_config("debug", FLATLAND), SPEC) == (True, True)
    assert per_agent_targets(build_config("debug", {**FLATLAND, "algo": "mappo"}), TEAM_SPEC) == (False, False)
    with pytest.raises(MablError, match="--model.reward_target=per_agent needs an env with per-agent rewards"):
        per_agent_targets(build_config("debug", {"model.reward_target": "per_agent"}), TEAM_SPEC)
    with pytest.raises(MablError, match="--model.done_target=per_agent needs an env with per-agent done"):
        per_agent_targets(build_config("debug", {"model.done_target": "per_agent"}), TEAM_SPEC)
    assert RunConfig().model.reward_target == "team"


def _get(cfg, path):
    section, leaf = path.split(".")
    return getattr(getattr(cfg, section), leaf)
