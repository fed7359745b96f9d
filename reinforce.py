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

"Solved" means one thing here: the mean return of the last 10 episodes reaches the env's own
`reward_threshold` (475 for CartPole-v1); the run reports the episode where that first happened.

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


def make_env(env_id: str, idx: int, capture_video: bool, run_name: str, render: bool = False):
    def thunk():
        render_mode = "human" if render and idx == 0 else "rgb_array" if capture_video and idx == 0 else None
        env = gym.make(env_id, render_mode=render_mode)
        # A Box action is clipped on its way to the env; learning keeps the log-prob of the sampled one.
        if isinstance(env.action_space, gym.spaces.Box):
            env = gym.wrappers.ClipAction(env)
        return gym.wrappers.RecordVideo(env, f"videos/{run_name}") if capture_video and idx == 0 else env

    return thunk


def make_vector_env(env_id: str, num_envs: int, capture_video: bool = False, run_name: str = "", render=False):
    """Vectorized envs with episode statistics.

    Autoreset mode is NEXT_STEP (gymnasium's default): after env i ends at step t, its step
    t+1 only resets it (action ignored, reward 0). Such reset steps are not part of any
    episode, so the collector skips them.
    """
    thunks = [make_env(env_id, i, capture_video, run_name, render) for i in range(num_envs)]
    envs = gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


