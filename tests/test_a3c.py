"""a3c.py: returns, the shared optimizer across processes, faults (Ctrl-C, worker exception,
worker killed), and learning."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, run_dirs

import a3c


def test_n_step_returns_match_a_forward_sum():
    rewards = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    for bootstrap in [0.0, 7.5]:  # a termination, or V(final / next observation)
        expected = [sum(0.9**k * r for k, r in enumerate(rewards[t:])) + 0.9 ** (4 - t) * bootstrap for t in range(4)]
        np.testing.assert_allclose(a3c.n_step_returns(rewards, bootstrap, 0.9), expected, rtol=1e-6)


def test_gae_with_lambda_one_is_the_n_step_advantage_and_lambda_zero_the_td_error():
    rewards = np.array([1.0, -2.0, 0.5], np.float32)
    values = np.array([0.3, 1.2, -0.4], np.float32)
    for bootstrap in [0.0, 2.0]:
        advantages = a3c.compute_gae(values, rewards, bootstrap, 0.9, 1.0)
        np.testing.assert_allclose(advantages + values, a3c.n_step_returns(rewards, bootstrap, 0.9), rtol=1e-5)
        td_errors = rewards + 0.9 * np.append(values[1:], bootstrap) - values
        np.testing.assert_allclose(a3c.compute_gae(values, rewards, bootstrap, 0.9, 0.0), td_errors, rtol=1e-5)


def add_to_shared_stats(stats: "a3c.SharedRunningStats", batches: list[np.ndarray]) -> None:
    """Child-process body: add batches to shared running statistics."""
    for batch in batches:
        stats.update(batch)


def test_shared_running_stats_equal_the_moments_of_every_workers_data():
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=[3.0, -1.0], scale=[2.0, 0.5], size=(n, 2)) for n in (5, 17, 1, 40)]
    stats = a3c.SharedRunningStats((2,))
    context = torch.multiprocessing.get_context("spawn")
    children = [context.Process(target=add_to_shared_stats, args=(stats, batches[i::2])) for i in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    data = np.concatenate(batches)
    # The statistics start from a tiny prior count (1e-4 at mean 0, var 1), as gymnasium's do.
    assert float(stats.count) == pytest.approx(len(data) + 1e-4)
    mean, scale = stats.snapshot()
    np.testing.assert_allclose(mean, data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(scale, np.sqrt(data.var(0) + 1e-8), rtol=1e-5)


def test_a3c_loss_by_hand():
    log_probs = torch.tensor([-1.0, -2.0], requires_grad=True)
    values = torch.tensor([1.0, 1.0], requires_grad=True)
    loss, stats = a3c.a3c_loss(log_probs, torch.tensor([0.5, 0.7]), values, torch.tensor([3.0, 0.0]), 0.5, 0.1)
    # A = [2, -1]: actor -mean([-2, 2]) = 0, critic mean([4, 1]) = 2.5, entropy 0.6
    assert stats == pytest.approx({"policy_loss": 0.0, "value_loss": 2.5, "entropy": 0.6})
    assert loss.item() == pytest.approx(0.5 * 2.5 - 0.1 * 0.6)
    loss.backward()
    torch.testing.assert_close(log_probs.grad, torch.tensor([-1.0, 0.5]))  # A is a constant for the actor


def step_shared_adam(optimizer: "a3c.SharedAdam", grads: list[torch.Tensor], steps: int) -> None:
    """Child-process body: step the shared optimizer `steps` times with the same gradients."""
    for _ in range(steps):
        optimizer.step(grads)


def test_shared_adam_state_is_shared_between_processes():
    torch.manual_seed(0)
    shared_params = [torch.randn(3, 2).share_memory_(), torch.randn(2).share_memory_()]
    reference_params = [p.clone().requires_grad_() for p in shared_params]
    grads = [torch.randn(3, 2), torch.randn(2)]
    optimizer = a3c.SharedAdam(shared_params, lr=0.01)
    context = torch.multiprocessing.get_context("spawn")
    children = [context.Process(target=step_shared_adam, args=(optimizer, grads, 3)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    # Two processes x 3 steps: one Adam that saw 6 steps, its moments and step count included.
    assert int(optimizer.step_count) == 6
    reference = torch.optim.Adam(reference_params, lr=0.01)
    for _ in range(6):
        for param, grad in zip(reference_params, grads, strict=True):
            param.grad = grad.clone()
        reference.step()
    for i, param in enumerate(reference_params):
        torch.testing.assert_close(optimizer.exp_avg[i], reference.state[param]["exp_avg"])
        torch.testing.assert_close(optimizer.exp_avg_sq[i], reference.state[param]["exp_avg_sq"])
        torch.testing.assert_close(shared_params[i], param.detach())


def alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def start_run(cwd, *flags, env=None) -> tuple[subprocess.Popen, list[int]]:
    """Start a3c.py with two workers; return the process and the worker pids it prints."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "a3c.py"), "--num-workers", "2", "--total-timesteps", "10000000", *flags],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # faulthandler: a run that hangs is sent SIGABRT by finish(), and prints where each thread was
        env={**(os.environ if env is None else env), "PYTHONFAULTHANDLER": "1"},
    )
    first_line = process.stdout.readline()
    assert first_line.startswith("started 2 worker(s): pids"), first_line + process.stderr.read()
    return process, [int(pid) for pid in first_line.split("pids")[1].split()]


