"""The oracle for ``--algo mamba`` against MAMBA's released code (github.com/jbr-ai-labs/mamba).

Run (prints the table and writes it to ``--out``)::

    MAMBA_RELEASED_CODE=/path/to/jbr-ai-labs-mamba OMP_NUM_THREADS=1 PYTHONPATH=src \\
        python tests/oracle/mamba_oracle.py --out docs/oracle/mamba_oracle.txt

``MAMBA_RELEASED_CODE`` is a checkout of that repository (the directory that holds ``agent/``),
imported read-only with the same harness-side patches as ``mabl_oracle.py`` (no-op ``wandb``, bare
``configs``, shared sampling noise). Sizes: SMAC 3s_vs_4z, MAMBA's SMAC configuration
(``configs/dreamer/DreamerAgentConfig.py``: hidden 256, 32 x 32 latents; its transition's
transformer has 3 layers, 8 heads, dropout 0.1) and our ``paper`` preset with ``--algo mamba``
(``model.mixer_layers`` 3, ``mixer_heads`` 8, ``mixer_dropout`` 0.1).

Both world models run in eval mode: the transformer's dropout draws its masks from torch's global
generator on each side, which this harness does not share, so dropout is off on both sides.

MAMBA's transformer adds a sinusoidal agent-index table to its input (``networks/transformer/
layers.py`` ``AttentionEncoder.pos_embed``); ours does too with its default
``--model.agent_index_encoding sinusoidal`` (``world_model.py`` ``AgentMixer``), and MAMBA's masks and
actions are used as they come (``--policy.empty_avail keep``). Nothing of either side is patched but
the sampling noise. The section titled "OPTION" runs ours with ``--model.agent_index_encoding none``
(earlier mabl) against MAMBA as released, to show that option's size of difference.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mabl_oracle as O  # noqa: E402
from name_map import MAMBA_UNUSED, actor_pairs, check_coverage, copy_weights, mamba_critic_pairs  # noqa: E402
from name_map import mamba_world_model_pairs as wm_pairs  # noqa: E402


def load_released_mamba(root: str) -> types.SimpleNamespace:
    if not Path(root, "agent", "optim", "loss.py").exists():
        raise SystemExit(f"MAMBA_RELEASED_CODE={root}: no agent/optim/loss.py there")
    O.import_released(str(root))
    import agent.optim.loss as loss
    import agent.optim.utils as utils
    from agent.learners.DreamerLearner import initialize_weights
    from agent.models.DreamerModel import DreamerModel
    from configs.dreamer.DreamerLearnerConfig import DreamerLearnerConfig
    from environments import Env
    from networks.dreamer.action import Actor
    from networks.dreamer.critic import AugmentedCritic

    loss.np = types.SimpleNamespace(random=types.SimpleNamespace(randint=lambda n: 4))
    return types.SimpleNamespace(loss=loss, utils=utils, DreamerModel=DreamerModel, Actor=Actor,
                                 AugmentedCritic=AugmentedCritic, DreamerLearnerConfig=DreamerLearnerConfig, Env=Env,
                                 initialize_weights=initialize_weights)


def setup(rel, seed: int = 0, overrides: dict | None = None):
    with contextlib.redirect_stdout(io.StringIO()):
        cfg = rel.DreamerLearnerConfig()
    cfg.IN_DIM, cfg.ACTION_SIZE, cfg.N_AGENTS = O.OBS_DIM, O.N_ACTIONS, O.N_AGENTS
    cfg.ENV_TYPE, cfg.DEVICE = rel.Env.STARCRAFT, "cpu"
    torch.manual_seed(seed)
    model = rel.DreamerModel(cfg)
    actor = rel.Actor(cfg.FEAT, cfg.ACTION_SIZE, cfg.ACTION_HIDDEN, cfg.ACTION_LAYERS)
    critic = rel.AugmentedCritic(cfg.FEAT, cfg.HIDDEN)
    for module in (model, actor, critic):
        rel.initialize_weights(module, mode="xavier")
    modules = dict(model.named_modules())
    for name, tag in {"representation._stochastic_posterior_model": "agent_post",
                      "transition._stochastic_prior_model": "agent_prior"}.items():
        modules[name].register_forward_pre_hook(lambda m, i, tag=tag: O.NOISE.roles.append(tag))
        modules[name].register_forward_hook(O._pop_role)
    actor.register_forward_pre_hook(lambda m, i: O.NOISE.roles.append("discarded"))
    actor.register_forward_hook(O._pop_role)
    agent = O.build_ours({"algo": "mamba", **(overrides or {})})
    z = cfg.N_CATEGORICALS * cfg.N_CLASSES
    maps = {"world_model": (model, agent.world_model,
                            wm_pairs(O.N_ACTIONS, z, cfg.DETERMINISTIC, cfg.HIDDEN, agent.cfg.model.mixer_layers)),
            "actor": (actor, agent.actor, actor_pairs(z, cfg.DETERMINISTIC)),
            "critic": (critic, agent.critic, mamba_critic_pairs(z, cfg.DETERMINISTIC))}
    for key, (released, ours, pairs) in maps.items():
        problems = check_coverage(released, ours, pairs, MAMBA_UNUSED[key])
        if problems:
            raise AssertionError(f"mamba {key} name map:\n" + "\n".join(problems))
        copy_weights(released, ours, pairs)
    model.eval()
    agent.world_model.eval()
    return cfg, model, actor, critic, agent, maps


def run_world_model(rel, cfg, model, agent, rows, table: O.Table, section: str, maps) -> None:
    from mabl.algo.world_model_loss import world_model_loss

    inputs = O.released_inputs(rows)  # MAMBA's DreamerMemory.get_transitions: the same shifts, no global state
    captured = {}
    original = rel.loss.rollout_representation

    def rollout(*args, **kwargs):
        captured["rollout"] = out = original(*args, **kwargs)
        return out

    O.WANDB_LOG.clear()
    O.NOISE.reset("filter")
    model.zero_grad(set_to_none=True)
    with O.shared_sampling(), O.patched((rel.loss, "rollout_representation", rollout)):
        released_loss = rel.loss.model_loss(cfg, model, inputs["observation"], inputs["action"], inputs["av_action"],
                                            inputs["reward"], inputs["done"], inputs["fake"], inputs["last"])
    released_loss.backward()
    terms = {key.split("/", 1)[1]: value for key, value in O.WANDB_LOG[-1].items()}  # loss.py model_loss

    wm = agent.world_model
    O.NOISE.reset("filter")
    wm.zero_grad(set_to_none=True)
    batch = agent.to_batch(rows)
    with O.shared_sampling(), O.ours_sampling():
        loss, metrics, filt = world_model_loss(wm, batch, agent.cfg.model.kl_balance)
    loss.backward()

    for ours_name, released_name in [("kl_agent", "div"), ("obs", "reconstruction_loss"), ("reward", "reward_loss"),
                                     ("cont", "pcont_loss"), ("avail", "av_action_loss"), ("action", "info_loss")]:
        table.real(section, f"loss {ours_name} (released {released_name})", metrics[ours_name], terms[released_name])
    table.real(section, "loss total", loss, released_loss)
    prior, post, deters = captured["rollout"]
    cut = batch.obs.shape[0] - 1
    k = cfg.N_CLASSES
    table.equal(section, "filter: agent posterior samples (steps 0..T-2)",
                filt.post.z_a[:cut].unflatten(-1, (-1, k)).argmax(-1), post.stoch.unflatten(-1, (-1, k)).argmax(-1))
    table.real(section, "filter: agent posterior logits", filt.post_a_logits[:cut].flatten(-2), post.logits)
    table.real(section, "filter: agent prior logits", filt.prior_a_logits[:cut].flatten(-2), prior.logits)
    table.real(section, "filter: h^a (posterior deter)", filt.post.h_a[:cut], post.deter)
    table.real(section, "filter: h^a_{j+1} read by reward/cont", filt.h_a_trans[1:], deters)
    released_model, ours_model, pairs = maps["world_model"]
    O.compare_grads(table, section, "grad world model", released_model, ours_model, pairs)


def run_policy(rel, cfg, model, actor, critic, agent, rows, table: O.Table, section: str, maps,
               fastpath: bool = False) -> None:
    """One imagination on both sides (MAMBA's masks as sampled) and one
    PPO step's actor and critic losses and gradients (``DreamerLearner.train_agent``, one minibatch).

    ``fastpath``: whether our imagination may take torch's fused transformer kernel
    (``torch.backends.mha``), as it does in training: it runs there because our mixer is
    ``batch_first`` in eval mode without gradients. MAMBA's layers are not ``batch_first``, so the
    released code always takes the unfused path; by default the harness turns ours off too."""

    inputs = O.released_inputs(rows)
    cap = {}
    loss = rel.loss
    orig_policy, orig_next, orig_return = loss.rollout_policy, loss.calculate_next_reward, loss.compute_return

    def rollout_policy(*args, **kwargs):
        O.NOISE.phase = "imagine"
        return orig_policy(*args, **kwargs)

    def next_reward(*args, **kwargs):
        with O.override("discarded"):
            return orig_next(*args, **kwargs)

    def compute_return(reward, value, discount, bootstrap, **kwargs):
        cap["return_inputs"] = (reward, value, discount, bootstrap)
        return orig_return(reward, value, discount, bootstrap, **kwargs)

    O.NOISE.reset("filter")
    empty_rows: list[int] = []
    hook = model.av_action.register_forward_hook(O.released_mask_counter(empty_rows))
    try:
        with O.shared_sampling(), O.patched((loss, "rollout_policy", rollout_policy),
                                            (loss, "compute_return", compute_return),
                                            (loss, "calculate_next_reward", next_reward)):
            actions, av_actions, old_policy, imag_feat, returns = loss.actor_rollout(
                inputs["observation"], inputs["action"], inputs["last"], model, actor, critic, cfg)
    finally:
        hook.remove()
    adv = rel.utils.advantage(returns.detach() - critic(imag_feat).detach())  # DreamerLearner.train_agent
    actor.zero_grad(set_to_none=True)
    critic.zero_grad(set_to_none=True)
    with O.override("discarded"), O.shared_sampling():
        actor_loss = loss.actor_loss(imag_feat, actions, av_actions, old_policy, adv, actor, cfg.ENTROPY)
    actor_loss.backward()
    value_loss = loss.value_loss(critic, imag_feat, returns)
    value_loss.backward()

    O.NOISE.reset("filter")
    saved_fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(fastpath)
    try:
        with O.shared_sampling(), O.ours_sampling(), O.patched(*O.imagination_capture(cap)):
            imagined = agent.imagine(rows)
    finally:
        torch.backends.mha.set_fastpath_enabled(saved_fastpath)
    metrics = agent.ppo.update(imagined)

    k = cfg.N_CLASSES
    z = cfg.N_CATEGORICALS * k
    table.note(section, "imagined masks with no action available", O.empty_mask_note(empty_rows, av_actions, agent))
    table.equal(section, "imagined z^a (steps 0..H-2, class per categorical)", imagined.latent.z_a,
                imag_feat[..., :z].unflatten(-1, (-1, k)).argmax(-1))
    table.real(section, "imagined h^a (steps 0..H-2)", imagined.latent.h_a, imag_feat[..., z:])
    table.equal(section, "imagined action masks", imagined.avail.float(), av_actions)
    table.equal(section, "imagined actions", imagined.action, actions.argmax(-1))
    r_rel, v_rel, c_rel, boot_rel = cap["return_inputs"]
    r_our, c_our, v_our = cap["ours_return_inputs"]
    table.real(section, "imagined rewards (team mean)", r_our, r_rel.squeeze(-2))
    table.real(section, "imagined continuation probabilities", c_our, c_rel.squeeze(-1))
    table.real(section, "imagined values V_0..V_{H-1}", v_our, torch.cat([v_rel, boot_rel[None]]).squeeze(-1))
    table.real(section, "lambda-returns", imagined.returns, returns.squeeze(-1))
    table.real(section, "actor loss (relative to mean |advantage|)", metrics["actor_loss"], actor_loss,
               scale=float(adv.abs().mean()))
    table.real(section, "critic loss", metrics["critic_loss"], value_loss)
    for key, module in (("actor", actor), ("critic", critic)):
        _, ours_module, pairs = maps[key]
        O.compare_grads(table, section, f"grad {key}", module, ours_module, pairs, tol=O.POLICY_GRAD_TOL)
    released_grads = {"actor loss": actor_loss.detach(), "critic loss": value_loss.detach(),
                      **{f"actor.{n}": p.grad.clone() for n, p in actor.named_parameters()},
                      **{f"critic.{n}": p.grad.clone() for n, p in critic.named_parameters() if p.grad is not None}}
    O.ours_on_released_features(agent, cfg, table, section, maps, released_grads, imag_feat, None, actions, av_actions,
                                old_policy, adv, returns)


def oracle(root: str, seed: int = 0) -> O.Table:
    torch.set_num_threads(1)
    rel = load_released_mamba(root)
    table = O.Table()
    for key, prefixes in MAMBA_UNUSED.items():
        for prefix, why in prefixes.items():
            table.note("name map", f"MAMBA {key} {prefix}* (no counterpart)", why)
    rows = O.make_rows("clean")
    label = f"{O.BATCHES['clean']}, MAMBA as released"
    cfg, model, actor, critic, agent, maps = setup(rel, seed)
    run_world_model(rel, cfg, model, agent, rows, table, f"world model, {label}", maps)
    run_policy(rel, cfg, model, actor, critic, agent, rows, table, f"imagination and policy, {label}", maps)
    cfg, model, actor, critic, agent, maps = setup(rel, seed)
    run_policy(rel, cfg, model, actor, critic, agent, rows, table,
               f"imagination and policy, {label}, our transformer's fused fast path on (as in training)", maps,
               fastpath=True)
    option = {"model.agent_index_encoding": "none"}
    cfg, model, actor, critic, agent, maps = setup(rel, seed, option)
    run_world_model(rel, cfg, model, agent, rows, table,
                    f"world model, {label}; {O.option_label(*next(iter(option.items())))}", maps)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="also write the table here")
    args = parser.parse_args()
    root = os.environ.get("MAMBA_RELEASED_CODE")
    if not root:
        raise SystemExit("set MAMBA_RELEASED_CODE to a checkout of github.com/jbr-ai-labs/mamba")
    text = oracle(root).format()
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
