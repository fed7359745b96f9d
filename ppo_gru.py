"""Recurrent PPO: PPO-clip with a GRU, for tasks where one observation is not enough.

Papers: Schulman et al. 2017, "Proximal Policy Optimization Algorithms",
https://arxiv.org/abs/1707.06347; Cho et al. 2014 (the GRU), https://arxiv.org/abs/1406.1078.

The policy carries a hidden state h from step to step, so it can infer what the observation
hides (with --mask-velocity, CartPole's velocities). Three things make recurrent PPO correct:

    acting:   h_t = GRU(encoder(o_t), h_{t-1} * (1 - start_t))   start_t = 1 on an episode's first step
    storage:  the hidden state of every env before every step, plus the start flags
    update:   each env's rollout is cut into sequences of --seq-len steps, and minibatches are
              whole sequences (never single steps); each replays from its stored start state,
              resetting h at the same steps as during the rollout, so pi(a_t|o_<=t) and V(o_<=t)
              are recomputed exactly before the first gradient step (backprop stops at a
              sequence's start: truncated backprop through time)

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
import types

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
    ones: 8.2e-4 at the default 150k, 3.2e-4 at 1M (the rule ppo.py's benchmark chose, from
    Pendulum at 100k steps to MuJoCo at 1M)]"""
    hidden_size: int = 64
    """size of the encoder and of the GRU's hidden state"""
    num_envs: int = 8
    """number of parallel envs"""
    num_steps: int = 128
    """steps per env in each rollout, the horizon of GAE"""
    seq_len: int = 16
    """length of the sequences the update replays (truncated backprop through time); must divide
    num_steps. Each sequence restarts from the hidden state the rollout had before its first step.
    The GRU's backward pass costs about the same per time step whatever the batch, so 16-step
    sequences made the update on masked CartPole-v1 2.5x faster than whole 128-step rollouts"""
    anneal_lr: bool = True
    """if toggled, the learning rate decays linearly to 0 over the run"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    num_minibatches: int = 4
    """minibatches per epoch, each a group of whole sequences; must divide their number,
    num_envs * num_steps / seq_len"""
    update_epochs: int = 10
    """passes over each rollout"""
    norm_adv: bool = True
    """if toggled, normalize advantages within each minibatch"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient epsilon"""
    clip_vloss: bool = False
    """if toggled, clip the value loss around the old values, as the PPO code release does"""
    ent_coef: float | None = None
    """entropy bonus coefficient [None: 0.01 for Discrete, 0 for Box actions, as in ppo.py]"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """the maximum global norm of the gradients"""
    target_kl: float | None = None
    """if set, stop the epochs of an update early once the approximate KL exceeds it"""
    norm_obs: bool = True
    """if toggled, normalize observations with running statistics"""
    norm_reward: bool = True
    """if toggled, scale rewards by the running std of the discounted return (both kinds: without it, no
    layout tried served both masked CartPole-v1 and masked LunarLander-v3)"""
    init_action_std: float = 0.5
    """Box actions: the initial std of the Gaussian policy, as a fraction of each action dimension's
    half-range (high - low) / 2 (of 1 where a bound is infinite); as in ppo.py"""


# The observation entries --mask-velocity hides, per env.
VELOCITY_INDICES = {
    "CartPole-v1": [1, 3],  # cart velocity, pole angular velocity
    "Pendulum-v1": [2],  # angular velocity
    "MountainCar-v0": [1],
    "MountainCarContinuous-v0": [1],
    "LunarLander-v3": [2, 3, 5],  # x and y velocity, angular velocity
}


def make_env(args: Args, idx: int, run_name: str):
    def thunk():
        # env 0 alone is shown (--render) or recorded (--capture-video)
        render_mode = "human" if args.render else "rgb_array" if args.capture_video else None
        env = gym.make(args.env_id, render_mode=render_mode if idx == 0 else None)
        if args.capture_video and idx == 0:
            env = gym.wrappers.RecordVideo(env, f"videos/{run_name}")
        if args.mask_velocity:  # zero the velocity entries: a partially observable task
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
    reward 0) and returns the new episode's first observation. So the row after a done is a
    reset step (never trained on), and the row after that starts an episode (h is reset).
    """
    thunks = [make_env(args, i, run_name) for i in range(args.num_envs)]
    envs = gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    # Statistics first, so logged returns are the env's raw rewards, not the scaled ones.
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    if args.norm_reward:
        envs = gym.wrappers.vector.NormalizeReward(envs, gamma=args.gamma)
    if args.norm_obs:  # outermost, so that `envs.obs_rms` is its statistics (saved with the model)
        envs = gym.wrappers.vector.NormalizeObservation(envs)
    return envs


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


