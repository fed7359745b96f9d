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
all ranks' data, so `--total-timesteps` counts the env steps of all ranks. The helpers that do this
sit at the end of the file, below the algorithm, and do nothing in a plain `python ppo.py`.
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
from datetime import timedelta
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist  # already loaded by `import torch`: nothing new for a plain run
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


# Defaults that depend on the action-space kind, filled in by check_args once a probe env has shown
# the kind (the learning rate too: default_learning_rate); a flag given on the command line always wins.
KIND_DEFAULTS = {
    "discrete": dict(norm_obs=False, norm_reward=False, ent_coef=0.01),
    "continuous": dict(norm_obs=True, norm_reward=True, ent_coef=0.0),
}

# The observation entries --mask-velocity hides, per env.
VELOCITY_INDICES = {
    "CartPole-v1": [1, 3],  # cart velocity, pole angular velocity
    "Pendulum-v1": [2],  # angular velocity
    "MountainCar-v0": [1],
    "MountainCarContinuous-v0": [1],
    "LunarLander-v3": [2, 3, 5],  # x and y velocity, angular velocity
}


def default_learning_rate(total_timesteps: int) -> float:
    """1e-3 * sqrt(100k / total_timesteps), kept within [3e-4, 1e-3]: 1e-3 up to 100k steps, 3.2e-4
    at 1M. A short run needs large steps to learn at all (Pendulum-v1 at 100k: -153 with 1e-3, -460
    with 3e-4, means of seeds 1-3), while a long one makes ten times as many updates and stays stable only
    with smaller ones (HalfCheetah-v5 at 1M, seed 1: the 10-episode mean swung between 1.3k and 3.4k
    with 1e-3 and ended at 5.5k with 3e-4). Box actions only: Discrete policies keep 1e-3, since on
    LunarLander-v3 at 1M this rule's 3.2e-4 left seeds 1-2 at 51 and 158 where 1e-3 reached 209."""
    return min(1e-3, max(3e-4, 1e-3 * (100_000 / total_timesteps) ** 0.5))


def make_env(args: Args, idx: int, run_name: str):
    def thunk():
        # env 0 alone is shown (--render) or recorded (--capture-video)
        render_mode = "human" if args.render else "rgb_array" if args.capture_video else None
        env = gym.make(args.env_id, render_mode=render_mode if idx == 0 else None)
        if args.capture_video and idx == 0:
            env = gym.wrappers.RecordVideo(env, f"videos/{run_name}")
        if args.mask_velocity:  # zero the velocity entries: a partially observable task (see ppo_gru.py)
            mask = np.ones(env.observation_space.shape, dtype=np.float32)
            mask[VELOCITY_INDICES[args.env_id]] = 0.0
            env = gym.wrappers.TransformObservation(env, lambda obs: obs * mask, env.observation_space)
        return env

    return thunk


def make_vector_env(args: Args, run_name: str = "") -> gym.vector.VectorEnv:
    """Vectorized envs with episode statistics and optional normalization.

    Autoreset mode is NEXT_STEP (gymnasium's default, and the only one its vector
    normalization wrappers accept): when env i ends at step t, the observation returned at
    t is the real final observation, and step t+1 of env i only resets it (action ignored,
    reward 0). The rollout marks such reset steps and never trains on them.
    """
    thunks = [make_env(args, i, run_name) for i in range(args.num_envs)]
    envs = gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    # Statistics first, so logged returns are the env's raw rewards, not the scaled ones.
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    if args.norm_reward:
        envs = gym.wrappers.vector.NormalizeReward(envs, gamma=args.gamma)
    if args.norm_obs:  # outermost, so that `envs.obs_rms` is the observation statistics
        envs = gym.wrappers.vector.NormalizeObservation(envs)
    return envs


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

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions for a batch of observations: sampled, or argmax / Gaussian mean if deterministic."""
        policy_out = self.actor(obs)
        if self.is_discrete:
            # Gumbel-max trick: argmax(logits + Gumbel noise) ~ Categorical(logits), about
            # half the cost of torch.distributions.Categorical.sample for small batches.
            gumbel_noise = 0.0 if deterministic else -torch.log(-torch.log(torch.rand_like(policy_out)))
            return (policy_out + gumbel_noise).argmax(-1)
        return policy_out if deterministic else policy_out + torch.randn_like(policy_out) * self.actor_logstd.exp()

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


def compute_gae(rewards, values, next_values, terminations, dones, gamma: float, gae_lambda: float) -> tuple:
    """Generalized Advantage Estimation over a (num_steps, num_envs) rollout (numpy arrays).

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


