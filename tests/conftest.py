"""Shared fixtures: run a script (in-process or as a command) in a temp dir, read TensorBoard back.

To plug a new algorithm script into the contract tests, add its profile to SCRIPT_PROFILES.
"""

import importlib
import subprocess
import sys
from pathlib import Path

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