def head(in_dim: int, out_dim: int, std: float) -> nn.Sequential:
    """Linear-tanh-Linear: an actor or critic head on the GRU's features."""
    return nn.Sequential(layer_init(nn.Linear(in_dim, 64)), nn.Tanh(), layer_init(nn.Linear(64, out_dim), std))


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
        self.encoder = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden_size)), nn.Tanh())
        self.gru = nn.GRU(hidden_size, hidden_size)
        for connection in ["ih", "hh"]:  # input-to-hidden and hidden-to-hidden weights (all three gates), biases
            nn.init.orthogonal_(getattr(self.gru, f"weight_{connection}_l0"), 1.0)
            nn.init.zeros_(getattr(self.gru, f"bias_{connection}_l0"))
        self.critic = head(hidden_size, 1, std=1.0)
        # A small last layer makes the initial policy near-uniform / near-zero mean.
        self.actor = head(hidden_size, action_dim, std=0.01)
        if not self.is_discrete:
            half_range = (action_space.high - action_space.low) / 2
            half_range = np.where(np.isfinite(half_range), half_range, 1.0).reshape(1, action_dim)
            self.actor_logstd = nn.Parameter(torch.as_tensor(np.log(init_action_std * half_range), dtype=torch.float32))

    def unroll(self, obs: torch.Tensor, hidden: torch.Tensor, starts: torch.Tensor):
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
        initial = hidden.new_zeros(1, padded.shape[1], self.gru.hidden_size)
        initial[0, segment.view(num_envs, num_steps)[:, 0]] = hidden[0] * (1.0 - starts[0]).unsqueeze(-1)
        output, _ = self.gru(padded, initial)
        outputs = output[position, segment].view(num_envs, num_steps, -1).transpose(0, 1)
        return outputs, outputs[-1:]  # one GRU layer: its output at the last step is the state

    def get_action_and_value(self, features: torch.Tensor, action: torch.Tensor | None = None, deterministic=False):
        """(action, log pi(action|.), entropy, V) from GRU features, differentiable. Without an
        action, one is sampled (or, if deterministic, the argmax / the Gaussian mean)."""
        policy_out = self.actor(features)
        value = self.critic(features).squeeze(-1)
        if self.is_discrete:
            if action is None:  # Gumbel-max trick: argmax(logits + Gumbel noise) ~ Categorical(logits)
                gumbel = 0.0 if deterministic else -torch.log(-torch.log(torch.rand_like(policy_out)))
                action = (policy_out + gumbel).argmax(-1)
            log_probs = torch.log_softmax(policy_out, dim=-1)
            log_prob = log_probs.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
            return action, log_prob, -(log_probs.exp() * log_probs).sum(-1), value
        log_std = self.actor_logstd.expand_as(policy_out)
        if action is None:
            action = policy_out if deterministic else policy_out + torch.randn_like(policy_out) * log_std.exp()
        # log N(a; mu, sigma) = -((a - mu) / sigma)^2 / 2 - log sigma - log(2 pi) / 2, summed over dims
        z = (action - policy_out) / log_std.exp()
        log_prob = (-0.5 * z.pow(2) - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
        return action, log_prob, (0.5 + 0.5 * np.log(2 * np.pi) + log_std).sum(-1), value

    @torch.no_grad()
    def act(self, obs: np.ndarray, hidden: torch.Tensor, starts: np.ndarray, deterministic: bool = False):
        """One step of every env, from numpy observations and episode-start flags, on the hidden
        state's device: numpy (action, log pi(action), V) and the new hidden state."""
        obs_row = torch.as_tensor(obs, dtype=torch.float32, device=hidden.device)[None]
        start_row = torch.as_tensor(starts, dtype=torch.float32, device=hidden.device)[None]
        features, hidden = self.unroll(obs_row, hidden, start_row)
        action, log_prob, _, value = self.get_action_and_value(features[0], deterministic=deterministic)
        return action.cpu().numpy(), log_prob.cpu().numpy(), value.cpu().numpy(), hidden


def compute_gae(rewards, values, next_values, terminations, dones, gamma: float, gae_lambda: float):
    """Generalized Advantage Estimation over (num_steps, num_envs) numpy arrays.

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


def ppo_policy_loss(new_log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip_coef: float):
    """Clipped surrogate loss, -mean(min(ratio * A, clip(ratio, 1-eps, 1+eps) * A)), with the
    approximate KL mean((ratio - 1) - log ratio) and the clipped fraction: (loss, approx_kl, clipfrac)."""
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    loss = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)).mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clipfrac = ((ratio - 1).abs() > clip_coef).float().mean()
    return loss, approx_kl, clipfrac


def ppo_value_loss(new_values, old_values, returns, clip_coef: float | None) -> torch.Tensor:
    """0.5 * mean((V - R)^2); with clip_coef, the max of that and the error of V clipped to old_V +- clip_coef."""
    unclipped = (new_values - returns).pow(2)
    if clip_coef is None:
        return 0.5 * unclipped.mean()
    clipped_values = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
    return 0.5 * torch.max(unclipped, (clipped_values - returns).pow(2)).mean()


def to_sequences(rollout, seq_len: int, device: torch.device, **extra: np.ndarray) -> dict:
    """Cut every env's rollout (and each `extra` (num_steps, num_envs) array) into num_steps / seq_len
    sequences of seq_len steps: tensors of shape (seq_len, number of sequences, ...), sequence k * num_envs + env
    holding steps k * seq_len ... (k + 1) * seq_len - 1 of that env, and "hidden", the state before each first step."""

    def cut(array) -> torch.Tensor:  # (num_steps, num_envs, ...) -> (seq_len, num_steps / seq_len * num_envs, ...)
        tensor = torch.as_tensor(array, device=device)
        return tensor.reshape(-1, seq_len, *tensor.shape[1:]).transpose(0, 1).reshape(seq_len, -1, *tensor.shape[2:])

    arrays = {name: getattr(rollout, name) for name in ["obs", "actions", "starts", "trainable", "log_probs", "values"]}
    return {"hidden": cut(rollout.hiddens)[:1], **{name: cut(array) for name, array in {**arrays, **extra}.items()}}


def replay(agent: RecurrentAgent, sequences: dict, ids: torch.Tensor):
    """(log pi, entropy, V), each (seq_len, len(ids)), recomputed for the stored actions by replaying
    the sequences `ids` from their stored start states with the rollout's resets."""
    features, _ = agent.unroll(sequences["obs"][:, ids], sequences["hidden"][:, ids], sequences["starts"][:, ids])
    return agent.get_action_and_value(features, sequences["actions"][:, ids])[1:]


def ppo_update(agent, optimizer, rollout, args: Args, device: torch.device, global_step: int) -> dict:
    """GAE on the rollout, then `update_epochs` epochs of clipped-PPO steps on minibatches of whole sequences.

    Returns every logged loss as its mean over all minibatches and epochs of this update; a loss that
    is not finite stops the run (one check per update, not a host sync per minibatch).
    """
    # With NEXT_STEP autoreset the row after an episode end holds the real final observation
    # (and its value, computed with that episode's memory), so truncation bootstraps exactly.
    next_values = np.concatenate([rollout.values[1:], rollout.last_value[None]])
    advantages, returns = compute_gae(
        rollout.rewards, rollout.values, next_values, rollout.terminations, rollout.dones, args.gamma, args.gae_lambda
    )
    sequences = to_sequences(rollout, args.seq_len, device, advantages=advantages, returns=returns)
    value_clip = args.clip_coef if args.clip_vloss else None  # --clip-vloss: V stays near the old values too
    stats = []
    for _epoch in range(args.update_epochs):
        for ids in torch.tensor_split(torch.randperm(sequences["obs"].shape[1], device=device), args.num_minibatches):
            keep = sequences["trainable"][:, ids].bool()  # every step of these sequences but the reset steps
            log_prob, entropy, new_value = (tensor[keep] for tensor in replay(agent, sequences, ids))
            mb = {name: sequences[name][:, ids][keep] for name in ["log_probs", "values", "advantages", "returns"]}
            mb_advantage = mb["advantages"]
            if args.norm_adv and len(mb_advantage) > 1:
                mb_advantage = (mb_advantage - mb_advantage.mean()) / (mb_advantage.std() + 1e-8)
            policy_loss, approx_kl, clipfrac = ppo_policy_loss(log_prob, mb["log_probs"], mb_advantage, args.clip_coef)
            value_loss = ppo_value_loss(new_value, mb["values"], mb["returns"], value_clip)
            entropy_loss = entropy.mean()
            loss = policy_loss + args.vf_coef * value_loss - args.ent_coef * entropy_loss
            stats.append(torch.stack([policy_loss, value_loss, entropy_loss, approx_kl, clipfrac]).detach())

            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            optimizer.step()
            if args.target_kl is not None and approx_kl.item() > args.target_kl:
                break
        if args.target_kl is not None and approx_kl.item() > args.target_kl:
            break  # the minibatch loop stopped early: so do the epochs
    names = ["policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac"]
    losses = {f"losses/{name}": value for name, value in zip(names, torch.stack(stats).mean(0).tolist(), strict=True)}
    if not np.isfinite(sum(losses.values())):
        raise FloatingPointError(f"non-finite loss at global step {global_step}: {losses}")
    return losses


def main(args: Args) -> dict:
    args = check_args(args)
    if args.eval_model:
        return watch(args)
    num_iterations = max(1, args.total_timesteps // (args.num_envs * args.num_steps))
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(1)  # one thread is faster for these small networks, and leaves a core for the envs
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    envs = make_vector_env(args, run_name)
    envs.action_space.seed(args.seed)
    obs_space, action_space = envs.single_observation_space, envs.single_action_space
    agent = RecurrentAgent(obs_space.shape[0], action_space, args.hidden_size, args.init_action_std).to(device)
    # fused: one kernel for all parameters (cheaper per step than the per-tensor loop)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    # The rollout: num_steps x num_envs float32 arrays. trainable is 0 on the reset step that follows an episode
    # end; starts is 1 where the observation is an episode's first (h is zeroed before it). hiddens (h before
    # each step) and last_value (V of the observation after the last step) are what the update needs to
    # replay the GRU and bootstrap.
    names = "obs actions log_probs values rewards terminations dones trainable starts hiddens".split()
    shapes = {"obs": obs_space.shape, "actions": action_space.shape, "hiddens": (args.hidden_size,)}
    zeros = {name: np.zeros((args.num_steps, args.num_envs, *shapes.get(name, ())), np.float32) for name in names}
    rollout = types.SimpleNamespace(**zeros, last_value=None)
    next_obs, _ = envs.reset(seed=args.seed)  # env i gets seed + i
    hidden = torch.zeros(1, args.num_envs, args.hidden_size, device=device)
    # next_done: the last step ended an episode, so the next step is a reset step; next_start: the next
    # observation is an episode's first, so h is zeroed before it.
    next_done, next_start = np.zeros(args.num_envs, dtype=bool), np.ones(args.num_envs, dtype=bool)

    writer, tracker = start_logging(args, run_name)  # the run folder appears here, just before the Ctrl-C handler
    episodic_returns: list[float] = []
    global_step = 0
    start_time = time.time()
    exit_code = 0
    # Ctrl-C only sets a flag the loop checks between updates: a KeyboardInterrupt raised inside a
    # TensorBoard write can queue an event without waking the writer's thread, and closing it stalls.
    ctrl_c = threading.Event()
    previous_sigint = signal.signal(signal.SIGINT, lambda signum, frame: ctrl_c.set())
    try:
        for iteration in range(1, num_iterations + 1):
            if ctrl_c.is_set():
                break
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1.0) / num_iterations)
            for step in range(args.num_steps):
                global_step += args.num_envs
                rollout.hiddens[step] = hidden[0].cpu().numpy()  # h before this step: a sequence may start here
                rollout.obs[step] = next_obs
                rollout.trainable[step] = ~next_done
                rollout.starts[step] = next_start
                action, log_prob, value, hidden = agent.act(next_obs, hidden, next_start)
                rollout.actions[step] = action
                rollout.log_probs[step] = log_prob
                rollout.values[step] = value
                if not agent.is_discrete:  # the env gets the clipped action; learning uses the sampled one
                    action = np.clip(action, action_space.low, action_space.high)
                next_obs, reward, terminated, truncated, infos = envs.step(action)
                # NEXT_STEP autoreset: the step after a done is a reset step, returning a first observation.
                next_start, next_done = next_done, terminated | truncated
                rollout.rewards[step] = reward
                rollout.terminations[step] = terminated
                rollout.dones[step] = next_done
                for i in np.flatnonzero(infos.get("_episode", [])):  # from RecordEpisodeStatistics
                    episodic_returns.append(float(infos["episode"]["r"][i]))
                    writer.add_scalar("charts/episodic_return", episodic_returns[-1], global_step)
                    writer.add_scalar("charts/episodic_length", int(infos["episode"]["l"][i]), global_step)
            # V of the observation after the last step, with h carried on (deterministic: draws no noise)
            rollout.last_value = agent.act(next_obs, hidden, next_start, deterministic=True)[2]
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
    finally:
        signal.signal(signal.SIGINT, previous_sigint)
        envs.close()
    exit_code = 130 if ctrl_c.is_set() else exit_code
    return finish_run(args, run_name, writer, tracker, exit_code, agent, envs, episodic_returns)


