"""Asynchronous Advantage Actor-Critic (A3C): parallel workers update one shared model.

Paper: Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement Learning",
https://arxiv.org/abs/1602.01783 (Algorithm S3).

A global actor-critic lives in shared memory. `num_workers` processes each own an env and a
local copy of the model, and loop without waiting for each other:

    1. copy the global weights into the local model
    2. act for up to num_steps steps, or to the end of the episode
    3. R_t = r_t + gamma * R_{t+1}, seeded with R = 0 after a termination and R = V(s) of the
       last observation otherwise (the real final observation after a time-limit cut)
       A_t = R_t - V(s_t)          (or GAE with --gae-lambda below 1)
       loss = -mean(log pi(a_t|s_t) * A_t.detach()) + vf_coef * mean(A_t^2) - ent_coef * entropy
    4. backward on the local model, then apply those gradients to the global weights with a
       shared optimizer whose moments and step count also live in shared memory

Different workers explore different parts of the env at the same moment, which decorrelates
the updates the way a replay buffer would. Reward scaling (on by default: it keeps the critic's
targets near 1, where its tanh units do not saturate) and observation normalization (on for Box
actions) keep their running statistics in shared memory too, so every worker normalizes with
the statistics of all workers' data. The main process only starts the workers, writes
TensorBoard from the statistics they send, and stops everything when a worker fails.

    python a3c.py                          # CartPole-v1, one worker per CPU
    python a3c.py --env-id InvertedPendulum-v5 --num-workers 2 --save-model
"""

import dataclasses
import glob
import importlib.util
import os
import queue
import random
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter

ALGORITHM = "a3c"  # stored in saved models: --eval-model refuses another script's file


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (used in the run folder name)"""
    seed: int = 1
    """seed of python, numpy and torch; worker i seeds its env and sampling with seed + i. A run with
    one worker is reproducible; with several it is not, because the order in which workers update
    the shared model depends on the OS scheduler"""
    torch_deterministic: bool = True
    """if toggled, cuDNN runs deterministically (kept for CleanRL compatibility; A3C runs on the CPU)"""
    cuda: bool = True
    """kept for CleanRL compatibility: A3C's workers share a CPU model, so no GPU is ever used"""
    capture_video: bool = False
    """if toggled, record videos of worker 0's env into `videos/{run_name}` (needs the video extra)"""
    save_model: bool = False
    """if toggled, save the model to `runs/{run_name}/{exp_name}.pt` and evaluate it after training"""
    eval_episodes: int = 10
    """how many episodes the saved model is evaluated for (deterministic actions)"""
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
    """the id of a gymnasium environment with a 1-D Box observation space ("module:EnvId" imports
    the module that registers it first, in every worker, as gymnasium.make does)"""
    total_timesteps: int = 200_000
    """total env steps of the run, summed over all workers"""
    num_workers: int | None = None
    """number of worker processes [None: the number of CPUs, os.cpu_count()]"""
    learning_rate: float = 1e-3
    """learning rate of the shared Adam optimizer"""
    anneal_lr: bool = True
    """if toggled, the learning rate decays linearly to 0 with the global step"""
    num_steps: int = 50
    """steps per worker between updates (t_max; the paper uses 5 on Atari), a rollout also stops at an
    episode end. On CartPole-v1, 50 finished all of 10 runs here above 475 where 20 collapsed in
    about 1 run of 5, and it spreads the ~0.6 ms cost of an update over more env steps"""
    gamma: float | None = None
    """discount factor [None: 0.995 for Discrete actions, as in a2c.py (LunarLander-v3 at 1M, 2 workers: 156,
    173, 200 against 144, 86, 104 with 0.99; CartPole-v1 stays solved), 0.99 for Box]"""
    ent_coef: float = 0.0
    """entropy bonus coefficient (the paper uses 0.01; on CartPole-v1 it kept the final returns
    below 475 on 2 of 3 seeds here)"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """the maximum global norm of a worker's gradients"""
    gae_lambda: float | None = None
    """GAE lambda; 1.0 gives the paper's plain n-step returns [None: 1.0 for Discrete actions, 0.9 for Box, as in
    a2c.py (Pendulum-v1 at 2M, 2 workers: -152, -168, -160 against -220, -234, -154 with 1.0)]"""
    norm_obs: bool | None = None
    """normalize observations with running statistics shared by the workers [None: off for Discrete,
    on for Box actions]"""
    norm_reward: bool | None = None
    """scale rewards by the running std of the discounted return, shared by the workers [None: on]. It keeps
    the critic's targets near 1: unscaled, CartPole-v1's (up to 1 / (1 - gamma) = 100) drove the critic's
    tanh units into saturation, V became the same number in every state, and 4 of 10 one-worker runs
    collapsed (10 of 10 solved with scaling; benchmark/a3c_saturation.py)"""
    init_action_std: float = 0.5
    """Box actions: the initial std of the Gaussian policy, as a fraction of each action dimension's
    half-range (high - low) / 2 (of 1 where a bound is infinite), as in a2c.py and ppo.py"""


