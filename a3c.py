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
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter


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


# The defaults that depend on the action-space kind, filled by check_args (the Args docstrings say why):
# Discrete: gamma 0.995, gae_lambda 1.0 (the paper's n-step returns), no observation normalization;
# Box: gamma 0.99, gae_lambda 0.9, observation normalization. Reward scaling is on for both.
KIND_DEFAULTS = {
    "discrete": dict(gamma=0.995, gae_lambda=1.0, norm_obs=False, norm_reward=True),
    "box": dict(gamma=0.99, gae_lambda=0.9, norm_obs=True, norm_reward=True),
}


def make_env(args: Args, worker_id: int, run_name: str) -> gym.Env:
    """One worker's env (worker 0's shows a window with --render, or is recorded with --capture-video).
    A single env needs no autoreset mode: the worker sees the episode end (and the real final
    observation) itself and calls reset()."""
    render_mode = "human" if args.render else "rgb_array" if args.capture_video else None
    env = gym.make(args.env_id, render_mode=render_mode if worker_id == 0 else None)
    if args.capture_video and worker_id == 0:
        env = gym.wrappers.RecordVideo(env, f"videos/{run_name}")
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
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Sampled actions for a batch of observations (watch plays the argmax / the Gaussian mean)."""
        policy_out = self.actor(obs)
        if self.is_discrete:  # Gumbel-max trick: argmax(logits + Gumbel noise) ~ Categorical(logits)
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
        self.lr = lr
        self.betas = betas
        self.eps = eps
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


def a3c_loss(log_probs, entropy, values, returns, vf_coef: float, ent_coef: float) -> tuple[torch.Tensor, dict]:
    """actor + vf_coef * critic - ent_coef * entropy, with A = R - V(s):
    actor = -mean(log pi(a|s) * A.detach()), critic = mean(A^2). All four tensors are one rollout's."""
    advantages = returns - values
    policy_loss = -(log_probs * advantages.detach()).mean()
    value_loss = advantages.pow(2).mean()
    entropy_mean = entropy.mean()
    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy_mean
    stats = {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(), "entropy": entropy_mean.item()}
    return loss, stats


