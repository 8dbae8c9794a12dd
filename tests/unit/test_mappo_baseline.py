"""Model-free MAPPO (``mabl.algo.mappo``) and IPPO (``mabl.algo.ippo``): GAE and the losses
against hand loops, the value normaliser against numpy, actor/critic information flow, and
collect/update on a small fake env."""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest
import torch

from mabl.algo.ippo import Ippo
from mabl.algo.mappo import Batch, Mappo, clipped_surrogate_loss, clipped_value_loss
from mabl.algo.returns import gae
from mabl.algo.value_norm import ValueNormalizer
from mabl.envs.base import EnvSpec, TimeStep
from mabl.errors import MablError
from mabl.mlp_policy import MlpPolicy, mlp_policy_from_payload
from mabl.models.mlp import LocalMlpCritic, MlpActor, MlpCritic
from mabl.presets import build_config
from mabl.rollout import run_episode

N, A = 2, 3
SPEC = EnvSpec("fake", n_agents=N, obs_dim=3, state_dim=4, discrete=True, n_actions=A, has_action_mask=True,
               episode_limit=6, has_win=True)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads, and with another process busy on a 2-core
    machine the spinning second OpenMP worker made this module ~6x slower (measured); restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def episode_length(seed: int) -> int:
    return int(np.random.default_rng(seed + 1000).integers(3, 7))  # 3..6; 6 = the limit (truncation)


class FakeEnv:
    """Agent i observes the one-hot of its target action; reward = fraction of agents that hit their
    target. Each step masks one non-target action per agent with probability 1/2. Episodes last
    ``episode_length(seed)`` steps: terminated below the limit, truncated at it."""

    spec = SPEC

    def __init__(self):
        self.seeds: list[int] = []

    def reset(self, seed: int | None = None) -> TimeStep:
        self.seeds.append(seed)
        self.rng = np.random.default_rng(seed)
        self.length, self.t = episode_length(seed), 0
        return self._observe(0.0, False, False, None)

    def _observe(self, reward: float, terminated: bool, truncated: bool, info: dict | None) -> TimeStep:
        self.target = self.rng.integers(0, A, size=N)
        self.avail = np.ones((N, A), bool)
        blocked = (self.target + self.rng.integers(1, A, size=N)) % A
        self.avail[np.arange(N), blocked] = self.rng.random(N) < 0.5
        obs = np.eye(A, dtype=np.float32)[self.target]
        state = np.array([self.t / 6, self.target[0], self.target[1], 1.0], np.float32)
        return TimeStep(obs, state, self.avail.copy(), reward, terminated, truncated, info)

    def step(self, actions: np.ndarray) -> TimeStep:
        assert actions.shape == (N,) and actions.dtype == np.int64
        assert self.avail[np.arange(N), actions].all(), "an unavailable action was taken"
        reward = float((actions == self.target).mean())
        self.t += 1
        done = self.t >= self.length
        truncated = done and self.length == SPEC.episode_limit
        return self._observe(reward, done and not truncated, truncated, {"win": reward == 1.0} if done else {})

    def close(self) -> None:
        pass


def _config(**overrides):
    return build_config("debug", {"algo": "mappo", "mappo.rollout_steps": 64, **overrides})


def _seeds():
    asked: list[int] = []

    def next_seed() -> int:
        asked.append(len(asked))
        return asked[-1]

    return asked, next_seed


# --- GAE ---------------------------------------------------------------------------------------