# --- Plumbing: the algorithm is complete above; below are validation, saving, evaluation, logging and Ctrl-C. ---

ALGORITHM = "ppo_gru"  # stored in saved models: --eval-model refuses another script's file
FLAG_RULES = [  # (what is allowed, the test, the flags it applies to); a flag left at None is skipped
    ("> 0", lambda value: value > 0, ["total_timesteps", "learning_rate", "hidden_size", "num_envs", "num_steps"]),
    ("> 0", lambda value: value > 0, ["seq_len", "num_minibatches", "update_epochs", "clip_coef", "max_grad_norm"]),
    ("> 0", lambda value: value > 0, ["target_kl", "eval_episodes"]),
    ("in [0, 1]", lambda value: 0 <= value <= 1, ["gamma", "gae_lambda"]),
    (">= 0", lambda value: value >= 0, ["ent_coef", "vf_coef"]),
]


def usage_error(message: str) -> None:
    """A user mistake: one line on stderr, exit status 2, no traceback."""
    print(f"{os.path.basename(__file__)}: error: {message}", file=sys.stderr)
    sys.exit(2)


def check_args(args: Args) -> Args:
    """Stop with one line and exit 2, before any env is made, at the first flag that breaks its rule, an
    unknown env id, a missing optional package or a space this script does not support. Returns the
    Args with the kind defaults (the entropy bonus and the learning rate) filled in from the probe env."""
    for rule, allowed, names in FLAG_RULES:
        for name in names:
            if getattr(args, name) is not None and not allowed(getattr(args, name)):
                usage_error(f"--{name.replace('_', '-')} must be {rule}, got {getattr(args, name)}")
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
    # The kind defaults fill the flags left at None (a flag given on the command line always wins).
    discrete = isinstance(action_space, gym.spaces.Discrete)
    # Box: 1e-3 * sqrt(100k / total_timesteps), kept within [3e-4, 1e-3]
    learning_rate = 1e-3 if discrete else min(1e-3, max(3e-4, 1e-3 * (100_000 / args.total_timesteps) ** 0.5))
    defaults = {"ent_coef": 0.01 if discrete else 0.0, "learning_rate": learning_rate}
    args = dataclasses.replace(args, **{name: value for name, value in defaults.items() if getattr(args, name) is None})
    if args.num_steps % args.seq_len:
        usage_error(f"--seq-len {args.seq_len} must divide --num-steps {args.num_steps}")
    num_sequences = args.num_envs * args.num_steps // args.seq_len
    if num_sequences % args.num_minibatches:
        usage_error(f"--num-minibatches {args.num_minibatches} must divide the {num_sequences} sequences of a rollout")
    return args


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


