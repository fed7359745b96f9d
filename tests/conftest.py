"""Shared fixtures: run a script (in-process or as a command) in a temp dir, read TensorBoard back.

To plug a new algorithm script into the contract tests, add its profile to SCRIPT_PROFILES.
"""

import importlib
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

# The seven algorithm scripts the project plans; the contract tests cover whichever exist.
ALGORITHM_NAMES = ["reinforce", "qac", "a2c", "a3c", "ddpg", "ppo", "ppo_gru"]
SCRIPTS = [name for name in ALGORITHM_NAMES if (ROOT / f"{name}.py").exists()]

# How each script is exercised by the contract tests:
#   tiny: CLI flags for a run of a few hundred steps;
#   discrete_env / continuous_env: envs for the smoke tests (None where the algorithm does not allow it);
#   unsupported_env: an env whose spaces the script must refuse;
#   bad_flags: (flags, the flag name the error line must mention) pairs that must exit 2.
SCRIPT_PROFILES = {
    "ddpg": dict(
        tiny=["--total-timesteps", "400", "--learning-starts", "200", "--batch-size", "32"],
        discrete_env=None,  # DDPG needs continuous actions
        continuous_env="Pendulum-v1",
        unsupported_env="CartPole-v1",
        bad_flags=[
            (["--tau", "1.5"], "--tau"),
            (["--batch-size", "0"], "--batch-size"),
            (["--learning-rate", "-0.1"], "--learning-rate"),
            (["--buffer-size", "0"], "--buffer-size"),
            (["--learning-starts", "-1"], "--learning-starts"),
        ],
    ),
    "reinforce": dict(
        tiny=["--total-timesteps", "300"],
        discrete_env="CartPole-v1",
        continuous_env="Pendulum-v1",
        unsupported_env="Blackjack-v1",
        bad_flags=[
            (["--episodes-per-update", "0"], "--episodes-per-update"),
            (["--learning-rate", "-0.1"], "--learning-rate"),
            (["--gamma", "1.5"], "--gamma"),
        ],
    ),
    "qac": dict(
        tiny=["--total-timesteps", "400", "--num-envs", "2"],
        discrete_env="CartPole-v1",
        continuous_env="Pendulum-v1",
        unsupported_env="Blackjack-v1",
        bad_flags=[
            (["--num-envs", "0"], "--num-envs"),
            (["--policy-lr", "-0.1"], "--policy-lr"),
            (["--q-lr", "0"], "--q-lr"),
            (["--gamma", "1.5"], "--gamma"),
        ],
    ),
    "a2c": dict(
        tiny=["--total-timesteps", "400", "--num-envs", "2"],
        discrete_env="CartPole-v1",
        continuous_env="Pendulum-v1",
        unsupported_env="Blackjack-v1",
        bad_flags=[
            (["--num-steps", "0"], "--num-steps"),
            (["--learning-rate", "-0.1"], "--learning-rate"),
            (["--gae-lambda", "1.5"], "--gae-lambda"),
            (["--num-envs", "0"], "--num-envs"),
        ],
    ),
    "a3c": dict(
        tiny=["--total-timesteps", "400", "--num-workers", "1"],  # one worker: the run is reproducible
        discrete_env="CartPole-v1",
        continuous_env="Pendulum-v1",
        unsupported_env="Blackjack-v1",
        bad_flags=[
            (["--num-workers", "0"], "--num-workers"),
            (["--num-steps", "0"], "--num-steps"),
            (["--learning-rate", "-0.1"], "--learning-rate"),
            (["--gamma", "1.5"], "--gamma"),
        ],
    ),
    "ppo_gru": dict(
        tiny=["--total-timesteps", "512", "--num-envs", "2", "--num-steps", "64", "--num-minibatches", "2"]
        + ["--update-epochs", "2"],
        discrete_env="CartPole-v1",
        continuous_env="Pendulum-v1",
        unsupported_env="Blackjack-v1",
        bad_flags=[
            (["--num-envs", "0"], "--num-envs"),
            (["--hidden-size", "0"], "--hidden-size"),
            (["--gamma", "1.5"], "--gamma"),
            (["--num-envs", "3", "--seq-len", "128", "--num-minibatches", "4"], "--num-minibatches"),
            (["--seq-len", "24"], "--seq-len"),
        ],
    ),
    "ppo": dict(
        tiny=["--total-timesteps", "512", "--num-envs", "2", "--num-steps", "64", "--update-epochs", "2"],
        discrete_env="CartPole-v1",
        continuous_env="Pendulum-v1",
        unsupported_env="Blackjack-v1",
        bad_flags=[
            (["--num-envs", "0"], "--num-envs"),
            (["--learning-rate", "-0.1"], "--learning-rate"),
            (["--gamma", "1.5"], "--gamma"),
            (["--num-envs", "3", "--num-steps", "5", "--num-minibatches", "4"], "--num-minibatches"),
        ],
    ),
}

# The tags every script writes (its own losses come on top).
CONTRACT_TAGS = ["charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate"]


class CountingEnv(gym.Env):
    """A tiny deterministic env for episode-end bookkeeping tests: obs = [t] and reward t after
    step t; it terminates at `terminate_at` if given (the registered time limits truncate)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, terminate_at: int | None = None, render_mode: str | None = None):
        self.terminate_at = terminate_at
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return np.array([float(self.t)], np.float32), float(self.t), terminated, False, {}


# Both end after 3 steps: one truncated by the time limit, one terminated by the env itself.
gym.register("tests/CountingTruncated-v0", entry_point=CountingEnv, max_episode_steps=3)
gym.register("tests/CountingTerminated-v0", entry_point=CountingEnv, kwargs={"terminate_at": 3})


def reference_gae(rewards, values, next_values, terminations, dones, gamma, gae_lambda):
    """A_t as the forward sum of (gamma * lambda)^k * delta_{t+k}, up to and including the first done."""
    num_steps, num_envs = rewards.shape
    advantages = np.zeros((num_steps, num_envs))
    for env in range(num_envs):
        for t in range(num_steps):
            total, weight = 0.0, 1.0
            for k in range(t, num_steps):
                delta = rewards[k, env] + gamma * next_values[k, env] * (1 - terminations[k, env]) - values[k, env]
                total += weight * delta
                if dones[k, env]:
                    break
                weight *= gamma * gae_lambda
            advantages[t, env] = total
    return advantages


def profile(name: str) -> dict:
    if name not in SCRIPT_PROFILES:
        pytest.fail(f"{name}.py has no entry in tests/conftest.py SCRIPT_PROFILES: add one")
    return SCRIPT_PROFILES[name]


def import_script(name: str):
    """Import a root script as a module (importing must have no side effects)."""
    return importlib.import_module(name)


def run_script(name: str, *flags: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run `python NAME.py FLAGS...` as a user would, in cwd (where runs/ will be written)."""
    return subprocess.run(
        [sys.executable, str(ROOT / f"{name}.py"), *flags],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_dirs(cwd: Path) -> list[Path]:
    return sorted((cwd / "runs").iterdir()) if (cwd / "runs").exists() else []


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in a TensorBoard run folder: tag -> [(step, value), ...] in write order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


@pytest.fixture
def in_tmp_dir(tmp_path, monkeypatch):
    """Run in a fresh temp dir so runs/ and videos/ land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
