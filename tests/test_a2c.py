"""a2c.py: n-step returns and GAE against plain references, the loss by hand, the kind defaults, subprocess envs
(same run as in-process, a dead worker stops the run), an old model file refused, learning."""

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import a2c


def forward_sum_returns(rewards, next_values, terminations, dones, gamma):
    """Independent reference: for each (t, env) sum the discounted rewards forward until the
    episode ends or the rollout runs out, then add the discounted bootstrap value."""
    num_steps, num_envs = rewards.shape
    returns = np.zeros_like(rewards)
    for env in range(num_envs):
        for t in range(num_steps):
            total, discount, k = 0.0, 1.0, t
            while True:
                total += discount * rewards[k, env]
                discount *= gamma
                if terminations[k, env]:
                    break  # a terminal state has no future
                if dones[k, env] or k == num_steps - 1:
                    total += discount * next_values[k, env]  # truncated, or the end of the rollout
                    break
                k += 1
            returns[t, env] = total
    return returns


def test_n_step_returns_match_a_forward_sum_with_terminations_and_truncations():
    rng = np.random.default_rng(0)
    num_steps, num_envs = 7, 3
    rewards = rng.normal(size=(num_steps, num_envs)).astype(np.float32)
    next_values = rng.normal(size=(num_steps, num_envs)).astype(np.float32)
    terminations = np.zeros((num_steps, num_envs), np.float32)
    truncations = np.zeros((num_steps, num_envs), np.float32)
    terminations[2, 0] = terminations[6, 2] = 1  # one at the very last step
    truncations[4, 0] = truncations[1, 1] = truncations[5, 1] = 1
    dones = np.maximum(terminations, truncations)
    got = a2c.n_step_returns(rewards, next_values, terminations, dones, 0.9)
    np.testing.assert_allclose(got, forward_sum_returns(rewards, next_values, terminations, dones, 0.9), rtol=1e-5)


def test_n_step_returns_by_hand():
    rewards = np.array([[1.0], [2.0], [3.0]], np.float32)
    next_values = np.array([[0.0], [5.0], [10.0]], np.float32)
    # Row 1 is truncated: its return is 2 + 0.5 * V(final obs) = 4.5, and row 0 runs on into it.
    truncated = a2c.n_step_returns(rewards, next_values, np.zeros((3, 1)), np.array([[0], [1], [0]]), 0.5)
    np.testing.assert_allclose(truncated[:, 0], [1 + 0.5 * 4.5, 4.5, 3 + 0.5 * 10])
    # The same row terminated: no bootstrap.
    terminated = a2c.n_step_returns(rewards, next_values, np.array([[0], [1], [0]]), np.array([[0], [1], [0]]), 0.5)
    np.testing.assert_allclose(terminated[:, 0], [2.0, 2.0, 8.0])


def test_gae_with_lambda_one_is_the_n_step_advantage():
    rng = np.random.default_rng(1)
    shape = (6, 4)
    rewards = rng.normal(size=shape).astype(np.float32)
    # As in a2c.main: row t + 1 holds the observation step t returned, so next_values[t] = values[t + 1].
    all_values = rng.normal(size=(shape[0] + 1, shape[1])).astype(np.float32)
    values, next_values = all_values[:-1], all_values[1:]
    terminations = (rng.random(shape) < 0.15).astype(np.float32)
    dones = np.maximum(terminations, (rng.random(shape) < 0.15).astype(np.float32))
    advantages = a2c.compute_gae(rewards, values, next_values, terminations, dones, 0.95, 1.0)
    returns = a2c.n_step_returns(rewards, next_values, terminations, dones, 0.95)
    np.testing.assert_allclose(advantages, returns - values, rtol=1e-5, atol=1e-5)
    # Below 1, GAE differs (it mixes shorter bootstraps in).
    assert not np.allclose(a2c.compute_gae(rewards, values, next_values, terminations, dones, 0.95, 0.5), advantages)


def test_a2c_loss_by_hand_ignores_masked_rows():
    log_probs = torch.tensor([-1.0, -2.0, -3.0], requires_grad=True)
    values = torch.tensor([1.0, 1.0, 100.0], requires_grad=True)
    returns = torch.tensor([3.0, 0.0, 0.0])
    entropy = torch.tensor([0.5, 0.7, 9.0])
    mask = torch.tensor([1.0, 1.0, 0.0])  # row 2 is a reset step
    loss, stats = a2c.a2c_loss(log_probs, entropy, values, returns, mask, vf_coef=0.5, ent_coef=0.1)
    # A = [2, -1]; actor = -mean([-1 * 2, -2 * -1]) = 0; critic = mean([4, 1]) = 2.5; entropy 0.6
    assert stats["policy_loss"].item() == pytest.approx(0.0)
    assert stats["value_loss"].item() == pytest.approx(2.5)
    assert stats["entropy"].item() == pytest.approx(0.6)
    assert loss.item() == pytest.approx(0.5 * 2.5 - 0.1 * 0.6)
    loss.backward()
    # The actor term treats A as a constant: d loss / d log pi = -A / 2; the masked row gets nothing.
    torch.testing.assert_close(log_probs.grad, torch.tensor([-1.0, 0.5, 0.0]))
    torch.testing.assert_close(values.grad, torch.tensor([-1.0, 0.5, 0.0]))  # 0.5 * d mean(A^2) / dV = -A / 2