def _gae_by_episode(rewards, values, lengths, terminated, bootstrap, gamma, lam):
    """Per episode and agent, plain Python: delta_t = r_t + gamma V_{t+1} - V_t, V after the last
    step = 0 when terminated else the bootstrap value; A_t = delta_t + gamma lam A_{t+1}."""
    out = []
    for b, length in enumerate(lengths):
        per_agent = []
        for i in range(len(values[0][0])):
            v = [values[t][b][i] for t in range(length)]
            after = 0.0 if terminated[b] else bootstrap[b][i]
            adv, acc = [0.0] * length, 0.0
            for t in reversed(range(length)):
                next_v = v[t + 1] if t + 1 < length else after
                acc = rewards[t][b] + gamma * next_v - v[t] + gamma * lam * acc
                adv[t] = acc
            per_agent.append(adv)
        out.append(per_agent)
    return out


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.5), (1.0, 1.0)])
def test_gae_matches_episode_loop(gamma, lam):
    gen = torch.Generator().manual_seed(0)
    T, B = 6, 4
    lengths = [6, 3, 6, 2]  # column 1 terminates mid-batch, column 3 is truncated mid-batch
    terminated = [True, True, False, False]  # columns 2 and 3 are truncated: bootstrap
    reward = torch.randn(T, B, generator=gen)
    value = torch.randn(T + 1, B, N, generator=gen)
    mask = torch.zeros(T, B, dtype=torch.bool)
    term = torch.zeros(T, B, dtype=torch.bool)
    bootstrap = [[0.0] * N for _ in range(B)]
    for b, length in enumerate(lengths):
        mask[:length, b] = True
        term[length - 1, b] = terminated[b]
        bootstrap[b] = value[length, b].tolist()
        value[length + 1:, b] = float("nan")  # padding values must never be read
        reward[length:, b] = float("nan")
    advantage, returns = gae(reward, value, term, mask, gamma, lam)
    expected = _gae_by_episode(reward.tolist(), value.tolist(), lengths, terminated, bootstrap, gamma, lam)
    for b, length in enumerate(lengths):
        for i in range(N):
            for t in range(T):
                if t < length:
                    assert advantage[t, b, i].item() == pytest.approx(expected[b][i][t], rel=1e-5, abs=1e-6)
                    assert returns[t, b, i].item() == pytest.approx(expected[b][i][t] + value[t, b, i].item(),
                                                                    rel=1e-5, abs=1e-6)
                else:
                    assert advantage[t, b, i].item() == 0.0 and returns[t, b, i].item() == 0.0
    # Without an agent axis the same numbers come out.
    adv0, _ = gae(reward, value[..., 0], term, mask, gamma, lam)
    torch.testing.assert_close(adv0, advantage[..., 0])


# --- value normaliser --------------------------------------------------------------------------

def test_value_normalizer_running_stats_match_numpy_and_invert():
    rng = np.random.default_rng(0)
    norm = ValueNormalizer()
    beta = 0.99999
    m = m2 = debias = 0.0
    for _ in range(50):
        x = rng.normal(3.0, 2.0, size=(64, N))
        norm.update(torch.tensor(x, dtype=torch.float32))
        x32 = x.astype(np.float32).astype(np.float64)
        m = beta * m + (1 - beta) * x32.mean()
        m2 = beta * m2 + (1 - beta) * (x32 ** 2).mean()
        debias = beta * debias + (1 - beta)
    mean = m / debias
    std = math.sqrt(max(m2 / debias - mean ** 2, 1e-2))
    got_mean, got_std = norm.stats()
    assert got_mean.item() == pytest.approx(mean, rel=1e-6)
    assert got_std.item() == pytest.approx(std, rel=1e-6)
    assert got_mean.item() == pytest.approx(3.0, abs=0.1) and got_std.item() == pytest.approx(2.0, abs=0.1)
    y = torch.randn(5, N) * 4 + 1
    torch.testing.assert_close(norm.denormalize(norm.normalize(y)), y)
    torch.testing.assert_close(norm.normalize(y), ((y.double() - mean) / std).float())
    # Round trip through torch.save / torch.load(weights_only=True).
    buf = io.BytesIO()
    torch.save(norm.state_dict(), buf)
    buf.seek(0)
    other = ValueNormalizer()
    other.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(other.normalize(y), norm.normalize(y))


def test_value_normalizer_floors_variance():
    norm = ValueNormalizer()
    for _ in range(3):
        norm.update(torch.full((10,), 5.0))
    mean, std = norm.stats()
    assert mean.item() == pytest.approx(5.0) and std.item() == pytest.approx(0.1)  # sqrt of the 1e-2 floor


# --- networks ----------------------------------------------------------------------------------

def test_actor_masks_and_is_decentralized():
    torch.manual_seed(0)
    actor = MlpActor(SPEC, 16)
    obs = torch.randn(5, N, 3)
    avail = torch.ones(5, N, A, dtype=torch.bool)
    avail[:, 0, 2] = False
    avail[:, 1, 0] = False
    probs = actor(obs, avail).softmax(-1)
    assert probs[:, 0, 2].max().item() < 1e-12 and probs[:, 1, 0].max().item() < 1e-12
    torch.testing.assert_close(probs.sum(-1), torch.ones(5, N))
    changed = obs.clone()
    changed[:, 1] = torch.randn(5, 3) * 5
    probs2 = actor(changed, avail).softmax(-1)
    assert torch.equal(probs2[:, 0], probs[:, 0])  # agent 0 does not see agent 1's observation
    assert not torch.allclose(probs2[:, 1], probs[:, 1])
    # The agent index is an input: two agents with equal observations may act differently.
    same = obs[:, :1].expand(5, N, 3)
    logits = actor(same)
    assert not torch.allclose(logits[:, 0], logits[:, 1])


