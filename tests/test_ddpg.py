"""ddpg.py: soft update, OU noise, critic target, replay buffer, action scaling, learning."""

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import ddpg

ROOT = Path(__file__).resolve().parent.parent


def test_soft_update_follows_the_formula():
    """Against a plain loop over every number: theta' <- tau * theta + (1 - tau) * theta'."""
    source, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    for tau in (0.0, 0.25, 0.005, 1.0):
        before = [p.detach().flatten().tolist() for p in target.parameters()]
        ddpg.soft_update(target, source, tau)
        for p, s, b in zip(target.parameters(), source.parameters(), before, strict=True):
            expected = [
                tau * s_value + (1 - tau) * b_value for s_value, b_value in zip(s.flatten().tolist(), b, strict=True)
            ]
            torch.testing.assert_close(p.detach().flatten(), torch.tensor(expected))
    for p, s in zip(target.parameters(), source.parameters(), strict=True):  # tau = 1 copied
        assert torch.equal(p, s)
    assert all(p.grad is None for p in target.parameters()), "the update must not enter autograd"


def test_actor_step_leaves_the_critic_gradients_alone():
    """The actor's backward pass goes through Q but must not touch Q's gradients."""
    space = gym.spaces.Box(-1.0, 1.0, (2,))
    actor, critic = ddpg.Actor(3, space, 8), ddpg.Critic(3, 2, 8)
    obs = torch.randn(16, 3)
    (-critic(obs, actor(obs)).mean()).backward(inputs=list(actor.parameters()))
    assert all(p.grad is None for p in critic.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in actor.parameters())


def test_ou_noise_stationary_std_and_mean_reversion():
    sigma, theta, dt = 0.3, 0.15, 1e-2
    noise = ddpg.OUNoise((200, 1), sigma, theta, dt, np.random.default_rng(0))
    samples = np.stack([noise.sample() for _ in range(30_000)])  # (steps, processes, 1)
    stationary = samples[10_000:]  # after ~15 correlation times 1 / (theta * dt)
    assert stationary.std() == pytest.approx(sigma / np.sqrt(2 * theta), rel=0.05)
    assert abs(stationary.mean()) < 0.05

    # Mean reversion: started far from mu, the expected state decays as exp(-theta * t).
    noise = ddpg.OUNoise((2000, 1), 0.0 + 1e-9, theta, dt, np.random.default_rng(1), mu=0.0)
    noise.state[:] = 1.0
    for _ in range(1000):  # t = 10
        noise.sample()
    assert noise.state.mean() == pytest.approx(np.exp(-theta * 10), rel=0.01)


def test_ou_noise_reset_restores_the_mean_for_the_masked_rows():
    noise = ddpg.OUNoise((3, 2), 0.5, 0.15, 1.0, np.random.default_rng(0), mu=0.2)
    for _ in range(10):
        noise.sample()
    noise.reset(np.array([True, False, True]))
    np.testing.assert_array_equal(noise.state[[0, 2]], 0.2)
    assert (noise.state[1] != 0.2).all()
    noise.reset(np.ones(3, dtype=bool))
    np.testing.assert_array_equal(noise.state, 0.2)


def test_gaussian_noise_has_std_sigma_and_nothing_to_reset():
    noise = ddpg.GaussianNoise((1000, 2), 0.3, np.random.default_rng(0))
    samples = np.stack([noise.sample() for _ in range(50)])
    assert samples.std() == pytest.approx(0.3, rel=0.02)
    assert abs(samples.mean()) < 0.01
    noise.reset(np.ones(1000, dtype=bool))  # no state, so a reset must not fail


def test_critic_target_terminated_vs_truncated_rows():
    rewards = torch.tensor([-1.0, -2.0, -3.0])
    terminations = torch.tensor([0.0, 1.0, 0.0])  # row 2 was truncated: stored with terminated = 0
    next_q = torch.tensor([10.0, 10.0, -5.0])
    # -1 + 0.9 * 10 = 8; terminated: -2; truncated bootstraps: -3 + 0.9 * -5 = -7.5
    torch.testing.assert_close(ddpg.critic_target(rewards, terminations, next_q, 0.9), torch.tensor([8.0, -2.0, -7.5]))