def worker(worker_id: int, args: Args, run_name: str, shared: tuple) -> None:
    """One A3C worker process: copy the global weights, act, compute returns, push gradients to the
    shared model; repeat until the shared global step reaches the budget.

    shared is what the main process shares with every worker: its pid, then global_agent, optimizer,
    obs_stats and return_stats (None when off), global_step and ready (how many workers have made their
    env), which live in shared memory, the stop_event it sets, and the messages queue, which carries
    ("scalars", worker_id, step, {tag: value}) for TensorBoard to the main process. worker_process (below
    the plumbing line) runs this function and reports its exception to the main process.
    """
    main_pid, global_agent, optimizer, obs_stats, return_stats, global_step, ready, stop_event, messages = shared
    seed = args.seed + worker_id
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    env = make_env(args, worker_id, run_name)
    env.action_space.seed(seed)
    low, high = (None, None) if global_agent.is_discrete else (env.action_space.low, env.action_space.high)
    local_agent = Agent(env.observation_space.shape[0], env.action_space)
    local_params = list(local_agent.parameters())
    discounted_return = 0.0  # G_t = r_t + gamma * G_{t-1} within an episode, whose std scales the rewards
    update_stats = []  # the loss statistics of the updates since the last "losses/" report

    def policy_input(observations: np.ndarray) -> torch.Tensor:
        """Observations as the policy sees them: normalized with this rollout's statistics, if on."""
        if obs_stats is not None:  # nothing to compute on the hot path without normalization
            observations = (observations - obs_mean) / obs_scale
        return torch.as_tensor(observations, dtype=torch.float32)

    obs, _ = env.reset(seed=seed)
    with ready.get_lock():  # the main process counts steps/sec from when every worker is ready
        ready.value += 1
    # A worker whose main process vanished (killed outright) gets a new parent: it stops then. The
    # main process passes its pid: one read here could already see the new parent if the main
    # process died while this worker was still starting.
    while not stop_event.is_set() and global_step.value < args.total_timesteps and os.getppid() == main_pid:
        # 1. copy the global weights, and this rollout's snapshot of the shared statistics
        local_agent.load_state_dict(global_agent.state_dict())
        obs_mean, obs_scale = obs_stats.snapshot() if obs_stats is not None else (0.0, 1.0)
        reward_scale = return_stats.snapshot()[1] if return_stats is not None else 1.0
        # 2. act for up to num_steps steps, or to the end of the episode
        raw_obs = []
        actions = []
        rewards = []
        discounted_returns = []
        for _ in range(args.num_steps):
            raw_obs.append(obs)
            action = local_agent.act(policy_input(obs).unsqueeze(0))[0]
            actions.append(action)
            # The env gets the clipped action; learning uses the log-prob of the sampled one.
            env_action = action.item() if low is None else np.clip(action.numpy(), low, high)
            obs, reward, terminated, truncated, info = env.step(env_action)
            rewards.append(float(reward))
            discounted_return = float(reward) + args.gamma * discounted_return
            discounted_returns.append(discounted_return)
            if terminated or truncated:
                break
        with global_step.get_lock():
            global_step.value += len(rewards)
            step_now = global_step.value
        if obs_stats is not None:
            obs_stats.update(np.stack(raw_obs))
        if return_stats is not None:
            return_stats.update(np.array(discounted_returns))

        # 3. returns (or GAE advantages) from the scaled rewards, and the loss
        scaled_rewards = np.array(rewards) / reward_scale
        obs_batch = policy_input(np.stack(raw_obs))
        log_probs, entropy = local_agent.log_prob_and_entropy(obs_batch, torch.stack(actions))
        values = local_agent.get_value(obs_batch)
        with torch.no_grad():  # obs is the real final observation after a truncation
            bootstrap = 0.0 if terminated else float(local_agent.get_value(policy_input(obs)))
        if args.gae_lambda == 1.0:
            returns = n_step_returns(scaled_rewards, bootstrap, args.gamma)
        else:  # R_t = A_t + V(s_t), so R_t - V(s_t) in the loss is the GAE advantage
            value_array = values.detach().numpy()
            returns = compute_gae(value_array, scaled_rewards, bootstrap, args.gamma, args.gae_lambda) + value_array
        loss, stats = a3c_loss(log_probs, entropy, values, torch.as_tensor(returns), args.vf_coef, args.ent_coef)
        if not np.isfinite(loss.item()):
            raise FloatingPointError(f"non-finite loss ({loss.item()}) at global step {step_now}")

        # 4. backward on the local model, then apply its gradients to the global weights
        local_agent.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(local_params, args.max_grad_norm)
        lr = args.learning_rate * (max(0.0, 1.0 - step_now / args.total_timesteps) if args.anneal_lr else 1.0)
        optimizer.step([param.grad for param in local_params], lr)

        if terminated or truncated:
            episode = {"charts/episodic_return": info["episode"]["r"], "charts/episodic_length": info["episode"]["l"]}
            messages.put(("scalars", worker_id, step_now, {tag: float(value) for tag, value in episode.items()}))
            obs, _ = env.reset()
            discounted_return = 0.0
        # The main process logs the mean over each block of 100 updates (and the last, shorter one).
        update_stats.append(stats)
        if len(update_stats) == 100 or stop_event.is_set() or global_step.value >= args.total_timesteps:
            losses = {f"losses/{name}": np.mean([past[name] for past in update_stats]) for name in stats}
            messages.put(("scalars", worker_id, step_now, {**losses, "charts/learning_rate": lr}))
            update_stats = []
    env.close()


