"""Advantage Actor-Critic (A2C): parallel envs instead of a replay buffer.

Paper: Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement Learning",
https://arxiv.org/abs/1602.01783 (A2C is its synchronous, batched variant, as released in
OpenAI Baselines). GAE: Schulman et al. 2016, https://arxiv.org/abs/1506.02438.

The loop: step `num_envs` envs together for `num_steps` steps, score each step with an
n-step bootstrapped return, take ONE gradient step, repeat. The envs run different
episodes, so one batch holds many weakly correlated transitions: that is what replaces the
replay buffer of DQN-style methods, and what lets A2C stay on-policy.

    R_t = r_t + gamma * R_{t+1} * (1 - done_t)        seeded with R_T = V(s_T)
          (a time-limit cut bootstraps from V(real final observation) instead of R_{t+1})
    A_t = R_t - V(s_t)
    loss = -mean(log pi(a_t|s_t) * A_t.detach()) + vf_coef * mean(A_t^2) - ent_coef * entropy

With `--gae-lambda` below 1 the advantages come from GAE instead (lambda = 1 is exactly the
n-step return above). RMSprop as in OpenAI Baselines (alpha 0.99, eps 1e-5).

`--async-envs` runs every env in a process of its own (gymnasium's AsyncVectorEnv, which is
OpenAI Baselines' SubprocVecEnv): the main process sends each worker a "step" command with its
action over a pipe, the workers step their envs in parallel, and the main process waits for all
the answers before it acts again. That is how A2C gathers its synchronous batch from many
envs; a worker that dies stops the run with a line naming it. For cheap envs the pipe round trip
costs more than the env step, so the default steps the envs in-process (SyncVectorEnv).

    python a2c.py                          # CartPole-v1
    python a2c.py --env-id InvertedPendulum-v5 --save-model
    python a2c.py --async-envs             # the envs in subprocesses, as in Baselines

A2C has no torchrun mode: an update follows only num_envs * num_steps = 40 env steps, too few
for an all-reduce of the gradients between processes to pay (ppo.py has one).
"""

import dataclasses
import functools
import glob
import importlib.util
import multiprocessing.connection
import os
import random
import signal
import sys
import threading
import time

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter


