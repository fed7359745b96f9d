"""ppo_gru.py: the math, exact replay of the hidden state, episode-start masks, --mask-velocity, learning."""

import copy
import types

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import reference_gae, run_dirs, run_script

import ppo
import ppo_gru


def test_compute_gae_matches_a_plain_loop_with_terminations_and_truncations():
    rng = np.random.default_rng(0)
    rewards, values, next_values = (rng.normal(size=(9, 4)) for _ in range(3))
    terminations, truncations = np.zeros((9, 4)), np.zeros((9, 4))
    terminations[2, 0] = terminations[6, 1] = terminations[8, 3] = 1
    truncations[4, 0] = truncations[1, 2] = truncations[8, 1] = 1
    dones = np.maximum(terminations, truncations)
    advantages, returns = ppo_gru.compute_gae(rewards, values, next_values, terminations, dones, 0.97, 0.9)
    expected = reference_gae(rewards, values, next_values, terminations, dones, 0.97, 0.9)
    np.testing.assert_allclose(advantages, expected, rtol=1e-12)
    np.testing.assert_allclose(returns, expected + values, rtol=1e-12)


def test_policy_and_value_losses_hand_computed():
    ratios = torch.tensor([1.5, 0.5, 1.0])
    old_log_prob = torch.tensor([-1.0, -2.0, -0.5])
    advantages = torch.tensor([1.0, 1.0, -1.0])
    loss, approx_kl, clipfrac = ppo_gru.ppo_policy_loss(old_log_prob + ratios.log(), old_log_prob, advantages, 0.2)
    # per sample max(-A*r, -A*clip(r)): -1.2 (clipped at 1.2), -0.5, 1.0
    torch.testing.assert_close(loss, torch.tensor((-1.2 - 0.5 + 1.0) / 3))
    torch.testing.assert_close(clipfrac, torch.tensor(2 / 3))
    expected_kl = np.mean([0.5 - np.log(1.5), -0.5 - np.log(0.5), 0.0])
    torch.testing.assert_close(approx_kl, torch.tensor(expected_kl, dtype=torch.float32))
    new_values, old_values, returns = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0]), torch.tensor([0.0, 2.5])
    # unclipped squared errors 1 and 0.25; clipped values 1.5 and 2.5 give 2.25 and 0
    torch.testing.assert_close(ppo_gru.ppo_value_loss(new_values, old_values, returns, None), torch.tensor(0.3125))
    torch.testing.assert_close(ppo_gru.ppo_value_loss(new_values, old_values, returns, 0.5), torch.tensor(0.625))


def captured_rollouts(monkeypatch, **flags) -> list:
    """Train with these flags; return (agent, rollout) as they were when each update began: the
    rollout main() just collected and the agent that collected it. The second rollout starts from a
    non-zero hidden state, which the replay must use."""
    captured, update = [], ppo_gru.ppo_update

    def capture(agent, optimizer, rollout, *rest):
        captured.append((copy.deepcopy(agent), copy.deepcopy(rollout)))
        return update(agent, optimizer, rollout, *rest)

    monkeypatch.setattr(ppo_gru, "ppo_update", capture)
    ppo_gru.main(ppo_gru.Args(**flags))
    return captured


