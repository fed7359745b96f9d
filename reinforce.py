"""REINFORCE: Monte-Carlo policy gradient for Discrete and Box action spaces.

Paper: Williams 1992, "Simple statistical gradient-following algorithms for connectionist
reinforcement learning", https://doi.org/10.1007/BF00992696 (Sutton & Barto, ch. 13.3).

Sample complete episodes with the current policy, score every step by the discounted return
that followed it, and push up the log-probability of each action in proportion to that return:

    G_t  = r_t + gamma * G_{t+1}                       (backward over the episode, G_T = 0)
    G_t <- (G_t - mean(G)) / (std(G) + eps)            (return normalization, on by default)
    loss = -sum_t log pi(a_t|s_t) * G_t                 (averaged over the episodes of a batch)

There is no critic: the return itself is the (high-variance) signal; qac.py and a2c.py add one.
A time-limit cut simply ends the Monte-Carlo return there (G_T = 0): without a value function
there is nothing to bootstrap from, so on truncated tasks the late steps look worse than they are.

    python reinforce.py                                # CartPole-v1
    python reinforce.py --env-id InvertedPendulum-v5   # needs the mujoco extra
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

ALGORITHM = "reinforce"  # stored in saved models: --eval-model refuses another script's file


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
    total_timesteps: int = 200_000
    """total env steps of the run (CartPole-v1 is solved well before this)"""
    learning_rate: float = 5e-3
    """Adam learning rate"""
    num_envs: int = 1
    """number of parallel envs the episodes of a batch come from"""
    episodes_per_update: int = 1
    """complete episodes in each policy-gradient batch"""
    gamma: float = 0.99
    """discount factor"""
    norm_returns: bool = True
    """if toggled, normalize the returns of each batch to zero mean and unit std"""
    hidden_size: int = 128
    """units of the policy's single ReLU hidden layer"""
    stop_running_reward: float | None = None
    """if set, stop once running = (1 - alpha) * running + alpha * episode_return exceeds it"""
    running_reward_alpha: float = 0.05
    """the smoothing weight alpha of the running reward"""


def usage_error(message: str) -> None:
    """A user mistake: one line on stderr, exit status 2, no traceback."""
    print(f"{os.path.basename(__file__)}: error: {message}", file=sys.stderr)
    sys.exit(2)