def test_critic_uses_global_state():
    torch.manual_seed(0)
    critic = MlpCritic(SPEC, 16)
    state = torch.randn(7, 4)
    value = critic(state)
    assert value.shape == (7, N)
    other = state.clone()
    other[:, 2] += 3.0
    assert (critic(other) - value).abs().min().item() > 0  # every agent's value reads the state
    assert not torch.allclose(value[:, 0], value[:, 1])  # one value per agent (agent index input)


# --- losses ------------------------------------------------------------------------------------

def _log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    total = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - total for x in row]


@pytest.mark.parametrize("clip,entropy_coef", [(0.2, 0.01), (0.1, 0.5)])
def test_clipped_surrogate_loss_matches_hand(clip, entropy_coef):
    gen = torch.Generator().manual_seed(1)
    rows = 8
    logits = torch.randn(rows, N, A, generator=gen)
    logits[0, 0, 2] = -1e10  # a masked action
    action = torch.randint(0, 2, (rows, N), generator=gen)
    log_ratio = torch.tensor([-0.6, -0.15, -0.05, 0.0, 0.05, 0.15, 0.6, 0.3])[:, None].expand(rows, N)
    old = logits.log_softmax(-1).gather(-1, action[..., None])[..., 0] - log_ratio
    advantage = torch.randn(rows, N, generator=gen)
    loss, entropy, kl, clip_frac = clipped_surrogate_loss(logits, action, old, advantage, clip, entropy_coef)
    surr = ent = kl_sum = clipped = 0.0
    for r in range(rows):
        for i in range(N):
            logp = _log_softmax(logits[r, i].tolist())
            rho = math.exp(logp[int(action[r, i])] - old[r, i].item())
            adv = advantage[r, i].item()
            surr += min(rho * adv, min(max(rho, 1 - clip), 1 + clip) * adv)
            ent -= sum(math.exp(lp) * lp for lp in logp if lp > -1e9)
            kl_sum += rho - 1 - math.log(rho)
            clipped += abs(rho - 1) > clip
    count = rows * N
    assert entropy.item() == pytest.approx(ent / count, rel=1e-5)
    assert loss.item() == pytest.approx(-surr / count - entropy_coef * ent / count, rel=1e-5, abs=1e-7)
    assert kl.item() == pytest.approx(kl_sum / count, rel=1e-4, abs=1e-7)
    assert clip_frac.item() == pytest.approx(clipped / count)


def _huber(e: float, d: float) -> float:
    return 0.5 * e * e if abs(e) <= d else d * (abs(e) - 0.5 * d)


@pytest.mark.parametrize("clip,delta", [(0.2, 10.0), (0.5, 0.3)])
def test_clipped_value_loss_matches_hand(clip, delta):
    gen = torch.Generator().manual_seed(2)
    value = torch.randn(6, N, generator=gen)
    old = value + torch.tensor([-0.9, -0.3, -0.1, 0.1, 0.3, 0.9])[:, None]
    target = torch.randn(6, N, generator=gen) * 2
    loss = clipped_value_loss(value, old, target, clip, delta)
    total = 0.0
    for r in range(6):
        for i in range(N):
            v, vo, g = value[r, i].item(), old[r, i].item(), target[r, i].item()
            v_clip = vo + min(max(v - vo, -clip), clip)
            total += max(_huber(g - v, delta), _huber(g - v_clip, delta))
    assert loss.item() == pytest.approx(total / (6 * N), rel=1e-5)


# --- collect / update --------------------------------------------------------------------------