def finish_run(args: Args, run_name: str, writer, tracker, exit_code: int, agent, envs, episodic_returns) -> dict:
    """After training: with --save-model save the agent and the observation-normalization statistics (unless
    the run failed) and, if the run completed, evaluate the saved file; close the writer and the W&B run
    (uploading the training videos); exit on a failure."""
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
    """--eval-model (and the evaluation after training): play the saved agent's deterministic action (argmax
    or the Gaussian mean) on one env of its kind, reset once with seed + 10_000, for --eval-episodes episodes,
    carrying the hidden state, zeroing it at every episode start and normalizing observations with the saved,
    frozen statistics; print the mean return. A file that is missing, not a model file, another script's, or
    whose weights do not fit its env: one line, exit 2."""
    video_name = os.path.basename(os.path.dirname(os.path.abspath(args.eval_model))) + "-eval"
    try:  # weights_only (torch's default): loading runs no code from the file
        checkpoint = torch.load(args.eval_model, map_location="cpu")  # one env step by step: the CPU is fast enough
        if checkpoint["algorithm"] != ALGORITHM:
            raise ValueError(f"saved by {checkpoint['algorithm']}.py")
        train_args = Args(**checkpoint["args"])
        # The rewards the envs return are not used here, so --norm-reward does not matter.
        play_args = dataclasses.replace(train_args, num_envs=1, capture_video=args.capture_video, render=args.render)
        envs = make_vector_env(play_args, video_name)
        agent = RecurrentAgent(envs.single_observation_space.shape[0], envs.single_action_space, train_args.hidden_size)
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
    hidden = torch.zeros(1, 1, train_args.hidden_size)
    done, start = np.zeros(1, bool), np.ones(1, bool)
    returns = []
    while len(returns) < args.eval_episodes:
        action, _, _, hidden = agent.act(obs, hidden, start, deterministic=True)
        if not agent.is_discrete:
            action = np.clip(action, envs.single_action_space.low, envs.single_action_space.high)
        obs, _, terminated, truncated, infos = envs.step(action)
        start, done = done, terminated | truncated  # NEXT_STEP: the step after a done returns a first obs
        if "episode" in infos:  # one env: the episode that just ended is its episode
            returns.append(float(infos["episode"]["r"][0]))
    envs.close()
    mean, std = np.mean(returns), np.std(returns)
    print(f"eval: {train_args.env_id} mean return {mean:.2f} +- {std:.2f} over {len(returns)} episodes")
    return {"eval_returns": returns, "video_folder": f"videos/{video_name}" if args.capture_video else None}


if __name__ == "__main__":
    main(tyro.cli(Args))
