"""The SMAX adapter (``mabl.envs.smax.SmaxEnv``, read with JaxMARL's own reward, state and walls)
against JaxMARL itself, step by step.

JaxMARL's ``HeuristicEnemySMAX`` is stepped here directly, beside the adapter, with the key chain
the adapter documents (``reset(seed)`` restarts it at ``PRNGKey(seed)``; every reset and step
splits off one key) and the same actions. At every step the adapter's observations, world state,
action masks and reward must equal JaxMARL's. The reference is built with ``won_battle_bonus=0``,
so the adapter's reward minus the reference's is JaxMARL's win bonus: 1 exactly on the final step
of an episode JaxMARL counts as won (every enemy dead, an ally alive), and the adapter's
``info["win"]`` must say the same. Episodes end where JaxMARL's own ``done`` says (elimination), or
at the time limit, which the adapter applies after exactly ``limit`` steps while JaxMARL's own flag
comes one step later (it tests the step count from before the step).

The map's limit is lowered to 12 steps for this test, so that one compiled adapter sees both endings
(focus fire on 3m ends by elimination in 11-17 steps).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jaxmarl")

import mabl.envs.smax as smax  # noqa: E402

MAP, LIMIT, FIRST_ATTACK = "3m", 12, 5


def focus(avail: np.ndarray, rng: np.random.Generator) -> int:
    """Attack the lowest-numbered enemy in range, else move (SMAX: 0-3 move, 4 stop, 5+j attack j)."""
    allowed = np.flatnonzero(avail)
    attacks = allowed[allowed >= FIRST_ATTACK]
    if len(attacks):
        return int(attacks[0])
    return 1 if avail[1] else int(rng.choice(allowed))


@pytest.fixture(scope="module")
def pair():
    saved = smax.SMAC_EPISODE_LIMITS[MAP]
    smax.SMAC_EPISODE_LIMITS[MAP] = LIMIT
    try:
        adapter = smax.SmaxEnv(MAP, 0, reward="jaxmarl", state="jaxmarl", walls="lethal")
    finally:
        smax.SMAC_EPISODE_LIMITS[MAP] = saved
    import jax
    import jaxmarl
    from jaxmarl.environments.smax import map_name_to_scenario

    reference = jaxmarl.make("HeuristicEnemySMAX", scenario=map_name_to_scenario(MAP), max_steps=LIMIT,
                             won_battle_bonus=0.0)
    return adapter, reference, jax


def _compare(step, obs, state, reference, agents, t):
    avail = reference.get_avail_actions(state)
    for i, agent in enumerate(agents):
        np.testing.assert_array_equal(step.obs[i], np.asarray(obs[agent]), err_msg=f"obs of {agent}, step {t}")
        np.testing.assert_array_equal(step.avail[i], np.asarray(avail[agent]).astype(bool),
                                      err_msg=f"mask of {agent}, step {t}")
    np.testing.assert_array_equal(step.state, np.asarray(obs["world_state"]), err_msg=f"world state, step {t}")


def test_smax_adapter_equals_jaxmarl_step_by_step(pair):
    adapter, reference, jax = pair
    agents = list(reference.agents)
    assert adapter.spec.n_agents == len(agents) and adapter.spec.episode_limit == LIMIT
    assert np.array_equal(smax._prng_key(1000), np.asarray(jax.random.PRNGKey(1000)))
    endings = {"won": 0, "lost or drawn": 0, "time limit": 0}
    rng = np.random.default_rng(0)
    for seed in range(1000, 1008):
        step = adapter.reset(seed=seed)
        key = jax.random.PRNGKey(seed)
        key, reset_key = jax.random.split(key)
        obs, state = reference.reset(reset_key)
        _compare(step, obs, state, reference, agents, 0)
        assert step.reward == 0.0 and not step.done
        for t in range(1, LIMIT + 1):
            actions = np.array([focus(step.avail[i], rng) for i in range(len(agents))])
            step = adapter.step(actions)
            key, step_key = jax.random.split(key)
            obs, state, rewards, dones, _ = reference.step_env(
                step_key, state, {agent: int(a) for agent, a in zip(agents, actions)})
            _compare(step, obs, state, reference, agents, t)
            team = {float(rewards[agent]) for agent in agents}
            assert len(team) == 1  # one team reward
            bonus = step.reward - team.pop()
            alive = np.asarray(state.state.unit_alive)
            if bool(dones["__all__"]):  # JaxMARL ends the episode here: elimination (its time flag comes later)
                assert step.terminated and not step.truncated and step.done, (seed, t)
                jax_won = bool(~alive[len(agents):].any() & alive[:len(agents)].any())
                assert step.info == {"win": jax_won}, (seed, t)
                assert bonus == pytest.approx(1.0 if jax_won else 0.0, abs=1e-6), (seed, t)
                endings["won" if jax_won else "lost or drawn"] += 1
                break
            assert bonus == pytest.approx(0.0, abs=1e-6) and not step.terminated, (seed, t)
            if t == LIMIT:  # the adapter truncates after exactly LIMIT steps; JaxMARL flags one step later
                assert step.truncated and step.info == {"win": False}, seed
                key, step_key = jax.random.split(key)
                *_, late, _ = reference.step_env(step_key, state, {agent: 4 for agent in agents})
                assert bool(late["__all__"])
                endings["time limit"] += 1
            else:
                assert not step.done and step.info == {}, (seed, t)
    assert all(endings.values()), endings  # every kind of ending was compared


def test_scripted_obs_layout_reads_who_shot_at_whom(pair):
    """``mabl.scripted.ObsLayout.attackers`` (what ``--scripted kite`` reacts to), read from JaxMARL's
    own observations, against the enemies' attack actions in JaxMARL's state: ally ``i`` sees enemy
    unit ``N + k`` in row ``k``, and an enemy's attack action ``a >= 5`` hits ally ``N - 1 - (a - 5)``."""
    from mabl.scripted import ObsLayout

    _, reference, jax = pair
    agents = list(reference.agents)
    n = len(agents)
    layout = ObsLayout(int(reference.obs_size), int(reference.action_spaces[agents[0]].n))
    rng, seen = np.random.default_rng(1), 0
    for seed in range(2000, 2004):
        key = jax.random.PRNGKey(seed)
        obs, state = reference.reset(key)
        for _ in range(LIMIT):
            avail = reference.get_avail_actions(state)
            actions = {a: focus(np.asarray(avail[a]).astype(bool), rng) for a in agents}
            key, step_key = jax.random.split(key)
            obs, state, _, dones, _ = reference.step_env(step_key, state, actions)
            units = state.state
            positions, alive = np.asarray(units.unit_positions), np.asarray(units.unit_alive)
            enemy_action = np.asarray(units.prev_attack_actions)[n:]
            for i, agent in enumerate(agents):
                visible = alive[i] & alive[n:] & (np.linalg.norm(positions[n:] - positions[i], axis=1) < 9.0)
                expected = np.flatnonzero(visible & (enemy_action >= FIRST_ATTACK)
                                          & (n - 1 - (enemy_action - FIRST_ATTACK) == i))
                got = layout.attackers(np.asarray(obs[agent]), i)
                assert got.tolist() == expected.tolist(), (seed, agent)
                seen += len(expected)
            if bool(dones["__all__"]):
                break
    assert seen > 20  # enough attacks were compared