def main(args: Args) -> dict:
    args, obs_space, action_space = check_args(args)
    if args.eval_model:
        return watch(args)
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(1)

    global_agent = Agent(obs_space.shape[0], action_space, args.init_action_std)
    global_agent.share_memory()  # parameters in shared memory: every worker reads and updates the same tensors
    optimizer = SharedAdam(global_agent.parameters(), lr=args.learning_rate)
    obs_stats = SharedRunningStats(obs_space.shape) if args.norm_obs else None
    return_stats = SharedRunningStats(()) if args.norm_reward else None
    # spawn: a fresh interpreter per worker, so no lock or thread of this process is inherited half-held.
    context = mp.get_context("spawn")
    global_step = context.Value("q", 0)  # env steps taken, workers ready
    ready = context.Value("i", 0)
    stop_event = context.Event()
    messages = context.Queue()
    shared = (os.getpid(), global_agent, optimizer, obs_stats, return_stats, global_step, ready, stop_event, messages)
    processes = [
        context.Process(target=worker_process, args=(worker_id, args, run_name, shared), daemon=True)
        for worker_id in range(args.num_workers)
    ]

    writer, tracker = start_logging(args, run_name)  # the run folder appears here, just before the Ctrl-C handler
    episodic_returns = []
    exit_code = 0
    # steps/sec since every worker was ready (its env made): the workers' start-up is left out
    clock = None
    next_progress = args.total_timesteps / 20
    # The first Ctrl-C only asks the loop to stop at a safe point: a KeyboardInterrupt raised inside a
    # TensorBoard write can queue an event without waking the writer's thread, so closing the writer stalls.
    ctrl_c = threading.Event()
    previous_sigint = signal.signal(signal.SIGINT, lambda signum, frame: ctrl_c.set())
    try:
        for process in processes:
            process.start()
        print(f"started {args.num_workers} worker(s): pids " + " ".join(str(p.pid) for p in processes), flush=True)
        # The workers run the algorithm; this process logs what they send until every one has exited.
        for step, scalars in worker_messages(processes, messages, stop_event, ctrl_c):
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, step)
            if "charts/episodic_return" in scalars:
                episodic_returns.append(scalars["charts/episodic_return"])
            # Read without the counters' locks: a worker killed while holding one must not hang this loop.
            steps = global_step.get_obj().value
            if clock is None and ready.get_obj().value == args.num_workers:
                clock = (time.time(), steps)
            if clock is not None and steps >= next_progress:
                next_progress += args.total_timesteps / 20
                sps = int((steps - clock[1]) / max(time.time() - clock[0], 1e-9))
                writer.add_scalar("charts/SPS", sps, steps)
                print(progress_line(steps, args.total_timesteps, episodic_returns, sps), flush=True)
    except ChildProcessError as error:  # a worker failed or died: worker_messages stopped the others
        print(f"{os.path.basename(__file__)}: error: {str(error).splitlines()[0]}", file=sys.stderr)
        exit_code = 1
    finally:
        signal.signal(signal.SIGINT, previous_sigint)
        for process in processes:  # no worker outlives the run, whatever ended it
            process.kill()
    exit_code = 130 if ctrl_c.is_set() and exit_code == 0 else exit_code  # a worker's failure wins over Ctrl-C
    return finish_run(args, run_name, writer, tracker, exit_code, global_agent, obs_stats, episodic_returns)


# --- Plumbing: the algorithm is complete above; below are validation, saving, evaluation, logging and faults. ---

ALGORITHM = "a3c"  # stored in saved models: --eval-model refuses another script's file
FLAG_RULES = [  # (what is allowed, the test, the flags it applies to); None (a kind default) is filled later
    ("> 0", lambda value: value > 0, ["total_timesteps", "num_workers", "num_steps", "eval_episodes"]),
    ("> 0", lambda value: value > 0, ["learning_rate", "max_grad_norm", "init_action_std"]),
    ("in [0, 1]", lambda value: 0 <= value <= 1, ["gamma", "gae_lambda"]),
    (">= 0", lambda value: value >= 0, ["ent_coef", "vf_coef"]),
]


def usage_error(message: str) -> None:
    """A user mistake: one line on stderr, exit status 2, no traceback."""
    print(f"{os.path.basename(__file__)}: error: {message}", file=sys.stderr)
    sys.exit(2)