def ppo_policy_loss(new_log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip_coef: float):
    """Clipped surrogate loss, -mean(min(ratio * A, clip(ratio, 1-eps, 1+eps) * A)).

    Returns (loss, approx_kl, clipfrac): also the approximate KL(old || new) estimate
    mean((ratio - 1) - log ratio) (Schulman's low-variance estimator) and the fraction of samples
    whose ratio was clipped.
    """
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    loss = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)).mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clipfrac = ((ratio - 1).abs() > clip_coef).float().mean()
    return loss, approx_kl, clipfrac


def ppo_value_loss(new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip_coef: float | None):
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


def empty_rollout(num_steps: int, num_envs: int, obs_space: gym.Space, action_space: gym.Space) -> SimpleNamespace:
    """num_steps x num_envs of experience, as numpy arrays (cheap per-step writes). `trainable` is False
    on the reset step that follows an episode end; `last_value` is V(observation after the last step)."""
    shapes = {"obs": obs_space.shape, "actions": action_space.shape}
    shapes |= {name: () for name in ["log_probs", "values", "rewards", "terminations", "dones"]}
    arrays = {name: np.zeros((num_steps, num_envs, *shape), dtype=np.float32) for name, shape in shapes.items()}
    arrays |= {"trainable": np.zeros((num_steps, num_envs), bool), "last_value": np.zeros(num_envs, np.float32)}
    return SimpleNamespace(**arrays)


@torch.no_grad()
def collect_rollout(
    agent, envs, rollout, next_obs, next_done, global_step, device, writer, episodic_returns, world_size=1
):
    """Fill `rollout` by acting with the current policy, logging every episode that ends (record_episodes).
    Returns (next_obs, next_done, global_step); global_step counts the env steps of all ranks (world_size
    of them, in lockstep)."""
    for step in range(rollout.obs.shape[0]):
        global_step += envs.num_envs * world_size
        # NEXT_STEP autoreset: after a done, this step only resets the env.
        rollout.obs[step] = next_obs
        rollout.trainable[step] = ~next_done
        action = agent.act(torch.as_tensor(next_obs, dtype=torch.float32, device=device)).cpu().numpy()
        rollout.actions[step] = action
        if not agent.is_discrete:
            # The env gets the clipped action; learning uses the log-prob of the sampled one.
            action = np.clip(action, envs.single_action_space.low, envs.single_action_space.high)
        next_obs, reward, terminated, truncated, infos = envs.step(action)
        next_done = terminated | truncated
        rollout.rewards[step] = reward
        rollout.terminations[step] = terminated
        rollout.dones[step] = next_done
        record_episodes(writer, infos, global_step, episodic_returns)
    # The networks do not change during a rollout, so log pi(a_t|s_t) and V(s_t) come from one
    # batched pass here rather than a small pass per step: the same numbers, far fewer calls.
    obs, actions = (torch.as_tensor(array, device=device).flatten(0, 1) for array in (rollout.obs, rollout.actions))
    log_probs, _, values = agent.evaluate_actions(obs, actions)
    rollout.log_probs[:] = log_probs.view(rollout.log_probs.shape).cpu().numpy()
    rollout.values[:] = values.view(rollout.values.shape).cpu().numpy()
    rollout.last_value[:] = agent.get_value(torch.as_tensor(next_obs, dtype=torch.float32, device=device)).cpu().numpy()
    return next_obs, next_done, global_step


