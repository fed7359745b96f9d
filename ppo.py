"""Proximal Policy Optimization (PPO-clip) for Discrete and Box action spaces.

Paper: Schulman et al. 2017, "Proximal Policy Optimization Algorithms",
https://arxiv.org/abs/1707.06347 (GAE: Schulman et al. 2016, https://arxiv.org/abs/1506.02438).

The loop: run the current policy for `num_steps` steps in `num_envs` envs, score every
step with Generalized Advantage Estimation, then take several epochs of minibatch
gradient steps on a clipped surrogate objective that keeps the new policy near the one
that collected the data.

    delta_t = r_t + gamma * V(s_{t+1}) * (1 - terminated_t) - V(s_t)
    A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}        returns R_t = A_t + V(s_t)
    ratio_t = pi(a_t|s_t) / pi_old(a_t|s_t)
    L_clip  = -mean(min(ratio_t * A_t, clip(ratio_t, 1 - eps, 1 + eps) * A_t))
    L_value = 0.5 * mean((V(s_t) - R_t)^2)        (optionally clipped around the old values)
    loss    = L_clip + vf_coef * L_value - ent_coef * entropy

A time-limit cut (truncated) is not a terminal state: its target bootstraps from the value
of the real final observation. One set of defaults serves Discrete and Box actions, from
CartPole and Pendulum at 100k steps to LunarLander and MuJoCo at 1M. What depends on the
action-space kind: observation and reward normalization (on for Box), the entropy bonus
(0.01 for Discrete), the learning rate (1e-3 for Discrete, from the budget for Box:
`default_learning_rate`) and a Box policy's initial std (half each action's half-range).

    python ppo.py                          # CartPole-v1
    python ppo.py --env-id Pendulum-v1 --save-model
    python ppo.py --env-id HalfCheetah-v5 --total-timesteps 1000000    # pip install -e ".[mujoco]"
    torchrun --standalone --nproc-per-node 2 ppo.py --env-id HalfCheetah-v5 --total-timesteps 1000000

Under torchrun every rank runs its own `num_envs` envs and rollout, and the ranks average their
gradients before every optimizer step (data parallelism): the same update as one process with
all ranks' data, so `--total-timesteps` counts the env steps of all ranks.
"""

import dataclasses
import glob
import importlib.util
import os
import random
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist  # already loaded by `import torch`: nothing new for a plain run
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter


@dataclass
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
    """the id of a gymnasium environment with a 1-D Box observation space"""
    mask_velocity: bool = False
    """if toggled, zero the velocity entries of the observation (a partially observable task an MLP
    policy cannot fully solve; see ppo_gru.py); supported for the envs listed in VELOCITY_INDICES"""
    total_timesteps: int = 100_000
    """total env steps of the run"""
    learning_rate: float | None = None
    """Adam learning rate [None: 1e-3 for Discrete actions; for Box actions 1e-3 * sqrt(100k /
    total_timesteps) kept within [3e-4, 1e-3], so short runs take large steps and long runs small
    ones: 1e-3 at 100k, 3.2e-4 at 1M (see default_learning_rate)]"""
    num_envs: int = 4
    """number of parallel envs"""
    num_steps: int = 256
    """steps per env in each rollout (batch = num_envs * num_steps)"""
    async_envs: bool = False
    """if toggled, run the envs in subprocesses (AsyncVectorEnv); the in-process SyncVectorEnv
    is faster for cheap envs such as classic control on a few cores"""
    anneal_lr: bool = True
    """if toggled, the learning rate decays linearly to 0 over the run"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    num_minibatches: int = 16
    """minibatches per epoch; must divide num_envs * num_steps"""
    update_epochs: int = 10
    """passes over each rollout"""
    norm_adv: bool = True
    """if toggled, normalize advantages within each minibatch"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient epsilon"""
    clip_vloss: bool = False
    """if toggled, clip the value loss around the old values, as the PPO code release does"""
    ent_coef: float | None = None
    """entropy bonus coefficient [None: 0.01 for Discrete, 0 for Box actions]. For a categorical
    policy the bonus keeps some exploration (LunarLander-v3 at 1M, seeds 1-3: 224.6 with 0.01, 160.5
    with 0); for a Gaussian one with a learned log-std it would only push the std up"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """the maximum global norm of the gradients"""
    target_kl: float | None = None
    """if set, stop the epochs of an update early once the approximate KL exceeds it"""
    norm_obs: bool | None = None
    """normalize observations with running statistics [None: off for Discrete, on for Box]"""
    norm_reward: bool | None = None
    """scale rewards by the running std of the discounted return [None: off for Discrete, on for Box]"""
    collective_timeout: float = 120.0
    """under torchrun: seconds a rank waits for the others in a collective before it stops with an error"""
    init_action_std: float = 0.5
    """Box actions: the initial std of the Gaussian policy, as a fraction of each action dimension's
    half-range (high - low) / 2 (of 1 where a bound is infinite). HalfCheetah-v5, seed 1, 1M steps at
    lr 1e-3: 2.2k with a std of 1, 3.4k with 0.5 (and 5.5k with 0.5 at the 3.2e-4 the rule gives)"""


# Defaults that depend on the action-space kind; a flag given on the command line always wins.
KIND_DEFAULTS = {
    "discrete": dict(norm_obs=False, norm_reward=False, ent_coef=0.01),
    "continuous": dict(norm_obs=True, norm_reward=True, ent_coef=0.0),
}

# The observation entries --mask-velocity hides, per env.
ALGORITHM = "ppo"  # stored in saved models: --eval-model refuses another script's file
VELOCITY_INDICES = {
    "CartPole-v1": [1, 3],  # cart velocity, pole angular velocity
    "Pendulum-v1": [2],  # angular velocity
    "MountainCar-v0": [1],
    "MountainCarContinuous-v0": [1],
    "LunarLander-v3": [2, 3, 5],  # x and y velocity, angular velocity
}


def usage_error(message: str) -> None:
    """A user mistake: one line on stderr, exit status 2, no traceback."""
    print(f"{os.path.basename(__file__)}: error: {message}", file=sys.stderr)
    sys.exit(2)


def default_learning_rate(total_timesteps: int) -> float:
    """1e-3 * sqrt(100k / total_timesteps), kept within [3e-4, 1e-3]: 1e-3 up to 100k steps, 3.2e-4
    at 1M. A short run needs large steps to learn at all (Pendulum-v1 at 100k: -153 with 1e-3, -460
    with 3e-4, means of seeds 1-3), while a long one makes ten times as many updates and stays stable only
    with smaller ones (HalfCheetah-v5 at 1M, seed 1: the 10-episode mean swung between 1.3k and 3.4k
    with 1e-3 and ended at 5.5k with 3e-4). Box actions only: Discrete policies keep 1e-3, since on
    LunarLander-v3 at 1M this rule's 3.2e-4 left seeds 1-2 at 51 and 158 where 1e-3 reached 209."""
    return min(1e-3, max(3e-4, 1e-3 * (100_000 / total_timesteps) ** 0.5))


