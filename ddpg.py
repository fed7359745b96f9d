"""Deep Deterministic Policy Gradient (DDPG): Q-learning for continuous actions.

Paper: Lillicrap et al. 2016, "Continuous control with deep reinforcement learning",
https://arxiv.org/abs/1509.02971 (deterministic policy gradient: Silver et al. 2014).

A deterministic actor mu(s) proposes actions, a critic Q(s, a) scores them. Experience goes
into a replay buffer and is sampled uniformly; slowly moving target copies mu' and Q' provide
the regression targets. Exploration is noise added to mu(s): independent Gaussian (the default,
as in TD3 and most later work) or Ornstein-Uhlenbeck (the paper's).

    y            = r + gamma * (1 - terminated) * Q'(s', mu'(s'))
    critic loss  = mean((Q(s, a) - y)^2)
    actor loss   = -mean(Q(s, mu(s)))
    soft update  theta' <- tau * theta + (1 - tau) * theta'          (after every gradient step)
    OU noise     dx = theta * (mu - x) * dt + sigma * sqrt(dt) * N(0, 1)

A time-limit cut is not termination: the transition is stored with terminated = 0 and the real
final observation as s', so its target bootstraps. Box action spaces only.

    python ddpg.py                                  # Pendulum-v1, 20k steps (~25 s on 2 CPU cores)
    python ddpg.py --env-id HalfCheetah-v5 --total-timesteps 300000
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
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter

ALGORITHM = "ddpg"  # stored in saved models: --eval-model refuses another script's file


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
    """how many episodes the saved model is evaluated for (mu(s), no noise)"""
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

    env_id: str = "Pendulum-v1"
    """the id of a gymnasium environment with 1-D Box observation and action spaces"""
    total_timesteps: int = 20_000
    """total env steps of the run"""
    learning_rate: float = 1e-3
    """Adam learning rate of actor and critic"""
    num_envs: int = 1
    """number of parallel envs (each has its own noise process)"""
    buffer_size: int = 1_000_000
    """replay buffer capacity in transitions"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.005
    """soft target update rate"""
    batch_size: int = 256
    """transitions per gradient step"""
    hidden_size: int = 64
    """units in each of the two hidden layers of actor and critic (64 on HalfCheetah-v5: ~380 steps/s on a
    2-core CPU and the same 300k-step return as 256 at ~165 steps/s; see docs/ddpg.md)"""
    learning_starts: int = 1000
    """env steps of uniform random actions before learning starts"""
    train_frequency: int = 1
    """env steps between training phases"""
    gradient_steps: int = 1
    """gradient steps per training phase"""
    policy_frequency: int = 1
    """update the actor every this many gradient steps (>1 is TD3's delayed update, not DDPG's)"""
    noise_type: Literal["gaussian", "ou"] = "gaussian"
    """exploration noise: independent Gaussian, or Ornstein-Uhlenbeck (the paper's; temporally correlated)"""
    exploration_noise: float = 0.1
    """noise scale sigma, in units of the action half-range"""
    ou_theta: float = 0.15
    """OU mean-reversion rate theta"""
    ou_dt: float = 1e-2
    """OU time step dt"""


def usage_error(message: str) -> None:
    """A user mistake: one line on stderr, exit status 2, no traceback."""
    print(f"{os.path.basename(__file__)}: error: {message}", file=sys.stderr)
    sys.exit(2)


def check_args(args: Args) -> None:
    """Reject impossible values, unknown envs and unsupported spaces before training starts."""
    positive = ["total_timesteps", "learning_rate", "num_envs", "buffer_size", "batch_size", "hidden_size"]
    positive += ["train_frequency", "gradient_steps", "policy_frequency", "ou_theta", "ou_dt", "eval_episodes"]
    for name in positive:
        if not getattr(args, name) > 0:
            usage_error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    for name in ["gamma", "tau"]:
        if not 0 <= getattr(args, name) <= 1:
            usage_error(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    for name in ["learning_starts", "exploration_noise"]:
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
    probe = gym.make(args.env_id, render_mode="rgb_array" if args.capture_video else None)
    obs_space, action_space = probe.observation_space, probe.action_space
    if isinstance(action_space, gym.spaces.Box) and args.capture_video:
        try:  # rendering may need packages of its own (pygame for classic control, OpenGL for MuJoCo)
            probe.reset(seed=args.seed)
            probe.render()
        except (gym.error.DependencyNotInstalled, ImportError) as error:
            usage_error(f"--capture-video cannot render {args.env_id}: {str(error).splitlines()[0]}")
    probe.close()
    if not isinstance(action_space, gym.spaces.Box):
        usage_error(
            f"{args.env_id} has action space {action_space}; DDPG needs continuous (Box) actions: "
            "for discrete actions use ppo.py, a2c.py, qac.py or reinforce.py"
        )
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1 and len(action_space.shape) == 1):
        usage_error(
            f"{args.env_id} has observation space {obs_space} and action space {action_space}; "
            "ddpg.py supports 1-D Box observation and action spaces"
        )