def rollout_advantages(rollout: SimpleNamespace, gamma: float, gae_lambda: float) -> tuple[np.ndarray, np.ndarray]:
    """GAE for a collected rollout: (advantages, returns), each (num_steps, num_envs)."""
    # V(s_{t+1}) is the next row's value, or the value after the rollout for the last row. With
    # NEXT_STEP autoreset the row after an episode end holds the real final observation, so
    # a truncated step bootstraps from exactly V(final observation).
    next_values = np.concatenate([rollout.values[1:], rollout.last_value[None]])
    return compute_gae(
        rollout.rewards, rollout.values, next_values, rollout.terminations, rollout.dones, gamma, gae_lambda
    )


def ppo_update(agent: Agent, optimizer, rollout: SimpleNamespace, args: Args, device, global_step: int) -> dict:
    """GAE on the rollout, then `update_epochs` epochs of clipped-PPO minibatch steps.

    Returns every logged loss (by its TensorBoard tag) as its mean over all minibatches and epochs. A
    non-finite one raises FloatingPointError: one check per update, not a host sync per minibatch.
    """
    advantages, returns = rollout_advantages(rollout, args.gamma, args.gae_lambda)
    # Flatten (step, env) and keep only real transitions (not NEXT_STEP reset steps).
    keep = torch.as_tensor(rollout.trainable.reshape(-1), device=device)
    b_obs, b_actions, b_log_probs, b_advantages, b_returns, b_values = (
        torch.as_tensor(array, device=device).flatten(0, 1)[keep]
        for array in (rollout.obs, rollout.actions, rollout.log_probs, advantages, returns, rollout.values)
    )
    value_clip = args.clip_coef if args.clip_vloss else None  # --clip-vloss: V stays near the old values too
    stats = []  # per minibatch: policy loss, value loss, entropy, approx KL, clip fraction
    for _epoch in range(args.update_epochs):
        for mb in torch.tensor_split(torch.randperm(len(b_obs), device=device), args.num_minibatches):
            log_prob, entropy, new_value = agent.evaluate_actions(b_obs[mb], b_actions[mb])
            mb_advantage = b_advantages[mb]
            if args.norm_adv and len(mb) > 1:
                mb_advantage = (mb_advantage - mb_advantage.mean()) / (mb_advantage.std() + 1e-8)
            policy_loss, approx_kl, clipfrac = ppo_policy_loss(log_prob, b_log_probs[mb], mb_advantage, args.clip_coef)
            value_loss = ppo_value_loss(new_value, b_values[mb], b_returns[mb], value_clip)
            entropy_loss = entropy.mean()
            loss = policy_loss + args.vf_coef * value_loss - args.ent_coef * entropy_loss
            stats.append(torch.stack([policy_loss, value_loss, entropy_loss, approx_kl, clipfrac]).detach())

            optimizer.zero_grad()
            loss.backward()
            average_gradients(agent)  # under torchrun: the mean over all ranks' data
            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            optimizer.step()
            # Under torchrun the ranks decide on the KL averaged over them, so all stop after the same minibatch.
            stop_early = args.target_kl is not None and mean_over_ranks(approx_kl).item() > args.target_kl
            if stop_early:
                break
        if stop_early:
            break

    names = ["policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac"]
    losses = {f"losses/{name}": value for name, value in zip(names, torch.stack(stats).mean(0).tolist(), strict=True)}
    non_finite = [name for name, value in losses.items() if not np.isfinite(value)]
    if non_finite:
        raise FloatingPointError(f"non-finite {', '.join(non_finite)} at global step {global_step}")
    losses["losses/explained_variance"] = explained_variance(b_values.cpu().numpy(), b_returns.cpu().numpy())
    return losses


