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
n-step return above). RMSprop as in OpenAI Baselines (alpha 0.99, eps 1e-5). The current
policy is evaluated every `eval_frequency` steps on a separate test env.

    python a2c.py                          # CartPole-v1
    python a2c.py --env-id InvertedPendulum-v5 --save-model
    torchrun --standalone --nproc-per-node 2 a2c.py

Under torchrun every rank steps its own `num_envs` envs and the ranks average their gradients
before every RMSprop step: the synchronous update of all ranks' envs, as if one process held
them all, so `--total-timesteps` counts the env steps of all ranks.
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
    eval_frequency: int = 25_000
    """evaluate the current policy on a separate test env every this many env steps (0: never)"""
    eval_episodes: int = 10
    """episodes per evaluation (deterministic actions), periodic and final"""
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
    """if toggled, run each env in a subprocess driven through a pipe (AsyncVectorEnv), as the
    paper's workers do; off by default because for cheap envs the pipe round trip costs more than
    the env step (measured here, CartPole-v1 with 8 envs: 25.6k vs 12.2k steps/s, see docs/a2c.md)"""
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
    collective_timeout: float = 120.0
    """under torchrun: seconds a rank waits for the others in a collective before it stops with an error"""


def usage_error(message: str) -> None:
    """A user mistake: one line on stderr, exit status 2, no traceback."""
    print(f"{os.path.basename(__file__)}: error: {message}", file=sys.stderr)
    sys.exit(2)


def check_args(args: Args) -> None:
    """Reject impossible values before any env is made."""
    positive = [
        "total_timesteps",
        "num_envs",
        "num_steps",
        "eval_episodes",
        "learning_rate",
        "max_grad_norm",
        "rms_eps",
        "init_action_std",
    ]
    for name in positive:
        value = getattr(args, name)
        if value is not None and not value > 0:
            usage_error(f"--{name.replace('_', '-')} must be > 0, got {value}")
    for name in ["gamma", "gae_lambda", "rms_alpha"]:
        value = getattr(args, name)
        if value is not None and not 0 <= value <= 1:
            usage_error(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
    for name in ["ent_coef", "vf_coef", "eval_frequency"]:
        if not getattr(args, name) >= 0:
            usage_error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.env_id not in gym.registry:
        usage_error(f"--env-id {args.env_id!r} is not a registered gymnasium environment")
    if args.capture_video and importlib.util.find_spec("moviepy") is None:
        usage_error("--capture-video needs moviepy: pip install -e '.[video]'")
    if args.render and (not args.eval_model or args.capture_video):
        usage_error("--render shows an --eval-model run in a window, without --capture-video")
    if args.track and importlib.util.find_spec("wandb") is None:
        usage_error("--track needs wandb: pip install -e '.[track]'")


ALGORITHM = "a2c"  # stored in saved models: --eval-model refuses another script's file
# The defaults that depend on the action space (None in Args; the rules are in their docstrings).
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


def resolve_defaults(args: Args) -> Args:
    """Check the env's spaces on one probe env and fill the defaults that depend on the action space."""
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
            "a2c.py supports a 1-D Box observation space with a Discrete or 1-D Box action space"
        )
    kind = "discrete" if discrete else "continuous"
    missing = {k: v for k, v in KIND_DEFAULTS[kind].items() if getattr(args, k) is None}
    if args.learning_rate is None:
        missing["learning_rate"] = default_learning_rate(action_space)
    return dataclasses.replace(args, **missing)


def make_env(env_id: str, idx: int, capture_video: bool, run_name: str, render: bool = False):
    def thunk():
        if render and idx == 0:
            env = gym.make(env_id, render_mode="human")
        elif capture_video and idx == 0:
            env = gym.make(env_id, render_mode="rgb_array")
            env = gym.wrappers.RecordVideo(env, f"videos/{run_name}")
        else:
            env = gym.make(env_id)
        return env

    return thunk