def usage_error(message: str) -> None:
    """A user mistake: one line on stderr, exit status 2, no traceback."""
    print(f"{os.path.basename(__file__)}: error: {message}", file=sys.stderr)
    sys.exit(2)


def check_args(args: Args) -> Args:
    """Reject impossible values and unsupported envs before any process starts; fill num_workers."""
    positive = ["total_timesteps", "num_workers", "num_steps", "eval_episodes", "learning_rate", "max_grad_norm"]
    for name in [*positive, "init_action_std"]:
        value = getattr(args, name)
        if value is not None and not value > 0:
            usage_error(f"--{name.replace('_', '-')} must be > 0, got {value}")
    for name in ["gamma", "gae_lambda"]:
        if getattr(args, name) is not None and not 0 <= getattr(args, name) <= 1:
            usage_error(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    for name in ["ent_coef", "vf_coef"]:
        if not getattr(args, name) >= 0:
            usage_error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    module, _, env_name = args.env_id.rpartition(":")
    if module:  # gymnasium's "module:EnvId" form: importing the module registers the env
        try:
            importlib.import_module(module)
        except ImportError as error:
            usage_error(f"--env-id {args.env_id!r}: cannot import {module!r} ({error})")
    if env_name not in gym.registry:
        usage_error(f"--env-id {args.env_id!r} is not a registered gymnasium environment")
    if args.capture_video and importlib.util.find_spec("moviepy") is None:
        usage_error("--capture-video needs moviepy: pip install -e '.[video]'")
    if args.render and (not args.eval_model or args.capture_video):
        usage_error("--render shows an --eval-model run in a window, without --capture-video")
    if args.track and importlib.util.find_spec("wandb") is None:
        usage_error("--track needs wandb: pip install -e '.[track]'")
    probe = gym.make(args.env_id, render_mode="rgb_array" if args.capture_video else None)
    obs_space, action_space = probe.observation_space, probe.action_space
    if args.capture_video:
        try:  # rendering may need packages of its own (pygame for classic control, OpenGL for MuJoCo)
            probe.reset(seed=args.seed)
            probe.render()
        except (gym.error.DependencyNotInstalled, ImportError) as error:
            usage_error(f"--capture-video cannot render {args.env_id}: {str(error).splitlines()[0]}")
    probe.close()
    discrete = isinstance(action_space, gym.spaces.Discrete)
    box_actions = isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1 and (discrete or box_actions)):
        usage_error(
            f"{args.env_id} has observation space {obs_space} and action space {action_space}; "
            "a3c.py supports a 1-D Box observation space with a Discrete or 1-D Box action space"
        )
    return dataclasses.replace(
        args,
        num_workers=args.num_workers or os.cpu_count() or 1,
        gamma=(0.995 if discrete else 0.99) if args.gamma is None else args.gamma,
        gae_lambda=(1.0 if discrete else 0.9) if args.gae_lambda is None else args.gae_lambda,
        norm_obs=not discrete if args.norm_obs is None else args.norm_obs,
        norm_reward=True if args.norm_reward is None else args.norm_reward,
    )


