"""The learners' config sections: world model, imagined policy, learner schedule, and the model-free
and value-based baselines. Tags in the help text: [paper], [code] (released code), [ours]."""

from __future__ import annotations

from dataclasses import dataclass

from mabl.config.fields import option as _f


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
    epochs: int = _f(15, "PPO epochs per update [Yu et al.: ppo_epoch, 15 in their config.py and their SMAC "
                     "scripts for 3m, 8m, 2s_vs_1sc, 3s_vs_4z, 3s_vs_5z, MMM; 10 on 5m_vs_6m; 5 on 3s5z, "
                     "3s5z_vs_3s6z, corridor] (mabl <= 0.3: 5)")
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