def make_vector_env(args: Args, run_name: str = "") -> gym.vector.VectorEnv:
    """Vectorized envs with episode statistics and optional normalization.

    Autoreset mode is NEXT_STEP (gymnasium's default, and the only one its vector
    normalization wrappers accept): when env i ends at step t, the observation returned at
    t is the real final observation, and step t+1 of env i only resets it (action ignored,
    reward 0). Such reset steps are masked out of the loss.
    """
    thunks = [make_env(args.env_id, i, args.capture_video, run_name, args.render) for i in range(args.num_envs)]
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


def get_obs_rms(envs: gym.vector.VectorEnv) -> dict | None:
    """The observation-normalization statistics of envs (None without normalization)."""
    obs_norm = find_wrapper(envs, gym.wrappers.vector.NormalizeObservation)
    if obs_norm is None:
        return None
    rms = obs_norm.obs_rms
    return {"mean": torch.as_tensor(rms.mean), "var": torch.as_tensor(rms.var), "count": float(rms.count)}


def set_obs_rms(envs: gym.vector.VectorEnv, obs_rms: dict | None) -> None:
    """Copy observation statistics into envs and freeze them (evaluation must not drift)."""
    obs_norm = find_wrapper(envs, gym.wrappers.vector.NormalizeObservation)
    if obs_norm is None or obs_rms is None:
        return
    obs_norm.update_running_mean = False
    obs_norm.obs_rms.mean = obs_rms["mean"].numpy().copy()
    obs_norm.obs_rms.var = obs_rms["var"].numpy().copy()
    obs_norm.obs_rms.count = obs_rms["count"]


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
            # Gumbel-max trick: argmax(logits + Gumbel noise) ~ Categorical(logits), cheaper than
            # torch.distributions for the small batches of acting.
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


def n_step_returns(
    rewards: np.ndarray, next_values: np.ndarray, terminations: np.ndarray, dones: np.ndarray, gamma: float
) -> np.ndarray:
    """Bootstrapped n-step returns over a (num_steps, num_envs) rollout.

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


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminations: np.ndarray,
    dones: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> np.ndarray:
    """Generalized Advantage Estimation over a (num_steps, num_envs) rollout; returns A_t.

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