def make_env(args: Args, worker_id: int, run_name: str) -> gym.Env:
    """One worker's env. A single env needs no autoreset mode: the worker sees the episode end
    (and the real final observation) itself and calls reset()."""
    if args.render and worker_id == 0:
        env = gym.make(args.env_id, render_mode="human")
    elif args.capture_video and worker_id == 0:
        env = gym.make(args.env_id, render_mode="rgb_array")
        env = gym.wrappers.RecordVideo(env, f"videos/{run_name}")
    else:
        env = gym.make(args.env_id)
    return gym.wrappers.RecordEpisodeStatistics(env)


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """Separate actor and critic MLPs (64-64 tanh).

    Discrete: the actor outputs Categorical logits. Box: the actor outputs the mean of a
    diagonal Normal whose log-std is a learned, state-independent parameter, initialised to
    log(init_action_std * half-range) per action dimension.
    """

    def __init__(self, obs_dim: int, action_space: gym.Space, init_action_std: float = 0.5):
        super().__init__()
        self.is_discrete = isinstance(action_space, gym.spaces.Discrete)
        action_dim = int(action_space.n) if self.is_discrete else int(np.prod(action_space.shape))

        def mlp(out_dim: int, out_std: float) -> nn.Sequential:
            return nn.Sequential(
                layer_init(nn.Linear(obs_dim, 64)),
                nn.Tanh(),
                layer_init(nn.Linear(64, 64)),
                nn.Tanh(),
                layer_init(nn.Linear(64, out_dim), std=out_std),
            )

        self.critic = mlp(1, out_std=1.0)
        # A small last layer makes the initial policy near-uniform / near-zero mean.
        self.actor = mlp(action_dim, out_std=0.01)
        if not self.is_discrete:
            half_range = (action_space.high - action_space.low) / 2
            half_range = np.where(np.isfinite(half_range), half_range, 1.0).reshape(1, action_dim)
            self.actor_logstd = nn.Parameter(torch.as_tensor(np.log(init_action_std * half_range), dtype=torch.float32))

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions for a batch of observations: sampled, or argmax / Gaussian mean if deterministic."""
        policy_out = self.actor(obs)
        if self.is_discrete:
            if deterministic:
                return policy_out.argmax(-1)
            # Gumbel-max trick: argmax(logits + Gumbel noise) ~ Categorical(logits).
            return (policy_out - torch.log(-torch.log(torch.rand_like(policy_out)))).argmax(-1)
        if deterministic:
            return policy_out
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


class SharedAdam:
    """Adam whose whole state lives in shared memory, stepped by every worker.

    Per-worker optimizer state (each process keeping its own moments) or an unshared step
    count (bias correction restarting in every worker) are the classic bugs of public A3C
    code: here the first and second moments AND the step count are shared tensors, so the
    optimizer behaves as one Adam seeing the stream of all workers' gradients.

        m <- beta1 * m + (1 - beta1) * g;   v <- beta2 * v + (1 - beta2) * g^2;   k <- k + 1
        theta <- theta - lr * (m / (1 - beta1^k)) / (sqrt(v / (1 - beta2^k)) + eps)

    Locking: step() holds one lock while it reads and writes the moments, the step count and
    the parameters, so no update is lost or half-applied and k counts every worker's steps.
    Reading the global weights into a worker's local model is NOT locked (as in the paper's
    lock-free Hogwild-style updates): a worker may copy weights from the middle of another's
    step, which is harmless noise, while a lock there would make the workers queue behind
    each other for most of their time.
    """

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.exp_avg = [torch.zeros_like(p).share_memory_() for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p).share_memory_() for p in self.params]
        self.step_count = torch.zeros((), dtype=torch.long).share_memory_()
        self.lock = mp.get_context("spawn").Lock()

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], lr: float | None = None) -> None:
        """Apply one worker's gradients (one per parameter, same order) to the shared parameters."""
        lr = self.lr if lr is None else lr
        beta1, beta2 = self.betas
        with self.lock:
            self.step_count += 1
            k = int(self.step_count)
            for param, grad, exp_avg, exp_avg_sq in zip(self.params, grads, self.exp_avg, self.exp_avg_sq, strict=True):
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denominator = (exp_avg_sq / (1 - beta2**k)).sqrt_().add_(self.eps)
                param.addcdiv_(exp_avg, denominator, value=-lr / (1 - beta1**k))