def main(args: Args) -> dict:
    args = check_args(args)  # one line and exit 2 for a bad flag, env or space; fills the kind defaults
    if args.eval_model:
        return watch(args)
    # Under torchrun: one rank per process, each with its own envs; rank 0 alone logs, prints and saves.
    args, rank, world_size, device = init_distributed(args)
    num_iterations = max(1, args.total_timesteps // (args.num_envs * args.num_steps * world_size))
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"

    # Each rank samples its own actions and minibatches (seed + rank); env i of rank r is reset
    # with seed + r * num_envs + i, so no two envs of a run share a seed.
    random.seed(args.seed + rank)
    np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed + rank)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(1)  # one thread is faster than several for 64-unit MLPs, and leaves a core for the envs

    envs = make_vector_env(args, run_name)
    envs.action_space.seed(args.seed + rank)
    agent = Agent(envs.single_observation_space.shape[0], envs.single_action_space, args.init_action_std).to(device)
    broadcast_parameters(agent)  # under torchrun every rank starts from rank 0's weights
    # fused: one kernel for all parameters (~20% cheaper per step here than the per-tensor loop)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    rollout = empty_rollout(args.num_steps, args.num_envs, envs.single_observation_space, envs.single_action_space)
    episodic_returns = []
    global_step = 0
    next_obs, _ = envs.reset(seed=args.seed + rank * args.num_envs)  # env i gets seed + rank * num_envs + i
    next_done = np.zeros(args.num_envs, dtype=bool)

    # The run folder appears here, just before the Ctrl-C handler (under torchrun, rank 0's alone).
    writer, tracker = start_logging(args, run_name) if rank == 0 else (NoWriter(), None)
    start_time = time.time()
    exit_code = 0
    # The first Ctrl-C only asks the loop to stop at a safe point: a KeyboardInterrupt raised inside a
    # TensorBoard write can queue an event without waking the writer's thread, and closing it then stalls.
    ctrl_c = threading.Event()
    previous_sigint = signal.signal(signal.SIGINT, lambda signum, frame: ctrl_c.set())
    try:
        for iteration in range(1, num_iterations + 1):
            if any_rank(ctrl_c.is_set()):  # under torchrun every rank stops at the same iteration, interrupted
                ctrl_c.set()
                break
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1.0) / num_iterations)
            next_obs, next_done, global_step = collect_rollout(
                agent, envs, rollout, next_obs, next_done, global_step, device, writer, episodic_returns, world_size
            )
            merge_running_stats(envs)  # under torchrun: the normalization statistics of all ranks' data
            losses = ppo_update(agent, optimizer, rollout, args, device, global_step)

            sps = int(global_step / (time.time() - start_time))
            scalars = {"charts/learning_rate": optimizer.param_groups[0]["lr"], "charts/SPS": sps, **losses}
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, global_step)
            if iteration % max(1, num_iterations // 20) == 0 or iteration == num_iterations:
                print(progress_line(global_step, args.total_timesteps, episodic_returns, sps))
    except FloatingPointError as error:
        print(f"{os.path.basename(__file__)}: error: {error}", file=sys.stderr)
        exit_code = 1
    except RuntimeError as error:  # under torchrun, a collective fails when another rank died or hangs
        exit_code = lost_other_ranks(error, rank, global_step)
    finally:
        signal.signal(signal.SIGINT, previous_sigint)
        envs.close()
    end_distributed(exit_code)
    exit_code = 130 if ctrl_c.is_set() else exit_code
    return finish_run(args, run_name, writer, tracker, exit_code, agent, envs, episodic_returns)


# --- Plumbing: the algorithm is complete above; below are validation, saving, evaluation, logging and torchrun. ---

ALGORITHM = "ppo"  # stored in saved models: --eval-model refuses another script's file
FLAG_RULES = [  # (what is allowed, the test, the flags it applies to); a flag left at None is skipped
    ("> 0", lambda value: value > 0, ["total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs"]),
    ("> 0", lambda value: value > 0, ["learning_rate", "clip_coef", "max_grad_norm", "target_kl", "eval_episodes"]),
    ("> 0", lambda value: value > 0, ["init_action_std", "collective_timeout"]),
    ("in [0, 1]", lambda value: 0 <= value <= 1, ["gamma", "gae_lambda"]),
    (">= 0", lambda value: value >= 0, ["ent_coef", "vf_coef"]),
]


def usage_error(message: str) -> None:
    """A user mistake: one line on stderr, exit status 2, no traceback."""
    print(f"{os.path.basename(__file__)}: error: {message}", file=sys.stderr)
    sys.exit(2)


def check_args(args: Args) -> Args:
    """Stop with one line and exit 2, before any env is made, at the first flag that breaks its rule, an
    unknown env id, a missing optional package or a space this script does not support. Returns the Args
    with the kind defaults (KIND_DEFAULTS, default_learning_rate) filled in from the probe env's spaces."""
    for rule, allowed, names in FLAG_RULES:
        for name in names:
            if getattr(args, name) is not None and not allowed(getattr(args, name)):
                usage_error(f"--{name.replace('_', '-')} must be {rule}, got {getattr(args, name)}")
    batch_size = args.num_envs * args.num_steps
    if batch_size % args.num_minibatches:
        usage_error(f"--num-minibatches {args.num_minibatches} does not divide num_envs * num_steps = {batch_size}")
    if args.env_id not in gym.registry:
        usage_error(f"--env-id {args.env_id!r} is not a registered gymnasium environment")
    if args.mask_velocity and args.env_id not in VELOCITY_INDICES:
        usage_error(f"--mask-velocity does not know {args.env_id}; supported: {', '.join(VELOCITY_INDICES)}")
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
    # The kind defaults fill every flag left at None (a flag given on the command line always wins).
    kind = "discrete" if isinstance(action_space, gym.spaces.Discrete) else "continuous"
    learning_rate = 1e-3 if kind == "discrete" else default_learning_rate(args.total_timesteps)
    defaults = {**KIND_DEFAULTS[kind], "learning_rate": learning_rate}
    return dataclasses.replace(args, **{name: value for name, value in defaults.items() if getattr(args, name) is None})


def recent_mean(episodic_returns: list[float]) -> float:
    """The mean return of the last 10 finished episodes (nan before the first)."""
    return float(np.mean(episodic_returns[-10:])) if episodic_returns else float("nan")


def progress_line(global_step: int, total_timesteps: int, episodic_returns: list[float], sps: int) -> str:
    done = 100 * min(global_step / total_timesteps, 1)
    mean = recent_mean(episodic_returns)
    return f"global_step={global_step:>8d} ({done:3.0f}%)  mean_return(last 10)={mean:9.2f}  SPS={sps}"


def record_episodes(writer: SummaryWriter, infos: dict, global_step: int, episodic_returns: list[float]) -> None:
    """Log the return and length of every episode that ended at this step (from RecordEpisodeStatistics: the
    raw rewards' sum), and keep its return."""
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


def finish_run(args: Args, run_name: str, writer, tracker, exit_code: int, agent, envs, episodic_returns) -> dict:
    """After training: with --save-model save the agent and the observation-normalization statistics (unless
    the run failed) and, if the run completed, evaluate the saved file; close the writer and the W&B run
    (uploading the training videos); exit on a failure. Under torchrun only rank 0 saves (init_distributed)."""
    model_path = f"runs/{run_name}/{args.exp_name}.pt"
    if args.save_model and exit_code != 1:
        obs_rms = {"mean": envs.obs_rms.mean.tolist(), "var": envs.obs_rms.var.tolist()} if args.norm_obs else None
        checkpoint = {"algorithm": ALGORITHM, "args": dataclasses.asdict(args), "model": agent.state_dict()}
        torch.save({**checkpoint, "obs_rms": obs_rms}, model_path)
        print(f"model saved to {model_path}")
    eval_returns = []
    if args.save_model and exit_code == 0:
        eval_returns = watch(dataclasses.replace(args, eval_model=model_path, capture_video=False))["eval_returns"]
        for episode, episodic_return in enumerate(eval_returns):
            writer.add_scalar("eval/episodic_return", episodic_return, episode)
    writer.close()
    if exit_code == 130 and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
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


@torch.no_grad()
def watch(args: Args) -> dict:
    """--eval-model (and the evaluation after training): play the saved agent's deterministic action (argmax
    or the Gaussian mean) on one env of its kind, reset once with seed + 10_000, for --eval-episodes episodes,
    normalizing observations with the saved, frozen statistics; print the mean return. A file that is missing,
    not a model file, another script's, or whose weights do not fit its env: one line, exit 2."""
    video_name = os.path.basename(os.path.dirname(os.path.abspath(args.eval_model))) + "-eval"
    try:  # weights_only (torch's default): loading runs no code from the file
        checkpoint = torch.load(args.eval_model, map_location="cpu")  # one env step by step: the CPU is fast enough
        if checkpoint["algorithm"] != ALGORITHM:
            raise ValueError(f"saved by {checkpoint['algorithm']}.py")
        train_args = Args(**checkpoint["args"])
        # The rewards the envs return are not used here, so --norm-reward does not matter.
        play_args = dataclasses.replace(train_args, num_envs=1, capture_video=args.capture_video, render=args.render)
        envs = make_vector_env(play_args, video_name)
        agent = Agent(envs.single_observation_space.shape[0], envs.single_action_space)
        agent.load_state_dict(checkpoint["model"])
        if train_args.norm_obs:  # the saved statistics, frozen
            envs.update_running_mean = False
            envs.obs_rms.mean, envs.obs_rms.var = (np.array(checkpoint["obs_rms"][key]) for key in ("mean", "var"))
    except FileNotFoundError:
        usage_error(f"--eval-model {args.eval_model}: no such file")
    except Exception as error:
        reason = (str(error).strip() or type(error).__name__).splitlines()[0]
        why = f"not a model file saved by {ALGORITHM}.py, or its weights do not fit its env ({reason})"
        usage_error(f"--eval-model {args.eval_model}: {why}")
    if args.env_id not in (Args.env_id, train_args.env_id):  # left at its default, --env-id means "the model's"
        usage_error(f"--eval-model {args.eval_model} was trained on {train_args.env_id}, not --env-id {args.env_id}")
    obs, _ = envs.reset(seed=args.seed + 10_000)
    returns = []
    while len(returns) < args.eval_episodes:
        action = agent.act(torch.as_tensor(obs, dtype=torch.float32), deterministic=True).numpy()
        if not agent.is_discrete:
            action = np.clip(action, envs.single_action_space.low, envs.single_action_space.high)
        obs, _, _, _, infos = envs.step(action)
        if "episode" in infos:  # one env: the episode that just ended is its episode
            returns.append(float(infos["episode"]["r"][0]))
    envs.close()
    mean, std = np.mean(returns), np.std(returns)
    print(f"eval: {train_args.env_id} mean return {mean:.2f} +- {std:.2f} over {len(returns)} episodes")
    return {"eval_returns": returns, "video_folder": f"videos/{video_name}" if args.capture_video else None}


# torchrun: data parallelism. Each rank runs its own envs and rollout; the ranks average their gradients before
# every optimizer step. Every helper below does nothing in a plain `python ppo.py`.


def init_distributed(args: Args) -> tuple[Args, int, int, torch.device]:
    """(args, rank, world_size, device). torchrun puts WORLD_SIZE, RANK, LOCAL_RANK and the rendezvous
    address into each rank's environment; a plain run has none of them and stays one process. Ranks
    other than 0 neither print, save, record videos nor track. Backend gloo for CPU tensors, nccl for
    GPU ones; a rank that waits longer than --collective-timeout in a collective (another rank died or
    hangs) raises instead of waiting forever."""
    use_cuda = torch.cuda.is_available() and args.cuda
    device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if use_cuda else "cpu")
    if "WORLD_SIZE" not in os.environ:
        return args, 0, 1, device
    if use_cuda:
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=args.collective_timeout)
    dist.init_process_group("cpu:gloo,cuda:nccl" if use_cuda else "gloo", timeout=timeout)
    if dist.get_rank() > 0:
        sys.stdout = open(os.devnull, "w")
        args = dataclasses.replace(args, save_model=False, capture_video=False, track=False)
    return args, dist.get_rank(), dist.get_world_size(), device