def make_env(env_id: str, idx: int, capture_video: bool, run_name: str, render: bool = False):
    def thunk():
        if render and idx == 0:
            return gym.make(env_id, render_mode="human")
        if capture_video and idx == 0:
            env = gym.make(env_id, render_mode="rgb_array")
            return gym.wrappers.RecordVideo(env, f"videos/{run_name}")
        return gym.make(env_id)

    return thunk


def make_vector_env(env_id: str, num_envs: int, capture_video: bool = False, run_name: str = ""):
    """Vectorized envs with episode statistics.

    Autoreset mode is NEXT_STEP (gymnasium's default): the observation returned on an episode's
    last step is the real final observation (stored as s' of that transition), and the next step
    of that env only resets it; that reset step is never stored in the replay buffer.
    """
    thunks = [make_env(env_id, i, capture_video, run_name) for i in range(num_envs)]
    envs = gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


class Actor(nn.Module):
    """mu(s) = tanh(net(s)) * action_scale + action_bias: always inside the action bounds.
    Scale and bias are buffers, so they travel with the saved weights."""

    def __init__(self, obs_dim: int, action_space: gym.spaces.Box, hidden_size: int):
        super().__init__()
        action_dim = int(np.prod(action_space.shape))
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, action_dim),
        )
        low, high = (torch.as_tensor(x, dtype=torch.float32) for x in (action_space.low, action_space.high))
        self.register_buffer("action_scale", (high - low) / 2)
        self.register_buffer("action_bias", (high + low) / 2)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs)) * self.action_scale + self.action_bias


class Critic(nn.Module):
    """Q(s, a) on the concatenated observation and action."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_size: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim + action_dim, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, 1),
        )

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=-1)).squeeze(-1)


class ReplayBuffer:
    """A numpy ring buffer of (obs, action, reward, next_obs, terminated), sampled uniformly."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, rng: np.random.Generator):
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros((capacity, action_dim), dtype=np.float32)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.terminations = np.zeros(capacity, dtype=np.float32)
        self.capacity, self.position, self.size, self.rng = capacity, 0, 0, rng

    def add(self, obs, actions, rewards, next_obs, terminations) -> None:
        """Add a batch of transitions, overwriting the oldest once full."""
        for i in range(len(rewards)):
            self.obs[self.position] = obs[i]
            self.actions[self.position] = actions[i]
            self.rewards[self.position] = rewards[i]
            self.next_obs[self.position] = next_obs[i]
            self.terminations[self.position] = terminations[i]
            self.position = (self.position + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int) -> tuple[np.ndarray, ...]:
        indices = self.rng.integers(0, self.size, size=batch_size)
        return (
            self.obs[indices],
            self.actions[indices],
            self.rewards[indices],
            self.next_obs[indices],
            self.terminations[indices],
        )


class OUNoise:
    """Ornstein-Uhlenbeck process, one independent process per row (env):
    x <- x + theta * (mu - x) * dt + sigma * sqrt(dt) * N(0, 1). Temporally correlated, so a
    pendulum gets pushed the same way for a while; stationary std sigma / sqrt(2 * theta)."""

    def __init__(self, shape, sigma: float, theta: float, dt: float, rng: np.random.Generator, mu: float = 0.0):
        self.shape, self.sigma, self.theta, self.dt, self.mu, self.rng = shape, sigma, theta, dt, mu, rng
        self.state = np.full(shape, mu, dtype=np.float64)

    def sample(self) -> np.ndarray:
        drift = self.theta * (self.mu - self.state) * self.dt
        diffusion = self.sigma * np.sqrt(self.dt) * self.rng.standard_normal(self.shape)
        self.state = self.state + drift + diffusion
        return self.state.copy()

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Back to mu, for every row or only the rows where mask is True (envs whose episode ended)."""
        if mask is None:
            self.state[:] = self.mu
        else:
            self.state[mask] = self.mu


class GaussianNoise:
    """Independent N(0, sigma) noise each step: the simpler alternative, with OUNoise's interface."""

    def __init__(self, shape, sigma: float, rng: np.random.Generator):
        self.shape, self.sigma, self.rng = shape, sigma, rng

    def sample(self) -> np.ndarray:
        return self.rng.normal(0.0, self.sigma, self.shape)

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Nothing to reset: successive samples are independent."""


def soft_update(target_params: list[torch.Tensor], source_params: list[torch.Tensor], tau: float) -> None:
    """theta' <- tau * theta + (1 - tau) * theta' for every pair of parameters (tau = 1 copies).
    The lists are made once: walking a module's parameters each step costs more than the update."""
    with torch.no_grad():
        # lerp: theta' + tau * (theta - theta'), for all tensors in one call
        torch._foreach_lerp_(target_params, source_params, tau)