@dataclasses.dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (used in the run folder name)"""
    seed: int = 1
    """seed of python, numpy, torch and the envs (env i is reset with seed + i)"""
    torch_deterministic: bool = True
    """if toggled, cuDNN runs deterministically (CPU runs with one seed are identical either way)"""
    cuda: bool = True
    """if toggled, use a GPU when one is available"""
    capture_video: bool = False
    """if toggled, record videos of the first env into `videos/{run_name}` (needs the video extra)"""
    save_model: bool = False
    """if toggled, save the model to `runs/{run_name}/{exp_name}.pt` and evaluate it after training"""
    eval_episodes: int = 10
    """episodes of the evaluation of the saved model (deterministic actions), after training or with --eval-model"""
    eval_model: str | None = None
    """path of a model saved with --save-model: skip training and play it for --eval-episodes episodes on
    the env it was trained on (with --capture-video, into `videos/{its run name}-eval`)"""
    render: bool = False
    """with --eval-model: show the episodes in a window (needs a display)"""
    track: bool = False
    """if toggled, send the config, TensorBoard scalars and videos to Weights & Biases (needs the track extra)"""
    wandb_project_name: str = "single-file-rl"
    """the Weights & Biases project name"""
    wandb_entity: str | None = None
    """the Weights & Biases team or user [None: your default entity]"""

    env_id: str = "CartPole-v1"
    """the id of a gymnasium environment with a 1-D Box observation space"""
    total_timesteps: int = 500_000
    """total env steps of the run (with the Discrete defaults, CartPole-v1 ended at 500 on seeds 1-3 at 500k,
    at 309, 360 and 500 at 300k)"""
    learning_rate: float | None = None
    """RMSprop learning rate [None: 8.3e-4 for Discrete actions (RL Zoo's LunarLander value; Baselines'
    is 7e-4); for Box actions 2e-3 / sqrt(action dimensions), see default_learning_rate]"""
    anneal_lr: bool = True
    """if toggled, the learning rate decays linearly to 0 over the run"""
    num_envs: int = 8
    """number of parallel envs"""
    num_steps: int = 5
    """steps per env between updates (the n of the n-step return)"""
    async_envs: bool = False
    """if toggled, run each env in a subprocess driven through a pipe (AsyncVectorEnv, Baselines'
    SubprocVecEnv), as the paper's workers do; off by default because for cheap envs the pipe round trip
    costs more than the env step (measured here, CartPole-v1 with 8 envs: 25.6k vs 12.2k steps/s, see
    docs/a2c.md)"""
    gamma: float | None = None
    """discount factor [None: 0.995 for Discrete actions (RL Zoo's LunarLander setting: a landing pays off
    hundreds of steps later; LunarLander-v3 at 500k, seeds 1-3, ended at 92, 35, 129 against 65, -18, -71
    with 0.99 and lr 7e-4), 0.99 for Box]"""
    gae_lambda: float | None = None
    """GAE lambda; 1.0 gives plain n-step returns [None: 1.0 for Discrete actions, 0.9 for Box, where
    the 5-step returns were too noisy to learn Pendulum-v1 at all (-867 against -158, seed 1, 1M)]"""
    norm_adv: bool = False
    """if toggled, normalize the advantages of each batch (off in the A2C paper and Baselines)"""
    ent_coef: float = 0.0
    """entropy bonus coefficient"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """the maximum global norm of the gradients"""
    rms_alpha: float = 0.99
    """RMSprop smoothing constant of the squared-gradient average"""
    rms_eps: float = 1e-5
    """RMSprop epsilon (added to the root of the squared-gradient average)"""
    norm_obs: bool | None = None
    """normalize observations with running statistics [None: off for Discrete, on for Box actions]"""
    norm_reward: bool | None = None
    """scale rewards by the running std of the discounted return [None: off for Discrete, on for Box]"""
    init_action_std: float = 0.5
    """Box actions: the initial std of the Gaussian policy, as a fraction of each action dimension's
    half-range (high - low) / 2 (of 1 where a bound is infinite). Pendulum-v1 learned with 0.5 and 1,
    not with 0.25 or 0.1 (too little exploration to find the swing-up)"""


# The defaults that depend on the action space (None in Args; the rules are in their docstrings),
# filled in by check_args from the env's action space.
KIND_DEFAULTS = {
    "discrete": dict(gamma=0.995, gae_lambda=1.0, norm_obs=False, norm_reward=False),
    "continuous": dict(gamma=0.99, gae_lambda=0.9, norm_obs=True, norm_reward=True),
}


def default_learning_rate(action_space: gym.Space) -> float:
    """8.3e-4 for Discrete actions; 2e-3 / sqrt(d) for a Box of d action dimensions.

    A2C has no trust region: each RMSprop step moves every weight by about lr, and the change of
    a diagonal Gaussian policy, KL = sum over dimensions of (delta mu_d)^2 / (2 sigma_d^2), grows
    with d. lr ~ 1/sqrt(d) keeps that change per update alike across tasks. Measured at 1M steps:
    Pendulum-v1 (d = 1) learned on 3 of 3 seeds with 2e-3 and on 1 of 3 with 7e-4; HalfCheetah-v5
    (d = 6, seed 1) ended at 1.2k with 2e-3, 1.5k with 1e-3 and 3.3k with 8.2e-4.
    """
    if isinstance(action_space, gym.spaces.Discrete):
        return 8.3e-4
    return float(2e-3 / np.sqrt(np.prod(action_space.shape)))  # a plain float: saved with the args


def make_env(env_id: str, video_folder: str | None = None, render: bool = False) -> gym.Env:
    """One env; with a video_folder its episodes are recorded there, with render they are shown in a window."""
    if multiprocessing.parent_process() is not None:
        # An --async-envs worker: a terminal's Ctrl-C is for the main process, which stops the workers.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    env = gym.make(env_id, render_mode="human" if render else "rgb_array" if video_folder else None)
    return gym.wrappers.RecordVideo(env, video_folder) if video_folder else env


def make_vector_env(args: Args, run_name: str = "") -> gym.vector.VectorEnv:
    """Vectorized envs with episode statistics and optional normalization.

    In-process (SyncVectorEnv), or with --async-envs one worker process per env (AsyncVectorEnv):
    envs.step(actions) sends each worker ("step", its action) over a pipe, the workers step in
    parallel, and the call returns when every worker has answered.

    Autoreset mode is NEXT_STEP (gymnasium's default, and the only one its vector
    normalization wrappers accept): when env i ends at step t, the observation returned at
    t is the real final observation, and step t+1 of env i only resets it (action ignored,
    reward 0). Such reset steps are masked out of the loss.
    """
    # The first env is recorded with --capture-video (into videos/{run_name}), the others are not.
    video_folders = [f"videos/{run_name}" if args.capture_video else None] + [None] * (args.num_envs - 1)
    thunks = [functools.partial(make_env, args.env_id, video_folder, args.render) for video_folder in video_folders]
    vector_cls = gym.vector.AsyncVectorEnv if args.async_envs else gym.vector.SyncVectorEnv
    envs = vector_cls(thunks, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    # Statistics first, so logged returns are the env's raw rewards, not the scaled ones.
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    if args.norm_reward:
        envs = gym.wrappers.vector.NormalizeReward(envs, gamma=args.gamma)
    if args.norm_obs:  # outermost, so that envs.obs_rms is its statistics (saved with the model)
        envs = gym.wrappers.vector.NormalizeObservation(envs)
    return envs


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """Separate actor and critic MLPs (64-64 tanh), as in Baselines' and SB3's A2C for vector obs.

    Discrete: the actor outputs Categorical logits. Box: the actor outputs the mean of a
    diagonal Normal whose log-std is a learned, state-independent parameter, initialised to
    log(init_action_std * half-range) per action dimension, so the first actions spread over
    the same share of the action range on every env.
    """

    def __init__(self, obs_dim: int, action_space: gym.Space, init_action_std: float = 0.5):
        super().__init__()
        self.is_discrete = isinstance(action_space, gym.spaces.Discrete)
        action_dim = int(action_space.n) if self.is_discrete else int(np.prod(action_space.shape))

        def mlp(out_dim: int, out_std: float) -> nn.Sequential:
            hidden = [layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(), layer_init(nn.Linear(64, 64)), nn.Tanh()]
            return nn.Sequential(*hidden, layer_init(nn.Linear(64, out_dim), std=out_std))

        self.critic = mlp(1, out_std=1.0)
        # A small last layer makes the initial policy near-uniform / near-zero mean.
        self.actor = mlp(action_dim, out_std=0.01)
        if not self.is_discrete:
            half_range = (action_space.high - action_space.low) / 2
            half_range = np.where(np.isfinite(half_range), half_range, 1.0).reshape(1, action_dim)
            self.actor_logstd = nn.Parameter(torch.as_tensor(np.log(init_action_std * half_range), dtype=torch.float32))

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions for a batch of observations: sampled, or argmax / Gaussian mean if deterministic (for acting
        only: no gradients; learning uses log_prob_and_entropy)."""
        policy_out = self.actor(obs)
        if deterministic:
            return policy_out.argmax(-1) if self.is_discrete else policy_out
        if self.is_discrete:
            # Gumbel-max trick: argmax(logits + Gumbel noise) ~ Categorical(logits), cheaper than
            # torch.distributions for the small batches of acting.
            return (policy_out - torch.log(-torch.log(torch.rand_like(policy_out)))).argmax(-1)
        return policy_out + torch.randn_like(policy_out) * self.actor_logstd.exp()

    def log_prob_and_entropy(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log pi(action|obs), entropy of pi(.|obs)), differentiable."""
        policy_out = self.actor(obs)
        if self.is_discrete:
            log_probs = torch.log_softmax(policy_out, dim=-1)
            log_prob = log_probs.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
            return log_prob, -(log_probs.exp() * log_probs).sum(-1)
        log_std = self.actor_logstd.expand_as(policy_out)
        # log N(a; mu, sigma) = -((a - mu) / sigma)^2 / 2 - log sigma - log(2 pi) / 2, summed over dims
        z = (action - policy_out) / log_std.exp()
        log_prob = (-0.5 * z.pow(2) - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
        return log_prob, (0.5 + 0.5 * np.log(2 * np.pi) + log_std).sum(-1)


def n_step_returns(rewards, next_values, terminations, dones, gamma: float) -> np.ndarray:
    """Bootstrapped n-step returns over a rollout: every array argument is (num_steps, num_envs).

    next_values[t] is V of the observation that step t returned: the next state, or the real
    final observation when the episode ended at t; next_values[-1] seeds the recursion with
    V(s_T). Inside an episode the return runs on; at an episode end it stops, bootstrapping
    from V(final observation) on a truncation and from 0 on a termination:

        R_t = r_t + gamma * (1 - terminated_t) * (V(final obs_t) if done_t else R_{t+1})
    """
    returns = np.zeros_like(rewards)
    next_return = next_values[-1]
    for t in reversed(range(rewards.shape[0])):
        future = np.where(dones[t], next_values[t], next_return)
        next_return = rewards[t] + gamma * (1.0 - terminations[t]) * future
        returns[t] = next_return
    return returns


def compute_gae(rewards, values, next_values, terminations, dones, gamma: float, gae_lambda: float) -> np.ndarray:
    """Generalized Advantage Estimation over a rollout of (num_steps, num_envs) arrays; returns A_t.

    Same next_values as n_step_returns; with lambda = 1, A_t + V(s_t) is exactly its R_t.

        delta_t = r_t + gamma * next_values_t * (1 - terminated_t) - values_t
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}
    """
    advantages = np.zeros_like(rewards)
    next_advantage = np.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - terminations[t]) - values[t]
        next_advantage = delta + gamma * gae_lambda * (1.0 - dones[t]) * next_advantage
        advantages[t] = next_advantage
    return advantages


def a2c_loss(log_probs, entropy, values, returns, mask, vf_coef: float, ent_coef: float, norm_adv: bool = False):
    """(loss, its terms): actor + vf_coef * critic - ent_coef * entropy, each a mean over the trainable rows
    (mask); every tensor argument is flat, one row per (step, env) of the rollout.

    A = R - V(s);  actor = -mean(log pi(a|s) * A.detach());  critic = mean(A^2)
    """
    count = mask.sum().clamp(min=1)
    advantages = returns - values
    policy_advantages = advantages.detach()
    if norm_adv:
        mean = (policy_advantages * mask).sum() / count
        std = (((policy_advantages - mean) * mask).pow(2).sum() / count).sqrt()
        policy_advantages = (policy_advantages - mean) / (std + 1e-8)
    policy_loss = -(log_probs * policy_advantages * mask).sum() / count
    value_loss = (advantages.pow(2) * mask).sum() / count
    entropy_mean = (entropy * mask).sum() / count
    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy_mean
    return loss, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy_mean}


def main(args: Args) -> dict:
    args = check_args(args)  # one line and exit 2 at a bad flag, env or space; fills the kind defaults
    if args.eval_model:
        return watch(args)
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(1)  # faster than several threads for 64-unit MLPs, and leaves a core for the envs
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    envs = make_vector_env(args, run_name)
    envs.action_space.seed(args.seed)
    agent = Agent(envs.single_observation_space.shape[0], envs.single_action_space, args.init_action_std).to(device)
    optimizer = torch.optim.RMSprop(agent.parameters(), lr=args.learning_rate, alpha=args.rms_alpha, eps=args.rms_eps)
    num_iterations = max(1, args.total_timesteps // (args.num_envs * args.num_steps))

    # Rollout storage, (num_steps [+ 1], num_envs, ...): row num_steps of obs is s_T, for V(s_T).
    obs = np.zeros((args.num_steps + 1, args.num_envs, *envs.single_observation_space.shape), np.float32)
    actions = np.zeros((args.num_steps, args.num_envs, *envs.single_action_space.shape), np.float32)
    # trainable: 0 on the NEXT_STEP reset steps, 1 on the real ones
    rewards, terminations, dones, trainable = (np.zeros((args.num_steps, args.num_envs), np.float32) for _ in range(4))

    global_step = 0
    exit_code = 0
    episodic_returns = []
    loss_sums = {}
    log_every = max(1, min(100, num_iterations // 100))  # updates per logged loss mean
    progress_every = max(1, num_iterations // 20)
    writer, tracker = start_logging(args, run_name)
    start_time = time.time()
    # The first Ctrl-C only asks the loop to stop where it next checks, with no TensorBoard write or
    # optimizer step half done: a KeyboardInterrupt raised inside a write can queue an event without
    # waking the writer's thread, and closing the writer then stalls.
    ctrl_c = threading.Event()
    previous_sigint = signal.signal(signal.SIGINT, lambda signum, frame: ctrl_c.set())
    try:
        next_obs, _ = envs.reset(seed=args.seed)  # env i gets seed + i
        next_done = np.zeros(args.num_envs, dtype=bool)
        for iteration in range(1, num_iterations + 1):
            if ctrl_c.is_set():
                break
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1.0) / num_iterations)
            for step in range(args.num_steps):
                global_step += args.num_envs
                obs[step] = next_obs
                trainable[step] = ~next_done  # NEXT_STEP autoreset: after a done, this step only resets
                action = agent.act(torch.as_tensor(next_obs, dtype=torch.float32, device=device)).cpu().numpy()
                actions[step] = action
                if not agent.is_discrete:
                    # The env gets the clipped action; learning uses the log-prob of the sampled one.
                    action = np.clip(action, envs.single_action_space.low, envs.single_action_space.high)
                next_obs, reward, terminated, truncated, infos = envs.step(action)
                next_done = terminated | truncated
                rewards[step] = reward
                terminations[step] = terminated
                dones[step] = next_done
                record_episodes(writer, infos, global_step, episodic_returns)
            obs[args.num_steps] = next_obs

            # One batched pass over the rollout: V(s_0..s_T) and log pi(a_t|s_t), with gradients.
            all_obs = torch.as_tensor(obs, device=device)
            all_values = agent.get_value(all_obs.flatten(0, 1)).view(args.num_steps + 1, args.num_envs)
            values = all_values[:-1]
            flat_actions = torch.as_tensor(actions, device=device).flatten(0, 1)
            log_probs, entropy = agent.log_prob_and_entropy(all_obs[:-1].flatten(0, 1), flat_actions)
            # Row t + 1 holds the observation step t returned (the real final one after a done).
            next_values = all_values[1:].detach().cpu().numpy()
            if args.gae_lambda == 1.0:
                returns = n_step_returns(rewards, next_values, terminations, dones, args.gamma)
            else:  # R_t = A_t + V(s_t), with GAE's advantages
                old_values = values.detach().cpu().numpy()
                gae = compute_gae(rewards, old_values, next_values, terminations, dones, args.gamma, args.gae_lambda)
                returns = gae + old_values
            returns = torch.as_tensor(returns, device=device).flatten()
            mask = torch.as_tensor(trainable, device=device).flatten()
            loss, stats = a2c_loss(
                log_probs, entropy, values.flatten(), returns, mask, args.vf_coef, args.ent_coef, args.norm_adv
            )
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss ({loss.item()}) at global step {global_step}")
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            optimizer.step()

            loss_sums = {name: loss_sums.get(name, 0.0) + value.item() for name, value in stats.items()}
            sps = int(global_step / (time.time() - start_time))
            if iteration % log_every == 0:
                for name, total in loss_sums.items():
                    writer.add_scalar(f"losses/{name}", total / log_every, global_step)
                loss_sums = {}
                writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
                writer.add_scalar("charts/SPS", sps, global_step)
            if iteration % progress_every == 0 or iteration == num_iterations:
                print(progress_line(global_step, args.total_timesteps, episodic_returns, sps))
    except FloatingPointError as error:
        print(f"{ALGORITHM}.py: error: {error}", file=sys.stderr)
        exit_code = 1
    except (EOFError, BrokenPipeError, ConnectionResetError):  # an --async-envs worker's pipe broke
        print(f"{ALGORITHM}.py: error: {stop_env_workers(envs)} died at global step {global_step}", file=sys.stderr)
        exit_code = 1
    finally:
        signal.signal(signal.SIGINT, previous_sigint)
        envs.close()
    exit_code = 130 if ctrl_c.is_set() else exit_code
    obs_rms = envs.obs_rms if args.norm_obs else None  # the observation statistics, saved with the model
    return finish_run(args, run_name, writer, tracker, exit_code, agent, obs_rms, episodic_returns)


# --- Plumbing: the algorithm is complete above; below are validation, saving, evaluation, logging and Ctrl-C. ---

ALGORITHM = "a2c"  # stored in saved models: --eval-model refuses another script's file
FLAG_RULES = [  # (what is allowed, the test, the flags it applies to); None (a kind default) is skipped
    ("> 0", lambda value: value > 0, ["total_timesteps", "num_envs", "num_steps", "eval_episodes", "learning_rate"]),
    ("> 0", lambda value: value > 0, ["max_grad_norm", "rms_eps", "init_action_std"]),
    ("in [0, 1]", lambda value: 0 <= value <= 1, ["gamma", "gae_lambda", "rms_alpha"]),
    (">= 0", lambda value: value >= 0, ["ent_coef", "vf_coef"]),
]


def usage_error(message: str) -> None:
    """A user mistake: one line on stderr, exit status 2, no traceback."""
    print(f"{os.path.basename(__file__)}: error: {message}", file=sys.stderr)
    sys.exit(2)


def check_args(args: Args) -> Args:
    """Stop with one line and exit 2, before any env is made, at the first flag that breaks its rule, an
    unknown env id, a missing optional package or a space this script does not support; return args with
    the defaults of the env's action-space kind filled in (KIND_DEFAULTS, default_learning_rate)."""
    for rule, allowed, names in FLAG_RULES:
        for name in names:
            if getattr(args, name) is not None and not allowed(getattr(args, name)):
                usage_error(f"--{name.replace('_', '-')} must be {rule}, got {getattr(args, name)}")
    if args.env_id not in gym.registry:
        usage_error(f"--env-id {args.env_id!r} is not a registered gymnasium environment")
    for flag, module, extra in [("capture_video", "moviepy", "video"), ("track", "wandb", "track")]:
        if getattr(args, flag) and importlib.util.find_spec(module) is None:
            usage_error(f"--{flag.replace('_', '-')} needs {module}: pip install -e '.[{extra}]'")
    if args.render and (not args.eval_model or args.capture_video):
        usage_error("--render shows an --eval-model run in a window, without --capture-video")
    probe = gym.make(args.env_id, render_mode="rgb_array" if args.capture_video else None)
    if args.capture_video:
        try:  # rendering may need packages of its own (pygame for classic control, OpenGL for MuJoCo)
            probe.reset(seed=args.seed)
            probe.render()
        except (gym.error.DependencyNotInstalled, ImportError) as error:
            usage_error(f"--capture-video cannot render {args.env_id}: {str(error).splitlines()[0]}")
    probe.close()
    obs_space, action_space = probe.observation_space, probe.action_space
    one_d_box = [isinstance(space, gym.spaces.Box) and len(space.shape) == 1 for space in (obs_space, action_space)]
    if not (one_d_box[0] and (one_d_box[1] or isinstance(action_space, gym.spaces.Discrete))):
        supported = f"{ALGORITHM}.py supports a 1-D Box observation space with a Discrete or 1-D Box action space"
        usage_error(f"{args.env_id} has observation space {obs_space} and action space {action_space}; {supported}")
    kind = "discrete" if isinstance(action_space, gym.spaces.Discrete) else "continuous"
    defaults = {**KIND_DEFAULTS[kind], "learning_rate": default_learning_rate(action_space)}
    return dataclasses.replace(args, **{name: value for name, value in defaults.items() if getattr(args, name) is None})


