"""Recurrent PPO: PPO-clip with a GRU, for tasks where one observation is not enough.

Papers: Schulman et al. 2017, "Proximal Policy Optimization Algorithms",
https://arxiv.org/abs/1707.06347; Cho et al. 2014 (the GRU), https://arxiv.org/abs/1406.1078.

The policy carries a hidden state h from step to step, so it can infer what the observation
hides (with --mask-velocity, CartPole's velocities). Three things make recurrent PPO correct:

    acting:   h_t = GRU(encoder(o_t), h_{t-1} * (1 - start_t))   start_t = 1 on an episode's first step
    storage:  the hidden state of every env at the start of the rollout, plus the start flags
    update:   minibatches are whole envs (never single steps); each replays its envs' sequences
              from the stored start state, resetting h at the same steps as during the rollout,
              so pi(a_t|o_<=t) and V(o_<=t) are recomputed exactly before any gradient step

Everything else is ppo.py: GAE with truncation bootstrapping, the clipped surrogate
-mean(min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)), optional value clipping, entropy
bonus, gradient clipping, learning-rate annealing, and normalization for Box envs.

The actor and the critic share the encoder and the GRU (each has its own head): both need the
same memory (an estimate of the hidden velocities), and one recurrent pass instead of two
halves the sequential work of acting and of every replay.

    python ppo_gru.py --env-id CartPole-v1 --mask-velocity
    python ppo_gru.py --env-id Pendulum-v1 --mask-velocity --save-model
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

import gymnasium as gym
import numpy as np
import torch
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
    """if toggled, zero the velocity entries of the observation (a partially observable task);
    supported for the envs listed in VELOCITY_INDICES"""
    total_timesteps: int = 150_000
    """total env steps of the run"""
    learning_rate: float | None = None
    """Adam learning rate [None: 1e-3 for Discrete actions; for Box actions 1e-3 * sqrt(100k /
    total_timesteps) kept within [3e-4, 1e-3], so short runs take large steps and long runs small
    ones: 8.2e-4 at the default 150k, 3.2e-4 at 1M]"""
    hidden_size: int = 64
    """size of the encoder and of the GRU's hidden state"""
    num_envs: int | None = None
    """number of parallel envs [None: 16 for Discrete, 8 for Box actions]"""
    num_steps: int | None = None
    """steps per env in each rollout, the length of the replayed sequences [None: 16 for Discrete,
    128 for Box actions]. The GRU's backward pass costs about the same per time step whatever the
    batch, so 16 envs x 16 steps updates ~1.4x faster than 8 x 32 for the same batch of 256"""
    anneal_lr: bool = True
    """if toggled, the learning rate decays linearly to 0 over the run"""
    gamma: float | None = None
    """discount factor [None: 0.98 for Discrete, 0.99 for Box actions]"""
    gae_lambda: float | None = None
    """GAE lambda [None: 0.8 for Discrete, 0.95 for Box actions]"""
    num_minibatches: int | None = None
    """minibatches per epoch, each a group of whole envs; must divide num_envs [None: 1 for
    Discrete, 4 for Box actions]"""
    update_epochs: int | None = None
    """passes over each rollout [None: 12 for Discrete, 10 for Box actions]; on masked CartPole-v1, 12
    ended 6 of 6 seeds at 500 (10: 3 of 4) and the update is most of the run time"""
    norm_adv: bool = True
    """if toggled, normalize advantages within each minibatch"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient epsilon"""
    clip_vloss: bool = False
    """if toggled, clip the value loss around the old values, as the PPO code release does"""
    ent_coef: float = 0.0
    """entropy bonus coefficient"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """the maximum global norm of the gradients"""
    target_kl: float | None = None
    """if set, stop the epochs of an update early once the approximate KL exceeds it"""
    norm_obs: bool | None = None
    """normalize observations with running statistics [None: on; on masked CartPole-v1 it made 6 of
    6 seeds end at 500, where without it 3 of 5 ended at or above 475]"""
    norm_reward: bool | None = None
    """scale rewards by the running std of the discounted return [None: off for Discrete, on for Box]"""
    init_action_std: float = 0.5
    """Box actions: the initial std of the Gaussian policy, as a fraction of each action dimension's
    half-range (high - low) / 2 (of 1 where a bound is infinite); as in ppo.py"""


# Defaults that depend on the action-space kind; a flag given on the command line always wins.
# fmt: off
KIND_DEFAULTS = {
    "discrete": dict(num_envs=16, num_steps=16, gamma=0.98, gae_lambda=0.8, num_minibatches=1, update_epochs=12,
                     norm_obs=True, norm_reward=False),
    "continuous": dict(num_envs=8, num_steps=128, gamma=0.99, gae_lambda=0.95, num_minibatches=4, update_epochs=10,
                       norm_obs=True, norm_reward=True),
}
# fmt: on

# The observation entries --mask-velocity hides, per env.
ALGORITHM = "ppo_gru"  # stored in saved models: --eval-model refuses another script's file
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
    """1e-3 * sqrt(100k / total_timesteps), kept within [3e-4, 1e-3]: a short run needs large steps to
    learn at all, a long one makes many more updates and stays stable only with smaller ones (the
    rule ppo.py's benchmark chose, from Pendulum at 100k steps to MuJoCo at 1M; Box actions only,
    as there)."""
    return min(1e-3, max(3e-4, 1e-3 * (100_000 / total_timesteps) ** 0.5))


def check_args(args: Args) -> None:
    """Reject impossible values (None means 'use the default rule')."""
    positive_ints = ["total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs", "eval_episodes"]
    positive = positive_ints + ["hidden_size", "learning_rate", "clip_coef", "max_grad_norm", "target_kl"]
    for name in positive:
        value = getattr(args, name)
        if value is not None and not value > 0:
            usage_error(f"--{name.replace('_', '-')} must be > 0, got {value}")
    for name in ["gamma", "gae_lambda"]:
        value = getattr(args, name)
        if value is not None and not 0 <= value <= 1:
            usage_error(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
    for name in ["ent_coef", "vf_coef"]:
        if not getattr(args, name) >= 0:
            usage_error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
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
            "ppo_gru.py supports a 1-D Box observation space with a Discrete or 1-D Box action space"
        )
    missing = {k: v for k, v in KIND_DEFAULTS[kind].items() if getattr(args, k) is None}
    if args.learning_rate is None:
        missing["learning_rate"] = 1e-3 if kind == "discrete" else default_learning_rate(args.total_timesteps)
    args = dataclasses.replace(args, **missing)
    if args.num_envs % args.num_minibatches:
        usage_error(
            f"--num-minibatches {args.num_minibatches} does not divide --num-envs {args.num_envs}: "
            "a recurrent minibatch holds whole env sequences, never single steps"
        )
    return args


class MaskVelocity(gym.ObservationWrapper):
    """Zero the observation entries at `indices`, making the task partially observable."""

    def __init__(self, env: gym.Env, indices: list[int]):
        super().__init__(env)
        self.mask = np.ones(env.observation_space.shape, dtype=np.float32)
        self.mask[indices] = 0.0

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return (observation * self.mask).astype(np.float32)


def make_env(env_id: str, idx: int, capture_video: bool, run_name: str, mask_velocity: bool, render=False):
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
    reward 0) and returns the new episode's first observation. So the row after a done is a
    reset step (never trained on), and the row after that starts an episode (h is reset).
    """
    thunks = [
        make_env(args.env_id, i, args.capture_video, run_name, args.mask_velocity, args.render)
        for i in range(args.num_envs)
    ]
    envs = gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
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


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class RecurrentAgent(nn.Module):
    """encoder (Linear + tanh) -> GRU -> actor head and critic head (Linear-tanh-Linear each).

    Discrete: the actor head outputs Categorical logits. Box: it outputs the mean of a diagonal
    Normal whose log-std is a learned, state-independent parameter, initialised to
    log(init_action_std * half-range) per action dimension.
    """

    def __init__(self, obs_dim: int, action_space: gym.Space, hidden_size: int = 64, init_action_std: float = 0.5):
        super().__init__()
        self.is_discrete = isinstance(action_space, gym.spaces.Discrete)
        action_dim = int(action_space.n) if self.is_discrete else int(np.prod(action_space.shape))
        self.hidden_size = hidden_size
        self.encoder = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden_size)), nn.Tanh())
        self.gru = nn.GRU(hidden_size, hidden_size)
        for name, param in self.gru.named_parameters():
            if "weight" in name:
                nn.init.orthogonal_(param, 1.0)
            else:
                nn.init.constant_(param, 0.0)

        def head(out_dim: int, out_std: float) -> nn.Sequential:
            return nn.Sequential(
                layer_init(nn.Linear(hidden_size, 64)), nn.Tanh(), layer_init(nn.Linear(64, out_dim), std=out_std)
            )

        self.critic = head(1, out_std=1.0)
        # A small last layer makes the initial policy near-uniform / near-zero mean.
        self.actor = head(action_dim, out_std=0.01)
        if not self.is_discrete:
            half_range = (action_space.high - action_space.low) / 2
            half_range = np.where(np.isfinite(half_range), half_range, 1.0).reshape(1, action_dim)
            self.actor_logstd = nn.Parameter(torch.as_tensor(np.log(init_action_std * half_range), dtype=torch.float32))

    def initial_state(self, num_envs: int, device: torch.device) -> torch.Tensor:
        return torch.zeros(1, num_envs, self.hidden_size, device=device)

    def unroll(
        self, obs: torch.Tensor, hidden: torch.Tensor, starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the GRU over (T, B, obs_dim) observations from `hidden` (1, B, H), zeroing an env's
        state before every step where starts (T, B) is 1. Returns ((T, B, H) features, last state).

            h_t = GRU(encoder(o_t), h_{t-1} * (1 - start_t))
        """
        features = self.encoder(obs)
        num_steps, num_envs = starts.shape
        if num_steps == 1:  # acting: one step of every env
            return self.gru(features, hidden * (1.0 - starts[0]).view(1, -1, 1))
        # nn.GRU cannot reset a state in mid-sequence, so each env's sequence is cut into its
        # episode pieces ("segments"), and all segments run as one zero-padded batch from their
        # own initial state: the first segment of an env continues `hidden` (zeroed if it starts
        # an episode), every later one starts an episode from zeros. One GRU call, however many
        # resets; padding only trails a segment, so it never touches its outputs.
        begins = starts.T.bool().clone()  # (B, T), env-major
        begins[:, 0] = True
        segment = torch.cumsum(begins.flatten().long(), 0) - 1  # the segment of each (env, t)
        steps = torch.arange(num_steps, device=obs.device).repeat(num_envs)
        position = steps - steps[begins.flatten()][segment]  # index of (env, t) within its segment
        padded = features.new_zeros(int(position.max()) + 1, int(segment[-1]) + 1, features.shape[-1])
        padded[position, segment] = features.transpose(0, 1).reshape(num_envs * num_steps, -1)
        initial = hidden.new_zeros(1, padded.shape[1], self.hidden_size)
        initial[0, segment.view(num_envs, num_steps)[:, 0]] = hidden[0] * (1.0 - starts[0]).unsqueeze(-1)
        output, _ = self.gru(padded, initial)
        outputs = output[position, segment].view(num_envs, num_steps, -1).transpose(0, 1)
        return outputs, outputs[-1:]  # one GRU layer: its output at the last step is the state

    def step(self, obs: np.ndarray, hidden: torch.Tensor, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of every env from numpy observations and episode-start flags, on the hidden
        state's device: ((B, H) features, new state)."""
        obs_row = torch.as_tensor(obs, dtype=torch.float32, device=hidden.device)[None]
        start_row = torch.as_tensor(starts, dtype=torch.float32, device=hidden.device)[None]
        features, hidden = self.unroll(obs_row, hidden, start_row)
        return features[0], hidden

    def act(self, features: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions from GRU features: sampled, or argmax / Gaussian mean if deterministic."""
        policy_out = self.actor(features)
        if self.is_discrete:
            if deterministic:
                return policy_out.argmax(-1)
            # Gumbel-max trick: argmax(logits + Gumbel noise) ~ Categorical(logits).
            return (policy_out - torch.log(-torch.log(torch.rand_like(policy_out)))).argmax(-1)
        if deterministic:
            return policy_out
        return policy_out + torch.randn_like(policy_out) * self.actor_logstd.exp()

    def evaluate_actions(self, features: torch.Tensor, action: torch.Tensor):
        """(log pi(action|.), entropy, V) from GRU features, differentiable."""
        policy_out = self.actor(features)
        value = self.critic(features).squeeze(-1)
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
        return log_prob, entropy, value


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
    final observation when the episode ended at t. terminations zero the bootstrap; dones
    (terminated or truncated) stop the recursion at episode boundaries.

        delta_t = r_t + gamma * next_values_t * (1 - terminated_t) - values_t
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}

    Returns (advantages, returns = advantages + values).
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
    """Clipped surrogate loss, -mean(min(ratio * A, clip(ratio, 1-eps, 1+eps) * A)), with the
    approximate KL mean((ratio - 1) - log ratio) and the clipped fraction."""
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    loss = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)).mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clipfrac = ((ratio - 1).abs() > clip_coef).float().mean()
    return loss, approx_kl, clipfrac


def ppo_value_loss(
    new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip_coef: float | None
) -> torch.Tensor:
    """0.5 * mean((V - R)^2); with clip_coef, the max of that and the error of V clipped to old_V +- clip_coef."""
    unclipped = (new_values - returns).pow(2)
    if clip_coef is None:
        return 0.5 * unclipped.mean()
    clipped_values = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
    return 0.5 * torch.max(unclipped, (clipped_values - returns).pow(2)).mean()


@dataclass
class Rollout:
    """num_steps x num_envs of experience, plus what the update needs to replay the GRU."""

    obs: np.ndarray
    actions: np.ndarray
    log_probs: np.ndarray
    values: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    dones: np.ndarray
    trainable: np.ndarray  # False on the reset step that follows an episode end
    starts: np.ndarray  # 1 where the observation is an episode's first: h is zeroed before it
    initial_hidden: torch.Tensor | None = None  # (1, num_envs, H): h before the rollout's first step
    last_value: np.ndarray | None = None  # V(observation after the last step), one per env

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
            starts=zeros(),
        )


class EpisodeLog:
    """Finished-episode statistics from RecordEpisodeStatistics, to TensorBoard and a window."""

    def __init__(self, writer: SummaryWriter | None, window: int = 10):
        self.writer = writer
        self.recent_returns = deque(maxlen=window)
        self.all_returns: list[float] = []

    def record(self, infos: dict, global_step: int) -> None:
        if "episode" not in infos:
            return
        for i in np.flatnonzero(infos["_episode"]):
            episodic_return = float(infos["episode"]["r"][i])
            self.recent_returns.append(episodic_return)
            self.all_returns.append(episodic_return)
            if self.writer is not None:
                self.writer.add_scalar("charts/episodic_return", episodic_return, global_step)
                self.writer.add_scalar("charts/episodic_length", int(infos["episode"]["l"][i]), global_step)

    def recent_mean(self) -> float:
        return float(np.mean(self.recent_returns)) if self.recent_returns else float("nan")


@dataclass
class EnvState:
    """What carries over from one rollout to the next, per env."""

    obs: np.ndarray
    hidden: torch.Tensor  # h after the last processed step
    done: np.ndarray  # the last step ended an episode: the next step is a reset step
    start: np.ndarray  # the next observation is an episode's first


def collect_rollout(
    agent: RecurrentAgent,
    envs: gym.vector.VectorEnv,
    rollout: Rollout,
    state: EnvState,
    episode_log: EpisodeLog,
    global_step: int,
) -> tuple[EnvState, int]:
    """Fill `rollout` by acting step by step, carrying h; store log-probs and values as acted."""
    action_space = envs.single_action_space
    rollout.initial_hidden = state.hidden.clone()
    hidden, next_obs, next_done, next_start = state.hidden, state.obs, state.done, state.start
    for step in range(rollout.obs.shape[0]):
        global_step += envs.num_envs
        rollout.obs[step] = next_obs
        rollout.trainable[step] = ~next_done
        rollout.starts[step] = next_start
        with torch.no_grad():
            features, hidden = agent.step(next_obs, hidden, next_start)
            action = agent.act(features)
            log_prob, _, value = agent.evaluate_actions(features, action)
        rollout.actions[step] = action.cpu().numpy()
        rollout.log_probs[step] = log_prob.cpu().numpy()
        rollout.values[step] = value.cpu().numpy()
        env_action = rollout.actions[step].astype(np.int64) if agent.is_discrete else rollout.actions[step]
        if not agent.is_discrete:
            # The env gets the clipped action; learning uses the log-prob of the sampled one.
            env_action = np.clip(env_action, action_space.low, action_space.high)
        next_obs, reward, terminated, truncated, infos = envs.step(env_action)
        # NEXT_STEP autoreset: a reset step returns the new episode's first observation.
        next_start = next_done.copy()
        next_done = terminated | truncated
        rollout.rewards[step] = reward
        rollout.terminations[step] = terminated
        rollout.dones[step] = next_done
        episode_log.record(infos, global_step)
    with torch.no_grad():
        # V of the observation after the last step, with h carried on (and zeroed if it starts an episode).
        features, _ = agent.step(next_obs, hidden, next_start)
        rollout.last_value = agent.critic(features).squeeze(-1).cpu().numpy()
    return EnvState(next_obs, hidden, next_done, next_start), global_step


class NonFiniteLossError(RuntimeError):
    pass


def replay(
    agent: RecurrentAgent, rollout: Rollout, env_ids: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log pi, entropy, V), each (num_steps, len(env_ids)), recomputed for the stored actions by
    replaying the envs' whole sequences from the rollout's start state with its resets."""
    obs = torch.as_tensor(rollout.obs, device=device)[:, env_ids]
    starts = torch.as_tensor(rollout.starts, device=device)[:, env_ids]
    features, _ = agent.unroll(obs, rollout.initial_hidden[:, env_ids], starts)
    return agent.evaluate_actions(features, torch.as_tensor(rollout.actions, device=device)[:, env_ids])


def ppo_update(
    agent: RecurrentAgent,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    args: Args,
    device: torch.device,
    global_step: int,
) -> dict[str, float]:
    """GAE on the rollout, then `update_epochs` epochs of clipped-PPO steps on minibatches of whole envs.

    Returns every logged loss as its mean over all minibatches and epochs of this update.
    """

    def as_tensor(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, device=device)

    # With NEXT_STEP autoreset the row after an episode end holds the real final observation
    # (and its value, computed with that episode's memory), so truncation bootstraps exactly.
    next_values = np.concatenate([rollout.values[1:], rollout.last_value[None]])
    advantages, returns = compute_gae(
        rollout.rewards, rollout.values, next_values, rollout.terminations, rollout.dones, args.gamma, args.gae_lambda
    )
    advantages, returns = as_tensor(advantages), as_tensor(returns)
    old_log_probs, old_values = as_tensor(rollout.log_probs), as_tensor(rollout.values)
    trainable = as_tensor(rollout.trainable)

    sums: dict[str, float] = {}
    num_minibatch_steps = 0
    stop_early = False
    for _epoch in range(args.update_epochs):
        for env_ids in torch.tensor_split(torch.randperm(args.num_envs, device=device), args.num_minibatches):
            new_log_prob, entropy, new_value = replay(agent, rollout, env_ids, device)
            keep = trainable[:, env_ids]  # every step of these envs but the reset steps
            mb_advantages = advantages[:, env_ids][keep]
            if args.norm_adv and len(mb_advantages) > 1:
                mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
            policy_loss, approx_kl, clipfrac = ppo_policy_loss(
                new_log_prob[keep], old_log_probs[:, env_ids][keep], mb_advantages, args.clip_coef
            )
            value_loss = ppo_value_loss(
                new_value[keep],
                old_values[:, env_ids][keep],
                returns[:, env_ids][keep],
                args.clip_coef if args.clip_vloss else None,
            )
            entropy_loss = entropy[keep].mean()
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
            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            optimizer.step()
            if args.target_kl is not None and stats["approx_kl"] > args.target_kl:
                stop_early = True
                break
        if stop_early:
            break

    if not all(torch.isfinite(p).all() for p in agent.parameters()):
        raise NonFiniteLossError(f"non-finite network parameters after the update at global step {global_step}")
    return {name: total / num_minibatch_steps for name, total in sums.items()}


def save_model(path: str, agent: RecurrentAgent, envs: gym.vector.VectorEnv, args: Args) -> None:
    """Weights plus the observation-normalization statistics: everything needed to act."""
    obs_norm = find_wrapper(envs, gym.wrappers.vector.NormalizeObservation)
    obs_rms = None
    if obs_norm is not None:
        rms = obs_norm.obs_rms
        obs_rms = {"mean": torch.as_tensor(rms.mean), "var": torch.as_tensor(rms.var), "count": float(rms.count)}
    checkpoint = {"algorithm": ALGORITHM, "model": agent.state_dict(), "obs_rms": obs_rms}
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
    """Play the saved model's deterministic action (argmax or mean) on one fresh env, carrying the
    hidden state and zeroing it at every episode start, with the saved, frozen obs statistics; with
    a video_name, record the episodes into videos/{video_name}."""
    checkpoint, train_args = load_model_file(model_path, device)
    eval_args = dataclasses.replace(
        train_args, num_envs=1, capture_video=bool(video_name), render=render, norm_reward=False
    )
    envs = make_vector_env(eval_args, video_name)
    obs_norm = find_wrapper(envs, gym.wrappers.vector.NormalizeObservation)
    if obs_norm is not None and checkpoint["obs_rms"] is not None:
        obs_norm.update_running_mean = False
        obs_norm.obs_rms.mean = checkpoint["obs_rms"]["mean"].numpy().copy()
        obs_norm.obs_rms.var = checkpoint["obs_rms"]["var"].numpy().copy()
        obs_norm.obs_rms.count = checkpoint["obs_rms"]["count"]
    agent = RecurrentAgent(envs.single_observation_space.shape[0], envs.single_action_space, train_args.hidden_size)
    try:
        agent.load_state_dict(checkpoint["model"])
    except RuntimeError as error:  # weights of another shape: saved from another env or network
        usage_error(f"--eval-model {model_path}: its weights do not fit {train_args.env_id} ({error})".splitlines()[0])
    agent.to(device)
    episode_log = EpisodeLog(writer=None)
    obs, _ = envs.reset(seed=seed)
    hidden, done, start = agent.initial_state(1, device), np.zeros(1, bool), np.ones(1, bool)
    while len(episode_log.all_returns) < eval_episodes:
        with torch.no_grad():
            features, hidden = agent.step(obs, hidden, start)
            action = agent.act(features, deterministic=True).cpu().numpy()
        if not agent.is_discrete:
            action = np.clip(action, envs.single_action_space.low, envs.single_action_space.high)
        obs, _, terminated, truncated, infos = envs.step(action)
        start, done = done, terminated | truncated  # NEXT_STEP: the step after a done returns a first obs
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
    check_args(args)
    if args.eval_model:
        return watch(args)
    args = resolve_defaults(args)
    batch_size = args.num_envs * args.num_steps
    num_iterations = max(1, args.total_timesteps // batch_size)
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    # One thread is faster than several for these small networks, and leaves a core for the envs.
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    tracker = start_tracking(args, run_name) if args.track else None
    writer = SummaryWriter(f"runs/{run_name}")
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in dataclasses.asdict(args).items()),
    )
    envs = make_vector_env(args, run_name)
    envs.action_space.seed(args.seed)
    agent = RecurrentAgent(
        envs.single_observation_space.shape[0], envs.single_action_space, args.hidden_size, args.init_action_std
    )
    agent.to(device)
    # fused: one kernel for all parameters (cheaper per step than the per-tensor loop)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    obs_shape, action_shape = envs.single_observation_space.shape, envs.single_action_space.shape
    rollout = Rollout.empty(args.num_steps, args.num_envs, obs_shape, action_shape)
    episode_log = EpisodeLog(writer)
    model_path = f"runs/{run_name}/{args.exp_name}.pt"

    global_step = 0
    start_time = time.time()
    progress_every = max(1, num_iterations // 20)
    first_obs, _ = envs.reset(seed=args.seed)  # env i gets seed + i
    state = EnvState(
        obs=first_obs,
        hidden=agent.initial_state(args.num_envs, device),
        done=np.zeros(args.num_envs, dtype=bool),
        start=np.ones(args.num_envs, dtype=bool),
    )
    exit_code = 0
    ctrl_c = CtrlC()
    try:
        for iteration in range(1, num_iterations + 1):
            if ctrl_c.pressed:
                raise KeyboardInterrupt  # handled below, at a point where nothing is half done
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1.0) / num_iterations)
            state, global_step = collect_rollout(agent, envs, rollout, state, episode_log, global_step)
            losses = ppo_update(agent, optimizer, rollout, args, device, global_step)

            sps = int(global_step / (time.time() - start_time))
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            for name, value in losses.items():
                writer.add_scalar(f"losses/{name}", value, global_step)
            if iteration % progress_every == 0 or iteration == num_iterations:
                print(
                    f"global_step={global_step:>8d} ({100 * global_step / args.total_timesteps:3.0f}%)  "
                    f"mean_return(last {episode_log.recent_returns.maxlen})={episode_log.recent_mean():9.2f}  SPS={sps}"
                )
    except KeyboardInterrupt:
        print(f"interrupted at global_step={global_step}; closing cleanly", file=sys.stderr)
        exit_code = 130
    except NonFiniteLossError as error:
        print(f"{os.path.basename(__file__)}: error: {error}", file=sys.stderr)
        exit_code = 1
    finally:
        ctrl_c.restore()  # Ctrl-C is back to its usual meaning
        if args.save_model and exit_code != 1:
            save_model(model_path, agent, envs, args)
            print(f"model saved to {model_path}")
        envs.close()

    eval_returns = []
    if args.save_model and exit_code == 0:
        eval_returns = evaluate(model_path, args.eval_episodes, args.seed + 10_000, device)
        for episode, episodic_return in enumerate(eval_returns):
            writer.add_scalar("eval/episodic_return", episodic_return, episode)
        print(f"eval: mean return {np.mean(eval_returns):.2f} over {len(eval_returns)} episodes")
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
    }


if __name__ == "__main__":
    main(tyro.cli(Args))