def test_collect_episodes_and_batch():
    torch.manual_seed(0)
    cfg = _config()
    learner = Mappo(SPEC, cfg, torch.device("cpu"))
    envs = [FakeEnv() for _ in range(cfg.mappo.n_envs)]
    asked, next_seed = _seeds()
    episodes, batch = learner.collect(envs, next_seed)
    E = len(envs)
    lengths = [ep.length for ep in episodes]
    assert len(episodes) == len(asked) and len(episodes) % E == 0
    assert sum(lengths) >= cfg.mappo.rollout_steps > sum(lengths[:-E])  # stops after the round that reaches it
    assert lengths == [episode_length(s) for s in asked]  # episodes in the order they were started
    for e, env in enumerate(envs):
        assert env.seeds == asked[e::E]  # each round resets the envs in order
    T, B = batch.mask.shape
    assert B == len(episodes) and T == max(lengths)
    assert batch.mask.sum(0).tolist() == lengths
    for b, ep in enumerate(episodes):
        L = ep.length
        assert ep.terminated == (L < SPEC.episode_limit) and ep.rows["done"][-1] == ep.terminated
        assert ep.ret == pytest.approx(float(ep.rows["reward"].sum())) and ep.win is not None
        assert ep.rows["obs"].shape == (L, N, 3) and ep.rows["avail"].shape == (L, N, A)
        assert np.array_equal(batch.obs[:L, b].numpy(), ep.rows["obs"])
        assert np.array_equal(batch.action[:L, b].numpy(), ep.rows["action"])
        assert np.array_equal(batch.avail[:L, b].numpy(), ep.rows["avail"])
        assert not batch.mask[L:, b].any()
        assert (batch.advantage[L:, b] == 0).all() and (batch.returns[L:, b] == 0).all()
    valid = batch.mask
    taken = batch.avail.gather(-1, batch.action.unsqueeze(-1)).squeeze(-1)
    assert taken[valid].all()  # only available actions were sampled
    # Stored log-probs are those of the actor that sampled (nothing changed since).
    log_probs = learner.actor(batch.obs, batch.avail).log_softmax(-1).gather(-1, batch.action[..., None])[..., 0]
    torch.testing.assert_close(batch.log_prob[valid], log_probs[valid].detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batch.returns[valid], (batch.advantage + learner.value_norm.denormalize(batch.value))[valid])


def _train_once(seed: int, corrupt_padding: bool = False):
    torch.manual_seed(seed)
    learner = Mappo(SPEC, _config(), torch.device("cpu"))
    envs = [FakeEnv() for _ in range(2)]
    episodes, batch = learner.collect(envs, _seeds()[1])
    if corrupt_padding:
        pad = ~batch.mask
        nan = float("nan")
        batch = Batch(*(x if x is None or x is batch.mask or x.dtype == torch.bool or x.dtype == torch.int64
                        else x.masked_fill(pad.view(*pad.shape, *([1] * (x.dim() - 2))), nan) for x in batch))
    torch.manual_seed(seed + 1)
    metrics = learner.update(batch)
    return learner, episodes, batch, metrics


def test_update_is_finite_changes_parameters_and_ignores_padding():
    torch.manual_seed(0)
    before = Mappo(SPEC, _config(), torch.device("cpu"))
    learner, _, batch, metrics = _train_once(0)
    assert set(metrics) == {"actor_loss", "critic_loss", "entropy", "approx_kl", "clip_fraction", "samples",
                            "actor_skipped", "critic_skipped"}
    assert all(torch.isfinite(v).all() and not v.requires_grad for v in metrics.values())
    assert metrics["samples"].item() == batch.mask.sum().item() * _config().mappo.epochs
    for name in ("actor", "critic"):
        old, new = getattr(before, name).state_dict(), getattr(learner, name).state_dict()
        assert any(not torch.equal(old[k], new[k]) for k in old)
    assert learner.value_norm.debias.item() > 0
    # NaN in every padded row of every float field changes nothing.
    corrupted, _, _, metrics2 = _train_once(0, corrupt_padding=True)
    for k in metrics:
        assert torch.equal(metrics[k], metrics2[k])
    for k, v in learner.actor.state_dict().items():
        assert torch.equal(v, corrupted.actor.state_dict()[k])


def test_collect_and_update_are_reproducible():
    a, ep_a, batch_a, m_a = _train_once(3)
    b, ep_b, batch_b, m_b = _train_once(3)
    assert [e.length for e in ep_a] == [e.length for e in ep_b]
    for x, y in zip(batch_a, batch_b):
        assert torch.equal(x, y)
    for k in m_a:
        assert torch.equal(m_a[k], m_b[k])
    for k, v in a.critic.state_dict().items():
        assert torch.equal(v, b.critic.state_dict()[k])