class Policy(nn.Module):
    """One ReLU hidden layer. Discrete: Categorical logits. Box: the mean of a diagonal Normal
    with a learned, state-independent log-std (Independent sums its log-probs over the action dims)."""

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
        return torch.distributions.Independent(torch.distributions.Normal(out, self.log_std.exp()), 1)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Sampled actions, or argmax / Gaussian mean if deterministic."""
        dist = self.distribution(obs)
        if deterministic:
            return dist.probs.argmax(-1) if self.is_discrete else dist.mean
        return dist.sample()


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


def collect_episodes(
    policy: Policy, envs, num_episodes: int, device: torch.device, seed: int | None, deterministic=False
):
    """Run the current policy until `num_episodes` episodes are complete (the evaluation of a saved
    model runs it too, with the deterministic action). An episode is its list of (obs, action, reward).

    Every batch starts from a fresh reset, so an episode still running when the batch is full
    is dropped: no partial episode, and no episode from an older policy, enters an update.
    Returns (complete episodes, env steps taken, the episode-statistics infos of each step).
    """
    obs, _ = envs.reset(seed=seed)
    ongoing = [[] for _ in range(envs.num_envs)]
    finished = []
    resetting = np.zeros(envs.num_envs, dtype=bool)  # NEXT_STEP: this step only resets env i
    steps = 0
    infos_per_step = []
    while len(finished) < num_episodes:
        with torch.no_grad():
            actions = policy.act(torch.as_tensor(obs, dtype=torch.float32, device=device), deterministic).cpu().numpy()
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        steps += envs.num_envs
        infos_per_step.append((steps, infos))
        dones = terminations | truncations
        for i in np.flatnonzero(~resetting):
            ongoing[i].append((obs[i], actions[i], rewards[i]))
            if dones[i]:
                finished.append(ongoing[i])
                ongoing[i] = []
        obs, resetting = next_obs, dones
    return finished[:num_episodes], steps, infos_per_step


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

    envs = make_vector_env(args.env_id, args.num_envs, args.capture_video, run_name)
    envs.action_space.seed(args.seed)
    policy = Policy(envs.single_observation_space.shape[0], envs.single_action_space, args.hidden_size).to(device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=args.learning_rate)

    episodic_returns: list[float] = []
    reward_threshold = gym.spec(args.env_id).reward_threshold or float("inf")  # the env's own "solved" level
    solved_at = None
    global_step = 0
    start_time = time.time()
    exit_code = 0
    writer, tracker = start_logging(args, run_name)  # the run folder appears here, just before the Ctrl-C handler
    # Ctrl-C only sets a flag the loop checks between updates: a KeyboardInterrupt raised inside a
    # TensorBoard write can queue an event without waking the writer's thread, and closing it stalls.
    ctrl_c = threading.Event()
    previous_sigint = signal.signal(signal.SIGINT, lambda signum, frame: ctrl_c.set())
    try:
        while global_step < args.total_timesteps and not ctrl_c.is_set():
            seed = args.seed if global_step == 0 else None  # seed once; later resets continue the RNGs
            episodes, steps, infos_per_step = collect_episodes(policy, envs, args.episodes_per_update, device, seed)
            for step, infos in infos_per_step:  # RecordEpisodeStatistics reports each finished episode
                for i in np.flatnonzero(infos.get("_episode", [])):
                    episodic_returns.append(float(infos["episode"]["r"][i]))
                    writer.add_scalar("charts/episodic_return", episodic_returns[-1], global_step + step)
                    writer.add_scalar("charts/episodic_length", int(infos["episode"]["l"][i]), global_step + step)
                    if solved_at is None and np.mean(episodic_returns[-10:]) >= reward_threshold:
                        solved_at = len(episodic_returns)
                        print(f"solved: the last-10 mean reached the env's reward_threshold at episode {solved_at}")
            global_step += steps

            obs, actions, _ = zip(*[transition for episode in episodes for transition in episode], strict=True)
            returns = [discounted_returns(np.array([reward for *_, reward in e]), args.gamma) for e in episodes]
            returns = np.concatenate(returns)
            if args.norm_returns:
                returns = normalize_returns(returns)
            dist = policy.distribution(torch.as_tensor(np.array(obs), dtype=torch.float32, device=device))
            log_probs = dist.log_prob(torch.as_tensor(np.array(actions), device=device))
            returns = torch.as_tensor(returns, dtype=torch.float32, device=device)
            loss = reinforce_loss(log_probs, returns, len(episodes))
            if not torch.isfinite(loss):  # stop instead of training on NaN
                raise FloatingPointError(f"non-finite policy_loss ({loss.item()}) at global step {global_step}")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

            sps = int(global_step / (time.time() - start_time))
            writer.add_scalar("losses/policy_loss", loss.item(), global_step)
            writer.add_scalar("losses/entropy", dist.entropy().mean().item(), global_step)
            writer.add_scalar("charts/learning_rate", args.learning_rate, global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            if global_step // (args.total_timesteps / 20) > (global_step - steps) // (args.total_timesteps / 20):
                print(progress_line(global_step, args.total_timesteps, episodic_returns, sps))
    except FloatingPointError as error:
        print(f"{os.path.basename(__file__)}: error: {error}", file=sys.stderr)
        exit_code = 1
    finally:
        signal.signal(signal.SIGINT, previous_sigint)
        envs.close()
    exit_code = 130 if ctrl_c.is_set() else exit_code
    return {**finish_run(args, run_name, writer, tracker, exit_code, policy, episodic_returns), "solved_at": solved_at}


# --- Plumbing: the algorithm is complete above; below are validation, saving, evaluation, logging and Ctrl-C. ---

ALGORITHM = "reinforce"  # stored in saved models: --eval-model refuses another script's file
FLAG_RULES = [  # (what is allowed, the test, the flags it applies to)
    ("> 0", lambda value: value > 0, ["total_timesteps", "learning_rate", "num_envs", "episodes_per_update"]),
    ("> 0", lambda value: value > 0, ["hidden_size", "eval_episodes"]),
    ("in [0, 1]", lambda value: 0 <= value <= 1, ["gamma"]),
]


def usage_error(message: str) -> None:
    """A user mistake: one line on stderr, exit status 2, no traceback."""
    print(f"{os.path.basename(__file__)}: error: {message}", file=sys.stderr)
    sys.exit(2)


def check_args(args: Args) -> None:
    """Stop with one line and exit 2, before any env is made, at the first flag that breaks its rule, an
    unknown env id, a missing optional package or a space this script does not support."""
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
    one_d_box = [isinstance(space, gym.spaces.Box) and len(space.shape) == 1 for space in (obs_space, action_space)]
    if not (one_d_box[0] and (one_d_box[1] or isinstance(action_space, gym.spaces.Discrete))):
        supported = f"{ALGORITHM}.py supports a 1-D Box observation space with a Discrete or 1-D Box action space"
        usage_error(f"{args.env_id} has observation space {obs_space} and action space {action_space}; {supported}")


def recent_mean(episodic_returns: list[float]) -> float:
    """The mean return of the last 10 episodes, the window of the progress lines (nan before the first)."""
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


def finish_run(args: Args, run_name: str, writer, tracker, exit_code: int, policy: Policy, episodic_returns) -> dict:
    """After training: with --save-model save (unless the run failed) and, if it completed, evaluate the
    saved file; close the writer and the W&B run (uploading the training videos); exit on a failure."""
    model_path = f"runs/{run_name}/{args.exp_name}.pt"
    if args.save_model and exit_code != 1:
        torch.save({"algorithm": ALGORITHM, "args": dataclasses.asdict(args), "model": policy.state_dict()}, model_path)
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
    """--eval-model (and the evaluation after training): play the saved model's deterministic action
    for --eval-episodes episodes on its env, from seed + 10_000, and print the mean return. A file that
    is missing, not a model file, another script's, or whose weights do not fit its env: one line, exit 2."""
    device = torch.device("cpu")  # playing a small policy: the CPU is fast enough
    video_name = os.path.basename(os.path.dirname(os.path.abspath(args.eval_model))) + "-eval"
    try:  # weights_only (torch's default): loading runs no code from the file
        checkpoint = torch.load(args.eval_model, map_location=device)
        if checkpoint["algorithm"] != ALGORITHM:
            raise ValueError(f"saved by {checkpoint['algorithm']}.py")
        train_args = Args(**checkpoint["args"])
        envs = make_vector_env(train_args.env_id, 1, args.capture_video, video_name, args.render)
        policy = Policy(envs.single_observation_space.shape[0], envs.single_action_space, train_args.hidden_size)
        policy.to(device).load_state_dict(checkpoint["model"])
    except FileNotFoundError:
        usage_error(f"--eval-model {args.eval_model}: no such file")
    except Exception as error:
        reason = (str(error).strip() or type(error).__name__).splitlines()[0]
        why = f"not a model file saved by {ALGORITHM}.py, or its weights do not fit its env ({reason})"
        usage_error(f"--eval-model {args.eval_model}: {why}")
    if args.env_id not in (Args.env_id, train_args.env_id):  # left at its default, --env-id means "the model's"
        usage_error(f"--eval-model {args.eval_model} was trained on {train_args.env_id}, not --env-id {args.env_id}")
    episodes, _, _ = collect_episodes(policy, envs, args.eval_episodes, device, args.seed + 10_000, deterministic=True)
    envs.close()
    returns = [float(sum(reward for *_, reward in episode)) for episode in episodes]
    mean, std = np.mean(returns), np.std(returns)
    print(f"eval: {train_args.env_id} mean return {mean:.2f} +- {std:.2f} over {len(returns)} episodes")
    return {"eval_returns": returns, "video_folder": f"videos/{video_name}" if args.capture_video else None}


if __name__ == "__main__":
    main(tyro.cli(Args))