def check_args(args: Args) -> None:
    """Reject impossible values (None means 'use the default rule')."""
    positive_ints = ["total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs", "eval_episodes"]
    positive_floats = ["learning_rate", "clip_coef", "max_grad_norm", "target_kl"]
    for name in positive_ints + positive_floats:
        value = getattr(args, name)
        if value is not None and not value > 0:
            usage_error(f"--{name.replace('_', '-')} must be > 0, got {value}")
    for name in ["gamma", "gae_lambda"]:
        value = getattr(args, name)
        if value is not None and not 0 <= value <= 1:
            usage_error(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
    for name in ["ent_coef", "vf_coef"]:
        value = getattr(args, name)
        if value is not None and not value >= 0:
            usage_error(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    batch_size = args.num_envs * args.num_steps
    if batch_size % args.num_minibatches:
        usage_error(
            f"--num-minibatches {args.num_minibatches} does not divide the batch num_envs * num_steps = {batch_size}"
        )
    if args.env_id not in gym.registry:
        usage_error(f"--env-id {args.env_id!r} is not a registered gymnasium environment")
    if args.mask_velocity and args.env_id not in VELOCITY_INDICES:
        usage_error(f"--mask-velocity does not know {args.env_id}; supported: {', '.join(VELOCITY_INDICES)}")
    if args.capture_video and importlib.util.find_spec("moviepy") is None:
        usage_error("--capture-video needs moviepy: pip install -e '.[video]'")
    if args.render and (not args.eval_model or args.capture_video):
        usage_error("--render shows an --eval-model run in a window, without --capture-video")
    if args.track and importlib.util.find_spec("wandb") is None:
        usage_error("--track needs wandb: pip install -e '.[track]'")


def resolve_defaults(args: Args) -> Args:
    """Fill the kind-dependent defaults after one probe env has shown the spaces."""
    probe = gym.make(args.env_id, render_mode="rgb_array" if args.capture_video else None)
    obs_space, action_space = probe.observation_space, probe.action_space
    if args.capture_video:
        try:  # rendering may need packages of its own (pygame for classic control, OpenGL for MuJoCo)
            probe.reset(seed=args.seed)
            probe.render()
        except (gym.error.DependencyNotInstalled, ImportError) as error:
            usage_error(f"--capture-video cannot render {args.env_id}: {str(error).splitlines()[0]}")
    probe.close()
    supported_obs = isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1
    if isinstance(action_space, gym.spaces.Discrete):
        kind = "discrete"
    elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        kind = "continuous"
    else:
        supported_obs = False
    if not supported_obs:
        usage_error(
            f"{args.env_id} has observation space {obs_space} and action space {action_space}; "
            "ppo.py supports a 1-D Box observation space with a Discrete or 1-D Box action space"
        )
    missing = {k: v for k, v in KIND_DEFAULTS[kind].items() if getattr(args, k) is None}
    if args.learning_rate is None:
        missing["learning_rate"] = 1e-3 if kind == "discrete" else default_learning_rate(args.total_timesteps)
    return dataclasses.replace(args, **missing)


class MaskVelocity(gym.ObservationWrapper):
    """Zero the observation entries at `indices`, making the task partially observable."""

    def __init__(self, env: gym.Env, indices: list[int]):
        super().__init__(env)
        self.mask = np.ones(env.observation_space.shape, dtype=np.float32)
        self.mask[indices] = 0.0

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return (observation * self.mask).astype(np.float32)


def make_env(env_id: str, idx: int, capture_video: bool, run_name: str, mask_velocity: bool = False, render=False):
    def thunk():
        if render and idx == 0:
            env = gym.make(env_id, render_mode="human")
        elif capture_video and idx == 0:
            env = gym.make(env_id, render_mode="rgb_array")
            env = gym.wrappers.RecordVideo(env, f"videos/{run_name}")
        else:
            env = gym.make(env_id)
        if mask_velocity:
            env = MaskVelocity(env, VELOCITY_INDICES[env_id])
        return env

    return thunk


def make_vector_env(args: Args, run_name: str = "") -> gym.vector.VectorEnv:
    """Vectorized envs with episode statistics and optional normalization.

    Autoreset mode is NEXT_STEP (gymnasium's default, and the only one its vector
    normalization wrappers accept): when env i ends at step t, the observation returned at
    t is the real final observation, and step t+1 of env i only resets it (action ignored,
    reward 0). The rollout marks such reset steps and never trains on them.
    """
    thunks = [
        make_env(args.env_id, i, args.capture_video, run_name, args.mask_velocity, args.render)
        for i in range(args.num_envs)
    ]
    vector_cls = gym.vector.AsyncVectorEnv if args.async_envs else gym.vector.SyncVectorEnv
    envs = vector_cls(thunks, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    # Statistics first, so logged returns are the env's raw rewards, not the scaled ones.
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    if args.norm_obs:
        envs = gym.wrappers.vector.NormalizeObservation(envs)
    if args.norm_reward:
        envs = gym.wrappers.vector.NormalizeReward(envs, gamma=args.gamma)
    return envs


def find_wrapper(envs: gym.vector.VectorEnv, wrapper_cls):
    """The first wrapper of type wrapper_cls around envs, or None."""
    while isinstance(envs, gym.vector.VectorWrapper):
        if isinstance(envs, wrapper_cls):
            return envs
        envs = envs.env
    return None


def stop_after_env_worker_death(envs: gym.vector.VectorEnv) -> str:
    """An AsyncVectorEnv worker died: name the dead ones, end the others, and mark the envs closed
    (their own close() would wait forever on the dead worker's pipe)."""
    vector_env = envs.unwrapped
    processes = getattr(vector_env, "processes", [])
    dead = [
        f"env worker {i} (pid {p.pid}, exit code {p.exitcode})" for i, p in enumerate(processes) if not p.is_alive()
    ]
    for process in processes:
        process.terminate()
        process.join()
    vector_env.closed = True
    return ", ".join(dead) or "an env worker"


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """Separate actor and critic MLPs (64-64 tanh).

    Discrete: the actor outputs Categorical logits. Box: the actor outputs the mean of a
    diagonal Normal whose log-std is a learned, state-independent parameter, initialised to
    log(init_action_std * half-range) per action dimension, so the first actions spread over
    the same share of the action range on every env (Pendulum's torque spans [-2, 2],
    MuJoCo's motors [-1, 1]).
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
            # Gumbel-max trick: argmax(logits + Gumbel noise) ~ Categorical(logits), about
            # half the cost of torch.distributions.Categorical.sample for small batches.
            return (policy_out - torch.log(-torch.log(torch.rand_like(policy_out)))).argmax(-1)
        if deterministic:
            return policy_out
        return policy_out + torch.randn_like(policy_out) * self.actor_logstd.exp()

    def evaluate_actions(self, obs: torch.Tensor, action: torch.Tensor):
        """(log pi(action|obs), entropy, V(obs)), differentiable, for the update."""
        policy_out = self.actor(obs)
        if self.is_discrete:
            log_probs = torch.log_softmax(policy_out, dim=-1)
            log_prob = log_probs.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
            entropy = -(log_probs.exp() * log_probs).sum(-1)
        else:
            log_std = self.actor_logstd.expand_as(policy_out)
            # log N(a; mu, sigma) = -((a - mu) / sigma)^2 / 2 - log sigma - log(2 pi) / 2, summed over dims
            z = (action - policy_out) / log_std.exp()
            log_prob = (-0.5 * z.pow(2) - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
            entropy = (0.5 + 0.5 * np.log(2 * np.pi) + log_std).sum(-1)
        return log_prob, entropy, self.get_value(obs)


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminations: np.ndarray,
    dones: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalized Advantage Estimation over a (num_steps, num_envs) rollout.

    next_values[t] is V of the observation that step t returned: the next state, or the real
    final observation when the episode ended at t. terminations zero the bootstrap (a
    terminal state has no future); dones (terminated or truncated) stop the recursion so no
    advantage leaks across an episode boundary. A truncated step therefore still bootstraps
    from V(final observation).

        delta_t = r_t + gamma * next_values_t * (1 - terminated_t) - values_t
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}

    Returns (advantages, returns = advantages + values). Plain numpy: on small arrays its
    per-operation cost is a fraction of torch's, and this loop runs num_steps times.
    """
    advantages = np.zeros_like(rewards)
    next_advantage = np.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - terminations[t]) - values[t]
        next_advantage = delta + gamma * gae_lambda * (1.0 - dones[t]) * next_advantage
        advantages[t] = next_advantage
    return advantages, advantages + values


def ppo_policy_loss(
    new_log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip_coef: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate loss, -mean(min(ratio * A, clip(ratio, 1-eps, 1+eps) * A)).

    Also returns the approximate KL(old || new) estimate mean((ratio - 1) - log ratio)
    (Schulman's low-variance estimator) and the fraction of samples whose ratio was clipped.
    """
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    loss = torch.max(unclipped, clipped).mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clipfrac = ((ratio - 1).abs() > clip_coef).float().mean()
    return loss, approx_kl, clipfrac


def ppo_value_loss(
    new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip_coef: float | None
) -> torch.Tensor:
    """0.5 * mean((V - R)^2); with clip_coef, the max of that and the error of V clipped to
    old_V +- clip_coef (so the value cannot move far from the one that scored the data)."""
    unclipped = (new_values - returns).pow(2)
    if clip_coef is None:
        return 0.5 * unclipped.mean()
    clipped_values = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
    return 0.5 * torch.max(unclipped, (clipped_values - returns).pow(2)).mean()


def explained_variance(predicted: np.ndarray, target: np.ndarray) -> float:
    """1 - Var[target - predicted] / Var[target]: 1 is perfect, 0 is no better than the mean."""
    target_var = np.var(target)
    return float("nan") if target_var == 0 else float(1 - np.var(target - predicted) / target_var)


@dataclass
class Rollout:
    """num_steps x num_envs of experience, as numpy arrays (cheap per-step writes)."""

    obs: np.ndarray
    actions: np.ndarray
    log_probs: np.ndarray
    values: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    dones: np.ndarray
    trainable: np.ndarray  # False on the reset step that follows an episode end
    last_value: np.ndarray  # V(observation after the last step), one per env

    @classmethod
    def empty(cls, num_steps: int, num_envs: int, obs_shape, action_shape) -> "Rollout":
        def zeros(*shape):
            return np.zeros((num_steps, num_envs, *shape), dtype=np.float32)

        return cls(
            obs=zeros(*obs_shape),
            actions=zeros(*action_shape),
            log_probs=zeros(),
            values=zeros(),
            rewards=zeros(),
            terminations=zeros(),
            dones=zeros(),
            trainable=np.zeros((num_steps, num_envs), dtype=bool),
            last_value=np.zeros(num_envs, dtype=np.float32),
        )


class EpisodeLog:
    """Finished-episode statistics from RecordEpisodeStatistics, to TensorBoard and a window.

    With defer (under torchrun), record() only collects (step, return, length) in `pending`;
    main gathers every rank's pending episodes and passes them all to add()."""

    def __init__(self, writer: SummaryWriter | None, window: int = 10, defer: bool = False):
        self.writer = writer
        self.recent_returns = deque(maxlen=window)
        self.all_returns: list[float] = []
        self.defer = defer
        self.pending: list[tuple[int, float, int]] = []

    def record(self, infos: dict, global_step: int) -> None:
        if "episode" not in infos:
            return
        episodes = [
            (global_step, float(infos["episode"]["r"][i]), int(infos["episode"]["l"][i]))
            for i in np.flatnonzero(infos["_episode"])
        ]
        if self.defer:
            self.pending += episodes
        else:
            self.add(episodes)

    def add(self, episodes: list[tuple[int, float, int]]) -> None:
        for global_step, episodic_return, length in episodes:
            self.recent_returns.append(episodic_return)
            self.all_returns.append(episodic_return)
            if self.writer is not None:
                self.writer.add_scalar("charts/episodic_return", episodic_return, global_step)
                self.writer.add_scalar("charts/episodic_length", length, global_step)

    def recent_mean(self) -> float:
        return float(np.mean(self.recent_returns)) if self.recent_returns else float("nan")


def collect_rollout(
    agent: Agent,
    envs: gym.vector.VectorEnv,
    rollout: Rollout,
    next_obs: np.ndarray,
    next_done: np.ndarray,
    episode_log: EpisodeLog,
    global_step: int,
    device: torch.device,
    world_size: int = 1,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Fill `rollout` by acting with the current policy; returns (next_obs, next_done, global_step).

    global_step counts the env steps of all ranks (world_size of them, in lockstep)."""
    action_space = envs.single_action_space
    for step in range(rollout.obs.shape[0]):
        global_step += envs.num_envs * world_size
        rollout.obs[step] = next_obs
        # NEXT_STEP autoreset: after a done, this step only resets the env.
        rollout.trainable[step] = ~next_done
        with torch.no_grad():
            action = agent.act(torch.as_tensor(next_obs, dtype=torch.float32, device=device)).cpu().numpy()
        rollout.actions[step] = action
        if not agent.is_discrete:
            # The env gets the clipped action; learning uses the log-prob of the sampled one.
            action = np.clip(action, action_space.low, action_space.high)
        next_obs, reward, terminated, truncated, infos = envs.step(action)
        next_done = terminated | truncated
        rollout.rewards[step] = reward
        rollout.terminations[step] = terminated
        rollout.dones[step] = next_done
        episode_log.record(infos, global_step)
    # The networks do not change during a rollout, so log pi(a_t|s_t) and V(s_t) come from one
    # batched pass here rather than a small pass per step: the same numbers, far fewer calls.
    with torch.no_grad():
        log_probs, _, values = agent.evaluate_actions(
            torch.as_tensor(rollout.obs, device=device).flatten(0, 1),
            torch.as_tensor(rollout.actions, device=device).flatten(0, 1),
        )
        rollout.log_probs[:] = log_probs.view(rollout.log_probs.shape).cpu().numpy()
        rollout.values[:] = values.view(rollout.values.shape).cpu().numpy()
        last_obs = torch.as_tensor(next_obs, dtype=torch.float32, device=device)
        rollout.last_value[:] = agent.get_value(last_obs).cpu().numpy()
    return next_obs, next_done, global_step


class NonFiniteLossError(RuntimeError):
    pass


def rollout_advantages(rollout: Rollout, gamma: float, gae_lambda: float) -> tuple[np.ndarray, np.ndarray]:
    """GAE for a collected rollout: (advantages, returns), each (num_steps, num_envs)."""
    # V(s_{t+1}) is the next row's value, or the value after the rollout for the last row. With
    # NEXT_STEP autoreset the row after an episode end holds the real final observation, so
    # a truncated step bootstraps from exactly V(final observation).
    next_values = np.concatenate([rollout.values[1:], rollout.last_value[None]])
    return compute_gae(
        rollout.rewards, rollout.values, next_values, rollout.terminations, rollout.dones, gamma, gae_lambda
    )


def ppo_update(
    agent: Agent, optimizer: torch.optim.Optimizer, rollout: Rollout, args: Args, device: torch.device, global_step: int
) -> dict[str, float]:
    """GAE on the rollout, then `update_epochs` epochs of clipped-PPO minibatch steps.

    Returns every logged loss as its mean over all minibatches and epochs of this update.
    """

    def as_tensor(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, device=device)

    advantages, returns = rollout_advantages(rollout, args.gamma, args.gae_lambda)
    # Flatten (step, env) and keep only real transitions (not NEXT_STEP reset steps).
    keep = as_tensor(rollout.trainable.reshape(-1))
    b_obs = as_tensor(rollout.obs).flatten(0, 1)[keep]
    b_actions = as_tensor(rollout.actions).flatten(0, 1)[keep]
    b_log_probs = as_tensor(rollout.log_probs).flatten()[keep]
    b_advantages = as_tensor(advantages).flatten()[keep]
    b_returns = as_tensor(returns).flatten()[keep]
    b_values = as_tensor(rollout.values).flatten()[keep]

    sums: dict[str, float] = {}
    num_minibatch_steps = 0
    stop_early = False
    for _epoch in range(args.update_epochs):
        permutation = torch.randperm(len(b_obs), device=device)
        for mb in torch.tensor_split(permutation, args.num_minibatches):
            new_log_prob, entropy, new_value = agent.evaluate_actions(b_obs[mb], b_actions[mb])
            mb_advantages = b_advantages[mb]
            if args.norm_adv and len(mb) > 1:
                mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
            policy_loss, approx_kl, clipfrac = ppo_policy_loss(
                new_log_prob, b_log_probs[mb], mb_advantages, args.clip_coef
            )
            value_loss = ppo_value_loss(
                new_value, b_values[mb], b_returns[mb], args.clip_coef if args.clip_vloss else None
            )
            entropy_loss = entropy.mean()
            loss = policy_loss + args.vf_coef * value_loss - args.ent_coef * entropy_loss

            stats = {
                "policy_loss": policy_loss.item(),
                "value_loss": value_loss.item(),
                "entropy": entropy_loss.item(),
                "approx_kl": approx_kl.item(),
                "clipfrac": clipfrac.item(),
            }
            for name, value in stats.items():
                if not np.isfinite(value):
                    raise NonFiniteLossError(f"non-finite {name} ({value}) in the update at global step {global_step}")
                sums[name] = sums.get(name, 0.0) + value
            num_minibatch_steps += 1

            optimizer.zero_grad()
            loss.backward()
            if distributed():
                average_gradients(agent)
            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            optimizer.step()
            if args.target_kl is not None:
                # Under torchrun the ranks decide together, on the KL averaged over them, so all stop
                # after the same minibatch (a rank that stopped alone would leave the others waiting).
                approx_kl = mean_over_ranks(stats["approx_kl"], device) if distributed() else stats["approx_kl"]
                if approx_kl > args.target_kl:
                    stop_early = True
                    break
        if stop_early:
            break

    if not all(torch.isfinite(p).all() for p in agent.parameters()):
        raise NonFiniteLossError(f"non-finite network parameters after the update at global step {global_step}")
    means = {name: total / num_minibatch_steps for name, total in sums.items()}
    means["explained_variance"] = explained_variance(b_values.cpu().numpy(), b_returns.cpu().numpy())
    return means


def distributed() -> bool:
    """True under torchrun (after init_distributed), False for a plain `python ppo.py`."""
    return dist.is_available() and dist.is_initialized()


def init_distributed(args: Args) -> tuple[int, int, torch.device]:
    """(rank, world_size, device). torchrun puts WORLD_SIZE, RANK, LOCAL_RANK and the rendezvous
    address into each rank's environment; a plain run has none of them and stays one process."""
    use_cuda = torch.cuda.is_available() and args.cuda
    if "WORLD_SIZE" not in os.environ:
        return 0, 1, torch.device("cuda" if use_cuda else "cpu")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    # gloo on CPU, nccl between GPUs; a rank that waits longer than the timeout in a collective
    # (another rank died or hangs) raises instead of waiting forever.
    timeout = timedelta(seconds=args.collective_timeout)
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout)
    return dist.get_rank(), dist.get_world_size(), device


def average_gradients(model: nn.Module) -> None:
    """g <- (1 / N) * sum of g over the N ranks, in one all-reduce of every gradient flattened into
    one vector (one message, not one per tensor). Every rank then takes the same optimizer step
    from the same parameters, so the ranks stay identical without ever sending parameters."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def lost_contact(error: RuntimeError) -> bool:
    """Whether a collective failed because another rank is gone or does not answer: gloo raises a
    plain RuntimeError whose text says so (a timeout, a closed connection), newer code DistError."""
    text = str(error)
    return isinstance(error, dist.DistError) or any(
        cue in text for cue in ("Timed out", "timed out", "Connection closed", "Connection reset", "gloo", "NCCL")
    )


def mean_over_ranks(value: float, device: torch.device) -> float:
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.item() / dist.get_world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if flag is True on any rank (e.g. one of them saw Ctrl-C)."""
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def merge_moments(a: tuple, b: tuple) -> tuple:
    """(count, mean, M2) of the union of two samples, M2 = variance * count (Chan et al.):
    delta = mean_b - mean_a, mean = mean_a + delta * n_b / n, M2 = M2_a + M2_b + delta^2 n_a n_b / n."""
    count_a, mean_a, m2_a = a
    count_b, mean_b, m2_b = b
    count = count_a + count_b
    delta = mean_b - mean_a
    return count, mean_a + delta * count_b / count, m2_a + m2_b + delta**2 * count_a * count_b / count


def sync_running_stats(rms, base: tuple, device: torch.device) -> tuple:
    """Make a running mean/std (gymnasium's RunningMeanStd) the same on every rank: the statistics
    of every rank's data. Returns the new base for the next call.

    Since the last sync, whose result `base` = (count, mean, M2) is the same on every rank, each
    rank has folded only its own new data into rms. Undoing the base (merge_moments solved for b)
    gives that data's moments (n_r, mean_r, M2_r); the ranks combine them with two all-reduces,
    n = sum n_r, mean = sum n_r mean_r / n, M2 = sum (M2_r + n_r (mean_r - mean)^2), and the
    result is merged into the base."""
    count, mean, m2 = rms.count, np.atleast_1d(rms.mean), np.atleast_1d(rms.var * rms.count)
    base_count, base_mean, base_m2 = base
    new = count - base_count
    own_mean = (count * mean - base_count * base_mean) / new if new > 0 else np.zeros_like(mean)
    own_m2 = m2 - base_m2 - (own_mean - base_mean) ** 2 * base_count * new / count if new > 0 else np.zeros_like(mean)
    sums = torch.as_tensor(np.concatenate([[new], new * own_mean]), dtype=torch.float64, device=device)
    dist.all_reduce(sums)
    total = sums[0].item()
    total_mean = sums[1:].cpu().numpy() / total
    m2_terms = torch.as_tensor(own_m2 + new * (own_mean - total_mean) ** 2, dtype=torch.float64, device=device)
    dist.all_reduce(m2_terms)
    merged = merge_moments(base, (total, total_mean, m2_terms.cpu().numpy()))
    rms.count = merged[0]
    rms.mean = merged[1].reshape(np.shape(rms.mean))
    rms.var = (merged[2] / merged[0]).reshape(np.shape(rms.mean))
    return merged


def running_stats(envs: gym.vector.VectorEnv) -> list:
    """The running statistics the normalization wrappers keep (observations, returns), where on."""
    stats = []
    obs_norm = find_wrapper(envs, gym.wrappers.vector.NormalizeObservation)
    if obs_norm is not None:
        stats.append(obs_norm.obs_rms)
    reward_norm = find_wrapper(envs, gym.wrappers.vector.NormalizeReward)
    if reward_norm is not None:
        stats.append(reward_norm.return_rms)
    return stats


def moments(rms) -> tuple:
    """(count, mean, M2) of a RunningMeanStd, copied: the base sync_running_stats starts from."""
    return rms.count, np.atleast_1d(rms.mean).copy(), np.atleast_1d(rms.var * rms.count).copy()


def pool_episodes(episode_log: EpisodeLog, world_size: int) -> int:
    """Every rank's pending finished episodes into every rank's log (rank 0's writes them to
    TensorBoard); returns how many were this rank's own."""
    own = len(episode_log.pending)
    gathered = [None] * world_size
    dist.all_gather_object(gathered, episode_log.pending)
    episode_log.pending = []
    episode_log.add(sorted(episode for part in gathered for episode in part))
    return own


def error_prefix(rank: int, world_size: int) -> str:
    """The start of an error line: the script, and under torchrun the rank it comes from."""
    return f"{os.path.basename(__file__)}: error: " + (f"rank {rank}: " if world_size > 1 else "")


def save_model(path: str, agent: Agent, envs: gym.vector.VectorEnv, args: Args) -> None:
    """Weights plus the observation-normalization statistics: everything needed to act."""
    obs_norm = find_wrapper(envs, gym.wrappers.vector.NormalizeObservation)
    obs_rms = None
    if obs_norm is not None:
        obs_rms = {
            "mean": torch.as_tensor(obs_norm.obs_rms.mean),
            "var": torch.as_tensor(obs_norm.obs_rms.var),
            "count": float(obs_norm.obs_rms.count),
        }
    checkpoint = {"algorithm": ALGORITHM, "model": agent.state_dict(), "obs_rms": obs_rms}
    torch.save({**checkpoint, "args": dataclasses.asdict(args)}, path)


def restore_obs_normalization(envs: gym.vector.VectorEnv, obs_rms: dict | None) -> None:
    """Load saved observation statistics into envs and freeze them (evaluation must not drift)."""
    obs_norm = find_wrapper(envs, gym.wrappers.vector.NormalizeObservation)
    if obs_norm is None or obs_rms is None:
        return
    obs_norm.update_running_mean = False
    obs_norm.obs_rms.mean = obs_rms["mean"].numpy().copy()
    obs_norm.obs_rms.var = obs_rms["var"].numpy().copy()
    obs_norm.obs_rms.count = obs_rms["count"]


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
    """Play `eval_episodes` episodes with the saved model's deterministic action (argmax or
    Gaussian mean) on one fresh env with the saved normalization statistics, frozen; with a
    video_name, record them into videos/{video_name}."""
    checkpoint, train_args = load_model_file(model_path, device)
    eval_args = dataclasses.replace(
        train_args, num_envs=1, async_envs=False, capture_video=bool(video_name), render=render, norm_reward=False
    )
    envs = make_vector_env(eval_args, video_name)
    restore_obs_normalization(envs, checkpoint["obs_rms"])
    agent = Agent(envs.single_observation_space.shape[0], envs.single_action_space).to(device)
    try:
        agent.load_state_dict(checkpoint["model"])
    except RuntimeError as error:  # weights of another shape: saved from another env or network
        usage_error(f"--eval-model {model_path}: its weights do not fit {train_args.env_id} ({error})".splitlines()[0])
    agent.eval()
    episode_log = EpisodeLog(writer=None)
    obs, _ = envs.reset(seed=seed)
    while len(episode_log.all_returns) < eval_episodes:
        with torch.no_grad():
            action = agent.act(torch.as_tensor(obs, dtype=torch.float32, device=device), deterministic=True)
        action = action.cpu().numpy()
        if not agent.is_discrete:
            action = np.clip(action, envs.single_action_space.low, envs.single_action_space.high)
        obs, _, _, _, infos = envs.step(action)
        episode_log.record(infos, 0)
    envs.close()
    return episode_log.all_returns[:eval_episodes]


def watch(args: Args) -> dict:
    """--eval-model: play a saved model instead of training, and print its mean return."""
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
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


class CtrlC:
    """Ctrl-C as a request to stop: the first one only sets `pressed`, and the training loop stops
    where it next checks, with no TensorBoard write or optimizer step half done (a KeyboardInterrupt
    raised inside a write can queue an event without waking the writer's thread, and closing the
    writer then stalls for up to its two-minute flush interval). A second Ctrl-C interrupts at once,
    except under torchrun (patient=True), whose agent passes the terminal's Ctrl-C on to every rank
    a second time; there the agent's own kill after 30 s is the hard stop.
    Signal handlers can only be set from the main thread; elsewhere this does nothing."""

    def __init__(self, patient: bool = False):
        self.pressed = False
        self.patient = patient
        self.active = threading.current_thread() is threading.main_thread()
        if self.active:
            self.previous = signal.signal(signal.SIGINT, self.press)

    def press(self, signum, frame) -> None:
        self.pressed = True
        if not self.patient:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def restore(self) -> None:
        if self.active:
            signal.signal(signal.SIGINT, self.previous or signal.default_int_handler)


def main(args: Args) -> dict:
    check_args(args)
    if args.eval_model:
        return watch(args)
    args = resolve_defaults(args)
    # Under torchrun: one rank per process, each with its own envs; rank 0 alone logs and saves.
    rank, world_size, device = init_distributed(args)
    lead = rank == 0
    batch_size = args.num_envs * args.num_steps
    num_iterations = max(1, args.total_timesteps // (batch_size * world_size))
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"

    # Each rank samples its own actions and minibatches (seed + rank); env i of rank r is reset
    # with seed + r * num_envs + i, so no two envs of a run share a seed.
    random.seed(args.seed + rank)
    np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed + rank)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    # One thread is faster than several for 64-unit MLPs, and leaves a core for the envs.
    torch.set_num_threads(1)

    tracker = start_tracking(args, run_name) if args.track and lead else None
    writer = SummaryWriter(f"runs/{run_name}") if lead else None
    if lead:
        writer.add_text(
            "hyperparameters",
            "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in dataclasses.asdict(args).items()),
        )
    envs = make_vector_env(args, run_name if lead else "")
    envs.action_space.seed(args.seed + rank)
    agent = Agent(envs.single_observation_space.shape[0], envs.single_action_space, args.init_action_std).to(device)
    if distributed():  # every rank starts from rank 0's weights
        for parameter in agent.parameters():
            dist.broadcast(parameter.data, src=0)
    # fused: one kernel for all parameters (~20% cheaper per step here than the per-tensor loop)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    obs_shape, action_shape = envs.single_observation_space.shape, envs.single_action_space.shape
    rollout = Rollout.empty(args.num_steps, args.num_envs, obs_shape, action_shape)
    episode_log = EpisodeLog(writer, defer=distributed())
    stats_bases = [moments(rms) for rms in running_stats(envs)]  # the same on every rank at the start
    local_episodes = 0
    model_path = f"runs/{run_name}/{args.exp_name}.pt"

    global_step = 0
    start_time = time.time()
    progress_every = max(1, num_iterations // 20)
    next_obs, _ = envs.reset(seed=args.seed + rank * args.num_envs)  # env i gets seed + rank * num_envs + i
    next_done = np.zeros(args.num_envs, dtype=bool)
    exit_code = 0
    ctrl_c = CtrlC(patient=distributed())
    try:
        for iteration in range(1, num_iterations + 1):
            # Under torchrun the ranks stop together: one that stopped alone would leave the others
            # waiting in the next all-reduce.
            if any_rank(ctrl_c.pressed, device) if distributed() else ctrl_c.pressed:
                raise KeyboardInterrupt  # handled below, at a point where nothing is half done
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1.0) / num_iterations)
            next_obs, next_done, global_step = collect_rollout(
                agent, envs, rollout, next_obs, next_done, episode_log, global_step, device, world_size
            )
            if distributed():
                # Every rank's finished episodes reach every rank's log (rank 0 writes them), and the
                # normalization statistics become those of all ranks' data.
                local_episodes += pool_episodes(episode_log, world_size)
                stats = zip(running_stats(envs), stats_bases, strict=True)
                stats_bases = [sync_running_stats(rms, base, device) for rms, base in stats]
            losses = ppo_update(agent, optimizer, rollout, args, device, global_step)

            sps = int(global_step / (time.time() - start_time))
            if lead:
                writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
                writer.add_scalar("charts/SPS", sps, global_step)
                for name, value in losses.items():
                    writer.add_scalar(f"losses/{name}", value, global_step)
            if lead and (iteration % progress_every == 0 or iteration == num_iterations):
                print(
                    f"global_step={global_step:>8d} ({100 * global_step / args.total_timesteps:3.0f}%)  "
                    f"mean_return(last {episode_log.recent_returns.maxlen})={episode_log.recent_mean():9.2f}  SPS={sps}"
                )
    except KeyboardInterrupt:
        if lead:
            print(f"interrupted at global_step={global_step}; closing cleanly", file=sys.stderr)
        exit_code = 130
    except NonFiniteLossError as error:
        print(f"{error_prefix(rank, world_size)}{error}", file=sys.stderr)
        exit_code = 1
    except (EOFError, BrokenPipeError, ConnectionResetError):  # a subprocess env's pipe broke
        dead = stop_after_env_worker_death(envs)
        print(f"{error_prefix(rank, world_size)}{dead} died at global step {global_step}", file=sys.stderr)
        exit_code = 1
    except RuntimeError as error:  # under torchrun, a collective fails when another rank died or hangs
        if not (distributed() and lost_contact(error)):
            raise
        first_line = str(error).strip().splitlines()[0]
        print(f"{error_prefix(rank, world_size)}lost the other ranks at global step {global_step}: {first_line}",
              file=sys.stderr)  # fmt: skip
        exit_code = 1
    finally:
        ctrl_c.restore()  # Ctrl-C is back to its usual meaning
        if args.save_model and exit_code != 1 and lead:
            save_model(model_path, agent, envs, args)
            print(f"model saved to {model_path}")
        envs.close()

    if distributed() and exit_code != 1:
        # Training is over on every rank: they close their connections together, before rank 0
        # alone evaluates and closes TensorBoard (no rank leaves while another still uses them).
        dist.barrier()
        dist.destroy_process_group()
    eval_returns = []
    if args.save_model and exit_code == 0 and lead:
        eval_returns = evaluate(model_path, args.eval_episodes, args.seed + 10_000, device)
        for episode, episodic_return in enumerate(eval_returns):
            writer.add_scalar("eval/episodic_return", episodic_return, episode)
        print(f"eval: mean return {np.mean(eval_returns):.2f} over {len(eval_returns)} episodes")
    if lead:
        writer.close()
        window = episode_log.recent_returns.maxlen
        print(f"final mean_return(last {window})={episode_log.recent_mean():.2f}  run: runs/{run_name}")
    if tracker is not None:
        finish_tracking(tracker, run_name, exit_code)
    if exit_code:
        sys.exit(exit_code)
    return {
        "run_name": run_name,
        "episodic_returns": episode_log.all_returns,
        "eval_returns": eval_returns,
        "model_path": model_path if args.save_model else None,
        "local_episodes": local_episodes if world_size > 1 else len(episode_log.all_returns),
        "parameters": nn.utils.parameters_to_vector(agent.parameters()).detach().cpu(),
    }


if __name__ == "__main__":
    main(tyro.cli(Args))
