"""reinforce.py: returns and loss against independent references, episode collection, learning."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import CountingEnv

import reinforce


def test_discounted_returns_match_a_forward_sum():
    rng = np.random.default_rng(0)
    rewards, gamma = rng.normal(size=12), 0.9
    expected = [sum(gamma**k * rewards[t + k] for k in range(len(rewards) - t)) for t in range(len(rewards))]
    np.testing.assert_allclose(reinforce.discounted_returns(rewards, gamma), expected, rtol=1e-12)


def test_discounted_returns_hand_computed():
    # G2 = 1, G1 = 0 + 0.5 * 1 = 0.5, G0 = 2 + 0.5 * 0.5 = 2.25
    np.testing.assert_allclose(reinforce.discounted_returns(np.array([2.0, 0.0, 1.0]), 0.5), [2.25, 0.5, 1.0])


def test_normalize_returns():
    normalized = reinforce.normalize_returns(np.array([1.0, 2.0, 3.0, 6.0]))
    assert normalized.mean() == pytest.approx(0.0, abs=1e-12)
    assert normalized.std() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(reinforce.normalize_returns(np.full(5, 7.0)), np.zeros(5))


def test_reinforce_loss_hand_computed():
    log_probs, returns = torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([1.0, -1.0, 2.0])
    # -sum(log_prob * G) / episodes = -((-1) + 2 + (-1)) / 2 = 0; then with one episode:
    torch.testing.assert_close(reinforce.reinforce_loss(log_probs, returns, 2), torch.tensor(0.0))
    torch.testing.assert_close(reinforce.reinforce_loss(log_probs[:2], returns[:2], 1), torch.tensor(-1.0))


def test_collect_episodes_returns_only_complete_episodes_without_reset_steps():
    envs = reinforce.make_vector_env("tests/CountingTruncated-v0", num_envs=2)
    policy = reinforce.Policy(1, envs.single_action_space, hidden_size=8)
    episodes, steps, _ = reinforce.collect_episodes(policy, envs, 3, torch.device("cpu"), seed=0)
    assert len(episodes) == 3
    for episode in episodes:  # (obs, action, reward) per step
        np.testing.assert_array_equal([obs[0] for obs, _, _ in episode], [0, 1, 2])
        np.testing.assert_array_equal([reward for _, _, reward in episode], [1, 2, 3])
    # 2 envs: 3 steps, a reset step, 3 steps -> 7 vector steps for the 3rd and 4th episodes
    assert steps == 2 * 7
    envs.close()


# Every episode returns 1 + 2 + 3 = 6; the env's own reward_threshold says when it counts as solved.
gym.register("tests/CountingSolved-v0", entry_point=CountingEnv, kwargs={"terminate_at": 3}, reward_threshold=6.0)
gym.register("tests/CountingUnsolved-v0", entry_point=CountingEnv, kwargs={"terminate_at": 3}, reward_threshold=6.5)


@pytest.mark.parametrize("env_id, solved_at", [("tests/CountingSolved-v0", 1), ("tests/CountingUnsolved-v0", None)])
def test_solved_is_the_last_10_mean_reaching_the_envs_threshold(env_id, solved_at, in_tmp_dir, capsys):
    result = reinforce.main(reinforce.Args(env_id=env_id, total_timesteps=60))
    assert len(result["episodic_returns"]) == 20 and set(result["episodic_returns"]) == {6.0}
    assert result["solved_at"] == solved_at
    assert ("solved:" in capsys.readouterr().out) == (solved_at is not None)


@pytest.mark.learning
def test_learns_cartpole(in_tmp_dir, capsys):
    result = reinforce.main(reinforce.Args(env_id="CartPole-v1", seed=1, total_timesteps=45_000))
    last_20 = np.mean(result["episodic_returns"][-20:])
    assert last_20 >= 250, f"last-20 mean {last_20:.1f} (an untrained policy gets about 22)"