def check_args(args: Args) -> tuple[Args, gym.Space, gym.Space]:
    """Stop with one line and exit 2, before any process starts, at the first flag that breaks its rule, an
    unknown env id, a missing optional package or a space this script does not support. Return the Args with
    num_workers and the kind defaults (KIND_DEFAULTS) filled in, and the env's observation and action spaces."""
    for rule, allowed, names in FLAG_RULES:
        for name in names:
            if getattr(args, name) is not None and not allowed(getattr(args, name)):
                usage_error(f"--{name.replace('_', '-')} must be {rule}, got {getattr(args, name)}")
    for flag, module, extra in [("capture_video", "moviepy", "video"), ("track", "wandb", "track")]:
        if getattr(args, flag) and importlib.util.find_spec(module) is None:
            usage_error(f"--{flag.replace('_', '-')} needs {module}: pip install -e '.[{extra}]'")
    if args.render and (not args.eval_model or args.capture_video):
        usage_error("--render shows an --eval-model run in a window, without --capture-video")
    try:  # not only gym.registry: gymnasium's "module:EnvId" form imports the module that registers the env
        probe = gym.make(args.env_id, render_mode="rgb_array" if args.capture_video else None)
    except (gym.error.Error, ImportError) as error:
        usage_error(f"--env-id {args.env_id!r}: {str(error).splitlines()[0]}")
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
    if args.cuda and torch.cuda.is_available():
        print(f"note: {ALGORITHM}.py runs on the CPU (its workers share one CPU model); --cuda is ignored")
    defaults = KIND_DEFAULTS["discrete" if isinstance(action_space, gym.spaces.Discrete) else "box"]
    unset = {name: value for name, value in defaults.items() if getattr(args, name) is None}
    args = dataclasses.replace(args, num_workers=args.num_workers or os.cpu_count() or 1, **unset)
    return args, obs_space, action_space


def recent_mean(episodic_returns: list[float]) -> float:
    """The mean return of the last 10 finished episodes (nan before the first)."""
    return float(np.mean(episodic_returns[-10:])) if episodic_returns else float("nan")


def progress_line(global_step: int, total_timesteps: int, episodic_returns: list[float], sps: int) -> str:
    share_done = 100 * min(global_step / total_timesteps, 1)
    recent = recent_mean(episodic_returns)
    return f"global_step={global_step:>8d} ({share_done:3.0f}%)  mean_return(last 10)={recent:9.2f}  SPS={sps}"


