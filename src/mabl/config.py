"""Typed, frozen configuration.

Every field carries its documentation (``metadata["help"]``); the CLI turns each field into a flag
(``--model.hidden 128``) and prints the help text. Presets (``presets.py``) are sets of overrides on
these defaults. Defaults equal the ``paper`` preset: SPEC.md sizes, the authors' released code where
the paper is silent. Tags in the help text: [paper], [code] (released code), [ours].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mabl.errors import MablError


def _f(default: Any, help: str, choices: tuple | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class ModelConfig:
    """World-model sizes and the paper/code reading of ambiguous parts (SPEC §1-§2)."""

    hidden: int = _f(256, "width of every hidden layer and of the observation/state embeddings [code]")
    deter: int = _f(256, "deterministic GRU state size at both levels [code]")
    n_categoricals: int = _f(32, "categorical variables per latent [code]")
    n_classes: int = _f(32, "classes per categorical variable [code]")
    encoder_layers: int = _f(4, "Linear layers of the observation and state encoders [code]")
    agent_prior_on: str = _f(
        "global_prior",
        "which global latent the agent prior is conditioned on: 'global_prior' (released code) or "
        "'global_posterior' (the ELBO of paper §3.2)",
        ("global_prior", "global_posterior"),
    )
    global_posterior_on: str = _f(
        "agent_posterior",
        "the latent the global posterior reads besides h^g and s: this step's agent posterior sample "
        "(released code, paper ELBO) or 'previous_global' z^g_{t-1} (paper §3.1.1)",
        ("agent_posterior", "previous_global"),
    )
    action_decoder_input: str = _f(
        "obs_decoder_hidden",
        "input of the action decoder: the observation decoder's last hidden layer (code) or "
        "'both_levels' features (paper §3.1.2)",
        ("obs_decoder_hidden", "both_levels"),
    )
    action_decoder_layers: int = _f(
        2,
        "hidden layers of the action decoder: 2 = Linear-ELU-Linear-ReLU-Linear (released code, DreamerModel.py), "
        "1 = Linear-ELU-Linear (mabl <= 0.1)",
        (1, 2),
    )
    action_decoder_mask: str = _f(
        "fake_and_window_start",
        "which rows the action decoder's loss skips: absorbing (fake) rows and the first step of every window "
        "(released code, loss.py) or 'episode_start': the first step of every episode, whose previous action "
        "belongs to another episode (mabl <= 0.1)",
        ("fake_and_window_start", "episode_start"),
    )
    episode_reset: str = _f(
        "carried_state",
        "an episode start inside a training window: 'carried_state' zeroes only the carried GRU states and "
        "latents, the step still reads the stored previous action (the previous episode's last), and the "
        "reward/continuation heads of the row before the start read the state after the reset (released code, "
        "rnns.py rollout_representation, loss.py); 'start_state' restarts from the acting path's first state "
        "(zero previous action) and lets those heads read the episode's own transition (earlier mabl)",
        ("carried_state", "start_state"),
    )
    loss_divisor: str = _f(
        "all_rows",
        "divisor of the masked observation and action-decoder losses: 'all_rows' = every row of the loss, "
        "masked ones included (released code, utils.py rec_loss / info_loss) or 'unmasked_rows' (earlier mabl)",
        ("all_rows", "unmasked_rows"),
    )
    agent_index_encoding: str = _f(
        "sinusoidal",
        "--algo mamba/mag: added to the agents' GRU inputs before the transformer over agents: 'sinusoidal' "
        "agent-index table (MAMBA, networks/transformer/layers.py AttentionEncoder) or 'none' (earlier mabl)",
        ("sinusoidal", "none"),
    )
    bias_init: str = _f(
        "default",
        "biases of the world model, actor and critic: 'default' = PyTorch's (uniform in +-1/sqrt(fan_in); released "
        "code) or 'zeros' (mabl <= 0.1)",
        ("default", "zeros"),
    )
    reward_target: str = _f(
        "team",
        "what each agent's reward head learns: 'team' = the team reward of the step, the same for every agent, "
        "or 'per_agent' = that agent's own reward (released code on Flatland; needs an env with per-agent "
        "rewards). Imagination averages the agents' predictions either way. Flatland's default: per_agent "
        "(mabl.envs.task_defaults)",
        ("team", "per_agent"),
    )
    done_target: str = _f(
        "team",
        "'team' = one done flag per step for all agents, or 'per_agent' = each agent's own done (released "
        "code on Flatland; needs an env with per-agent done): an agent that finished (a train that arrived) "
        "gets absorbing rows (zero observation, fake, done 1) while the others go on; its continuation "
        "target is its own, its observation and action-decoder losses skip its absorbed rows. Flatland's "
        "default: per_agent",
        ("team", "per_agent"),
    )
    avail_head: bool = _f(
        True,
        "envs with action masks: learn an action-mask head and sample imagined masks from it (released code on "
        "SMAC); off = no mask head, imagined actions unmasked (released code on Flatland, its default)",
    )
    input_transform: str = _f(
        "none",
        "what the world model does to observations and states before reading them, also the target of "
        "the observation decoder: 'none' (released code) or 'symlog' = sign(x) log(1 + |x|) (DreamerV3), "
        "for unnormalised inputs such as MAMuJoCo's contact forces (values in the thousands) [ours]",
        ("none", "symlog"),
    )
    reward_scale: float = _f(
        1.0,
        "the world model learns the env's reward times this, so imagined rewards, lambda-returns and the "
        "critic's values are in those units (the actor's normalised advantages are not changed by it); logged "
        "returns stay the env's. SMAC's reward (also SMAX's default, --smax.reward smac) is at most 20 per episode, "
        "SMAX's own (--smax.reward jaxmarl) about 2 [ours]",
    )
    reward_loss: str = _f(
        "smooth_l1",
        "the reward head's regression loss: 'smooth_l1' (released code; past an error of 1 its gradient is "
        "constant, so a rare large reward, such as SMAX's win bonus at --model.reward_scale 10, pulls no "
        "harder than a small one and the head settles near the typical reward) or 'mse' (squared error, the "
        "unit-variance Gaussian of Dreamer-v2) [ours]",
        ("smooth_l1", "mse"),
    )
    kl_balance: float = _f(0.8, "KL balancing: weight of KL(sg(q)||p); 1-x goes to KL(q||sg(p)) [code]")
    lr: float = _f(3e-4, "world-model Adam learning rate [code]")
    grad_clip: float = _f(100.0, "world-model gradient-norm clip [code]")
    batch_size: int = _f(40, "windows per world-model update [code]")
    seq_len: int = _f(20, "rows per sampled window (filtered for seq_len-1 steps) [code]")
    mixer_layers: int = _f(3, "--algo mamba/mag: transformer layers over the agents' GRU inputs [MAMBA]")
    mixer_heads: int = _f(8, "--algo mamba/mag: attention heads of that transformer (width = model.hidden) [MAMBA]")
    mixer_dropout: float = _f(0.1, "--algo mamba/mag: dropout of that transformer, active in world-model training [MAMBA]")


@dataclass(frozen=True)
class PolicyConfig:
    """Actor, critic, imagination and MAPPO (SPEC §1, §3, §4)."""

    hidden: int = _f(256, "actor and critic hidden width [code]")
    attn_heads: int = _f(8, "critic self-attention heads [code]")
    horizon: int = _f(15, "imagination horizon H (states per imagined trajectory) [code]")
    batch_size: int = _f(40, "windows filtered per policy iteration to get imagination starts [code]")
    gamma: float = _f(0.99, "discount [code]")
    lam: float = _f(0.95, "lambda of the lambda-returns [code]")
    epochs: int = _f(5, "PPO epochs per policy iteration [code]")
    minibatch: int = _f(2000, "PPO minibatch size in imagined rows (each row holds all agents) [code]")
    clip: float = _f(0.2, "PPO ratio clip [code]")
    entropy: float = _f(1e-3, "initial entropy bonus coefficient [code]")
    entropy_decay: float = _f(0.99998, "entropy coefficient multiplier after every actor step [code]")
    target_entropy: float = _f(
        0.0,
        "0 = off (the code's decaying bonus). > 0: the entropy coefficient rises while the actor's mean entropy "
        "(nats per agent) is below this target instead of decaying: after every actor step it is multiplied by "
        "exp(entropy_rate * (target - entropy)), kept in [--policy.entropy, 1] [ours]",
    )
    entropy_rate: float = _f(0.01, "--policy.target_entropy's step size on the log of the coefficient [ours]")
    continuation: str = _f(
        "per_agent",
        "discount of the imagined lambda-returns: each agent's own continuation probability in its own return "
        "(released code, loss.py) or 'team_mean', the mean over agents in every agent's return (mabl <= 0.1)",
        ("per_agent", "team_mean"),
    )
    normalize_advantages: bool = _f(
        True, "(A-mean)/(std+1e-4) over the imagined batch [code: on SMAC; off on Flatland, its default there]")
    target_critic: int = _f(
        0,
        "values in the imagined lambda-returns from: 0 = the critic itself (released code on SMAC), K > 0 = a "
        "copy of the critic replaced by a fresh copy after every K-th critic step (released code on Flatland, "
        "K = 1: DreamerLearner's old_critic, TARGET_UPDATE = 1; its step counter starts at 1). Advantages "
        "use the critic itself either way. Flatland's default: 1",
    )
    empty_avail: str = _f(
        "keep",
        "an imagined availability mask sampled with no action available: 'keep' it (every logit masked, so the "
        "action is uniform; released code, rnns.py rollout_policy) or 'most_likely': make the avail head's most "
        "likely action available (earlier mabl)",
        ("keep", "most_likely"),
    )
    actor_lr: float = _f(1e-4, "actor Adam learning rate [code]")
    critic_lr: float = _f(1e-3, "critic Adam learning rate [code]")
    actor_weight_decay: float = _f(1e-5, "actor Adam weight decay [code]")
    grad_clip: float = _f(100.0, "actor and critic gradient-norm clip [code]")
    init_std: float = _f(0.5, "continuous actions: initial std of the Gaussian actor, in units of half the "
                         "action range (mabl.actions) [ours]")


@dataclass(frozen=True)
class MappoConfig:
    """``--algo mappo`` and ``--algo ippo``: model-free PPO on real environment data (ippo reads this
    section too: the same settings, its critic on each agent's own observation).

    Defaults follow the SMAC settings of Yu et al. 2022, "The Surprising Effectiveness of PPO in
    Cooperative Multi-Agent Games" (their Tables of common and SMAC hyperparameters), MLP-policy
    variant; [ours] marks choices of this project.
    """

    n_envs: int = _f(8, "environments stepped in lockstep, actions batched over them [Yu et al.: 8 rollout threads]")
    rollout_steps: int = _f(3200, "env steps collected (whole episodes, all envs) before each update [Yu et al.: 8 x 400]")
    hidden: int = _f(64, "hidden width of the actor and critic MLPs (2 layers, ReLU) [Yu et al.]")
    lr: float = _f(5e-4, "Adam learning rate of actor and critic [Yu et al.]")
    adam_eps: float = _f(1e-5, "Adam epsilon [Yu et al.]")
    epochs: int = _f(5, "PPO epochs per update [Yu et al.: 5 on hard maps, 15 on easy ones]")
    minibatches: int = _f(1, "minibatches per epoch [Yu et al.]")
    clip: float = _f(0.2, "PPO ratio clip, also the value clip [Yu et al.]")
    entropy: float = _f(0.01, "entropy bonus coefficient [Yu et al.]")
    gamma: float = _f(0.99, "discount [Yu et al.]")
    gae_lambda: float = _f(0.95, "GAE lambda [Yu et al.]")
    huber_delta: float = _f(10.0, "Huber loss delta of the value loss [Yu et al.]")
    value_norm: bool = _f(True, "normalise value targets with running statistics [Yu et al.]")
    grad_clip: float = _f(10.0, "gradient-norm clip of actor and critic [Yu et al.]")
    init_std: float = _f(0.5, "continuous actions: initial std of the Gaussian actor, in units of half the "
                         "action range (mabl.actions) [ours]")


@dataclass(frozen=True)
class RmappoConfig:
    """``--algo rmappo``: what recurrent MAPPO adds to the ``mappo`` section (which it reads for
    everything else: envs, rollout steps, hidden width, lr, clip, entropy, GAE, value norm, grad clip).

    Defaults follow marlbenchmark/on-policy (Yu et al. 2022), ``onpolicy/config.py`` and the SMAC
    scripts ``onpolicy/scripts/train_smac_scripts/train_smac_<map>.sh``.
    """

    chunk_length: int = _f(10, "--algo rmappo: steps per training chunk; each chunk re-runs the GRUs from the "
                           "state recorded at its first step [Yu et al.: data_chunk_length]")
    epochs: int = _f(15, "--algo rmappo: PPO epochs per update, read in place of mappo.epochs [Yu et al.: ppo_epoch "
                     "15 on 3m, 8m, 3s_vs_4z, 3s_vs_5z, MMM; 10 on 5m_vs_6m; 5 on 3s5z, 3s5z_vs_3s6z, corridor]")
    policy_active_masks: bool = _f(True, "--algo rmappo: leave dead agents' steps out of the policy loss and the "
                                   "entropy (the advantage statistics always leave them out, as theirs do) "
                                   "[Yu et al.: use_policy_active_masks]")
    value_active_masks: bool = _f(False, "--algo rmappo: leave dead agents' steps out of the value loss "
                                  "[Yu et al.: off in every SMAC script, which pass the store_false flag "
                                  "--use_value_active_masks]")


@dataclass(frozen=True)
class QmixConfig:
    """``--algo qmix``: QMIX (Rashid et al. 2018) as pymarl runs it on SMAC. [pymarl] marks
    oxwhirl/pymarl's ``src/config/default.yaml`` and ``src/config/algs/qmix.yaml``; [EPyMARL] names the
    reading of uoe-agents/epymarl where it differs (docs/ALGORITHM.md, "QMIX")."""

    hidden: int = _f(64, "width of the agent network's layers and GRU state [pymarl: rnn_hidden_dim]")
    recurrent: bool = _f(True, "the agent network's middle layer is a GRU cell [pymarl]; false = Linear + ReLU "
                         "(EPyMARL qmix.yaml: use_rnn False)")
    last_action: bool = _f(True, "the agent's input includes its previous action one-hot [pymarl: obs_last_action]; "
                           "EPyMARL's qmix.yaml sets it False")
    agent_id: bool = _f(True, "the agent's input includes its one-hot index [pymarl: obs_agent_id]")
    buffer_episodes: int = _f(5000, "episode replay capacity, in episodes [pymarl: buffer_size]")
    batch_episodes: int = _f(32, "episodes per update; updates start once the replay holds this many [pymarl: batch_size]")
    epsilon_start: float = _f(1.0, "epsilon-greedy: epsilon at env step 0 [pymarl]")
    epsilon_finish: float = _f(0.05, "epsilon-greedy: epsilon after the anneal [pymarl]")
    epsilon_anneal_steps: int = _f(50_000, "env steps of the linear anneal [pymarl: epsilon_anneal_time]")
    optimizer: str = _f("rmsprop", "'rmsprop' (alpha optim_alpha, eps optim_eps) [pymarl q_learner.py]; 'adam' "
                        "(torch's defaults besides lr, EPyMARL q_learner.py)", ("rmsprop", "adam"))
    lr: float = _f(5e-4, "learning rate of the agent network and the mixer [pymarl]")
    optim_alpha: float = _f(0.99, "RMSprop alpha [pymarl]")
    optim_eps: float = _f(1e-5, "RMSprop epsilon [pymarl]")
    grad_clip: float = _f(10.0, "gradient-norm clip [pymarl: grad_norm_clip]")
    gamma: float = _f(0.99, "discount [pymarl]")
    double_q: bool = _f(True, "double-Q targets: the live network picks the next action, the target network "
                        "values it [pymarl]")
    target_update_interval: int = _f(200, "hard target-network update every this many units [pymarl]")
    target_update_unit: str = _f("episodes", "what target_update_interval counts: 'episodes' collected [pymarl "
                                 "q_learner.py] or 'updates' (gradient steps, EPyMARL q_learner.py)",
                                 ("episodes", "updates"))
    mixing_embed: int = _f(32, "width of the mixing network's hidden layer [pymarl: mixing_embed_dim]")
    hypernet_layers: int = _f(2, "layers of the hypernetworks that make the mixing weights [pymarl]", (1, 2))
    hypernet_embed: int = _f(64, "hidden width of the 2-layer hypernetworks [pymarl]")


@dataclass(frozen=True)
class MagConfig:
    """``--algo mag``: what MAG adds to MAMBA's world model (docs/ALGORITHM.md, "MAG"). [MAG-code]
    marks the released MAG code (ZifanWu/MAG, configs/dreamer/DreamerLearnerConfig.py)."""

    candidates: int = _f(4, "--algo mag: candidate next states the local models sample at every imagined step "
                         "(the model-agents' actions) [MAG-code: n_trajs]")
    plan_horizon: int = _f(6, "--algo mag: predicted states each candidate is scored over, rolled out with the current "
                           "policy as the dynamics [MAG-code: MPCHorizon]")
    error_layers: int = _f(4, "--algo mag: hidden ELU layers of the per-agent error predictor (the model-agents' "
                           "learned cost), width model.hidden [MAG-code]")
    error_lr: float = _f(5e-4, "--algo mag: Adam learning rate of the error predictor [MAG-code]")
    error_updates: int = _f(
        60, "--algo mag: error-predictor steps per learner call, each on fresh windows, after the world-model updates "
        "[MAG-code: m_r_predictor_epochs]; 0 = one step with every world-model update, on its windows (earlier mabl)")
    error_target: str = _f(
        "mag_code",
        "--algo mag: the error predictor's target at a step: 'mag_code' = the observation term's masked smooth-L1 "
        "averaged over observation dims and divided by the rows of the batch, the action-decoder term on the rows the "
        "world-model loss scores (MAG-code: utils.py rec_loss, loss.py get_model_loss_for_m_r_training); "
        "'full_scale' = the observation term summed over dims and the action-decoder term on every row but an "
        "episode's first (earlier mabl)",
        ("mag_code", "full_scale"),
    )
    plan_choice: str = _f(
        "batch",
        "--algo mag: how the planner picks a candidate: 'batch' = the one with the lowest predicted cost averaged "
        "over all imagined rows, taken for every row (MAG-code: rnns.py MPCPredict) or 'per_row' = each row's "
        "cheapest (earlier mabl)",
        ("batch", "per_row"),
    )
    lr: float = _f(5e-4, "--algo mag: Adam learning rate of the local models, the actor and the critic (all 5e-4 in "
                   "MAG-code DreamerLearnerConfig.py); 0 = --model.lr, --policy.actor_lr, --policy.critic_lr (earlier mabl)")
    actor_init: str = _f(
        "orthogonal",
        "--algo mag: the actor's weight matrices: 'orthogonal' (gain 1, MAG-code DreamerLearner.py "
        "initialize_weights) or 'xavier' uniform as the other algorithms (earlier mabl)",
        ("orthogonal", "xavier"),
    )


@dataclass(frozen=True)
class SmaxConfig:
    """``smax:`` tasks: SMAC's reading of SMAX (the released code trained on SMAC) or JaxMARL's
    (:mod:`mabl.envs.smax`, SPEC §8). Other env families ignore this section."""

    reward: str = _f(
        "smac",
        "'smac': SMAC's default battle reward (enemy damage + 10 per kill + 200 for a win, scaled so a won episode "
        "that kills every enemy sums to 20) [code: SMAC defaults]; 'jaxmarl': SMAX's own (damage share + 1 for a "
        "win, ~2 at most)",
        ("smac", "jaxmarl"),
    )
    state: str = _f(
        "smac",
        "global state: 'smac' = SMAC's get_state (normalised, every ally's last action) [code: SMAC defaults]; "
        "'jaxmarl' = SMAX's world_state (raw positions, no last actions)",
        ("smac", "jaxmarl"),
    )
    walls: str = _f(
        "stop",
        "the map's edge: 'stop' = a unit stops there (SC2) [code: SMAC]; 'lethal' = it dies there (SMAX's default)",
        ("stop", "lethal"),
    )


@dataclass(frozen=True)
class FlatlandConfig:
    """``flatland:`` tasks: MAMBA's Flatland code (behind the paper's Flatland runs) or the standard
    Flatland readings (:mod:`mabl.envs.flatland`, docs/ENVIRONMENTS.md). Other env families ignore this section."""

    obs: str = _f(
        "mamba",
        "'mamba': MAMBA's tree observation (depth 3, no predictor, 205 floats, its normalisation) [code: MAMBA's Flatland]; "
        "'standard': Flatland's tree (depth 2, 30-step shortest-path predictor, normalize_observation) + 11 extras, "
        "263 floats",
        ("mamba", "standard"),
    )
    actions: str = _f(
        "mamba",
        "'mamba': 3 actions (leftmost way, rightmost way, stop), trains driven forward away from decision cells "
        "(only action 0 available there) [code: MAMBA's Flatland]; 'all': Flatland's 5 actions, masked, chosen every step",
        ("mamba", "all"),
    )
    deadlock: str = _f(
        "mamba",
        "'mamba': MAMBA's DeadlockChecker (every cycle of blocked trains, rings of 3+ included) [code: MAMBA's Flatland]; "
        "'rings_move': rings of 3+ trains are not deadlocks (Flatland moves them on), a train whose start cell is "
        "held by a deadlocked one is",
        ("mamba", "rings_move"),
    )


@dataclass(frozen=True)
class MamujocoConfig:
    """``mamujoco:`` tasks (:mod:`mabl.envs.mamujoco`). Other env families ignore this section."""

    contact_forces: str = _f(
        "zero",
        "contact forces (cfrc_ext) in observations and state: 'zero' = all zero, as the MuJoCo 2.0 / v2 models of "
        "the paper's era gave them [paper: MuJoCo 2.0 era]; 'v5' = Gymnasium v5's real forces (up to ~2,500)",
        ("zero", "v5"),
    )


@dataclass(frozen=True)
class ScheduleConfig:
    """When the learner runs (SPEC §5). 'episode' = paper Alg. 1: after every collected episode."""

    mode: str = _f(
        "episode",
        "'episode': train after every episode (paper); 'steps': train every `train_every` env steps [ours]",
        ("episode", "steps"),
    )
    train_every: int = _f(
        0,
        "'steps' mode: one learner call per this many env steps, made at episode boundaries; the ratio "
        "counts from step 0, so the calls due before learning_starts are made when learning starts [ours]",
    )
    model_updates: int = _f(60, "world-model updates per learner call [code]")
    policy_iterations: int = _f(4, "policy iterations (imagination + PPO) per learner call [code]")
    learning_starts: int = _f(500, "replay transitions needed before the first learner call [code]")
    replay_capacity: int = _f(250_000, "replay capacity in transitions [code]")
    time_limit_done: str = _f(
        "terminal",
        "how an episode that hits the time limit is stored: 'terminal' = done 1 on its last row, no absorbing rows "
        "(released code: SMAC reports terminated there, so the continuation head learns 'terminal' at time-outs) or "
        "'truncation' = done 0 (mabl <= 0.1). Termination always stores done 1 plus absorbing rows",
        ("terminal", "truncation"),
    )
    replay_on: str = _f(
        "auto",
        "where sampled windows are gathered: 'host' (numpy), 'device' (a copy of the replay on the learner's "
        "device; same windows), 'auto' (the device when it is a GPU with room for the copy in a quarter of "
        "its free memory) [ours]",
        ("auto", "host", "device"),
    )


@dataclass(frozen=True)
class RunConfig:
    """One training run. Nested sections are flags too: ``--model.hidden``, ``--policy.lr`` ..."""

    env: str = _f("smax:3m", "task, e.g. smax:3s_vs_4z, smax:3m, mpe:simple_spread")
    algo: str = _f(
        "mabl",
        "algorithm: mabl (bi-level world model), mabl-sg (one shared global latent), dreamer (agent "
        "level only), mamba (agent level, transformer over agents: centralized execution), mag (MAMBA's "
        "model, one parameter set per agent, predictions planned against a learned error: centralized "
        "execution), mappo (model-free, real data), ippo (mappo with each agent's critic on its own "
        "observation; reads the mappo.* flags), rmappo (mappo with GRU actor and critic, Yu et al.'s "
        "recurrent MAPPO; reads the mappo.* and rmappo.* flags), qmix (QMIX as pymarl runs it: value "
        "decomposition with a monotonic mixing network, off-policy on an episode replay); checked against "
        "mabl.algo.registry",
    )
    preset: str = _f("quick", "named preset applied before the flags", ("paper", "quick", "cpu", "debug"))
    steps: int = _f(100_000, "environment steps to train for")
    seed: int = _f(0, "seed of every random number generator of the run")
    run_dir: str = _f("", "run directory (default runs/<env>_<algo>_s<seed>); re-running resumes")
    device: str = _f("auto", "'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:K'")
    threads: int = _f(0, "torch CPU threads (0 = torch default)")
    amp: bool = _f(False, "bf16 autocast for the learner's matrix work [ours]")
    compile: bool = _f(
        False,
        "torch.compile the world-model loss (forward and backward, the whole filter loop) and imagination, "
        "each as one graph with plain dense one-hot products; on CUDA as CUDA graphs (mode reduce-overhead). "
        "Compiles once per run (minutes on a CPU); same values as eager up to rounding; world-model "
        "algorithms [ours]")
    checkpoint_every: int = _f(10_000, "env steps between checkpoints (also one at the end)")
    max_skipped_updates: int = _f(
        20,
        "divergence guard: an update whose loss or gradient norm is not finite is never applied; after this "
        "many consecutive skipped updates of one learner the run stops with one line (0 = never stop) [ours]")
    eval_every: int = _f(10_000, "env steps between evaluation rounds (0 = never)")
    eval_episodes: int = _f(10, "episodes per evaluation round")
    diagnose_every: int = _f(
        0,
        "log the cheap world-model diagnostics (mabl.diagnose: state probe R^2 on the learner call's windows, "
        "open-loop errors k=1..5, KL per level) as kind 'diagnose' lines every this many learner calls; 0 = off. "
        "Leaves every random state alone, so results do not change [ours]",
    )
    progress: bool = _f(
        True,
        "show a progress bar (without a terminal: a plain status line every 5% of the steps); either way one line "
        "per evaluation and checkpoint")
    log: str = _f(
        "jsonl,tensorboard",
        "loggers, comma-separated: jsonl (always on: metrics.jsonl, eval.jsonl), tensorboard (tb/), csv "
        "(metrics.csv, eval.csv), wandb (offline with WANDB_MODE=offline; extra mabl[wandb]), mlflow (file store "
        "<run_dir>/mlruns; extra mabl[mlflow])")
    model: ModelConfig = field(default_factory=ModelConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    mappo: MappoConfig = field(default_factory=MappoConfig)
    rmappo: RmappoConfig = field(default_factory=RmappoConfig)
    qmix: QmixConfig = field(default_factory=QmixConfig)
    mag: MagConfig = field(default_factory=MagConfig)
    smax: SmaxConfig = field(default_factory=SmaxConfig)
    flatland: FlatlandConfig = field(default_factory=FlatlandConfig)
    mamujoco: MamujocoConfig = field(default_factory=MamujocoConfig)

    def validate(self) -> RunConfig:
        """Check values; raise a one-line MablError naming the field and what is allowed."""
        for path, f, value in iter_fields(self):
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise MablError(f"--{path}={value!r} is not allowed; choose one of {', '.join(map(str, choices))}")
        positive = [
            "steps", "eval_episodes", "model.hidden", "model.deter", "model.n_categoricals",
            "model.n_classes", "model.encoder_layers", "model.batch_size", "model.lr", "model.reward_scale",
            "policy.hidden", "policy.attn_heads", "policy.batch_size", "policy.epochs",
            "policy.minibatch", "policy.actor_lr", "policy.critic_lr", "schedule.replay_capacity",
            "schedule.model_updates", "schedule.policy_iterations", "checkpoint_every",
            "model.mixer_layers", "model.mixer_heads", "mappo.n_envs", "mappo.rollout_steps", "mappo.hidden",
            "mappo.lr", "mappo.adam_eps", "mappo.epochs", "mappo.minibatches", "mappo.huber_delta",
            "rmappo.chunk_length", "rmappo.epochs",
            "mag.candidates", "mag.plan_horizon", "mag.error_layers", "mag.error_lr",
            "qmix.hidden", "qmix.buffer_episodes", "qmix.batch_episodes", "qmix.epsilon_anneal_steps", "qmix.lr",
            "qmix.optim_eps", "qmix.target_update_interval", "qmix.mixing_embed", "qmix.hypernet_embed",
        ]
        for path in positive:
            if not get_path(self, path) > 0:  # also refuses NaN
                raise MablError(f"--{path}={get_path(self, path)} must be > 0")
        nonneg = ["threads", "eval_every", "diagnose_every", "max_skipped_updates", "policy.target_critic",
                  "schedule.learning_starts", "schedule.train_every",
                  "model.grad_clip", "policy.grad_clip", "policy.entropy", "policy.clip",
                  "policy.actor_weight_decay", "policy.target_entropy", "policy.entropy_rate",
                  "mappo.clip", "mappo.entropy", "mappo.grad_clip", "mag.error_updates", "mag.lr", "qmix.grad_clip"]
        for path in nonneg:
            if not get_path(self, path) >= 0:
                raise MablError(f"--{path}={get_path(self, path)} must be >= 0")
        from mabl.run_log import parse_loggers

        parse_loggers(self.log)
        if self.model.seq_len < 3:
            raise MablError(f"--model.seq_len={self.model.seq_len} must be >= 3 (windows are shifted by one)")
        if self.policy.horizon < 2:
            raise MablError(f"--policy.horizon={self.policy.horizon} must be >= 2")
        for path in ["policy.gamma", "policy.lam", "model.kl_balance", "policy.entropy_decay",
                     "model.mixer_dropout", "mappo.gamma", "mappo.gae_lambda", "qmix.gamma", "qmix.epsilon_start",
                     "qmix.epsilon_finish", "qmix.optim_alpha"]:
            if not 0.0 <= get_path(self, path) <= 1.0:
                raise MablError(f"--{path}={get_path(self, path)} must be in [0, 1]")
        if self.schedule.mode == "steps" and self.schedule.train_every <= 0:
            raise MablError("--schedule.mode=steps needs --schedule.train_every > 0")
        if self.policy.hidden % self.policy.attn_heads:
            raise MablError(
                f"--policy.hidden={self.policy.hidden} must be divisible by --policy.attn_heads="
                f"{self.policy.attn_heads}"
            )
        return self


def iter_fields(obj: Any, prefix: str = ""):
    """Yield ``(dotted_path, dataclass_field, value)`` for every leaf field, depth first."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from iter_fields(value, path + ".")
        else:
            yield path, f, value


