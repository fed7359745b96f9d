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

    python ddpg.py                                  # Pendulum-v1, 20k steps (~2 min on 2 CPU cores)
    python ddpg.py --env-id HalfCheetah-v5 --total-timesteps 300000   # ~30 min
"""

import copy
import dataclasses
import glob
import importlib.util
import os
import random
import signal
import sys
import threading
import time
from typing import Literal, NoReturn

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
    hidden_size: int = 256
    """units in each of the two hidden layers of actor and critic (TD3's and CleanRL's 256; 64 runs ~2x faster
    but collapsed on InvertedPendulum-v5 at 30k steps where 256 did not, seeds 1-3; see docs/ddpg.md)"""
    learning_starts: int | None = None
    """env steps of uniform random actions before learning starts [None: 5% of --total-timesteps, at most
    10,000 (TD3's and RL Zoo's MuJoCo value): a short run keeps most of its steps for learning, a long one
    fills the buffer with varied data before the first updates]"""
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


def make_env(env_id: str, idx: int, capture_video: bool, run_name: str, render: bool = False):
    def thunk():
        video = capture_video and idx == 0  # only the first env is recorded
        env = gym.make(env_id, render_mode="human" if render else "rgb_array" if video else None)
        return gym.wrappers.RecordVideo(env, f"videos/{run_name}") if video else env

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


def mlp(inputs: int, outputs: int, hidden: int) -> nn.Sequential:
    """The shape of both networks: two hidden layers of `hidden` ReLU units."""
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, outputs)
    )


class Actor(nn.Module):
    """mu(s) = tanh(net(s)) * action_scale + action_bias: always inside the action bounds.
    Scale and bias are buffers, so they travel with the saved weights."""

    def __init__(self, obs_dim: int, action_space: gym.spaces.Box, hidden_size: int):
        super().__init__()
        self.net = mlp(obs_dim, action_space.shape[0], hidden_size)
        low, high = (torch.as_tensor(bound, dtype=torch.float32) for bound in (action_space.low, action_space.high))
        self.register_buffer("action_scale", (high - low) / 2)
        self.register_buffer("action_bias", (high + low) / 2)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs)) * self.action_scale + self.action_bias


class Critic(nn.Module):
    """Q(s, a) on the concatenated observation and action."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_size: int):
        super().__init__()
        self.net = mlp(obs_dim + action_dim, 1, hidden_size)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=-1)).squeeze(-1)


class ReplayBuffer:
    """A numpy ring buffer of (obs, action, reward, next_obs, terminated), sampled uniformly.
    DDPG is off-policy: any past transition is a valid sample, which decorrelates the batches."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, rng: np.random.Generator, device="cpu"):
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros((capacity, action_dim), dtype=np.float32)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.terminations = np.zeros(capacity, dtype=np.float32)
        self.capacity = capacity
        self.position = self.size = 0  # the next row to write, and how many rows hold data
        self.rng = rng
        self.device = device
        self.arrays = (self.obs, self.actions, self.rewards, self.next_obs, self.terminations)

    def add(self, obs, actions, rewards, next_obs, terminations) -> None:
        """Add a batch of transitions, overwriting the oldest once full."""
        rows = (self.position + np.arange(len(rewards))) % self.capacity
        for array, values in zip(self.arrays, (obs, actions, rewards, next_obs, terminations), strict=True):
            array[rows] = values
        self.position = (self.position + len(rewards)) % self.capacity
        self.size = min(self.size + len(rewards), self.capacity)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """A uniform batch of (obs, actions, rewards, next_obs, terminations), as float32 tensors on the device."""
        indices = self.rng.integers(0, self.size, size=batch_size)
        return tuple(torch.as_tensor(array[indices], device=self.device) for array in self.arrays)


class OUNoise:
    """Ornstein-Uhlenbeck process, one independent process per row (env):
    x <- x + theta * (mu - x) * dt + sigma * sqrt(dt) * N(0, 1). The paper's choice (`--noise-type ou`):
    temporally correlated, so a pendulum or a body gets pushed the same way for a while, which explores
    physical systems with inertia better than noise that averages out from step to step. Stationary std
    sigma / sqrt(2 * theta)."""

    def __init__(self, shape, sigma: float, theta: float, dt: float, rng: np.random.Generator, mu: float = 0.0):
        self.sigma = sigma
        self.theta = theta
        self.dt = dt
        self.mu = mu
        self.rng = rng
        self.state = np.full(shape, mu, dtype=np.float64)

    def sample(self) -> np.ndarray:
        drift = self.theta * (self.mu - self.state) * self.dt
        diffusion = self.sigma * np.sqrt(self.dt) * self.rng.standard_normal(self.state.shape)
        self.state = self.state + drift + diffusion
        return self.state.copy()

    def reset(self, mask: np.ndarray) -> None:
        """Back to mu for the rows where mask is True (envs whose episode ended)."""
        self.state[mask] = self.mu


class GaussianNoise:
    """Independent N(0, sigma) noise each step (the default, as in TD3 and CleanRL), with OUNoise's interface."""

    def __init__(self, shape, sigma: float, rng: np.random.Generator):
        self.shape = shape
        self.sigma = sigma
        self.rng = rng

    def sample(self) -> np.ndarray:
        return self.rng.normal(0.0, self.sigma, self.shape)

    def reset(self, mask: np.ndarray) -> None:
        """Nothing to reset: successive samples are independent."""


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """theta' <- tau * theta + (1 - tau) * theta' for every pair of parameters (tau = 1 copies)."""
    with torch.no_grad():
        for target_param, param in zip(target.parameters(), source.parameters(), strict=True):
            target_param.lerp_(param, tau)  # theta' + tau * (theta - theta')