def finish(process: subprocess.Popen, timeout: float = 20) -> tuple[str, float]:
    """Wait for the run to end; return (stderr, seconds it took)."""
    start = time.time()
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Say why, for a failure that may be rare: a main process still running (its threads' stacks),
        # or one that exited while another process still held its output pipes open.
        still_running = process.poll() is None
        if still_running:
            process.send_signal(signal.SIGABRT)
        try:
            _, stderr = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            stderr = "(no output: the pipes are still open)"
        state = "still running" if still_running else f"exited ({process.returncode}) with its pipes held open"
        message = f"the run did not end within {timeout} s: main process {state}\n{stderr[-4000:]}"
        raise AssertionError(message) from None
    finally:
        process.kill()
    return stderr, time.time() - start


def test_ctrl_c_stops_every_worker(tmp_path):
    process, pids = start_run(tmp_path)
    time.sleep(3)
    process.send_signal(signal.SIGINT)
    stderr, seconds = finish(process)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert seconds < 10
    assert not any(alive(pid) for pid in pids), "a worker outlived the run"


def test_a_killed_worker_stops_the_run_and_is_named(tmp_path):
    process, pids = start_run(tmp_path)
    time.sleep(3)
    os.kill(pids[1], signal.SIGKILL)
    stderr, seconds = finish(process)
    assert process.returncode == 1, stderr
    assert f"worker 1 (pid {pids[1]})" in stderr and "SIGKILL" in stderr
    assert seconds < 10
    assert not any(alive(pid) for pid in pids), "a worker outlived the run"


@pytest.mark.parametrize("seconds_before_kill", [3, 0])
def test_workers_stop_when_the_main_process_is_killed_outright(tmp_path, seconds_before_kill):
    # 3 s: the workers are training; 0 s: they are still starting (importing, making their envs).
    process, pids = start_run(tmp_path)
    time.sleep(seconds_before_kill)
    process.kill()  # SIGKILL: no handler runs, so the workers must notice on their own
    finish(process)
    deadline = time.time() + 20
    while any(alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.2)
    try:
        assert not any(alive(pid) for pid in pids), "a worker outlived its main process"
    finally:
        for pid in pids:  # a failing run must not leave its workers behind
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_an_exception_in_a_worker_stops_the_run_and_is_named(tmp_path):
    # An env that fails after a while, registered by a module gymnasium imports from the env id.
    (tmp_path / "faulty_env.py").write_text(
        textwrap.dedent(
            """
            import gymnasium as gym
            from gymnasium.envs.classic_control import CartPoleEnv

            class FaultyCartPole(CartPoleEnv):
                steps = 0

                def step(self, action):
                    FaultyCartPole.steps += 1
                    if FaultyCartPole.steps == 3000:
                        raise RuntimeError("injected fault")
                    return super().step(action)

            gym.register("FaultyCartPole-v0", entry_point=FaultyCartPole, max_episode_steps=500)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    process, pids = start_run(tmp_path, "--env-id", "faulty_env:FaultyCartPole-v0", env=env)
    stderr, seconds = finish(process, timeout=60)
    assert process.returncode == 1, stderr
    [line] = [line for line in stderr.splitlines() if line.strip()]
    assert "worker" in line and "RuntimeError: injected fault" in line
    assert seconds < 30
    assert not any(alive(pid) for pid in pids), "a worker outlived the run"


def test_defaults_by_action_space_kind():
    discrete, _, _ = a3c.check_args(a3c.Args(num_workers=1))
    box, _, _ = a3c.check_args(a3c.Args(num_workers=1, env_id="Pendulum-v1"))
    assert discrete.norm_reward and box.norm_reward
    assert not discrete.norm_obs and box.norm_obs
    assert (discrete.gamma, box.gamma) == (0.995, 0.99)
    assert (discrete.gae_lambda, box.gae_lambda) == (1.0, 0.9)
    assert not a3c.check_args(a3c.Args(num_workers=1, norm_reward=False))[0].norm_reward


def test_one_worker_is_deterministic_and_box_actions_run(in_tmp_dir):
    flags = dict(total_timesteps=1500, num_workers=1, env_id="Pendulum-v1", gae_lambda=0.9)
    first = a3c.main(a3c.Args(**flags))["episodic_returns"]
    second = a3c.main(a3c.Args(**flags))["episodic_returns"]
    assert len(first) == 7 and first == second
    assert len(run_dirs(in_tmp_dir)) == 2


def test_saved_model_acts_on_the_observations_it_was_trained_on(in_tmp_dir):
    result = a3c.main(a3c.Args(total_timesteps=1000, num_workers=1, env_id="Pendulum-v1", save_model=True))
    model_path = f"runs/{result['run_name']}/a3c.pt"
    checkpoint = torch.load(model_path)
    mean, scale = checkpoint["obs_rms"]["mean"], torch.sqrt(checkpoint["obs_rms"]["var"] + 1e-8)
    # Box actions normalize observations by default; the statistics saw Pendulum's (cos, sin, speed).
    assert checkpoint["args"]["norm_obs"] and mean.shape == (3,) and (scale > 0).all()
    assert mean.abs().max() > 0.01
    # Evaluation with the saved statistics equals playing the same policy by hand on normalized inputs.
    agent = a3c.Agent(3, a3c.gym.make("Pendulum-v1").action_space)
    agent.load_state_dict(checkpoint["model"])
    env = a3c.gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=5 + 10_000)  # watch's first episode: seed + 10_000
    total, done = 0.0, False
    while not done:
        with torch.no_grad():  # the deterministic action of a Box policy: the Gaussian mean
            action = agent.actor(torch.as_tensor((obs - mean.numpy()) / scale.numpy(), dtype=torch.float32))
        obs, reward, terminated, truncated, _ = env.step(np.clip(action.numpy(), -2, 2))
        total, done = total + reward, terminated or truncated
    eval_returns = a3c.watch(a3c.Args(eval_model=model_path, eval_episodes=1, seed=5))["eval_returns"]
    assert eval_returns == [pytest.approx(total, rel=1e-5)]


@pytest.mark.learning
def test_learns_cartpole_with_one_worker(in_tmp_dir):
    returns = a3c.main(a3c.Args(seed=1, num_workers=1, total_timesteps=60_000))["episodic_returns"]
    # Random play scores ~22; this run (deterministic with one worker) ends at 500.
    assert np.mean(returns[-20:]) >= 250