class SharedRunningStats:
    """Running mean and variance of a stream that every worker adds to (observations, or the
    discounted returns that reward scaling divides by), kept in shared memory like the model.

    A worker adds a rollout's batch (n_b, mean_b, var_b) under a lock with the parallel formula
    (Chan et al.), the one gymnasium's RunningMeanStd uses:
        delta = mean_b - mean,  n' = n + n_b,  mean' = mean + delta * n_b / n'
        var' = (var * n + var_b * n_b + delta^2 * n * n_b / n') / n'
    and reads a snapshot (mean, sqrt(var + eps)) when it copies the global weights: one rollout
    is normalized with one set of numbers, as its loss is computed with one set of weights.
    """

    def __init__(self, shape: tuple, epsilon: float = 1e-8):
        self.mean = torch.zeros(shape, dtype=torch.float64).share_memory_()
        self.var = torch.ones(shape, dtype=torch.float64).share_memory_()
        self.count = torch.full((), 1e-4, dtype=torch.float64).share_memory_()  # as gymnasium: no 0 division
        self.epsilon = epsilon
        self.lock = mp.get_context("spawn").Lock()

    @torch.no_grad()
    def update(self, batch: np.ndarray) -> None:
        batch = torch.as_tensor(batch, dtype=torch.float64)
        batch_count = batch.shape[0]
        batch_mean, batch_var = batch.mean(0), batch.var(0, unbiased=False)
        with self.lock:
            delta = batch_mean - self.mean
            total = self.count + batch_count
            m2 = self.var * self.count + batch_var * batch_count + delta.square() * self.count * batch_count / total
            self.mean.add_(delta * batch_count / total)
            self.var.copy_(m2 / total)
            self.count.copy_(total)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, scale): normalize x as (x - mean) / scale, scale = sqrt(var + epsilon)."""
        return self.mean.numpy().copy(), np.sqrt(self.var.numpy() + self.epsilon)


def n_step_returns(rewards: np.ndarray, bootstrap_value: float, gamma: float) -> np.ndarray:
    """Returns of one worker's rollout (a piece of ONE episode, so no episode end inside it).

        R_t = r_t + gamma * R_{t+1},  R_T = bootstrap_value

    bootstrap_value is 0 when the rollout ended in a termination, else V of the observation
    after the last step: the real final observation after a time-limit cut, or the next
    state when the rollout stopped at num_steps.
    """
    returns = np.zeros(len(rewards), dtype=np.float32)
    running = bootstrap_value
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def compute_gae(values: np.ndarray, rewards: np.ndarray, bootstrap_value: float, gamma: float, gae_lambda: float):
    """Generalized Advantage Estimation over one worker's rollout (a piece of one episode);
    returns A_t. With V_T = bootstrap_value (0 after a termination):

        delta_t = r_t + gamma * V_{t+1} - V_t,   A_t = delta_t + gamma * lambda * A_{t+1}

    With lambda = 1, A_t + V_t is exactly n_step_returns' R_t.
    """
    next_values = np.append(values[1:], bootstrap_value)
    deltas = rewards + gamma * next_values - values
    advantages = np.zeros(len(rewards), dtype=np.float32)
    running = 0.0
    for t in reversed(range(len(rewards))):
        running = deltas[t] + gamma * gae_lambda * running
        advantages[t] = running
    return advantages


def a3c_loss(
    log_probs: torch.Tensor,
    entropy: torch.Tensor,
    values: torch.Tensor,
    returns: torch.Tensor,
    vf_coef: float,
    ent_coef: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """actor + vf_coef * critic - ent_coef * entropy, with A = R - V(s):
    actor = -mean(log pi(a|s) * A.detach()), critic = mean(A^2)."""
    advantages = returns - values
    policy_loss = -(log_probs * advantages.detach()).mean()
    value_loss = advantages.pow(2).mean()
    entropy_mean = entropy.mean()
    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy_mean
    stats = {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(), "entropy": entropy_mean.item()}
    return loss, stats


class NonFiniteLossError(RuntimeError):
    pass


def worker(
    worker_id: int,
    args: Args,
    run_name: str,
    main_pid: int,
    global_agent: Agent,
    optimizer: SharedAdam,
    obs_stats: SharedRunningStats | None,
    return_stats: SharedRunningStats | None,
    global_step: mp.Value,
    start_event: mp.Event,
    stop_event: mp.Event,
    messages: mp.Queue,
) -> None:
    """One A3C worker process: act, compute returns, push gradients to the shared model; repeat."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    try:
        torch.set_num_threads(1)
        seed = args.seed + worker_id
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        env = make_env(args, worker_id, run_name)
        env.action_space.seed(seed)
        low, high = (None, None) if global_agent.is_discrete else (env.action_space.low, env.action_space.high)
        local_agent = Agent(env.observation_space.shape[0], env.action_space)
        local_params = list(local_agent.parameters())
        obs_mean, obs_scale, reward_scale = 0.0, 1.0, 1.0
        discounted_return = 0.0  # G_t = r_t + gamma * G_{t-1} within an episode, for reward scaling

        def normalized(observation: np.ndarray) -> torch.Tensor:
            if obs_stats is not None:  # nothing to compute on the hot path without normalization
                observation = (observation - obs_mean) / obs_scale
            return torch.as_tensor(observation, dtype=torch.float32)

        loss_sums, num_updates, logged_updates = {}, 0, 0
        obs, _ = env.reset(seed=seed)
        messages.put(("ready", worker_id, None))
        # A worker whose main process vanished (killed outright) gets a new parent: it stops then. The
        # main process passes its pid: one read here could already see the new parent if the main
        # process died while this worker was still starting.
        while not start_event.wait(timeout=1.0) and os.getppid() == main_pid:
            pass
        while not stop_event.is_set() and global_step.value < args.total_timesteps and os.getppid() == main_pid:
            local_agent.load_state_dict(global_agent.state_dict())
            if obs_stats is not None:
                obs_mean, obs_scale = obs_stats.snapshot()
            if return_stats is not None:
                reward_scale = return_stats.snapshot()[1]
            raw_obs, rollout_obs, rollout_actions, rewards = [], [], [], []
            terminated = truncated = False
            for _ in range(args.num_steps):
                raw_obs.append(obs)
                obs_tensor = normalized(obs)
                with torch.no_grad():
                    action = local_agent.act(obs_tensor.unsqueeze(0))[0]
                rollout_obs.append(obs_tensor)
                rollout_actions.append(action)
                # The env gets the clipped action; learning uses the log-prob of the sampled one.
                env_action = action.item() if low is None else np.clip(action.numpy(), low, high)
                obs, reward, terminated, truncated, info = env.step(env_action)
                rewards.append(float(reward))
                if terminated or truncated:
                    break
            with global_step.get_lock():
                global_step.value += len(rewards)
                step_now = global_step.value
            if terminated or truncated:
                messages.put(("episode", worker_id, (step_now, float(info["episode"]["r"]), int(info["episode"]["l"]))))

            if obs_stats is not None:
                obs_stats.update(np.stack(raw_obs))
            if return_stats is not None:
                discounted_returns = []
                for reward in rewards:
                    discounted_return = reward + args.gamma * discounted_return
                    discounted_returns.append(discounted_return)
                return_stats.update(np.array(discounted_returns))
                if terminated or truncated:
                    discounted_return = 0.0
            scaled_rewards = np.array(rewards) / reward_scale

            obs_batch = torch.stack(rollout_obs)
            log_probs, entropy = local_agent.log_prob_and_entropy(obs_batch, torch.stack(rollout_actions))
            values = local_agent.get_value(obs_batch)
            with torch.no_grad():  # obs is the real final observation after a truncation
                bootstrap = 0.0 if terminated else float(local_agent.get_value(normalized(obs)))
            if args.gae_lambda == 1.0:
                returns = n_step_returns(scaled_rewards, bootstrap, args.gamma)
            else:  # R_t = A_t + V(s_t), so R_t - V(s_t) in the loss is the GAE advantage
                value_array = values.detach().numpy()
                returns = compute_gae(value_array, scaled_rewards, bootstrap, args.gamma, args.gae_lambda) + value_array
            returns = torch.as_tensor(returns, dtype=torch.float32)
            loss, stats = a3c_loss(log_probs, entropy, values, returns, args.vf_coef, args.ent_coef)
            if not np.isfinite(loss.item()):
                raise NonFiniteLossError(f"non-finite loss ({loss.item()}) at global step {step_now}")
            local_agent.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(local_params, args.max_grad_norm)
            lr = args.learning_rate * max(0.0, 1.0 - step_now / args.total_timesteps) if args.anneal_lr else None
            optimizer.step([p.grad for p in local_params], lr)

            if terminated or truncated:
                obs, _ = env.reset()
            for name, value in stats.items():
                loss_sums[name] = loss_sums.get(name, 0.0) + value
            num_updates += 1
            # The main process logs the mean over each block of 100 updates (and the last, shorter one).
            last = stop_event.is_set() or global_step.value >= args.total_timesteps
            if num_updates % 100 == 0 or last:
                means = {name: total / (num_updates - logged_updates) for name, total in loss_sums.items()}
                messages.put(("losses", worker_id, (step_now, means, lr or args.learning_rate)))
                loss_sums, logged_updates = {}, num_updates
        if os.getppid() != main_pid:
            messages.cancel_join_thread()  # nobody reads the queue any more: exit without flushing it
        env.close()
    except Exception as error:  # reported to the main process, which stops the run and names this worker
        messages.put(("error", worker_id, f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))
        sys.exit(1)


