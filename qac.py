"""Q actor-critic (QAC): a TD-trained critic replaces REINFORCE's Monte-Carlo return.

Reference: Sutton & Barto, "Reinforcement Learning: An Introduction" (2nd ed.), ch. 13.5;
Konda & Tsitsiklis 2000, "Actor-Critic Algorithms".

Every env step (batched over a few envs): act a ~ pi(s), observe r and s', sample a' ~ pi(s'),
then move the critic toward the one-step Bellman target and the actor along the critic's Q:

    y            = r + gamma * Q(s', a') * (1 - terminated)       (SARSA-style TD target)
    critic loss  = (y - Q(s, a))^2
    actor loss   = -log pi(a|s) * (Q(s, a) - b(s))                (Q detached; b = 0 is the plain form)

b(s) is the expected-Q baseline (`--expected-q-baseline`, on by default): b(s) = sum_a pi(a|s) Q(s, a)
for Discrete actions, Q(s, mu(s)) at the Gaussian mean for Box. It leaves the gradient's expectation
unchanged and removes the part of Q that does not depend on the action, which is what keeps the
plain form from collapsing to a one-action policy. A time-limit cut is not termination: y bootstraps
from the real final observation.

No replay buffer and no target network: consecutive, correlated samples and a target that moves
with every step are exactly the instabilities DDPG later tames with both (ddpg.py).

    python qac.py                                   # CartPole-v1
    python qac.py --no-expected-q-baseline          # the plain form
"""

import dataclasses
import functools
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
    total_timesteps: int = 150_000
    """total env steps of the run"""
    policy_lr: float = 1e-4
    """Adam learning rate of the actor"""
    q_lr: float = 1e-3
    """Adam learning rate of the critic"""
    num_envs: int = 8
    """parallel envs; each env step gives one batched update"""
    gamma: float = 0.99
    """discount factor"""
    expected_q_baseline: bool = True
    """if toggled, the actor's signal is Q(s, a) - b(s) with the expected-Q baseline b (see the docstring)"""
    log_every: int = 100
    """write the losses, averaged over this many updates, to TensorBoard"""


def make_env(env_id: str, video_folder: str | None = None, render: bool = False) -> gym.Env:
    """One env; with a video_folder its episodes are recorded there, with render they are shown in a window.
    A Box action is clipped to the bounds on its way to the env (ClipAction); learning keeps the log-prob of
    the action the policy actually sampled."""
    env = gym.make(env_id, render_mode="human" if render else "rgb_array" if video_folder else None)
    if isinstance(env.action_space, gym.spaces.Box):
        env = gym.wrappers.ClipAction(env)
    return gym.wrappers.RecordVideo(env, video_folder) if video_folder else env


def make_vector_env(env_id: str, num_envs: int, video_folder: str | None = None) -> gym.vector.VectorEnv:
    """Vectorized envs with episode statistics; with a video_folder, the first env is recorded.

    Autoreset mode is NEXT_STEP (gymnasium's default): the observation returned on an episode's
    last step is the real final observation (what a truncated step bootstraps from), and the
    next step of that env only resets it; that reset step is masked out of the update.
    """
    thunks = [functools.partial(make_env, env_id, video_folder if i == 0 else None) for i in range(num_envs)]
    envs = gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, out_dim))


class Actor(nn.Module):
    """Discrete: Categorical logits. Box: the mean of a diagonal Normal with a learned,
    state-independent log-std."""

    def __init__(self, obs_dim: int, action_space: gym.Space):
        super().__init__()
        self.is_discrete = isinstance(action_space, gym.spaces.Discrete)
        action_dim = int(action_space.n) if self.is_discrete else int(np.prod(action_space.shape))
        self.net = mlp(obs_dim, action_dim)
        if not self.is_discrete:
            self.log_std = nn.Parameter(torch.zeros(action_dim))

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        if self.is_discrete:
            return torch.distributions.Categorical(logits=self.net(obs))
        return torch.distributions.Independent(torch.distributions.Normal(self.net(obs), self.log_std.exp()), 1)


