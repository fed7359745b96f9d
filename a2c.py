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
"""

import dataclasses
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
    eval_frequency: int = 25_000
    """evaluate the current policy on a separate test env every this many env steps (0: never)"""
    eval_episodes: int = 10
    """episodes per evaluation (deterministic actions), periodic and final"""

    env_id: str = "CartPole-v1"
    """the id of a gymnasium environment with a 1-D Box observation space"""
    total_timesteps: int = 300_000
    """total env steps of the run"""
    learning_rate: float = 7e-4
    """RMSprop learning rate"""
    anneal_lr: bool = True
    """if toggled, the learning rate decays linearly to 0 over the run"""
    num_envs: int = 8
    """number of parallel envs"""
    num_steps: int = 5
    """steps per env between updates (the n of the n-step return)"""
    async_envs: bool = False
    """if toggled, run each env in a subprocess driven through a pipe (AsyncVectorEnv), as the
    paper's workers do; off by default because for cheap envs the pipe round trip costs more than
    the env step (measured here, CartPole-v1 with 8 envs: 25.6k vs 12.2k steps/s, see the README)"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 1.0
    """GAE lambda; 1.0 gives plain n-step returns"""
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
    ]
    for name in positive:
        if not getattr(args, name) > 0:
            usage_error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    for name in ["gamma", "gae_lambda", "rms_alpha"]:
        if not 0 <= getattr(args, name) <= 1:
            usage_error(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    for name in ["ent_coef", "vf_coef", "eval_frequency"]:
        if not getattr(args, name) >= 0:
            usage_error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.env_id not in gym.registry:
        usage_error(f"--env-id {args.env_id!r} is not a registered gymnasium environment")
    if args.capture_video and importlib.util.find_spec("moviepy") is None:
        usage_error("--capture-video needs moviepy: pip install -e '.[video]'")


def resolve_defaults(args: Args) -> Args:
    """Check the env's spaces on one probe env and fill the kind-dependent normalization defaults."""
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
    normalize = not discrete
    return dataclasses.replace(
        args,
        norm_obs=normalize if args.norm_obs is None else args.norm_obs,
        norm_reward=normalize if args.norm_reward is None else args.norm_reward,
    )


def make_env(env_id: str, idx: int, capture_video: bool, run_name: str):
    def thunk():
        if capture_video and idx == 0:
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
    thunks = [make_env(args.env_id, i, args.capture_video, run_name) for i in range(args.num_envs)]
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
    diagonal Normal whose log-std is a learned, state-independent parameter.
    """

    def __init__(self, obs_dim: int, action_space: gym.Space):
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
            self.actor_logstd = nn.Parameter(torch.zeros(1, action_dim))

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


def save_model(path: str, agent: Agent, envs: gym.vector.VectorEnv, args: Args) -> None:
    """Weights plus the observation-normalization statistics: everything needed to act."""
    torch.save({"model": agent.state_dict(), "obs_rms": get_obs_rms(envs), "args": dataclasses.asdict(args)}, path)


def evaluate(model_path: str, eval_episodes: int, seed: int, device: torch.device) -> list[float]:
    """Play the saved model deterministically on a fresh env with its saved, frozen obs statistics."""
    checkpoint = torch.load(model_path, map_location=device)
    envs = make_vector_env(eval_env_args(Args(**checkpoint["args"])))
    set_obs_rms(envs, checkpoint["obs_rms"])
    agent = Agent(envs.single_observation_space.shape[0], envs.single_action_space).to(device)
    agent.load_state_dict(checkpoint["model"])
    returns = play_episodes(agent, envs, eval_episodes, seed, device)
    envs.close()
    return returns


class NonFiniteLossError(RuntimeError):
    pass


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
    args = resolve_defaults(args)
    batch_size = args.num_envs * args.num_steps
    num_iterations = max(1, args.total_timesteps // batch_size)
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    # One thread is faster than several for 64-unit MLPs, and leaves a core for the envs.
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    writer = SummaryWriter(f"runs/{run_name}")
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in dataclasses.asdict(args).items()),
    )
    envs = make_vector_env(args, run_name)
    envs.action_space.seed(args.seed)
    eval_envs = make_vector_env(eval_env_args(args)) if args.eval_frequency else None
    action_space = envs.single_action_space
    agent = Agent(envs.single_observation_space.shape[0], action_space).to(device)
    optimizer = torch.optim.RMSprop(agent.parameters(), lr=args.learning_rate, alpha=args.rms_alpha, eps=args.rms_eps)
    episode_log = EpisodeLog(writer)
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
    next_obs, _ = envs.reset(seed=args.seed)  # env i gets seed + i
    next_done = np.zeros(args.num_envs, dtype=bool)
    exit_code = 0
    ctrl_c = CtrlC()
    try:
        for iteration in range(1, num_iterations + 1):
            if ctrl_c.pressed:
                raise KeyboardInterrupt  # handled below, at a point where nothing is half done
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1.0) / num_iterations)
            for step in range(args.num_steps):
                global_step += args.num_envs
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
            if iteration % log_every == 0:
                for name, total in loss_sums.items():
                    writer.add_scalar(f"losses/{name}", total / log_every, global_step)
                loss_sums = {}
                writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
                writer.add_scalar("charts/SPS", sps, global_step)
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
    except (EOFError, BrokenPipeError, ConnectionResetError):  # a subprocess env's pipe broke
        dead = stop_after_env_worker_death(envs)
        print(f"{os.path.basename(__file__)}: error: {dead} died at global step {global_step}", file=sys.stderr)
        exit_code = 1
    finally:
        ctrl_c.restore()  # Ctrl-C is back to its usual meaning
        if args.save_model and exit_code != 1:
            save_model(model_path, agent, envs, args)
            print(f"model saved to {model_path}")
        envs.close()
        if eval_envs is not None:
            eval_envs.close()

    eval_returns = []
    if args.save_model and exit_code == 0:
        eval_returns = evaluate(model_path, args.eval_episodes, args.seed + 10_000, device)
        for eval_return in eval_returns:
            writer.add_scalar("eval/episodic_return", eval_return, global_step)
        print(f"eval: mean return {np.mean(eval_returns):.2f} over {len(eval_returns)} episodes")
    writer.close()
    window = episode_log.recent_returns.maxlen
    print(f"final mean_return(last {window})={episode_log.recent_mean():.2f}  run: runs/{run_name}")
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