def save_model(path: str, agent: Agent, obs_stats: SharedRunningStats | None, args: Args) -> None:
    """Weights plus the observation statistics (mean, scale) the policy acts on: everything needed to act."""
    normalization = None if obs_stats is None else [torch.as_tensor(x) for x in obs_stats.snapshot()]
    checkpoint = {"algorithm": ALGORITHM, "model": agent.state_dict(), "obs_normalization": normalization}
    torch.save({**checkpoint, "args": dataclasses.asdict(args)}, path)


def load_model_file(path: str, device: torch.device, env_id: str | None = None) -> tuple[dict, Args]:
    """The saved model at `path` and its training flags; exit 2 with one line when the file is missing,
    unreadable, another script's, or (env_id given) trained on another env."""
    if not os.path.isfile(path):
        usage_error(f"--eval-model {path}: no such file")
    try:  # weights_only (torch's default): loading runs no code from the file
        checkpoint = torch.load(path, map_location=device)
    except Exception as error:
        usage_error(f"--eval-model {path}: not a model file saved by torch ({type(error).__name__})")
    saved_by = checkpoint.get("algorithm") if isinstance(checkpoint, dict) else None
    if saved_by != ALGORITHM:
        usage_error(f"--eval-model {path}: not a {ALGORITHM}.py model (saved by: {saved_by or 'unknown'})")
    try:
        train_args = Args(**checkpoint["args"])
    except (KeyError, TypeError) as error:
        usage_error(f"--eval-model {path}: its training flags do not fit this {ALGORITHM}.py ({error})")
    if env_id is not None and env_id != train_args.env_id:
        usage_error(f"--eval-model {path} was trained on {train_args.env_id}, not on --env-id {env_id}")
    return checkpoint, train_args