def critic_target(rewards: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma * (1 - terminated) * Q'(s', mu'(s')); truncated rows keep their bootstrap."""
    return rewards + gamma * (1.0 - terminated) * next_q


def main(args: Args) -> dict:
    args = check_args(args)  # and learning_starts filled in from the budget
    if args.eval_model:
        return watch(args)
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(1)  # measured: faster than 2 threads for these batch sizes on a 2-core CPU
    # tiny floats flushed to zero: with them, Adam's step on trained nets was ~4x slower on an x86 CPU
    torch.set_flush_denormal(True)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    rng = np.random.default_rng(args.seed)  # the exploration noise and the replay sampling
    # Ctrl-C only sets a flag the loop checks: a KeyboardInterrupt raised inside a TensorBoard write can
    # queue an event without waking the writer's thread, and closing the writer then stalls.
    ctrl_c = threading.Event()
    previous_sigint = signal.signal(signal.SIGINT, lambda signum, frame: ctrl_c.set())
    writer, tracker = start_logging(args, run_name)

    envs = make_vector_env(args.env_id, args.num_envs, args.capture_video, run_name)
    envs.action_space.seed(args.seed)
    action_space = envs.single_action_space
    obs_dim, action_dim = envs.single_observation_space.shape[0], action_space.shape[0]
    actor = Actor(obs_dim, action_space, args.hidden_size).to(device)
    critic = Critic(obs_dim, action_dim, args.hidden_size).to(device)
    target_actor, target_critic = copy.deepcopy(actor), copy.deepcopy(critic)  # theta' = theta at the start
    # fused: one kernel updates every parameter (~60% cheaper per step than the per-tensor loop here)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate, fused=True)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate, fused=True)
    buffer = ReplayBuffer(args.buffer_size, obs_dim, action_dim, rng, device)
    if args.noise_type == "ou":
        noise = OUNoise((args.num_envs, action_dim), args.exploration_noise, args.ou_theta, args.ou_dt, rng)
    else:
        noise = GaussianNoise((args.num_envs, action_dim), args.exploration_noise, rng)
    half_range = (action_space.high - action_space.low) / 2  # the noise is in units of the half-range

    episodic_returns = []
    losses = {"qf_loss": [], "qf_values": [], "actor_loss": []}
    global_step = num_gradient_steps = 0
    exit_code = 0
    next_progress = args.total_timesteps / 20
    start_time = time.time()
    obs, _ = envs.reset(seed=args.seed)  # env i gets seed + i
    resetting = np.zeros(args.num_envs, dtype=bool)  # NEXT_STEP: this step of env i only resets it
    try:
        while global_step < args.total_timesteps and not ctrl_c.is_set():
            if global_step < args.learning_starts:
                actions = envs.action_space.sample()
            else:
                with torch.no_grad():
                    mu = actor(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
                actions = np.clip(mu + noise.sample() * half_range, action_space.low, action_space.high)
            next_obs, rewards, terminations, truncations, infos = envs.step(actions)
            global_step += args.num_envs

            # next_obs of an episode's last step is its real final observation (NEXT_STEP), so a
            # truncated transition is stored with terminated = 0 and bootstraps from it.
            keep = ~resetting
            buffer.add(obs[keep], actions[keep], rewards[keep], next_obs[keep], terminations[keep])
            # a fresh noise process for each new episode, restarted after the step that only reset
            # the env, so the episode's first real action starts from mu
            noise.reset(resetting)
            for env_index in np.flatnonzero(infos.get("_episode", [])):
                episodic_returns.append(float(infos["episode"]["r"][env_index]))
                writer.add_scalar("charts/episodic_return", episodic_returns[-1], global_step)
                writer.add_scalar("charts/episodic_length", int(infos["episode"]["l"][env_index]), global_step)
            obs, resetting = next_obs, terminations | truncations

            if global_step >= args.learning_starts and (global_step // args.num_envs) % args.train_frequency == 0:
                for _ in range(args.gradient_steps):
                    b_obs, b_actions, b_rewards, b_next_obs, b_terminations = buffer.sample(args.batch_size)
                    with torch.no_grad():
                        next_q = target_critic(b_next_obs, target_actor(b_next_obs))
                        targets = critic_target(b_rewards, b_terminations, next_q, args.gamma)
                    q_values = critic(b_obs, b_actions)
                    qf_loss = (q_values - targets).pow(2).mean()  # mean((Q(s, a) - y)^2)
                    critic_optimizer.zero_grad()
                    qf_loss.backward()
                    critic_optimizer.step()
                    losses["qf_loss"].append(qf_loss.item())
                    losses["qf_values"].append(q_values.mean().item())
                    num_gradient_steps += 1
                    if num_gradient_steps % args.policy_frequency == 0:
                        actor_loss = -critic(b_obs, actor(b_obs)).mean()  # -mean(Q(s, mu(s)))
                        actor_optimizer.zero_grad()
                        # the gradient flows through Q into mu; inputs= computes only mu's gradients
                        # (Q's own, which this step would not use, are skipped and left untouched)
                        actor_loss.backward(inputs=list(actor.parameters()))
                        actor_optimizer.step()
                        losses["actor_loss"].append(actor_loss.item())
                    soft_update(target_actor, actor, args.tau)
                    soft_update(target_critic, critic, args.tau)
                    check_finite(losses, global_step)

            if len(losses["qf_loss"]) >= 100 or global_step >= args.total_timesteps:
                write_scalars(writer, losses, args.learning_rate, global_step, start_time)  # and clears the losses
            if global_step >= next_progress or global_step >= args.total_timesteps:
                next_progress += args.total_timesteps / 20
                sps = int(global_step / (time.time() - start_time))
                print(progress_line(global_step, args.total_timesteps, episodic_returns, sps))
    except FloatingPointError as error:
        print(f"{os.path.basename(__file__)}: error: {error}", file=sys.stderr)
        exit_code = 1
    finally:
        signal.signal(signal.SIGINT, previous_sigint)
    exit_code = 130 if ctrl_c.is_set() else exit_code  # a pressed Ctrl-C: saved (with --save-model), not evaluated
    envs.close()
    return finish_run(args, run_name, writer, tracker, exit_code, actor, episodic_returns)


# --- Plumbing: the algorithm is complete above; below are validation, saving, evaluation, logging and Ctrl-C. ---

ALGORITHM = "ddpg"  # stored in saved models: --eval-model refuses another script's file
FLAG_RULES = [  # (what is allowed, the test, the flags it applies to)
    ("> 0", lambda value: value > 0, ["total_timesteps", "learning_rate", "num_envs", "buffer_size", "batch_size"]),
    ("> 0", lambda value: value > 0, ["hidden_size", "train_frequency", "gradient_steps", "policy_frequency"]),
    ("> 0", lambda value: value > 0, ["ou_theta", "ou_dt", "eval_episodes"]),
    ("in [0, 1]", lambda value: 0 <= value <= 1, ["gamma", "tau"]),
    (">= 0", lambda value: value >= 0, ["learning_starts", "exploration_noise"]),
]


def usage_error(message: str) -> NoReturn:
    """A user mistake: one line on stderr, exit status 2, no traceback."""
    print(f"{os.path.basename(__file__)}: error: {message}", file=sys.stderr)
    sys.exit(2)


def check_args(args: Args) -> Args:
    """Stop with one line and exit 2, before any env is made, at the first flag that breaks its rule, an
    unknown env id, a missing optional package or a space this script does not support. Returns the args
    with --learning-starts filled in when it was left to its budget rule."""
    if args.learning_starts is None:
        args = dataclasses.replace(args, learning_starts=min(10_000, args.total_timesteps // 20))
    for rule, allowed, names in FLAG_RULES:
        for name in names:
            if not allowed(getattr(args, name)):
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
    if not all(isinstance(space, gym.spaces.Box) and len(space.shape) == 1 for space in (obs_space, action_space)):
        usage_error(
            f"{args.env_id} has observation space {obs_space} and action space {action_space}; ddpg.py supports 1-D "
            "Box observation and action spaces (for discrete actions: ppo.py, a2c.py, qac.py or reinforce.py)"
        )
    return args


def check_finite(losses: dict[str, list[float]], global_step: int) -> None:
    """The non-finite stop, once per gradient step: its losses, before training goes on with NaN."""
    for name, values in losses.items():
        if values and not np.isfinite(values[-1]):
            raise FloatingPointError(f"non-finite {name} ({values[-1]}) at global step {global_step}")


def write_scalars(writer, losses: dict[str, list[float]], learning_rate: float, global_step: int, start_time) -> None:
    """Each loss as its mean over every gradient step since the last write (then its list is emptied for the
    next window); the learning rate; steps/sec."""
    for name, values in losses.items():
        if values:
            writer.add_scalar(f"losses/{name}", np.mean(values), global_step)
        values.clear()
    writer.add_scalar("charts/learning_rate", learning_rate, global_step)
    writer.add_scalar("charts/SPS", int(global_step / (time.time() - start_time)), global_step)


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


def finish_run(args: Args, run_name: str, writer, tracker, exit_code: int, actor: Actor, episodic_returns) -> dict:
    """After training: with --save-model save the actor (what acts; the critic is not saved) unless the run
    failed and, if it completed, evaluate the saved file; close the writer and the W&B run (uploading the
    training videos); exit on a failure."""
    model_path = f"runs/{run_name}/{args.exp_name}.pt"
    if args.save_model and exit_code != 1:
        torch.save({"algorithm": ALGORITHM, "args": dataclasses.asdict(args), "model": actor.state_dict()}, model_path)
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
    return dict(run_name=run_name, episodic_returns=episodic_returns, eval_returns=eval_returns, model_path=model_path)


def watch(args: Args) -> dict:
    """--eval-model (and the evaluation after training): play the saved actor's mu(s), no noise, for
    --eval-episodes episodes on its env (episode i from reset(seed=seed + 10_000 + i)), and print the
    mean return. A file that is missing, not a model file, another script's, or whose weights do not fit
    its env: one line, exit 2."""
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    video_name = os.path.basename(os.path.dirname(os.path.abspath(args.eval_model))) + "-eval"
    try:  # weights_only (torch's default): loading runs no code from the file
        checkpoint = torch.load(args.eval_model, map_location=device)
        if checkpoint["algorithm"] != ALGORITHM:
            raise ValueError(f"saved by {checkpoint['algorithm']}.py")
        train_args = Args(**checkpoint["args"])
        env = make_env(train_args.env_id, 0, args.capture_video, video_name, args.render)()
        actor = Actor(env.observation_space.shape[0], env.action_space, train_args.hidden_size)
        actor.to(device).load_state_dict(checkpoint["model"])
    except FileNotFoundError:
        usage_error(f"--eval-model {args.eval_model}: no such file")
    except Exception as error:
        reason = (str(error).strip() or type(error).__name__).splitlines()[0]
        why = f"not a model file saved by {ALGORITHM}.py, or its weights do not fit its env ({reason})"
        usage_error(f"--eval-model {args.eval_model}: {why}")
    if args.env_id not in (Args.env_id, train_args.env_id):  # left at its default, --env-id means "the model's"
        usage_error(f"--eval-model {args.eval_model} was trained on {train_args.env_id}, not on --env-id {args.env_id}")
    returns = []
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 10_000 + episode)
        returns.append(0.0)
        terminated = truncated = False
        while not (terminated or truncated):
            with torch.no_grad():
                action = actor(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
            obs, reward, terminated, truncated, _ = env.step(action)
            returns[-1] += float(reward)
    env.close()
    mean, std = np.mean(returns), np.std(returns)
    print(f"eval: {train_args.env_id} mean return {mean:.2f} +- {std:.2f} over {len(returns)} episodes")
    return {"eval_returns": returns, "video_folder": f"videos/{video_name}" if args.capture_video else None}


if __name__ == "__main__":
    main(tyro.cli(Args))