def check_args(args: Args) -> None:
    """Reject impossible values, unknown envs and unsupported spaces before training starts."""
    for name in ["total_timesteps", "learning_rate", "num_envs", "episodes_per_update", "hidden_size", "eval_episodes"]:
        if not getattr(args, name) > 0:
            usage_error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    for name in ["gamma", "running_reward_alpha"]:
        if not 0 <= getattr(args, name) <= 1:
            usage_error(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
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
    if args.capture_video:
        try:  # rendering may need packages of its own (pygame for classic control, OpenGL for MuJoCo)
            probe.reset(seed=args.seed)
            probe.render()
        except (gym.error.DependencyNotInstalled, ImportError) as error:
            usage_error(f"--capture-video cannot render {args.env_id}: {str(error).splitlines()[0]}")
    probe.close()
    obs_ok = isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1
    action_ok = isinstance(action_space, gym.spaces.Discrete) or (
        isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1
    )
    if not (obs_ok and action_ok):
        usage_error(
            f"{args.env_id} has observation space {obs_space} and action space {action_space}; "
            "reinforce.py supports a 1-D Box observation space with a Discrete or 1-D Box action space"
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

    Autoreset mode is NEXT_STEP (gymnasium's default): after env i ends at step t, its step
    t+1 only resets it (action ignored, reward 0). Such reset steps are not part of any
    episode, so the collector skips them.
    """
    thunks = [make_env(env_id, i, capture_video, run_name) for i in range(num_envs)]
    envs = gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


class Policy(nn.Module):
    """One ReLU hidden layer. Discrete: Categorical logits. Box: the mean of a diagonal Normal
    with a learned, state-independent log-std."""

    def __init__(self, obs_dim: int, action_space: gym.Space, hidden_size: int):
        super().__init__()
        self.is_discrete = isinstance(action_space, gym.spaces.Discrete)
        action_dim = int(action_space.n) if self.is_discrete else int(np.prod(action_space.shape))
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden_size), nn.ReLU(), nn.Linear(hidden_size, action_dim))
        if not self.is_discrete:
            self.log_std = nn.Parameter(torch.zeros(action_dim))

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        out = self.net(obs)
        if self.is_discrete:
            return torch.distributions.Categorical(logits=out)
        return torch.distributions.Normal(out, self.log_std.exp())

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Sampled actions, or argmax / Gaussian mean if deterministic."""
        dist = self.distribution(obs)
        if deterministic:
            return dist.probs.argmax(-1) if self.is_discrete else dist.mean
        return dist.sample()

    def log_prob_and_entropy(self, obs: torch.Tensor, actions: torch.Tensor):
        dist = self.distribution(obs)
        if self.is_discrete:
            return dist.log_prob(actions), dist.entropy()
        return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = r_t + gamma * G_{t+1} for one complete episode, computed backward from G_T = 0."""
    returns = np.zeros(len(rewards), dtype=np.float64)
    running = 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def normalize_returns(returns: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """(G - mean(G)) / (std(G) + eps): a batch-wide baseline and scale (the seed's key trick)."""
    return (returns - returns.mean()) / (returns.std() + eps)


def reinforce_loss(log_probs: torch.Tensor, returns: torch.Tensor, num_episodes: int) -> torch.Tensor:
    """-sum_t log pi(a_t|s_t) * G_t over every step of the batch, averaged over its episodes."""
    return -(log_probs * returns).sum() / num_episodes


@dataclass
class Episode:
    obs: list
    actions: list
    rewards: list


def collect_episodes(policy: Policy, envs, num_episodes: int, device: torch.device, seed: int | None):
    """Run the current policy until `num_episodes` episodes are complete.

    Every batch starts from a fresh reset, so an episode still running when the batch is full
    is dropped: no partial episode, and no episode from an older policy, enters an update.
    Returns (complete episodes, env steps taken, the episode-statistics infos of each step).
    """
    obs, _ = envs.reset(seed=seed)
    ongoing = [Episode([], [], []) for _ in range(envs.num_envs)]
    finished: list[Episode] = []
    resetting = np.zeros(envs.num_envs, dtype=bool)  # NEXT_STEP: this step only resets env i
    steps, infos_per_step = 0, []
    while len(finished) < num_episodes:
        with torch.no_grad():
            actions = policy.act(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
        env_actions = actions
        if not policy.is_discrete:
            # The env gets the clipped action; learning uses the log-prob of the sampled one.
            env_actions = np.clip(actions, envs.single_action_space.low, envs.single_action_space.high)
        next_obs, rewards, terminations, truncations, infos = envs.step(env_actions)
        steps += envs.num_envs
        infos_per_step.append((steps, infos))
        dones = terminations | truncations
        for i in np.flatnonzero(~resetting):
            ongoing[i].obs.append(obs[i])
            ongoing[i].actions.append(actions[i])
            ongoing[i].rewards.append(rewards[i])
            if dones[i]:
                finished.append(ongoing[i])
                ongoing[i] = Episode([], [], [])
        obs, resetting = next_obs, dones
    return finished[:num_episodes], steps, infos_per_step


def save_model(path: str, policy: Policy, args: Args) -> None:
    torch.save({"algorithm": ALGORITHM, "model": policy.state_dict(), "args": dataclasses.asdict(args)}, path)


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
    """Play episodes with the saved policy's deterministic action (argmax or Gaussian mean); with a
    video_name, record them into videos/{video_name}."""
    checkpoint, train_args = load_model_file(model_path, device)
    env = make_env(train_args.env_id, 0, bool(video_name), video_name, render)()
    policy = Policy(env.observation_space.shape[0], env.action_space, train_args.hidden_size).to(device)
    try:
        policy.load_state_dict(checkpoint["model"])
    except RuntimeError as error:  # weights of another shape: saved from another env or network
        usage_error(f"--eval-model {model_path}: its weights do not fit {train_args.env_id} ({error})".splitlines()[0])
    returns = []
    for episode in range(eval_episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, total = False, 0.0
        while not done:
            with torch.no_grad():
                action = policy.act(torch.as_tensor(obs, dtype=torch.float32, device=device), deterministic=True)
            action = action.cpu().numpy()
            if not policy.is_discrete:
                action = np.clip(action, env.action_space.low, env.action_space.high)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


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


def main(args: Args) -> dict:
    check_args(args)
    if args.eval_model:
        return watch(args)
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    # One thread is faster than several for a 128-unit network, and leaves a core for the env.
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    tracker = start_tracking(args, run_name) if args.track else None
    writer = SummaryWriter(f"runs/{run_name}")
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in dataclasses.asdict(args).items()),
    )
    envs = make_vector_env(args.env_id, args.num_envs, args.capture_video, run_name)
    envs.action_space.seed(args.seed)
    policy = Policy(envs.single_observation_space.shape[0], envs.single_action_space, args.hidden_size).to(device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=args.learning_rate)
    model_path = f"runs/{run_name}/{args.exp_name}.pt"

    recent_returns: deque[float] = deque(maxlen=20)
    all_returns: list[float] = []
    # The env's own "solved" level (475 for CartPole-v1), if it has one: report when the
    # last-20 mean first reaches it.
    solved_at, reward_threshold = None, gym.spec(args.env_id).reward_threshold
    running_reward = None
    global_step, num_updates, next_progress = 0, 0, args.total_timesteps / 20
    start_time = time.time()
    exit_code = 0
    ctrl_c = CtrlC()
    try:
        while global_step < args.total_timesteps:
            if ctrl_c.pressed:
                raise KeyboardInterrupt  # handled below, at a point where nothing is half done
            seed = args.seed if num_updates == 0 else None  # seed once; later resets continue the RNGs
            episodes, steps, infos_per_step = collect_episodes(policy, envs, args.episodes_per_update, device, seed)
            for step, infos in infos_per_step:
                if "episode" not in infos:
                    continue
                for i in np.flatnonzero(infos["_episode"]):
                    episodic_return = float(infos["episode"]["r"][i])
                    recent_returns.append(episodic_return)
                    all_returns.append(episodic_return)
                    alpha = args.running_reward_alpha
                    running_reward = (
                        episodic_return
                        if running_reward is None
                        else ((1 - alpha) * running_reward + alpha * episodic_return)
                    )
                    writer.add_scalar("charts/episodic_return", episodic_return, global_step + step)
                    writer.add_scalar("charts/episodic_length", int(infos["episode"]["l"][i]), global_step + step)
                    writer.add_scalar("charts/running_reward", running_reward, global_step + step)
                    window_full = len(recent_returns) == recent_returns.maxlen
                    if (
                        solved_at is None
                        and reward_threshold is not None
                        and window_full
                        and np.mean(recent_returns) >= reward_threshold
                    ):
                        solved_at = len(all_returns)
                        print(f"last-20 mean reached the env's threshold {reward_threshold} at episode {solved_at}")
            global_step += steps

            returns = np.concatenate([discounted_returns(np.array(e.rewards), args.gamma) for e in episodes])
            if args.norm_returns:
                returns = normalize_returns(returns)
            obs = torch.as_tensor(np.concatenate([e.obs for e in episodes]), dtype=torch.float32, device=device)
            actions = torch.as_tensor(np.concatenate([e.actions for e in episodes]), device=device)
            log_probs, entropy = policy.log_prob_and_entropy(obs, actions)
            loss = reinforce_loss(
                log_probs, torch.as_tensor(returns, dtype=torch.float32, device=device), len(episodes)
            )
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite policy_loss ({loss.item()}) at global step {global_step}")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            num_updates += 1

            sps = int(global_step / (time.time() - start_time))
            writer.add_scalar("losses/policy_loss", loss.item(), global_step)
            writer.add_scalar("losses/entropy", entropy.mean().item(), global_step)
            writer.add_scalar("charts/learning_rate", args.learning_rate, global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            writer.add_scalar("charts/episodes", len(all_returns), global_step)
            if global_step >= next_progress or global_step >= args.total_timesteps:
                next_progress += args.total_timesteps / 20
                print(
                    f"global_step={global_step:>8d} ({100 * min(global_step / args.total_timesteps, 1):3.0f}%)  "
                    f"episodes={len(all_returns):>5d}  mean_return(last 20)={np.mean(recent_returns):8.2f}  SPS={sps}"
                )
            if args.stop_running_reward is not None and running_reward > args.stop_running_reward:
                print(f"running reward {running_reward:.1f} > {args.stop_running_reward}: solved, stopping")
                break
    except KeyboardInterrupt:
        print(f"interrupted at global_step={global_step}; closing cleanly", file=sys.stderr)
        exit_code = 130
    except FloatingPointError as error:
        print(f"{os.path.basename(__file__)}: error: {error}", file=sys.stderr)
        exit_code = 1
    finally:
        ctrl_c.restore()  # Ctrl-C is back to its usual meaning
        if args.save_model and exit_code != 1:
            save_model(model_path, policy, args)
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
    print(f"final mean_return(last 20)={mean_recent:.2f}  episodes={len(all_returns)}  run: runs/{run_name}")
    if tracker is not None:
        finish_tracking(tracker, run_name, exit_code)
    if exit_code:
        sys.exit(exit_code)
    return {"run_name": run_name, "episodic_returns": all_returns, "eval_returns": eval_returns, "solved_at": solved_at}


if __name__ == "__main__":
    main(tyro.cli(Args))