def evaluate(
    model_path: str, eval_episodes: int, seed: int, device: torch.device, video_name: str = "", render: bool = False
) -> list[float]:
    """Play the saved model with its deterministic action (argmax / Gaussian mean) on a fresh env;
    with a video_name, record the episodes into videos/{video_name}."""
    checkpoint, train_args = load_model_file(model_path, device)
    env = make_env(dataclasses.replace(train_args, capture_video=bool(video_name), render=render), 0, video_name)
    agent = Agent(env.observation_space.shape[0], env.action_space).to(device)
    try:
        agent.load_state_dict(checkpoint["model"])
    except RuntimeError as error:  # weights of another shape: saved from another env or network
        usage_error(f"--eval-model {model_path}: its weights do not fit {train_args.env_id} ({error})".splitlines()[0])
    obs_mean, obs_scale = [x.numpy() for x in checkpoint["obs_normalization"] or (torch.zeros(1), torch.ones(1))]
    returns = []
    obs, _ = env.reset(seed=seed)
    while len(returns) < eval_episodes:
        policy_input = torch.as_tensor((obs - obs_mean) / obs_scale, dtype=torch.float32, device=device)
        with torch.no_grad():
            action = agent.act(policy_input, deterministic=True).cpu()
        action = (
            action.item() if agent.is_discrete else np.clip(action.numpy(), env.action_space.low, env.action_space.high)
        )
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            returns.append(float(info["episode"]["r"]))
            obs, _ = env.reset()
    env.close()
    return returns


def watch(args: Args) -> dict:
    """--eval-model: play a saved model instead of training, and print its mean return."""
    device = torch.device("cpu")  # as in training: the workers' model is a CPU model
    # --env-id left at its default means "the model's env"; given, it must be the model's env.
    _, train_args = load_model_file(args.eval_model, device, None if args.env_id == Args.env_id else args.env_id)
    run = os.path.basename(os.path.dirname(os.path.abspath(args.eval_model)))
    video_name = f"{run}-eval" if args.capture_video else ""
    # seed + 10_000, as in the evaluation after training: the same file gives the figure printed then
    returns = evaluate(args.eval_model, args.eval_episodes, args.seed + 10_000, device, video_name, args.render)
    mean, std = np.mean(returns), np.std(returns)
    print(f"eval: {train_args.env_id} mean return {mean:.2f} +- {std:.2f} over {len(returns)} episodes")
    return {"eval_returns": returns, "video_folder": f"videos/{video_name}" if video_name else None}


def start_tracking(args: Args, run_name: str):
    """Weights & Biases run that mirrors the TensorBoard scalars (imported only when --track asks)."""
    import wandb

    return wandb.init(
        project=args.wandb_project_name,
        entity=args.wandb_entity,
        name=run_name,
        config=dataclasses.asdict(args),
        sync_tensorboard=True,  # must start before the SummaryWriter it copies
        save_code=True,
    )


