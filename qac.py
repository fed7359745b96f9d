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

ALGORITHM = "qac"  # stored in saved models: --eval-model refuses another script's file


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


def usage_error(message: str) -> None:
    """A user mistake: one line on stderr, exit status 2, no traceback."""
    print(f"{os.path.basename(__file__)}: error: {message}", file=sys.stderr)
    sys.exit(2)


def check_args(args: Args) -> None:
    """Reject impossible values, unknown envs and unsupported spaces before training starts."""
    for name in ["total_timesteps", "policy_lr", "q_lr", "num_envs", "log_every", "eval_episodes"]:
        if not getattr(args, name) > 0:
            usage_error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if not 0 <= args.gamma <= 1:
        usage_error(f"--gamma must be in [0, 1], got {args.gamma}")
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
            "qac.py supports a 1-D Box observation space with a Discrete or 1-D Box action space"
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
    last step is the real final observation (what a truncated step bootstraps from), and the
    next step of that env only resets it; that reset step is masked out of the update.
    """
    thunks = [make_env(env_id, i, capture_video, run_name) for i in range(num_envs)]
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
        out = self.net(obs)
        if self.is_discrete:
            return torch.distributions.Categorical(logits=out)
        return torch.distributions.Independent(torch.distributions.Normal(out, self.log_std.exp()), 1)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        dist = self.distribution(obs)
        if deterministic:
            return dist.probs.argmax(-1) if self.is_discrete else dist.mean
        return dist.sample()


class Critic(nn.Module):
    """Discrete: one Q output per action, Q(s, .). Box: Q(s, a) on the concatenated input."""

    def __init__(self, obs_dim: int, action_space: gym.Space):
        super().__init__()
        self.is_discrete = isinstance(action_space, gym.spaces.Discrete)
        if self.is_discrete:
            self.net = mlp(obs_dim, int(action_space.n))
        else:
            self.net = mlp(obs_dim + int(np.prod(action_space.shape)), 1)

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
    return (values * mask).sum() / mask.sum()


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
    """Play episodes with the saved actor's deterministic action (argmax or Gaussian mean); with a
    video_name, record them into videos/{video_name}."""
    checkpoint, train_args = load_model_file(model_path, device)
    env = make_env(train_args.env_id, 0, bool(video_name), video_name, render)()
    actor = Actor(env.observation_space.shape[0], env.action_space).to(device)
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
                action = actor.act(torch.as_tensor(obs, dtype=torch.float32, device=device), deterministic=True)
            action = action.cpu().numpy()
            if not actor.is_discrete:
                action = np.clip(action, env.action_space.low, env.action_space.high)
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
    # One thread is faster than several for 64-unit networks, and leaves a core for the envs.
    torch.set_num_threads(1)
    # Argument checks in torch.distributions cost time on every call and we never pass bad values.
    torch.distributions.Distribution.set_default_validate_args(False)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    tracker = start_tracking(args, run_name) if args.track else None
    writer = SummaryWriter(f"runs/{run_name}")
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in dataclasses.asdict(args).items()),
    )
    envs = make_vector_env(args.env_id, args.num_envs, args.capture_video, run_name)
    envs.action_space.seed(args.seed)
    obs_dim, action_space = envs.single_observation_space.shape[0], envs.single_action_space
    actor, critic = Actor(obs_dim, action_space).to(device), Critic(obs_dim, action_space).to(device)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.policy_lr)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.q_lr)
    model_path = f"runs/{run_name}/{args.exp_name}.pt"

    def as_tensor(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, dtype=torch.float32, device=device)

    recent_returns: deque[float] = deque(maxlen=20)
    all_returns: list[float] = []
    loss_sums: dict[str, float] = {}
    num_updates = 0
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
            obs_t = as_tensor(obs)
            dist = actor.distribution(obs_t)
            action = dist.sample()
            env_action = action.cpu().numpy()
            if not actor.is_discrete:
                # The env gets the clipped action; learning uses the log-prob of the sampled one.
                env_action = np.clip(env_action, action_space.low, action_space.high)
            next_obs, rewards, terminations, truncations, infos = envs.step(env_action)
            global_step += args.num_envs
            trainable = as_tensor(~resetting)

            if trainable.any():
                next_obs_t = as_tensor(next_obs)
                with torch.no_grad():
                    next_action = actor.distribution(next_obs_t).sample()  # a' ~ pi(s')
                    # y = r + gamma * Q(s', a') * (1 - terminated); s' is the real final obs at an episode end
                    targets = td_target(
                        as_tensor(rewards), critic.q(next_obs_t, next_action), as_tensor(terminations), args.gamma
                    )
                q_values = critic.q(obs_t, action)
                # (y - Q(s, a))^2, averaged over real transitions (reset steps masked out)
                critic_loss = masked_mean((targets - q_values).pow(2), trainable)
                # The actor follows Q but must not train it: the signal is detached.
                score = q_values.detach()
                if args.expected_q_baseline:
                    with torch.no_grad():
                        score = score - critic.expected_q(obs_t, dist)
                # -log pi(a|s) * (Q(s, a) - b(s))
                actor_loss = -masked_mean(dist.log_prob(action) * score, trainable)
                for name, optimizer, loss in [
                    ("qf_loss", critic_optimizer, critic_loss),
                    ("actor_loss", actor_optimizer, actor_loss),
                ]:
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"non-finite {name} ({loss.item()}) at global step {global_step}")
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                stats = {
                    "qf_loss": critic_loss.item(),
                    "actor_loss": actor_loss.item(),
                    "qf_values": masked_mean(q_values.detach(), trainable).item(),
                    "entropy": masked_mean(dist.entropy().detach(), trainable).item(),
                }
                for name, value in stats.items():
                    loss_sums[name] = loss_sums.get(name, 0.0) + value
                num_updates += 1

            if "episode" in infos:
                for i in np.flatnonzero(infos["_episode"]):
                    recent_returns.append(float(infos["episode"]["r"][i]))
                    all_returns.append(recent_returns[-1])
                    writer.add_scalar("charts/episodic_return", recent_returns[-1], global_step)
                    writer.add_scalar("charts/episodic_length", int(infos["episode"]["l"][i]), global_step)
            obs, resetting = next_obs, terminations | truncations

            if num_updates == args.log_every or global_step >= args.total_timesteps:
                for name, total in loss_sums.items():
                    writer.add_scalar(f"losses/{name}", total / max(num_updates, 1), global_step)
                loss_sums, num_updates = {}, 0
                writer.add_scalar("charts/learning_rate", args.policy_lr, global_step)
                writer.add_scalar("charts/SPS", int(global_step / (time.time() - start_time)), global_step)
            if global_step >= next_progress or global_step >= args.total_timesteps:
                next_progress += args.total_timesteps / 20
                mean_recent = np.mean(recent_returns) if recent_returns else float("nan")
                print(
                    f"global_step={global_step:>8d} ({100 * min(global_step / args.total_timesteps, 1):3.0f}%)  "
                    f"mean_return(last 20)={mean_recent:8.2f}  SPS={int(global_step / (time.time() - start_time))}"
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
    print(f"final mean_return(last 20)={mean_recent:.2f}  run: runs/{run_name}")
    if tracker is not None:
        finish_tracking(tracker, run_name, exit_code)
    if exit_code:
        sys.exit(exit_code)
    return {"run_name": run_name, "episodic_returns": all_returns, "eval_returns": eval_returns}


if __name__ == "__main__":
    main(tyro.cli(Args))