def test_replay_buffer_wraps_around_and_samples_shapes():
    buffer = ddpg.ReplayBuffer(5, obs_dim=3, action_dim=2, rng=np.random.default_rng(0))
    for step in range(7):
        buffer.add(np.full((1, 3), step), np.full((1, 2), step), [step], np.full((1, 3), step + 1), [0.0])
    assert buffer.size == 5 and buffer.position == 2
    np.testing.assert_array_equal(buffer.rewards, [5, 6, 2, 3, 4])  # 0 and 1 were overwritten
    obs, actions, rewards, next_obs, terminations = buffer.sample(16)
    assert all(batch.dtype == torch.float32 for batch in (obs, actions, rewards, next_obs, terminations))
    assert obs.shape == (16, 3) and actions.shape == (16, 2) and next_obs.shape == (16, 3)
    assert rewards.shape == (16,) and terminations.shape == (16,)
    assert set(rewards.tolist()) <= {2.0, 3.0, 4.0, 5.0, 6.0}
    np.testing.assert_array_equal(next_obs[:, 0], obs[:, 0] + 1)


def test_actor_maps_tanh_onto_asymmetric_bounds():
    space = gym.spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([3.0, 10.0], np.float32))
    actor = ddpg.Actor(2, space, hidden_size=8)
    torch.testing.assert_close(actor.action_scale, torch.tensor([2.0, 5.0]))
    torch.testing.assert_close(actor.action_bias, torch.tensor([1.0, 5.0]))
    with torch.no_grad():
        actor.net[-1].bias.fill_(100.0)  # tanh -> +1
        torch.testing.assert_close(actor(torch.zeros(1, 2)), torch.tensor([[3.0, 10.0]]))
        actor.net[-1].bias.fill_(-100.0)  # tanh -> -1
        torch.testing.assert_close(actor(torch.zeros(1, 2)), torch.tensor([[-1.0, 0.0]]))
    # the buffers travel with the weights
    assert {"action_scale", "action_bias"} <= set(actor.state_dict())


def test_learning_starts_follows_the_budget_unless_given():
    """Left unset: 5% of --total-timesteps, at most 10,000 (and --help says so); a given value is kept."""
    for total_timesteps, expected in [(4_000, 200), (20_000, 1_000), (300_000, 10_000), (1_000_000, 10_000)]:
        assert ddpg.check_args(ddpg.Args(total_timesteps=total_timesteps)).learning_starts == expected
    assert ddpg.check_args(ddpg.Args(total_timesteps=300_000, learning_starts=0)).learning_starts == 0
    help_text = subprocess.run(
        [sys.executable, "ddpg.py", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "5% of --total-timesteps" in " ".join(help_text.split())


@pytest.mark.parametrize("noise_type", ["ou", "gaussian"])
def test_both_noise_types_run(in_tmp_dir, capsys, noise_type):
    # 200-step episodes plus one NEXT_STEP reset step each: 3 episodes end by step 602
    result = ddpg.main(ddpg.Args(total_timesteps=650, learning_starts=200, batch_size=32, noise_type=noise_type))
    assert len(result["episodic_returns"]) == 3


def test_each_episode_starts_its_ou_noise_from_mu(in_tmp_dir, capsys, monkeypatch):
    states_before_sample = []

    class RecordingOUNoise(ddpg.OUNoise):
        def sample(self):
            states_before_sample.append(self.state.copy())
            return super().sample()

    monkeypatch.setattr(ddpg, "OUNoise", RecordingOUNoise)
    # one env, noise from step 1: steps 1-200 are episode 1, step 201 only resets the env (its
    # action is discarded), steps 202-401 are episode 2, step 402 resets again, 403 starts episode 3
    ddpg.main(ddpg.Args(total_timesteps=405, learning_starts=0, batch_size=8, noise_type="ou", exploration_noise=0.5))
    assert len(states_before_sample) == 405
    for first_real_step in (1, 202, 403):
        np.testing.assert_array_equal(states_before_sample[first_real_step - 1], 0.0)
    # everywhere else the process carries on from its last value
    for step in (2, 200, 201, 203, 402):
        assert (states_before_sample[step - 1] != 0.0).all()


def test_a_non_finite_loss_stops_the_run_with_exit_1(in_tmp_dir, capsys, monkeypatch):
    monkeypatch.setattr(ddpg, "critic_target", lambda rewards, terminated, next_q, gamma: rewards * float("nan"))
    with pytest.raises(SystemExit) as stopped:
        ddpg.main(ddpg.Args(total_timesteps=300, learning_starts=200, batch_size=32, save_model=True))
    assert stopped.value.code == 1
    assert "non-finite qf_loss (nan) at global step 200" in capsys.readouterr().err
    assert not list(in_tmp_dir.glob("runs/*/ddpg.pt")), "a failed run must not save its model"


@pytest.mark.learning
def test_learns_pendulum(in_tmp_dir, capsys):
    result = ddpg.main(ddpg.Args(env_id="Pendulum-v1", seed=1, total_timesteps=8000))
    last_10 = np.mean(result["episodic_returns"][-10:])
    assert last_10 >= -500, f"last-10 mean {last_10:.1f} (an untrained policy gets about -1200)"
