"""How close is a Pendulum-v1 run's final window to optimal control?

    python benchmark/pendulum_optimum.py --seeds 1 2 3 4 5 6 7 8

A one-env run seeded with `reset(seed=s)` plays a start-state sequence fixed by s alone:
Pendulum draws each start from the env's own generator, and the autoresets reuse it. So
"last-10 mean of the training episodes" is scored on ten start states the seed picks, some
much harder than others (a start near the bottom costs up to ~-300 even when played
perfectly, one near the top ~0). This script rebuilds those ten starts for each seed and plays them
near-optimally, which says what last-10 mean a perfect controller would have scored there.

Near-optimal play: finite-horizon value iteration on a (theta, theta_dot) grid over the
env's own dynamics and cost (V_k(s) = max_u [r(s, u) + V_{k-1}(f(s, u))], bilinear
interpolation between grid points), then a greedy one-step lookahead through the true
dynamics from each exact start state. The grid makes this a slight under-estimate of the
optimum, not an over-estimate: every return it reports is one a real action sequence earns
under Pendulum's dynamics (the tensor model is checked against the env before use).

With gymnasium's NEXT_STEP autoreset the step after an episode end only resets the env and
counts as a step of the run, so an episode costs 201 steps after the first: 20,000 steps hold
99 complete episodes and the final window is episodes 90-99.

Writes benchmark/results/pendulum_optimum.md and the block between the
benchmark:pendulum_optimum markers in benchmark/ddpg_pendulum.md; ddpg.py's per-seed figures come from
benchmark/results/ddpg.json (default flags, no label) where it has that seed.
"""

import argparse
import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interleaved import publish  # noqa: E402
from run import RESULTS  # noqa: E402


def start_states(seed: int, num_episodes: int, seed_every_episode: bool = False) -> np.ndarray:
    """The (theta, theta_dot) each episode of a one-env run seeded with `seed` starts from.

    A training run seeds its first reset only; an evaluation (`seed_every_episode`) resets
    episode i with seed + i, as each script's `evaluate` does.
    """
    env = gym.make("Pendulum-v1")
    states = []
    for episode in range(num_episodes):
        if seed_every_episode:
            env.reset(seed=seed + episode)
        else:
            env.reset(seed=seed if episode == 0 else None)
        states.append(env.unwrapped.state.copy())
    env.close()
    return np.array(states)


def angle_normalize(theta: torch.Tensor) -> torch.Tensor:
    """Wrap an angle into [-pi, pi), as Pendulum-v1 does before it prices it."""
    return torch.remainder(theta + np.pi, 2 * np.pi) - np.pi


class PendulumModel:
    """Pendulum-v1's step written on tensors, constants read from the env itself."""

    def __init__(self):
        env = gym.make("Pendulum-v1").unwrapped
        self.g, self.m, self.l, self.dt = env.g, env.m, env.l, env.dt
        self.max_speed, self.max_torque = env.max_speed, env.max_torque
        env.close()

    def step(self, theta, theta_dot, torque):
        reward = -(angle_normalize(theta) ** 2 + 0.1 * theta_dot**2 + 0.001 * torque**2)
        accel = 3 * self.g / (2 * self.l) * torch.sin(theta) + 3.0 / (self.m * self.l**2) * torque
        new_theta_dot = torch.clamp(theta_dot + accel * self.dt, -self.max_speed, self.max_speed)
        return theta + new_theta_dot * self.dt, new_theta_dot, reward


class GridValue:
    """V_k on a (theta, theta_dot) grid for k = 0..horizon steps to go."""

    def __init__(self, model: PendulumModel, horizon: int, thetas: int, speeds: int, torques: int):
        self.model, self.thetas, self.speeds = model, thetas, speeds
        self.torques = torch.linspace(-model.max_torque, model.max_torque, torques, dtype=torch.float64)
        theta = torch.linspace(-np.pi, np.pi, thetas, dtype=torch.float64)
        speed = torch.linspace(-model.max_speed, model.max_speed, speeds, dtype=torch.float64)
        grid_theta, grid_speed, grid_torque = torch.meshgrid(theta, speed, self.torques, indexing="ij")
        next_theta, next_speed, reward = model.step(grid_theta, grid_speed, grid_torque)
        self.values = [torch.zeros(thetas, speeds, dtype=torch.float64)]
        for _ in range(horizon):
            # V_k(s) = max_u [r(s, u) + V_{k-1}(f(s, u))]
            self.values.append((reward + self.lookup(self.values[-1], next_theta, next_speed)).amax(-1))

    def lookup(self, table: torch.Tensor, theta: torch.Tensor, speed: torch.Tensor) -> torch.Tensor:
        """Bilinear interpolation of table at (theta, speed); theta wraps around."""
        x = (angle_normalize(theta) + np.pi) / (2 * np.pi) * (self.thetas - 1)
        y = (speed + self.model.max_speed) / (2 * self.model.max_speed) * (self.speeds - 1)
        x0 = x.floor().clamp(0, self.thetas - 2).long()
        y0 = y.floor().clamp(0, self.speeds - 2).long()
        fx, fy = x - x0, y - y0
        return (
            table[x0, y0] * (1 - fx) * (1 - fy)
            + table[x0 + 1, y0] * fx * (1 - fy)
            + table[x0, y0 + 1] * (1 - fx) * fy
            + table[x0 + 1, y0 + 1] * fx * fy
        )

    def play(self, start: np.ndarray, steps: int) -> float:
        """Greedy one-step lookahead through the true dynamics from an exact start state."""
        theta = torch.full_like(self.torques, float(start[0]))
        speed = torch.full_like(self.torques, float(start[1]))
        total = 0.0
        for t in range(steps):
            next_theta, next_speed, reward = self.model.step(theta, speed, self.torques)
            best = int((reward + self.lookup(self.values[steps - 1 - t], next_theta, next_speed)).argmax())
            theta = next_theta[best].expand_as(self.torques)
            speed = next_speed[best].expand_as(self.torques)
            total += float(reward[best])
        return total