@pytest.mark.parametrize("env_id,num_steps", [("CartPole-v1", 96), ("Pendulum-v1", 160)])
def test_replay_reproduces_the_rollout_exactly_across_episode_resets(env_id, num_steps, monkeypatch, in_tmp_dir):
    flags = dict(env_id=env_id, num_envs=4, num_steps=num_steps, total_timesteps=2 * 4 * num_steps)
    agent, rollout = captured_rollouts(monkeypatch, **flags)[1]
    assert rollout.starts[1:].any(), "no episode started inside the rollout: the test would prove nothing"
    assert np.abs(rollout.hiddens[0]).sum() > 0  # carried over from the first rollout
    with torch.no_grad():
        # Whole rollouts and sequences of a quarter of it (which start from stored mid-rollout states),
        # all of them and a minibatch of two, through the update's replay path.
        for seq_len in [num_steps, num_steps // 4]:
            sequences = ppo_gru.to_sequences(rollout, seq_len, torch.device("cpu"))
            for ids in [torch.arange(sequences["obs"].shape[1]), torch.tensor([3, 1])]:
                log_probs, _, values = ppo_gru.replay(agent, sequences, ids)
                torch.testing.assert_close(log_probs, sequences["log_probs"][:, ids], rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(values, sequences["values"][:, ids], rtol=1e-5, atol=1e-5)
        # The same replay without the resets drifts: this is the bug the test exists to catch.
        sequences["starts"] = torch.zeros_like(sequences["starts"])
        _, _, values = ppo_gru.replay(agent, sequences, torch.arange(sequences["obs"].shape[1]))
        assert not torch.allclose(values, sequences["values"], atol=1e-3)


def test_sequences_cut_each_env_into_consecutive_pieces():
    rollout = types.SimpleNamespace(
        **{name: np.zeros((6, 2), np.float32) for name in ["actions", "starts", "trainable"]}
    )
    rollout.log_probs = rollout.values = rollout.actions
    rollout.obs = np.arange(12, dtype=np.float32).reshape(6, 2, 1)  # obs[t, env] = 2 t + env
    rollout.hiddens = np.arange(12, dtype=np.float32).reshape(6, 2, 1)
    sequences = ppo_gru.to_sequences(rollout, 3, torch.device("cpu"))
    # sequence k * num_envs + env: steps 3k, 3k + 1, 3k + 2 of that env, from the state before step 3k
    torch.testing.assert_close(
        sequences["obs"][:, :, 0].T, torch.tensor([[0.0, 2, 4], [1, 3, 5], [6, 8, 10], [7, 9, 11]])
    )
    torch.testing.assert_close(sequences["hidden"][0, :, 0], torch.tensor([0.0, 1, 6, 7]))


def test_masks_line_up_with_episode_ends(monkeypatch, in_tmp_dir):
    # Episodes of 3 steps (obs = 0, 1, 2, then the final obs 3), cut by the time limit; raw observations.
    flags = dict(
        env_id="tests/CountingTruncated-v0",
        num_envs=2,
        num_steps=9,
        seq_len=9,
        num_minibatches=1,
        total_timesteps=18,
        norm_obs=False,
    )
    [(_, rollout)] = captured_rollouts(monkeypatch, **flags)
    np.testing.assert_array_equal(rollout.obs[:, 0, 0], [0, 1, 2, 3, 0, 1, 2, 3, 0])
    np.testing.assert_array_equal(rollout.dones[:, 0], [0, 0, 1, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(rollout.terminations[:, 0], 0)  # truncated, not terminated
    # The row after a done holds the final observation (its value bootstraps the truncated step)
    # and is never trained on; the row after that starts an episode.
    np.testing.assert_array_equal(rollout.trainable[:, 0], [1, 1, 1, 0, 1, 1, 1, 0, 1])
    np.testing.assert_array_equal(rollout.starts[:, 0], [1, 0, 0, 0, 1, 0, 0, 0, 1])


def test_hidden_state_is_zero_at_every_episode_start():
    agent = ppo_gru.RecurrentAgent(3, gym.spaces.Discrete(2), 8)
    obs = torch.randn(6, 2, 3)
    starts = torch.zeros(6, 2)
    starts[0, :] = starts[3, 0] = starts[4, 1] = 1
    with torch.no_grad():
        features, _ = agent.unroll(obs, torch.randn(1, 2, 8), starts)
        for t, env in [(0, 0), (0, 1), (3, 0), (4, 1)]:
            from_zero, _ = agent.unroll(obs[t : t + 1, env : env + 1], torch.zeros(1, 1, 8), torch.zeros(1, 1))
            torch.testing.assert_close(features[t, env], from_zero[0, 0])
        # Without a start, the state carries over: step 1 depends on step 0's observation.
        other = obs.clone()
        other[0, 0] += 1.0
        changed, _ = agent.unroll(other, torch.zeros(1, 2, 8), starts)
        assert not torch.allclose(changed[1, 0], features[1, 0])


@pytest.mark.parametrize("module", [ppo_gru, ppo], ids=["ppo_gru", "ppo"])
@pytest.mark.parametrize("env_id", list(ppo_gru.VELOCITY_INDICES))
def test_mask_velocity_hides_exactly_the_listed_indices(module, env_id):
    assert module.VELOCITY_INDICES == ppo_gru.VELOCITY_INDICES
    masked = module.make_env(module.Args(env_id=env_id, mask_velocity=True), 1, "")()
    plain = gym.make(env_id)
    masked_obs, _ = masked.reset(seed=3)
    plain_obs, _ = plain.reset(seed=3)
    hidden = module.VELOCITY_INDICES[env_id]
    shown = [i for i in range(len(plain_obs)) if i not in hidden]
    velocities_moved = False
    for _ in range(10):
        assert np.all(masked_obs[hidden] == 0)
        np.testing.assert_array_equal(masked_obs[shown], plain_obs[shown])
        velocities_moved |= bool(np.any(plain_obs[hidden] != 0))
        action = plain.action_space.sample()
        masked_obs, *_ = masked.step(action)
        plain_obs, _, terminated, truncated, _ = plain.step(action)
        if terminated or truncated:  # stepping on would be undefined behaviour (gymnasium warns)
            break
    assert velocities_moved, "the hidden entries never moved: the test would prove nothing"


@pytest.mark.parametrize("name", ["ppo_gru", "ppo"])
def test_mask_velocity_on_an_unsupported_env_exits_2(name, tmp_path):
    result = run_script(name, "--env-id", "Acrobot-v1", "--mask-velocity", cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "--mask-velocity" in line and "Acrobot-v1" in line and "CartPole-v1" in line
    assert run_dirs(tmp_path) == []


@pytest.mark.learning
def test_learns_masked_cartpole(in_tmp_dir):
    args = ppo_gru.Args(env_id="CartPole-v1", mask_velocity=True, seed=1, total_timesteps=60_000)
    returns = ppo_gru.main(args)["episodic_returns"]
    # This run ends near 470; random play scores ~22 and ppo.py's MLP policy ~40 on the same masked task.
    assert np.mean(returns[-10:]) >= 300