def finish_tracking(tracker, run_name: str, exit_code: int) -> None:
    """Upload the training videos, then close the W&B run."""
    import wandb

    for video in sorted(glob.glob(f"videos/{run_name}/*.mp4")):
        tracker.log({"videos": wandb.Video(video)})
    tracker.finish(exit_code=exit_code)


def describe_exit(process: mp.Process) -> str:
    """'exit code N' or 'killed by signal NAME' for a finished process."""
    if process.exitcode is not None and process.exitcode < 0:
        return f"killed by signal {signal.Signals(-process.exitcode).name}"
    return f"exit code {process.exitcode}"


def stop_workers(processes: list[mp.Process], stop_event: mp.Event, messages: mp.Queue, grace: float = 5.0) -> list:
    """Ask every worker to stop and join them all; return the messages they still sent.

    The queue is drained while they finish (a process cannot exit while its queued messages
    are unread), and a worker still alive after `grace` seconds is killed (for example one
    blocked on a lock that a killed worker held).
    """
    stop_event.set()
    drained = []
    deadline = time.time() + grace
    while any(p.is_alive() for p in processes) and time.time() < deadline:
        try:
            drained.append(messages.get(timeout=0.05))
        except queue.Empty:
            pass
    for process in processes:
        if process.is_alive():
            process.kill()
        process.join()
    while True:  # every worker has exited, so this ends
        try:
            drained.append(messages.get(timeout=0.05))
        except queue.Empty:
            return drained


def describe_failure(processes: list[mp.Process], reports: list, first_dead: int | None) -> str | None:
    """Name the failed worker and why: the exception a worker sent, else how the worker that
    died first died (workers killed later by stop_workers are a consequence, not the cause)."""
    for kind, worker_id, payload in reports:
        if kind == "error":
            return f"worker {worker_id} (pid {processes[worker_id].pid}) failed: {payload.strip()}"
    if first_dead is not None:
        process = processes[first_dead]
        return f"worker {first_dead} (pid {process.pid}) died ({describe_exit(process)})"
    return None


class CtrlC:
    """Ctrl-C as a request to stop: the first one only sets `pressed`, and the training loop stops
    where it next checks, with no TensorBoard write or optimizer step half done (a KeyboardInterrupt
    raised inside a write can queue an event without waking the writer's thread, and closing the
    writer then stalls for up to its two-minute flush interval). A second Ctrl-C interrupts at once.
    Signal handlers can only be set from the main thread; elsewhere this does nothing."""

    def __init__(self):
        self.pressed = False
        self.active = threading.current_thread() is threading.main_thread()
        if self.active:
            self.previous = signal.signal(signal.SIGINT, self.press)

    def press(self, signum, frame) -> None:
        self.pressed = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def restore(self) -> None:
        if self.active:
            signal.signal(signal.SIGINT, self.previous or signal.default_int_handler)