class Critic(nn.Module):
    """Discrete: one Q output per action, Q(s, .). Box: Q(s, a) on the concatenated input."""

    def __init__(self, obs_dim: int, action_space: gym.Space):
        super().__init__()
        self.is_discrete = isinstance(action_space, gym.spaces.Discrete)
        action_dim = int(action_space.n) if self.is_discrete else int(np.prod(action_space.shape))
        self.net = mlp(obs_dim, action_dim) if self.is_discrete else mlp(obs_dim + action_dim, 1)

    def q(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        if self.is_discrete:
            return self.net(obs).gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
        return self.net(torch.cat([obs, action], dim=-1)).squeeze(-1)

    def expected_q(self, obs: torch.Tensor, dist: torch.distributions.Distribution) -> torch.Tensor:
        """The baseline b(s): sum_a pi(a|s) Q(s, a) (Discrete) or Q(s, mu(s)) (Box)."""
        if self.is_discrete:
            return (dist.probs * self.net(obs)).sum(-1)
        return self.q(obs, dist.mean)


def td_target(rewards: torch.Tensor, next_q: torch.Tensor, terminations: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma * Q(s', a') * (1 - terminated): no future after a terminal state, but a
    truncated step keeps its bootstrap (next_q is then Q of the real final observation)."""
    return rewards + gamma * next_q * (1.0 - terminations)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean over the real transitions (mask 1), leaving out the reset steps (mask 0)."""
    return (values * mask).sum() / mask.sum()


def main(args: Args) -> dict:
    check_args(args)
    if args.eval_model:
        return watch(args)
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    # One thread is faster than several for 64-unit networks, and leaves a core for the envs.
    torch.set_num_threads(1)
    # Argument checks in torch.distributions cost time on every call and we never pass bad values.
    torch.distributions.Distribution.set_default_validate_args(False)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    envs = make_vector_env(args.env_id, args.num_envs, f"videos/{run_name}" if args.capture_video else None)
    envs.action_space.seed(args.seed)
    obs_dim, action_space = envs.single_observation_space.shape[0], envs.single_action_space
    actor = Actor(obs_dim, action_space).to(device)
    critic = Critic(obs_dim, action_space).to(device)
    # One Adam, each network with its own learning rate (Adam updates every parameter on its own).
    param_groups = [dict(params=actor.parameters(), lr=args.policy_lr), dict(params=critic.parameters(), lr=args.q_lr)]
    optimizer = torch.optim.Adam(param_groups)

    def as_tensor(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, dtype=torch.float32, device=device)

    episodic_returns: list[float] = []
    stat_sums = torch.zeros(4, device=device)  # the losses below, summed over --log-every updates
    num_updates = 0
    global_step = 0
    next_progress = args.total_timesteps / 20
    obs, _ = envs.reset(seed=args.seed)  # env i gets seed + i
    resetting = np.zeros(args.num_envs, dtype=bool)  # NEXT_STEP: this step of env i only resets it

    writer, tracker = start_logging(args, run_name)  # the run folder appears here, just before the Ctrl-C handler
    start_time = time.time()
    exit_code = 0
    # Ctrl-C only sets a flag the loop checks between updates: a KeyboardInterrupt raised inside a
    # TensorBoard write can queue an event without waking the writer's thread, and closing it stalls.
    ctrl_c = threading.Event()
    previous_sigint = signal.signal(signal.SIGINT, lambda signum, frame: ctrl_c.set())
    try:
        while global_step < args.total_timesteps and not ctrl_c.is_set():
            obs_t = as_tensor(obs)
            dist = actor.distribution(obs_t)
            action = dist.sample()
            # A Box action is clipped on its way to the env (make_env); learning uses the log-prob of the sampled one.
            next_obs, rewards, terminations, truncations, infos = envs.step(action.cpu().numpy())
            global_step += args.num_envs
            trainable = as_tensor(~resetting)

            if trainable.any():
                next_obs_t = as_tensor(next_obs)
                with torch.no_grad():
                    next_q = critic.q(next_obs_t, actor.distribution(next_obs_t).sample())  # Q(s', a'), a' ~ pi(s')
                    # y = r + gamma * Q(s', a') * (1 - terminated); s' is the real final obs at an episode end
                    targets = td_target(as_tensor(rewards), next_q, as_tensor(terminations), args.gamma)
                q_values = critic.q(obs_t, action)
                # (y - Q(s, a))^2, averaged over real transitions (reset steps masked out)
                critic_loss = masked_mean((targets - q_values).pow(2), trainable)
                # -log pi(a|s) * (Q(s, a) - b(s)): the actor follows Q but must not train it (Q and b detached)
                with torch.no_grad():
                    baseline = critic.expected_q(obs_t, dist) if args.expected_q_baseline else 0.0
                actor_loss = -masked_mean(dist.log_prob(action) * (q_values.detach() - baseline), trainable)
                # The two losses share no parameters: one backward gives each network its own gradient.
                loss = critic_loss + actor_loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite qf_loss + actor_loss at global step {global_step}")
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                with torch.no_grad():  # summed on the device, read once per --log-every updates
                    q_mean = masked_mean(q_values, trainable)
                    entropy = masked_mean(dist.entropy(), trainable)
                    stat_sums += torch.stack([critic_loss, actor_loss, q_mean, entropy])
                num_updates += 1

            record_episodes(writer, infos, global_step, episodic_returns)
            obs, resetting = next_obs, terminations | truncations

            sps = int(global_step / (time.time() - start_time))
            if num_updates == args.log_every or global_step >= args.total_timesteps:
                for index, name in enumerate(["qf_loss", "actor_loss", "qf_values", "entropy"]):
                    writer.add_scalar(f"losses/{name}", stat_sums[index].item() / max(num_updates, 1), global_step)
                stat_sums = torch.zeros_like(stat_sums)
                num_updates = 0
                writer.add_scalar("charts/learning_rate", args.policy_lr, global_step)
                writer.add_scalar("charts/SPS", sps, global_step)
            if global_step >= next_progress or global_step >= args.total_timesteps:
                next_progress += args.total_timesteps / 20
                print(progress_line(global_step, args.total_timesteps, episodic_returns, sps))
    except FloatingPointError as error:
        print(f"{os.path.basename(__file__)}: error: {error}", file=sys.stderr)
        exit_code = 1
    finally:
        signal.signal(signal.SIGINT, previous_sigint)
        envs.close()
    exit_code = 130 if ctrl_c.is_set() else exit_code
    return finish_run(args, run_name, writer, tracker, exit_code, actor, episodic_returns)


# --- Plumbing: the algorithm is complete above; below are validation, saving, evaluation, logging and Ctrl-C. ---

ALGORITHM = "qac"  # stored in saved models: --eval-model refuses another script's file
FLAG_RULES = [  # (what is allowed, the test, the flags it applies to)
    ("> 0", lambda value: value > 0, ["total_timesteps", "policy_lr", "q_lr", "num_envs"]),
    ("> 0", lambda value: value > 0, ["log_every", "eval_episodes"]),
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
    """The mean return of the last 10 finished episodes (nan before the first)."""
    return float(np.mean(episodic_returns[-10:])) if episodic_returns else float("nan")


def progress_line(global_step: int, total_timesteps: int, episodic_returns: list[float], sps: int) -> str:
    share_done = 100 * min(global_step / total_timesteps, 1)
    recent = recent_mean(episodic_returns)
    return f"global_step={global_step:>8d} ({share_done:3.0f}%)  mean_return(last 10)={recent:9.2f}  SPS={sps}"


def record_episodes(writer: SummaryWriter, infos: dict, global_step: int, episodic_returns: list[float]) -> None:
    """Log the return and length of every episode that ended at this step, and keep its return."""
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

        settings = dict(project=args.wandb_project_name, entity=args.wandb_entity, name=run_name, sync_tensorboard=True)
        tracker = wandb.init(**settings, config=dataclasses.asdict(args))
    writer = SummaryWriter(f"runs/{run_name}")
    table = "\n".join(f"|{key}|{value}|" for key, value in dataclasses.asdict(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    return writer, tracker


def finish_run(args: Args, run_name: str, writer, tracker, exit_code: int, actor: Actor, episodic_returns) -> dict:
    """After training: with --save-model save the actor (unless the run failed) and, if the run completed,
    evaluate the saved file; close the writer and the W&B run (uploading the training videos); exit on a failure."""
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
    return {"run_name": run_name, "episodic_returns": episodic_returns, "eval_returns": eval_returns}


def watch(args: Args) -> dict:
    """--eval-model (and the evaluation after training): play the saved actor's deterministic action (argmax
    or the Gaussian mean) on its env for --eval-episodes episodes reset with seed + 10_000, + 1, ..., and print
    the mean return. A file that is missing, not a model file, another script's, or whose weights do not fit
    its env: one line, exit 2."""
    device = torch.device("cpu")  # playing a small actor: the CPU is fast enough
    video_name = os.path.basename(os.path.dirname(os.path.abspath(args.eval_model))) + "-eval"
    try:  # weights_only (torch's default): loading runs no code from the file
        checkpoint = torch.load(args.eval_model, map_location=device)
        if checkpoint["algorithm"] != ALGORITHM:
            raise ValueError(f"saved by {checkpoint['algorithm']}.py")
        train_args = Args(**checkpoint["args"])
        env = make_env(train_args.env_id, f"videos/{video_name}" if args.capture_video else None, args.render)
        actor = Actor(env.observation_space.shape[0], env.action_space)
        actor.load_state_dict(checkpoint["model"])
    except FileNotFoundError:
        usage_error(f"--eval-model {args.eval_model}: no such file")
    except Exception as error:
        reason = (str(error).strip() or type(error).__name__).splitlines()[0]
        why = f"not a model file saved by {ALGORITHM}.py, or its weights do not fit its env ({reason})"
        usage_error(f"--eval-model {args.eval_model}: {why}")
    if args.env_id not in (Args.env_id, train_args.env_id):  # left at its default, --env-id means "the model's"
        usage_error(f"--eval-model {args.eval_model} was trained on {train_args.env_id}, not --env-id {args.env_id}")
    returns = []
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 10_000 + episode)
        done, total = False, 0.0
        while not done:
            with torch.no_grad():
                dist = actor.distribution(torch.as_tensor(obs, dtype=torch.float32))
                action = dist.probs.argmax(-1) if actor.is_discrete else dist.mean
            obs, reward, terminated, truncated, _ = env.step(action.numpy())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    mean, std = np.mean(returns), np.std(returns)
    print(f"eval: {train_args.env_id} mean return {mean:.2f} +- {std:.2f} over {len(returns)} episodes")
    return {"eval_returns": returns, "video_folder": f"videos/{video_name}" if args.capture_video else None}


if __name__ == "__main__":
    main(tyro.cli(Args))