def start_logging(args: Args, run_name: str):
    """The TensorBoard writer with the flags as a table, and with --track a Weights & Biases run that
    mirrors it (wandb imported only then; sync_tensorboard must start before the writer it copies)."""
    tracker = None
    if args.track:
        import wandb

        settings = dict(project=args.wandb_project_name, entity=args.wandb_entity, name=run_name, sync_tensorboard=True)
        tracker = wandb.init(**settings, config=dataclasses.asdict(args))
    writer = SummaryWriter(f"runs/{run_name}")
    table = "\n".join(f"|{key}|{value}|" for key, value in dataclasses.asdict(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    return writer, tracker


def finish_run(
    args: Args, run_name: str, writer, tracker, exit_code: int, agent: Agent, obs_stats, episodic_returns
) -> dict:
    """After training: with --save-model save the model and the observation statistics it acts on (unless
    the run failed) and, if the run completed, evaluate the saved file; close the writer and the W&B run
    (uploading the training videos); exit on a failure."""
    model_path = f"runs/{run_name}/{args.exp_name}.pt"
    if args.save_model and exit_code != 1:
        obs_rms = (
            None if obs_stats is None else {"mean": obs_stats.mean, "var": obs_stats.var, "count": obs_stats.count}
        )
        checkpoint = {"algorithm": ALGORITHM, "args": dataclasses.asdict(args), "model": agent.state_dict()}
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
    or the Gaussian mean, on observations normalized with the saved statistics) on its env for --eval-episodes
    episodes, the first reset with seed + 10_000, and print the mean return. A file that is missing, not a
    model file, another script's, or whose weights do not fit its env: one line, exit 2."""
    video_name = os.path.basename(os.path.dirname(os.path.abspath(args.eval_model))) + "-eval"
    try:  # weights_only (torch's default): loading runs no code from the file
        checkpoint = torch.load(args.eval_model, map_location="cpu")  # as in training: a CPU model
        if checkpoint["algorithm"] != ALGORITHM:
            raise ValueError(f"saved by {checkpoint['algorithm']}.py")
        train_args = Args(**checkpoint["args"])
        eval_args = dataclasses.replace(train_args, capture_video=args.capture_video, render=args.render)
        env = make_env(eval_args, 0, video_name)
        agent = Agent(env.observation_space.shape[0], env.action_space)
        agent.load_state_dict(checkpoint["model"])
        obs_rms = checkpoint["obs_rms"]  # normalize as in training: (obs - mean) / sqrt(var + 1e-8)
    except FileNotFoundError:
        usage_error(f"--eval-model {args.eval_model}: no such file")
    except Exception as error:
        reason = (str(error).strip() or type(error).__name__).splitlines()[0]
        why = f"not a model file saved by {ALGORITHM}.py, or its weights do not fit its env ({reason})"
        usage_error(f"--eval-model {args.eval_model}: {why}")
    if args.env_id not in (Args.env_id, train_args.env_id):  # left at its default, --env-id means "the model's"
        usage_error(f"--eval-model {args.eval_model} was trained on {train_args.env_id}, not --env-id {args.env_id}")
    mean, scale = (0.0, 1.0) if obs_rms is None else (obs_rms["mean"].numpy(), np.sqrt(obs_rms["var"].numpy() + 1e-8))
    space = env.action_space
    returns = []
    obs, _ = env.reset(seed=args.seed + 10_000)
    while len(returns) < args.eval_episodes:
        with torch.no_grad():
            policy_out = agent.actor(torch.as_tensor((obs - mean) / scale, dtype=torch.float32))
            action = policy_out.argmax(-1) if agent.is_discrete else policy_out
        action = action.item() if agent.is_discrete else np.clip(action.numpy(), space.low, space.high)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            returns.append(float(info["episode"]["r"]))
            obs, _ = env.reset()
    env.close()
    mean, std = np.mean(returns), np.std(returns)
    print(f"eval: {train_args.env_id} mean return {mean:.2f} +- {std:.2f} over {len(returns)} episodes")
    return {"eval_returns": returns, "video_folder": f"videos/{video_name}" if args.capture_video else None}


def worker_process(worker_id: int, args: Args, run_name: str, shared: tuple) -> None:
    """The body of a worker process: worker() with one torch thread, Ctrl-C left to the main process, and
    its exception sent to the main process, which stops the run and names this worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to decide
    torch.set_num_threads(1)
    main_pid = shared[0]
    messages = shared[-1]
    try:
        worker(worker_id, args, run_name, shared)
    except Exception as error:
        messages.put(("error", worker_id, f"{type(error).__name__}: {error}"))
        sys.exit(1)
    if os.getppid() != main_pid:
        messages.cancel_join_thread()  # nobody reads the queue any more: exit without flushing it


def worker_messages(processes: list, messages, stop_event, ctrl_c: threading.Event):
    """The workers' (step, {tag: value}) messages, until every worker has exited.

    It stops every worker (the stop event) at a Ctrl-C, at a worker's exception or at a worker that
    died, and keeps reading the queue meanwhile (a process cannot exit while its queued messages are
    unread); after a failure the others are killed at once, after a Ctrl-C those still alive 5 s later.
    Then it raises ChildProcessError naming the worker that failed: the exception it sent, else how
    the first dead worker died (workers killed later are a consequence, not the cause).
    """
    stop_time = None
    first_dead = None
    failure = None
    while any(process.is_alive() for process in processes) or not messages.empty():
        try:
            kind, worker_id, *payload = messages.get(timeout=0.1)
            if kind == "scalars":
                yield payload
            elif failure is None:  # "error": the exception's one-line description
                failure = f"worker {worker_id} (pid {processes[worker_id].pid}) failed: {payload[0]}"
        except queue.Empty:
            pass
        dead = [i for i, process in enumerate(processes) if process.exitcode not in (None, 0)]
        if stop_time is None and (dead or failure or ctrl_c.is_set()):
            stop_event.set()
            stop_time = time.time()
            first_dead = (dead or [None])[0]
        # A failed run saves nothing: the other workers are killed at once. After a Ctrl-C they get 5 s
        # to finish their update (one blocked on a lock that a killed worker held never would).
        if stop_time is not None and (failure or first_dead is not None or time.time() > stop_time + 5):
            for process in processes:
                process.kill()
    if failure is None and first_dead is not None:
        code = processes[first_dead].exitcode
        how = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        failure = f"worker {first_dead} (pid {processes[first_dead].pid}) died ({how})"
    if failure is not None:
        raise ChildProcessError(failure)


if __name__ == "__main__":
    main(tyro.cli(Args))