def check_against_env(model: PendulumModel, seed: int) -> None:
    """Stop if the tensor model or the rebuilt start states disagree with gymnasium itself:
    three episodes of a one-env NEXT_STEP vector env (as ddpg.py runs it) with random torques."""
    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make("Pendulum-v1")], autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP
    )
    envs.reset(seed=seed)
    envs.action_space.seed(seed)
    pendulum = envs.envs[0].unwrapped
    observed_starts = [pendulum.state.copy()]
    while len(observed_starts) < 3:
        state, action = pendulum.state.copy(), envs.action_space.sample()
        _, rewards, terminations, truncations, _ = envs.step(action)
        theta, speed, reward = model.step(*(torch.tensor(x, dtype=torch.float64) for x in (*state, action[0, 0])))
        expected = np.array([float(theta), float(speed)])
        if not (np.allclose(expected, pendulum.state, atol=1e-5) and np.isclose(float(reward), rewards[0], atol=1e-4)):
            sys.exit(f"PendulumModel disagrees with gymnasium's Pendulum-v1 at state {state}")
        if terminations[0] or truncations[0]:
            envs.step(envs.action_space.sample())  # the reset step
            observed_starts.append(pendulum.state.copy())
    envs.close()
    if not np.allclose(start_states(seed, 3), observed_starts):
        sys.exit("rebuilt start states disagree with the ones a NEXT_STEP vector env plays")


def ddpg_returns(results_file: Path, total_timesteps: int, window: int) -> dict[int, float]:
    """ddpg.py's last-`window` mean per seed from benchmark/run.py's results (default flags: no label)."""
    if not results_file.exists():
        return {}
    runs = json.loads(results_file.read_text())
    return {
        run["seed"]: run["final_return"]
        for run in runs
        if run["env_id"] == "Pendulum-v1"
        and run.get("label", "") == ""
        and run["total_steps"] == total_timesteps
        and run.get("final_window", window) == window
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--total-timesteps", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=10, help="final episodes averaged")
    parser.add_argument("--grid", type=int, nargs=3, default=[401, 321, 81], metavar=("THETAS", "SPEEDS", "TORQUES"))
    options = parser.parse_args()
    torch.set_num_threads(2)

    episode_steps = gym.spec("Pendulum-v1").max_episode_steps
    # NEXT_STEP: after the first episode each one also pays the step that only resets the env
    complete = (options.total_timesteps + 1) // (episode_steps + 1)
    first = complete - options.window  # 0-based index of the window's first episode
    model = PendulumModel()
    check_against_env(model, options.seeds[0])
    value = GridValue(model, episode_steps, *options.grid)
    ddpg = ddpg_returns(RESULTS / "ddpg.json", options.total_timesteps, options.window)

    lines = [
        f"Pendulum-v1, {options.total_timesteps:,} steps: the final window is episodes {first + 1}-{complete} "
        f"(`python benchmark/pendulum_optimum.py --seeds {' '.join(map(str, options.seeds))}`)",
        "",
        "| seed | near-optimal return on the window | its episodes "
        "| ddpg.py last-10 (default flags) | ddpg.py short of it by |",
        "|---|---|---|---|---|",
    ]
    for seed in options.seeds:
        starts = start_states(seed, complete)[first:]
        returns = [value.play(start, episode_steps) for start in starts]
        optimum = float(np.mean(returns))
        episodes = " ".join(str(round(r)) for r in returns)
        if seed in ddpg:
            measured, gap = f"{ddpg[seed]:.1f}", f"{optimum - ddpg[seed]:.1f}"
        else:
            measured, gap = "", ""
        lines.append(f"| {seed} | {optimum:.1f} | {episodes} | {measured} | {gap} |")
    publish("pendulum_optimum", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