def critic_target(
    rewards: torch.Tensor, terminations: torch.Tensor, next_q: torch.Tensor, gamma: float
) -> torch.Tensor:
    """y = r + gamma * (1 - terminated) * Q'(s', mu'(s')); truncated rows keep their bootstrap."""
    return rewards + gamma * (1.0 - terminations) * next_q


def save_model(path: str, actor: Actor, critic: Critic, args: Args) -> None:
    checkpoint = {"algorithm": ALGORITHM, "actor": actor.state_dict(), "critic": critic.state_dict()}
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
    """Play episodes with the saved actor's mu(s), no exploration noise; with a video_name, record
    them into videos/{video_name}."""
    checkpoint, train_args = load_model_file(model_path, device)
    env = make_env(train_args.env_id, 0, bool(video_name), video_name, render)()
    actor = Actor(env.observation_space.shape[0], env.action_space, train_args.hidden_size).to(device)
    try:
        actor.load_state_dict(checkpoint["actor"])
    except RuntimeError as error:  # weights of another shape: saved from another env or network
        usage_error(f"--eval-model {model_path}: its weights do not fit {train_args.env_id} ({error})".splitlines()[0])
    returns = []
    for episode in range(eval_episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, total = False, 0.0
        while not done:
            with torch.no_grad():
                action = actor(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
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
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(1)  # measured: faster than 2 threads for these batch sizes on a 2-core CPU
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    rng = np.random.default_rng(args.seed)

    tracker = start_tracking(args, run_name) if args.track else None
    writer = SummaryWriter(f"runs/{run_name}")
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in dataclasses.asdict(args).items()),
    )
    envs = make_vector_env(args.env_id, args.num_envs, args.capture_video, run_name)
    envs.action_space.seed(args.seed)
    action_space = envs.single_action_space
    obs_dim, action_dim = envs.single_observation_space.shape[0], int(np.prod(action_space.shape))
    actor = Actor(obs_dim, action_space, args.hidden_size).to(device)
    critic = Critic(obs_dim, action_dim, args.hidden_size).to(device)
    target_actor = Actor(obs_dim, action_space, args.hidden_size).to(device)
    target_critic = Critic(obs_dim, action_dim, args.hidden_size).to(device)
    target_actor.load_state_dict(actor.state_dict())
    target_critic.load_state_dict(critic.state_dict())
    actor_params = list(actor.parameters())
    online_params = actor_params + list(critic.parameters())
    target_params = list(target_actor.parameters()) + list(target_critic.parameters())
    # fused: one kernel updates every parameter (~60% cheaper per step than the per-tensor loop here)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate, fused=True)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate, fused=True)
    buffer = ReplayBuffer(args.buffer_size, obs_dim, action_dim, rng)
    half_range = (action_space.high - action_space.low) / 2
    noise_shape = (args.num_envs, action_dim)
    if args.noise_type == "ou":
        noise = OUNoise(noise_shape, args.exploration_noise, args.ou_theta, args.ou_dt, rng)
    else:
        noise = GaussianNoise(noise_shape, args.exploration_noise, rng)
    model_path = f"runs/{run_name}/{args.exp_name}.pt"

    def as_tensor(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, dtype=torch.float32, device=device)

    recent_returns: deque[float] = deque(maxlen=10)
    all_returns: list[float] = []
    loss_sums: dict[str, float] = {}
    num_gradient_steps, num_logged = 0, 0
    global_step, next_progress = 0, args.total_timesteps / 20
    start_time = time.time()
    obs, _ = envs.reset(seed=args.seed)  # env i gets seed + i
    resetting = np.zeros(args.num_envs, dtype=bool)  # NEXT_STEP: this step of env i only resets it
    exit_code = 0
    ctrl_c = CtrlC()
    try:
        while global_step < args.total_timesteps:
            if ctrl_c.pressed:
                raise KeyboardInterrupt  # handled below, at a point where nothing is half done
            if global_step < args.learning_starts:
                actions = envs.action_space.sample()
            else:
                with torch.no_grad():
                    actions = actor(as_tensor(obs)).cpu().numpy()
                actions = actions + noise.sample() * half_range
                actions = np.clip(actions, action_space.low, action_space.high)
            next_obs, rewards, terminations, truncations, infos = envs.step(actions)
            global_step += args.num_envs

            # next_obs of an episode's last step is its real final observation (NEXT_STEP), so a
            # truncated transition is stored with terminated = 0 and bootstraps from it.
            keep = ~resetting
            buffer.add(obs[keep], actions[keep], rewards[keep], next_obs[keep], terminations[keep])
            if resetting.any():
                # a fresh noise process for each new episode, restarted after the step that only
                # reset the env, so the episode's first real action starts from mu
                noise.reset(resetting)
            if "episode" in infos:
                for i in np.flatnonzero(infos["_episode"]):
                    recent_returns.append(float(infos["episode"]["r"][i]))
                    all_returns.append(recent_returns[-1])
                    writer.add_scalar("charts/episodic_return", recent_returns[-1], global_step)
                    writer.add_scalar("charts/episodic_length", int(infos["episode"]["l"][i]), global_step)
            obs, resetting = next_obs, terminations | truncations

            if global_step >= args.learning_starts and (global_step // args.num_envs) % args.train_frequency == 0:
                for _ in range(args.gradient_steps):
                    b_obs, b_actions, b_rewards, b_next_obs, b_terminations = map(
                        as_tensor, buffer.sample(args.batch_size)
                    )
                    with torch.no_grad():
                        next_q = target_critic(b_next_obs, target_actor(b_next_obs))
                        targets = critic_target(b_rewards, b_terminations, next_q, args.gamma)
                    q_values = critic(b_obs, b_actions)
                    qf_loss = (q_values - targets).pow(2).mean()  # mean((Q(s, a) - y)^2)
                    critic_optimizer.zero_grad()
                    qf_loss.backward()
                    critic_optimizer.step()
                    stats = {"qf_loss": qf_loss.item(), "qf_values": q_values.mean().item()}
                    num_gradient_steps += 1
                    if num_gradient_steps % args.policy_frequency == 0:
                        actor_loss = -critic(b_obs, actor(b_obs)).mean()  # -mean(Q(s, mu(s)))
                        actor_optimizer.zero_grad()
                        # the gradient flows through Q into mu; inputs= computes only mu's gradients
                        # (Q's own, which this step would not use, are skipped and left untouched)
                        actor_loss.backward(inputs=actor_params)
                        actor_optimizer.step()
                        stats["actor_loss"] = actor_loss.item()
                    soft_update(target_params, online_params, args.tau)
                    for name, value in stats.items():
                        if not np.isfinite(value):
                            raise FloatingPointError(f"non-finite {name} ({value}) at global step {global_step}")
                        loss_sums[name] = loss_sums.get(name, 0.0) + value
                    num_logged += 1

            if num_logged >= 100 or global_step >= args.total_timesteps:
                for name, total in loss_sums.items():
                    writer.add_scalar(f"losses/{name}", total / max(num_logged, 1), global_step)
                loss_sums, num_logged = {}, 0
                writer.add_scalar("charts/learning_rate", args.learning_rate, global_step)
                writer.add_scalar("charts/SPS", int(global_step / (time.time() - start_time)), global_step)
            if global_step >= next_progress or global_step >= args.total_timesteps:
                next_progress += args.total_timesteps / 20
                mean_recent = np.mean(recent_returns) if recent_returns else float("nan")
                print(
                    f"global_step={global_step:>8d} ({100 * min(global_step / args.total_timesteps, 1):3.0f}%)  "
                    f"mean_return(last 10)={mean_recent:9.2f}  SPS={int(global_step / (time.time() - start_time))}"
                )
    except KeyboardInterrupt:
        print(f"interrupted at global_step={global_step}; closing cleanly", file=sys.stderr)
        exit_code = 130
    except FloatingPointError as error:
        print(f"{os.path.basename(__file__)}: error: {error}", file=sys.stderr)
        exit_code = 1
    finally:
        ctrl_c.restore()  # Ctrl-C is back to its usual meaning
        if args.save_model and exit_code != 1:
            save_model(model_path, actor, critic, args)
            print(f"model saved to {model_path}")
        envs.close()

    eval_returns = []
    if args.save_model and exit_code == 0:
        eval_returns = evaluate(model_path, args.eval_episodes, args.seed + 10_000, device)
        for episode, episodic_return in enumerate(eval_returns):
            writer.add_scalar("eval/episodic_return", episodic_return, episode)
        print(f"eval: mean return {np.mean(eval_returns):.2f} over {len(eval_returns)} episodes")
    writer.close()
    mean_recent = np.mean(recent_returns) if recent_returns else float("nan")
    print(f"final mean_return(last 10)={mean_recent:.2f}  run: runs/{run_name}")
    if tracker is not None:
        finish_tracking(tracker, run_name, exit_code)
    if exit_code:
        sys.exit(exit_code)
    return {"run_name": run_name, "episodic_returns": all_returns, "eval_returns": eval_returns}


if __name__ == "__main__":
    main(tyro.cli(Args))