def recent_mean(episodic_returns: list[float]) -> float:
    """The mean return of the last 10 finished episodes (nan before the first)."""
    return float(np.mean(episodic_returns[-10:])) if episodic_returns else float("nan")


def progress_line(global_step: int, total_timesteps: int, episodic_returns: list[float], sps: int) -> str:
    done = 100 * min(global_step / total_timesteps, 1)
    mean = recent_mean(episodic_returns)
    return f"global_step={global_step:>8d} ({done:3.0f}%)  mean_return(last 10)={mean:9.2f}  SPS={sps}"


def record_episodes(writer: SummaryWriter, infos: dict, global_step: int, episodic_returns: list[float]) -> None:
    """Log the return and length of every episode that ended at this step, and keep its return."""
    for i in np.flatnonzero(infos.get("_episode", [])):
        episodic_returns.append(float(infos["episode"]["r"][i]))
        writer.add_scalar("charts/episodic_return", episodic_returns[-1], global_step)
        writer.add_scalar("charts/episodic_length", int(infos["episode"]["l"][i]), global_step)


def start_logging(args: Args, run_name: str):
    """The TensorBoard writer with the flags as a table, and with --track a Weights & Biases run that
    mirrors it (wandb imported only then; sync_tensorboard must start before the writer it copies)."""
    tracker = None
    if args.track:
        import wandb

        config = dataclasses.asdict(args)
        project = args.wandb_project_name
        entity = args.wandb_entity
        tracker = wandb.init(project=project, entity=entity, name=run_name, config=config, sync_tensorboard=True)
    writer = SummaryWriter(f"runs/{run_name}")
    table = "\n".join(f"|{key}|{value}|" for key, value in dataclasses.asdict(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    return writer, tracker


def finish_run(args: Args, run_name: str, writer, tracker, exit_code: int, agent: Agent, obs_rms, episodic_returns):
    """After training: with --save-model save the agent and the observation statistics (unless the run failed)
    and, if the run completed, evaluate the saved file; close the writer and the W&B run (uploading the training
    videos); exit on a failure."""
    model_path = f"runs/{run_name}/{args.exp_name}.pt"
    if args.save_model and exit_code != 1:
        checkpoint = {"algorithm": ALGORITHM, "args": dataclasses.asdict(args), "model": agent.state_dict()}
        if obs_rms is not None:  # the agent acts on normalized observations: it needs the statistics too
            obs_rms = {"mean": torch.as_tensor(obs_rms.mean), "var": torch.as_tensor(obs_rms.var)}
        torch.save({**checkpoint, "obs_rms": obs_rms}, model_path)
        print(f"model saved to {model_path}")
    eval_returns = []
    if args.save_model and exit_code == 0:
        eval_returns = watch(dataclasses.replace(args, eval_model=model_path, capture_video=False))["eval_returns"]
        for episode, episodic_return in enumerate(eval_returns):
            writer.add_scalar("eval/episodic_return", episodic_return, episode)
    writer.close()
    if exit_code == 130:
        print("interrupted by Ctrl-C; the run was closed cleanly", file=sys.stderr)
    print(f"final mean_return(last 10)={recent_mean(episodic_returns):.2f}  run: runs/{run_name}")
    if tracker is not None:
        import wandb

        for video in sorted(glob.glob(f"videos/{run_name}/*.mp4")):
            tracker.log({"videos": wandb.Video(video)})
        tracker.finish(exit_code=exit_code)
    if exit_code:
        sys.exit(exit_code)
    return {"run_name": run_name, "episodic_returns": episodic_returns, "eval_returns": eval_returns}


def watch(args: Args) -> dict:
    """--eval-model (and the evaluation after training): play the saved model's deterministic action (argmax
    or the Gaussian mean) for --eval-episodes episodes, one after another on one in-process env reset once with
    seed + 10_000, with raw rewards and the saved, frozen observation statistics, and print the mean return.
    A file that is missing, not a model file, another script's, or whose weights do not fit its env: one line,
    exit 2."""
    device = torch.device("cpu")  # playing a small agent: the CPU is fast enough
    video_name = os.path.basename(os.path.dirname(os.path.abspath(args.eval_model))) + "-eval"
    try:  # weights_only (torch's default): loading runs no code from the file
        checkpoint = torch.load(args.eval_model, map_location=device)
        if checkpoint["algorithm"] != ALGORITHM:
            raise ValueError(f"saved by {checkpoint['algorithm']}.py")
        train_args = Args(**checkpoint["args"])
        one_env = dict(num_envs=1, async_envs=False, norm_reward=False, capture_video=args.capture_video)
        envs = make_vector_env(dataclasses.replace(train_args, **one_env, render=args.render), video_name)
        agent = Agent(envs.single_observation_space.shape[0], envs.single_action_space)
        agent.load_state_dict(checkpoint["model"])
        if train_args.norm_obs:  # the saved statistics, frozen: evaluation must not drift them
            envs.update_running_mean = False
            envs.obs_rms.mean = checkpoint["obs_rms"]["mean"].numpy()
            envs.obs_rms.var = checkpoint["obs_rms"]["var"].numpy()
    except FileNotFoundError:
        usage_error(f"--eval-model {args.eval_model}: no such file")
    except Exception as error:
        reason = (str(error).strip() or type(error).__name__).splitlines()[0]
        why = f"not a model file saved by {ALGORITHM}.py, or its weights do not fit its env ({reason})"
        usage_error(f"--eval-model {args.eval_model}: {why}")
    if args.env_id not in (Args.env_id, train_args.env_id):  # left at its default, --env-id means "the model's"
        usage_error(f"--eval-model {args.eval_model} was trained on {train_args.env_id}, not --env-id {args.env_id}")
    returns = []
    obs, _ = envs.reset(seed=args.seed + 10_000)
    while len(returns) < args.eval_episodes:
        action = agent.act(torch.as_tensor(obs, dtype=torch.float32), deterministic=True).numpy()
        if not agent.is_discrete:
            action = np.clip(action, envs.single_action_space.low, envs.single_action_space.high)
        obs, _, _, _, infos = envs.step(action)
        if "episode" in infos:  # the episode ended at this step
            returns.append(float(infos["episode"]["r"][0]))
    envs.close()
    mean, std = np.mean(returns), np.std(returns)
    print(f"eval: {train_args.env_id} mean return {mean:.2f} +- {std:.2f} over {len(returns)} episodes")
    return {"eval_returns": returns, "video_folder": f"videos/{video_name}" if args.capture_video else None}


def stop_env_workers(envs: gym.vector.VectorEnv) -> str:
    """An --async-envs worker died: name the dead ones (their process has ended) and kill the others.
    The envs' own close() would wait forever on the dead worker's pipe, so they are marked closed."""
    processes = envs.unwrapped.processes
    ended = multiprocessing.connection.wait([process.sentinel for process in processes], timeout=5)
    dead = [f"env worker {i} (pid {process.pid})" for i, process in enumerate(processes) if process.sentinel in ended]
    for process in processes:
        process.kill()
    envs.unwrapped.closed = True
    return ", ".join(dead)


if __name__ == "__main__":
    main(tyro.cli(Args))