def test_defaults_follow_the_action_space_unless_given():
    discrete = a2c.check_args(a2c.Args(env_id="CartPole-v1"))
    assert (discrete.learning_rate, discrete.gamma, discrete.gae_lambda, discrete.norm_obs, discrete.norm_reward) == (
        8.3e-4, 0.995, 1.0, False, False)  # fmt: skip
    box = a2c.check_args(a2c.Args(env_id="Pendulum-v1"))
    assert (box.learning_rate, box.gamma, box.gae_lambda, box.norm_obs, box.norm_reward) == (
        2e-3,
        0.99,
        0.9,
        True,
        True,
    )
    # Box: 2e-3 / sqrt(action dimensions), so a 4-D action space gets 1e-3.
    assert a2c.default_learning_rate(gym.spaces.Box(-1, 1, (4,))) == pytest.approx(1e-3)
    given = a2c.check_args(a2c.Args(env_id="Pendulum-v1", learning_rate=1e-4, gae_lambda=1.0, norm_obs=False))
    assert (given.learning_rate, given.gae_lambda, given.norm_obs) == (1e-4, 1.0, False)


def test_initial_action_std_is_a_fraction_of_each_half_range():
    # Asymmetric and unbounded dimensions: half-ranges 2, 0.5 and (unbounded) 1.
    low, high = np.array([-1.0, 0.0, -np.inf], np.float32), np.array([3.0, 1.0, np.inf], np.float32)
    agent = a2c.Agent(4, gym.spaces.Box(low, high, dtype=np.float32), init_action_std=0.5)
    torch.testing.assert_close(agent.actor_logstd.exp(), torch.tensor([[1.0, 0.25, 0.5]]))
    with torch.no_grad():
        actions = agent.act(torch.zeros(20_000, 4))
    torch.testing.assert_close(actions.std(0), torch.tensor([1.0, 0.25, 0.5]), rtol=0.03, atol=0)


def test_a_model_file_of_the_old_format_is_refused_with_one_line(tmp_path, capsys):
    # Before issue 29 "obs_rms" was one stacked (mean, var) tensor; now it is {"mean": ..., "var": ...}.
    args = a2c.check_args(a2c.Args(env_id="Pendulum-v1"))
    agent = a2c.Agent(3, gym.make("Pendulum-v1").action_space)
    old = {"algorithm": "a2c", "args": dataclasses.asdict(args), "model": agent.state_dict()}
    torch.save({**old, "obs_rms": torch.zeros(2, 3, dtype=torch.float64)}, tmp_path / "old.pt")
    with pytest.raises(SystemExit) as stop:
        a2c.main(a2c.Args(eval_model=str(tmp_path / "old.pt")))
    assert stop.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "old.pt: not a model file saved by a2c.py" in lines[0], lines


def test_async_envs_give_the_same_run_as_sync_envs(in_tmp_dir):
    common = dict(total_timesteps=600, num_envs=2, seed=3)
    sync_returns = a2c.main(a2c.Args(**common))["episodic_returns"]
    async_returns = a2c.main(a2c.Args(**common, async_envs=True))["episodic_returns"]
    assert sync_returns and sync_returns == async_returns


def start_async_run(tmp_path, **popen_options) -> tuple[subprocess.Popen, list[int]]:
    """a2c.py with two env worker processes, once it is training (its first progress line); with the workers' pids."""
    process = subprocess.Popen(
        [sys.executable, a2c.__file__, "--async-envs", "--num-envs", "2", "--total-timesteps", "400000"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen_options,
    )
    first_line = process.stdout.readline()
    assert first_line.startswith("global_step="), first_line + process.stderr.read()
    return process, child_pids(process.pid)


def test_dead_env_worker_stops_the_run_naming_it(tmp_path):
    process, workers = start_async_run(tmp_path)
    try:
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGKILL)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 1
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"env worker 1 (pid {workers[1]})" in lines[0] and "died" in lines[0], stderr
    assert not child_pids(process.pid), "an env worker outlived the run"


def test_ctrl_c_from_a_terminal_stops_the_env_workers_cleanly(tmp_path):
    # A terminal's Ctrl-C reaches the whole process group, workers included: only the main process acts on it.
    process, workers = start_async_run(tmp_path, start_new_session=True)
    try:
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "died" not in stderr, stderr
    assert not child_pids(process.pid), "an env worker outlived the run"


def child_pids(pid: int) -> list[int]:
    """Child pids of pid, from /proc (no psutil needed)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            children.append(int(stat.parent.name))
    return children


@pytest.mark.learning
def test_learns_cartpole(in_tmp_dir):
    returns = a2c.main(a2c.Args(seed=1, total_timesteps=100_000))["episodic_returns"]
    # Random play scores ~22; seed 1 reaches ~260 by 100k steps.
    assert np.mean(returns[-10:]) >= 200