def test_state_dict_round_trip_weights_only():
    learner, _, batch, _ = _train_once(0)
    buf = io.BytesIO()
    torch.save(learner.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(99)
    fresh = Mappo(SPEC, _config(), torch.device("cpu"))
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    obs = torch.randn(4, N, 3)
    torch.testing.assert_close(fresh.actor(obs).softmax(-1), learner.actor(obs).softmax(-1), rtol=0, atol=0)
    # Optimizers and value normaliser came along: one more identical update gives identical weights.
    torch.manual_seed(7)
    learner.update(batch)
    torch.manual_seed(7)
    fresh.update(batch)
    for name in ("actor", "critic"):
        for k, v in getattr(learner, name).state_dict().items():
            assert torch.equal(v, getattr(fresh, name).state_dict()[k])


def test_learns_the_best_action():
    torch.manual_seed(0)
    cfg = _config(**{"mappo.lr": 5e-3, "mappo.hidden": 32, "mappo.epochs": 4})
    learner = Mappo(SPEC, cfg, torch.device("cpu"))
    envs = [FakeEnv() for _ in range(cfg.mappo.n_envs)]
    _, next_seed = _seeds()
    obs = torch.eye(A)[:, None, :].expand(A, N, A)  # case k: both agents' target is action k

    def p_best() -> float:
        with torch.no_grad():
            probs = learner.actor(obs).softmax(-1)
        return probs[torch.arange(A), :, torch.arange(A)].mean().item()

    start = p_best()
    for _ in range(15):
        learner.update(learner.collect(envs, next_seed)[1])
    assert start == pytest.approx(1 / A, abs=0.05)
    assert p_best() > start + 0.3


# --- acting object -----------------------------------------------------------------------------

def test_policy_acts_and_payload_round_trip():
    learner, _, _, _ = _train_once(0)
    policy = learner.policy()
    assert policy.spec.n_agents == N and policy.spec.n_actions == A and policy.env_spec == SPEC
    policy.generator = torch.Generator().manual_seed(0)
    episode = run_episode(FakeEnv(), policy, seed=5)
    assert episode.length == episode_length(5)
    buf = io.BytesIO()
    torch.save(policy.to_payload(), buf)
    buf.seek(0)
    payload = torch.load(buf, weights_only=True)
    assert payload["format"] == "mabl-policy" and payload["algo"] == "mappo" and payload["spec"] == dataclasses.asdict(SPEC)
    loaded = mlp_policy_from_payload(payload, seed=1)
    assert isinstance(loaded, MlpPolicy)
    env = FakeEnv()
    ts = env.reset(seed=11)
    _, info = policy.act(ts.obs, ts.avail)
    action, info2 = loaded.act(ts.obs, ts.avail, deterministic=True)
    assert np.array_equal(info["probs"], info2["probs"])
    assert np.array_equal(action, info["probs"].argmax(-1)) and ts.avail[np.arange(N), action].all()
    with pytest.raises(MablError):
        loaded.act(ts.obs[:1], ts.avail)
    with pytest.raises(MablError):
        mlp_policy_from_payload({**payload, "algo": "mabl"})



# --- IPPO: the critic on the agent's own observation --------------------------------------------

def test_local_critic_reads_only_the_agents_own_observation():
    torch.manual_seed(0)
    critic = LocalMlpCritic(SPEC, 16)
    obs = torch.randn(7, N, 3)
    value = critic(obs)
    assert value.shape == (7, N)
    changed = obs.clone()
    changed[:, 1] = torch.randn(7, 3) * 5
    other = critic(changed)
    assert torch.equal(other[:, 0], value[:, 0])  # agent 0's value ignores agent 1's observation
    assert (other[:, 1] - value[:, 1]).abs().min().item() > 0  # agent 1's value reads its own
    same = obs[:, :1].expand(7, N, 3)  # the agent index is an input, as the actor's
    assert not torch.allclose(critic(same)[:, 0], critic(same)[:, 1])


def _rebatch(learner, episodes, finals, edit=lambda rows: rows):
    """``learner._batch`` on copies of ``episodes`` whose rows went through ``edit``."""
    copies = [dataclasses.replace(ep, rows=edit({k: v.copy() for k, v in ep.rows.items()})) for ep in episodes]
    samples = [ep.rows["action"] for ep in copies]
    log_probs = [np.zeros((ep.length, N), np.float32) for ep in copies]
    return learner._batch(copies, {"sample": samples, "log_prob": log_probs}, finals)


@pytest.mark.parametrize("algo", ["ippo", "mappo"])
def test_ippo_values_ignore_the_state_and_other_agents(algo):
    """Through the learner's own data path: IPPO's value of agent i moves with agent i's observation
    only; MAPPO's (the control, so the check can fail) moves with the global state."""
    torch.manual_seed(0)
    cls = Ippo if algo == "ippo" else Mappo
    learner = cls(SPEC, _config(algo=algo), torch.device("cpu"))
    assert learner.critic.norm.normalized_shape == ((3 if algo == "ippo" else 4) + N,)
    episodes, _ = learner.collect([FakeEnv() for _ in range(2)], _seeds()[1])
    rng = np.random.default_rng(0)
    shape = (N, 3) if algo == "ippo" else (4,)
    finals = [rng.normal(size=shape).astype(np.float32) for _ in episodes]
    base = _rebatch(learner, episodes, finals)
    valid = base.mask

    def new_state(rows):
        rows["state"] = rng.normal(size=rows["state"].shape).astype(np.float32) * 3
        return rows

    def new_obs_of_agent_1(rows):
        rows["obs"][:, 1] = rng.normal(size=rows["obs"][:, 1].shape).astype(np.float32) * 3
        return rows

    state_moved = _rebatch(learner, episodes, finals, new_state)
    obs_moved = _rebatch(learner, episodes, finals, new_obs_of_agent_1)
    if algo == "ippo":
        assert torch.equal(state_moved.value[valid], base.value[valid])
        assert torch.equal(obs_moved.value[valid][:, 0], base.value[valid][:, 0])
        assert (obs_moved.value[valid][:, 1] - base.value[valid][:, 1]).abs().min().item() > 0
    else:
        assert (state_moved.value[valid] - base.value[valid]).abs().min().item() > 0
        assert torch.equal(obs_moved.value[valid], base.value[valid])


def test_ippo_update_never_reads_the_state():
    """The critic's loss takes its input from the observations: NaN in every state row changes no weight."""
    runs = []
    for poison in (False, True):
        torch.manual_seed(0)
        learner = Ippo(SPEC, _config(algo="ippo"), torch.device("cpu"))
        _, batch = learner.collect([FakeEnv() for _ in range(2)], _seeds()[1])
        if poison:
            batch = batch._replace(state=torch.full_like(batch.state, float("nan")))
        torch.manual_seed(1)
        metrics = learner.update(batch)
        assert torch.isfinite(metrics["critic_loss"]) and metrics["critic_skipped"].item() == 0
        runs.append(learner)
    for name in ("actor", "critic"):
        for k, v in getattr(runs[0], name).state_dict().items():
            assert torch.equal(v, getattr(runs[1], name).state_dict()[k]), (name, k)


def test_ippo_payload_names_its_algorithm_and_round_trips():
    torch.manual_seed(0)
    cfg = _config(algo="ippo")
    learner = Ippo(SPEC, cfg, torch.device("cpu"))
    payload = learner.policy_payload(cfg)
    assert payload["algo"] == "ippo" and set(payload["actor"]) == set(learner.actor.state_dict())
    loaded = mlp_policy_from_payload(payload)
    ts = FakeEnv().reset(seed=3)
    _, want = learner.policy().act(ts.obs, ts.avail)
    _, got = loaded.act(ts.obs, ts.avail)
    assert np.array_equal(got["probs"], want["probs"]) and loaded.to_payload()["algo"] == "ippo"


def test_defaults_are_yu_et_al_smac_script_values():
    """marlbenchmark/on-policy: onpolicy/config.py (hidden 64, lr 5e-4, eps 1e-5, clip 0.2, entropy 0.01,
    gamma 0.99, GAE 0.95, Huber 10, grad clip 10, one minibatch) and the 3m and 3s_vs_4z scripts of
    onpolicy/scripts/train_smac_scripts (8 rollout threads x 400 steps, ppo_epoch 15)."""
    c = build_config("cpu", {"algo": "mappo"}).mappo
    got = (c.n_envs, c.rollout_steps, c.hidden, c.lr, c.adam_eps, c.epochs, c.minibatches, c.clip, c.entropy,
           c.gamma, c.gae_lambda, c.huber_delta, c.grad_clip, c.value_norm)
    assert got == (8, 3200, 64, 5e-4, 1e-5, 15, 1, 0.2, 0.01, 0.99, 0.95, 10.0, 10.0, True)