def get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not dataclasses.is_dataclass(obj) or not hasattr(obj, part):
            raise MablError(f"unknown config field '{path}'")
        obj = getattr(obj, part)
    return obj


def field_type(obj: Any, path: str) -> type:
    """The Python type of a leaf field (taken from its default value)."""
    return type(get_path(obj, path))


def replace_path(obj: Any, path: str, value: Any) -> Any:
    """Return a copy of ``obj`` with the dotted ``path`` set to ``value`` (frozen dataclasses)."""
    head, _, rest = path.partition(".")
    if not any(f.name == head for f in dataclasses.fields(obj)):
        raise MablError(f"unknown config field '{path}'")
    if rest:
        return dataclasses.replace(obj, **{head: replace_path(getattr(obj, head), rest, value)})
    return dataclasses.replace(obj, **{head: value})


def coerce(obj: Any, path: str, text: Any) -> Any:
    """Convert ``text`` (a CLI string or a JSON value) to the type of field ``path``."""
    kind = field_type(obj, path)
    if isinstance(text, kind) and not (kind is int and isinstance(text, bool)):
        return text
    try:
        if kind is bool:
            low = str(text).lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(float(text)) if float(text).is_integer() else int(text)
        return kind(text)
    except (TypeError, ValueError):
        raise MablError(f"--{path}={text!r} is not a valid {kind.__name__}") from None


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def env_options(cfg: RunConfig) -> dict[str, Any]:
    """The keyword options of ``cfg.env``'s adapter: its family's config section (e.g. ``smax``) as a
    dict, empty for a family without one. What :func:`mabl.envs.make_env` takes as ``options``."""
    from mabl.envs.registry import ALIASES

    family = ALIASES.get(cfg.env, cfg.env).partition(":")[0]
    section = getattr(cfg, family, None)
    return dataclasses.asdict(section) if dataclasses.is_dataclass(section) else {}