class NoWriter:
    """TensorBoard for ranks other than 0: nothing is written."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def mean_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of `tensor` over the ranks, in place, in one all-reduce."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor


def any_rank(flag: bool) -> bool:
    """True on every rank if flag is True on any rank (e.g. one of them saw Ctrl-C)."""
    return mean_over_ranks(torch.tensor([float(flag)])).item() > 0


def broadcast_parameters(agent: nn.Module) -> None:
    for parameter in agent.parameters() if dist.is_initialized() else []:
        dist.broadcast(parameter.data, src=0)


def average_gradients(agent: nn.Module) -> None:
    """g <- (1 / N) * sum of g over the N ranks, every gradient in one vector (one message, not one per
    tensor). Every rank then takes the same optimizer step from the same weights: the ranks stay equal."""
    if dist.is_initialized():
        grads = [parameter.grad for parameter in agent.parameters()]
        nn.utils.vector_to_parameters(mean_over_ranks(nn.utils.parameters_to_vector(grads)), grads)


def merge_running_stats(envs: gym.vector.VectorEnv) -> None:
    """Make the normalization wrappers' running statistics those of every rank's data. As sums that add up
    over disjoint data, S = (count, count * mean, count * (var + mean^2)) in float64: since the last merge,
    whose result B every rank holds, rank r has folded in only its own data, so the merged sums are
    B + sum_r (S_r - B) = sum_r S_r - (N - 1) B. Before the first merge, B is that of fresh statistics."""
    while dist.is_initialized() and isinstance(envs, gym.vector.VectorWrapper):
        for rms in [getattr(envs, name) for name in ("obs_rms", "return_rms") if name in vars(envs)]:
            sums = moment_sums(rms)
            dist.all_reduce(sums)
            base = getattr(rms, "merged_sums", moment_sums(type(rms)(shape=np.shape(rms.mean))))  # or fresh ones
            rms.merged_sums = sums - (dist.get_world_size() - 1) * base
            count, count_mean, count_square = rms.merged_sums.numpy()
            rms.count = float(np.ravel(count)[0])
            rms.mean = count_mean / count
            rms.var = count_square / count - rms.mean**2
        envs = envs.env


def moment_sums(rms) -> torch.Tensor:
    mean = np.asarray(rms.mean, dtype=np.float64)
    var = np.asarray(rms.var, dtype=np.float64)
    return torch.as_tensor(np.stack([np.full_like(mean, rms.count), rms.count * mean, rms.count * (var + mean**2)]))


def lost_other_ranks(error: RuntimeError, rank: int, global_step: int) -> int:
    """A collective failed under torchrun (another rank died, or did not answer within
    --collective-timeout): one line, exit code 1. Any other error is raised on."""
    if not (dist.is_initialized() and any(cue in str(error) for cue in ("gloo", "NCCL", "imed out"))):
        raise error
    reason = str(error).strip().splitlines()[0]
    print(f"ppo.py: error: rank {rank}: lost the other ranks at global step {global_step}: {reason}", file=sys.stderr)
    return 1


def end_distributed(exit_code: int) -> None:
    if dist.is_initialized() and exit_code != 1:  # after a failure the others may be gone: just end
        dist.destroy_process_group()


if __name__ == "__main__":
    main(tyro.cli(Args))