def a2c_loss(
    log_probs: torch.Tensor,
    entropy: torch.Tensor,
    values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    vf_coef: float,
    ent_coef: float,
    norm_adv: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """actor + vf_coef * critic - ent_coef * entropy, each a mean over the trainable rows (mask).

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


def play_episodes(agent: Agent, envs: gym.vector.VectorEnv, episodes: int, seed: int, device: torch.device):
    """Returns of `episodes` episodes on one env with the deterministic action (argmax / mean)."""
    episode_log = EpisodeLog(writer=None)
    obs, _ = envs.reset(seed=seed)
    while len(episode_log.all_returns) < episodes:
        with torch.no_grad():
            action = agent.act(torch.as_tensor(obs, dtype=torch.float32, device=device), deterministic=True)
        action = action.cpu().numpy()
        if not agent.is_discrete:
            action = np.clip(action, envs.single_action_space.low, envs.single_action_space.high)
        obs, _, _, _, infos = envs.step(action)
        episode_log.record(infos, 0)
    return episode_log.all_returns[:episodes]


def eval_env_args(args: Args) -> Args:
    """One in-process env with raw rewards, for evaluation."""
    return dataclasses.replace(args, num_envs=1, async_envs=False, capture_video=False, norm_reward=False)


def distributed() -> bool:
    """True under torchrun (after init_distributed), False for a plain `python a2c.py`."""
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
    checkpoint = {"algorithm": ALGORITHM, "model": agent.state_dict(), "obs_rms": get_obs_rms(envs)}
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
    """Play the saved model deterministically on a fresh env with its saved, frozen obs statistics;
    with a video_name, record the episodes into videos/{video_name}."""
    checkpoint, train_args = load_model_file(model_path, device)
    eval_args = dataclasses.replace(eval_env_args(train_args), capture_video=bool(video_name), render=render)
    envs = make_vector_env(eval_args, video_name)
    set_obs_rms(envs, checkpoint["obs_rms"])
    agent = Agent(envs.single_observation_space.shape[0], envs.single_action_space).to(device)
    try:
        agent.load_state_dict(checkpoint["model"])
    except RuntimeError as error:  # weights of another shape: saved from another env or network
        usage_error(f"--eval-model {model_path}: its weights do not fit {train_args.env_id} ({error})".splitlines()[0])
    returns = play_episodes(agent, envs, eval_episodes, seed, device)
    envs.close()
    return returns


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


class NonFiniteLossError(RuntimeError):
    pass


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
    # Under torchrun: one rank per process, each with its own envs; rank 0 alone logs, evaluates and saves.
    rank, world_size, device = init_distributed(args)
    lead = rank == 0
    batch_size = args.num_envs * args.num_steps
    num_iterations = max(1, args.total_timesteps // (batch_size * world_size))
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"

    # Each rank samples its own actions (seed + rank); env i of rank r is reset with
    # seed + r * num_envs + i, so no two envs of a run share a seed.
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
    eval_envs = make_vector_env(eval_env_args(args)) if args.eval_frequency and lead else None
    action_space = envs.single_action_space
    agent = Agent(envs.single_observation_space.shape[0], action_space, args.init_action_std).to(device)
    if distributed():  # every rank starts from rank 0's weights
        for parameter in agent.parameters():
            dist.broadcast(parameter.data, src=0)
    optimizer = torch.optim.RMSprop(agent.parameters(), lr=args.learning_rate, alpha=args.rms_alpha, eps=args.rms_eps)
    episode_log = EpisodeLog(writer, defer=distributed())
    stats_bases = [moments(rms) for rms in running_stats(envs)]  # the same on every rank at the start
    local_episodes = 0
    model_path = f"runs/{run_name}/{args.exp_name}.pt"

    # Rollout storage, (num_steps [+ 1], num_envs, ...): row num_steps of obs is s_T, for V(s_T).
    obs = np.zeros((args.num_steps + 1, args.num_envs, *envs.single_observation_space.shape), np.float32)
    actions = np.zeros((args.num_steps, args.num_envs, *action_space.shape), np.float32)
    rewards, terminations, dones = (np.zeros((args.num_steps, args.num_envs), np.float32) for _ in range(3))
    trainable = np.zeros((args.num_steps, args.num_envs), np.float32)  # 0 on NEXT_STEP reset steps

    global_step, next_eval, eval_seconds = 0, args.eval_frequency, 0.0
    loss_sums: dict[str, float] = {}
    log_every = max(1, min(100, num_iterations // 100))  # updates per logged loss mean
    progress_every = max(1, num_iterations // 20)
    start_time = time.time()
    next_obs, _ = envs.reset(seed=args.seed + rank * args.num_envs)  # env i gets seed + rank * num_envs + i
    next_done = np.zeros(args.num_envs, dtype=bool)
    exit_code = 0
    ctrl_c = CtrlC(patient=distributed())
    try:
        for iteration in range(1, num_iterations + 1):
            # Under torchrun the ranks check Ctrl-C and pool their finished episodes together, once
            # per block of log_every updates (an update here is only 40 env steps per rank: a
            # collective each time would cost more than the work).
            if not distributed():
                stop = ctrl_c.pressed
            elif (iteration - 1) % log_every == 0:
                stop = any_rank(ctrl_c.pressed, device)
                local_episodes += pool_episodes(episode_log, world_size)
            else:
                stop = False
            if stop:
                raise KeyboardInterrupt  # handled below, at a point where nothing is half done
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1.0) / num_iterations)
            for step in range(args.num_steps):
                global_step += args.num_envs * world_size  # the env steps of all ranks, in lockstep
                obs[step] = next_obs
                trainable[step] = ~next_done  # NEXT_STEP autoreset: after a done, this step only resets
                with torch.no_grad():
                    action = agent.act(torch.as_tensor(next_obs, dtype=torch.float32, device=device)).cpu().numpy()
                actions[step] = action
                if not agent.is_discrete:
                    # The env gets the clipped action; learning uses the log-prob of the sampled one.
                    action = np.clip(action, action_space.low, action_space.high)
                next_obs, reward, terminated, truncated, infos = envs.step(action)
                next_done = terminated | truncated
                rewards[step], terminations[step], dones[step] = reward, terminated, next_done
                episode_log.record(infos, global_step)
            obs[args.num_steps] = next_obs
            if distributed():  # every rank normalizes the next rollout with all ranks' statistics
                stats = zip(running_stats(envs), stats_bases, strict=True)
                stats_bases = [sync_running_stats(rms, base, device) for rms, base in stats]

            # One batched pass over the rollout: V(s_0..s_T) and log pi(a_t|s_t), with gradients.
            all_obs = torch.as_tensor(obs, device=device)
            all_values = agent.get_value(all_obs.flatten(0, 1)).view(args.num_steps + 1, args.num_envs)
            values = all_values[:-1]
            log_probs, entropy = agent.log_prob_and_entropy(
                all_obs[:-1].flatten(0, 1), torch.as_tensor(actions, device=device).flatten(0, 1)
            )
            # Row t + 1 holds the observation step t returned (the real final one after a done).
            next_values = all_values[1:].detach().cpu().numpy()
            if args.gae_lambda == 1.0:
                returns = n_step_returns(rewards, next_values, terminations, dones, args.gamma)
            else:
                value_array = values.detach().cpu().numpy()
                advantages = compute_gae(
                    rewards, value_array, next_values, terminations, dones, args.gamma, args.gae_lambda
                )
                returns = advantages + value_array
            loss, stats = a2c_loss(
                log_probs,
                entropy,
                values.flatten(),
                torch.as_tensor(returns, device=device).flatten(),
                torch.as_tensor(trainable, device=device).flatten(),
                args.vf_coef,
                args.ent_coef,
                args.norm_adv,
            )
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"non-finite loss ({loss.item()}) at global step {global_step}")
            optimizer.zero_grad()
            loss.backward()
            if distributed():
                average_gradients(agent)
            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            optimizer.step()

            for name, value in stats.items():
                loss_sums[name] = loss_sums.get(name, 0.0) + value.item()
            # The end of the run is evaluated too: by the saved file with --save-model, else here.
            final_eval = iteration == num_iterations and not args.save_model
            if eval_envs is not None and (global_step >= next_eval or final_eval):
                eval_start = time.time()
                set_obs_rms(eval_envs, get_obs_rms(envs))
                for eval_return in play_episodes(agent, eval_envs, args.eval_episodes, args.seed + 10_000, device):
                    writer.add_scalar("eval/episodic_return", eval_return, global_step)
                next_eval += args.eval_frequency
                eval_seconds += time.time() - eval_start
            sps = int(global_step / (time.time() - start_time - eval_seconds))  # training steps/sec
            if lead and iteration % log_every == 0:
                for name, total in loss_sums.items():
                    writer.add_scalar(f"losses/{name}", total / log_every, global_step)
                loss_sums = {}
                writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
                writer.add_scalar("charts/SPS", sps, global_step)
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
        if eval_envs is not None:
            eval_envs.close()

    if distributed() and exit_code == 0:  # the episodes since the last pooling
        local_episodes += pool_episodes(episode_log, world_size)
    if distributed() and exit_code != 1:
        # Training is over on every rank: they close their connections together, before rank 0
        # alone evaluates and closes TensorBoard (no rank leaves while another still uses them).
        dist.barrier()
        dist.destroy_process_group()
    eval_returns = []
    if args.save_model and exit_code == 0 and lead:
        eval_returns = evaluate(model_path, args.eval_episodes, args.seed + 10_000, device)
        for eval_return in eval_returns:
            writer.add_scalar("eval/episodic_return", eval_return, global_step)
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