def load_config_file(path: str) -> dict[str, Any]:
    """Read ``--config FILE.yaml``: a mapping of config fields, as dotted keys (``model.hidden: 128``),
    nested mappings (``model: {hidden: 128}``) or both; ``preset`` is a field too. Hyphens in names
    are read as underscores (``run-dir``). Returns ``{dotted_path: value}`` with each value converted
    to its field's type. Raises a one-line :class:`MablError` naming the file and the key for an
    unreadable file, an unknown key or a value of the wrong type."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise MablError(f"--config {path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise MablError(f"--config {path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MablError(f"--config {path}: must be a mapping of config fields, e.g. 'steps: 100000'")

    def flatten(node: dict, prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            name = prefix + str(key).replace("-", "_")
            if isinstance(value, dict):
                out.update(flatten(value, name + "."))
            else:
                out[name] = value
        return out

    defaults, values = RunConfig(), {}
    for key, value in flatten(data, "").items():
        try:
            kind = field_type(defaults, key)
        except MablError:
            raise MablError(f"--config {path}: unknown key '{key}' (the keys are the flags of `mabl train --help`, "
                            "e.g. steps, model.hidden)") from None
        # (a number written as text, such as 1e5, which YAML 1.1 reads as a string, is converted as on the
        # command line; a bool is not a number and a number is not a bool)
        bad = (f"--config {path}: key '{key}' must be {'an' if kind is int else 'a'} {kind.__name__}, "
               f"not {value!r}")
        if isinstance(value, (list, tuple, set)) or (isinstance(value, bool) and kind is not bool) or (
                isinstance(value, float) and kind is int and not value.is_integer()) or (
                kind is bool and not isinstance(value, bool)):
            raise MablError(bad)
        try:
            values[key] = coerce(defaults, key, value)
        except MablError:
            raise MablError(bad) from None
    return values


def __getattr__(name: str) -> Any:
    """``ADDED_FIELDS`` and ``from_dict`` (the reading of configs saved by earlier versions) live in
    :mod:`mabl.config_migration`, which sits above this module; they are still importable from here."""
    if name in ("ADDED_FIELDS", "from_dict"):
        from mabl import config_migration

        return getattr(config_migration, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