def main(args: Args) -> dict:
    args = check_args(args)
    if args.eval_model:
        return watch(args)
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(1)
    if args.cuda and torch.cuda.is_available():
        print("note: a3c.py runs on the CPU (its workers share one CPU model); --cuda is ignored")

    probe = gym.make(args.env_id)
    global_agent = Agent(probe.observation_space.shape[0], probe.action_space, args.init_action_std)
    obs_stats = SharedRunningStats(probe.observation_space.shape) if args.norm_obs else None
    return_stats = SharedRunningStats(()) if args.norm_reward else None
    probe.close()
    global_agent.share_memory()  # parameters in shared memory: every worker reads and updates the same tensors
    optimizer = SharedAdam(global_agent.parameters(), lr=args.learning_rate)
    # spawn: a fresh interpreter per worker, so no lock or thread of this process is inherited half-held.
    context = mp.get_context("spawn")
    global_step = context.Value("q", 0)
    start_event, stop_event = context.Event(), context.Event()
    messages = context.Queue()

    tracker = start_tracking(args, run_name) if args.track else None
    writer = SummaryWriter(f"runs/{run_name}")
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in dataclasses.asdict(args).items()),
    )
    model_path = f"runs/{run_name}/{args.exp_name}.pt"
    recent_returns, all_returns = deque(maxlen=20), []
    processes: list[mp.Process] = []
    worker_reports, first_dead, exit_code = [], None, 0

    def record(kind: str, payload) -> None:
        """Write a worker's finished episode or loss means to TensorBoard."""
        if kind == "episode":
            step, episodic_return, length = payload
            recent_returns.append(episodic_return)
            all_returns.append(episodic_return)
            writer.add_scalar("charts/episodic_return", episodic_return, step)
            writer.add_scalar("charts/episodic_length", length, step)
        elif kind == "losses":
            step, means, lr = payload
            for name, value in means.items():
                writer.add_scalar(f"losses/{name}", value, step)
            writer.add_scalar("charts/learning_rate", lr, step)

    start_time, next_progress, last_printed = None, args.total_timesteps / 20, -1
    ctrl_c = CtrlC()
    try:
        shared = (os.getpid(), global_agent, optimizer, obs_stats, return_stats, global_step, start_event, stop_event)
        for worker_id in range(args.num_workers):
            process = context.Process(target=worker, args=(worker_id, args, run_name, *shared, messages), daemon=True)
            process.start()
            processes.append(process)
        print(f"started {args.num_workers} worker(s): pids " + " ".join(str(p.pid) for p in processes), flush=True)
        num_ready = 0
        while True:
            if ctrl_c.pressed:
                raise KeyboardInterrupt  # handled below, at a point where nothing is half done
            try:
                kind, worker_id, payload = messages.get(timeout=0.1)
            except queue.Empty:
                kind = None
            if kind == "ready":
                num_ready += 1
                if num_ready == args.num_workers:  # start the clock and the workers together
                    start_time = time.time()
                    start_event.set()
            elif kind in ("episode", "losses"):
                record(kind, payload)
            elif kind == "error":
                worker_reports.append((kind, worker_id, payload))
                break
            dead = [i for i, p in enumerate(processes) if p.exitcode not in (None, 0)]
            if dead:  # its exception, if it sent one, is in the queue: stop_workers collects it
                first_dead = dead[0]
                break
            # Read without the counter's lock: a worker killed while holding it must not hang this loop.
            steps = global_step.get_obj().value
            finished = all(p.exitcode == 0 for p in processes)
            if start_time is not None and (steps >= next_progress or (finished and steps != last_printed)):
                sps = int(steps / max(time.time() - start_time, 1e-9))
                writer.add_scalar("charts/SPS", sps, steps)
                mean_return = np.mean(recent_returns) if recent_returns else float("nan")
                print(
                    f"global_step={steps:>8d} ({100 * min(steps, args.total_timesteps) / args.total_timesteps:3.0f}%)"
                    f"  mean_return(last 20)={mean_return:9.2f}  SPS={sps}",
                    flush=True,
                )
                next_progress = (steps // (args.total_timesteps / 20) + 1) * (args.total_timesteps / 20)
                last_printed = steps
            if finished:
                while not messages.empty():  # what the workers sent just before they finished
                    kind, _, payload = messages.get()
                    record(kind, payload)
                break
    except KeyboardInterrupt:
        print(f"interrupted at global_step={global_step.get_obj().value}; stopping the workers", file=sys.stderr)
        exit_code = 130
    finally:
        ctrl_c.restore()  # Ctrl-C is back to its usual meaning
        for kind, worker_id, payload in stop_workers(processes, stop_event, messages):
            worker_reports.append((kind, worker_id, payload))
            record(kind, payload)
        failure = describe_failure(processes, worker_reports, first_dead)
        if failure is not None:
            print(f"{os.path.basename(__file__)}: error: {failure.splitlines()[0]}", file=sys.stderr)
            exit_code = 1
        if args.save_model and exit_code != 1:
            save_model(model_path, global_agent, obs_stats, args)
            print(f"model saved to {model_path}")

    eval_returns = []
    if args.save_model and exit_code == 0:
        eval_returns = evaluate(model_path, args.eval_episodes, args.seed + 10_000, torch.device("cpu"))
        for episode, episodic_return in enumerate(eval_returns):
            writer.add_scalar("eval/episodic_return", episodic_return, episode)
        print(f"eval: mean return {np.mean(eval_returns):.2f} over {len(eval_returns)} episodes")
    writer.close()
    final_mean = np.mean(recent_returns) if recent_returns else float("nan")
    print(f"final mean_return(last 20)={final_mean:.2f}  run: runs/{run_name}")
    if tracker is not None:
        finish_tracking(tracker, run_name, exit_code)
    if exit_code:
        sys.exit(exit_code)
    return {
        "run_name": run_name,
        "episodic_returns": all_returns,
        "eval_returns": eval_returns,
        "model_path": model_path if args.save_model else None,
    }


if __name__ == "__main__":
    main(tyro.cli(Args))
