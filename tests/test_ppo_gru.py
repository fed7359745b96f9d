"""ppo_gru.py: exact replay of the hidden state, episode-start masks, --mask-velocity, learning."""

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import run_dirs, run_script

import ppo
import ppo_gru


def start_rollouts(env_id: str, num_envs: int, num_steps: int, rollouts: int = 2, seed: int = 0):
    """Collect `rollouts` rollouts with an untrained agent; return (agent, last rollout, args).

    The second rollout starts from a non-zero hidden state, which the replay must use."""
    torch.manual_seed(seed)
    # Raw observations (no normalization), so the counting env's values can be read directly.
    args = ppo_gru.Args(env_id=env_id, num_envs=num_envs, num_steps=num_steps, norm_obs=False)
    args = ppo_gru.resolve_defaults(args)
    envs = ppo_gru.make_vector_env(args)
    agent = ppo_gru.RecurrentAgent(envs.single_observation_space.shape[0], envs.single_action_space, 16)
    rollout = ppo_gru.Rollout.empty(
        num_steps, num_envs, envs.single_observation_space.shape, envs.single_action_space.shape
    )
    obs, _ = envs.reset(seed=seed)
    state = ppo_gru.EnvState(
        obs, agent.initial_state(num_envs, torch.device("cpu")), np.zeros(num_envs, bool), np.ones(num_envs, bool)
    )
    log = ppo_gru.EpisodeLog(writer=None)
    for _ in range(rollouts):
        state, _ = ppo_gru.collect_rollout(agent, envs, rollout, state, log, 0)
    envs.close()
    return agent, rollout, args


@pytest.mark.parametrize("env_id,num_steps", [("CartPole-v1", 96), ("Pendulum-v1", 160)])
def test_replay_reproduces_the_rollout_exactly_across_episode_resets(env_id, num_steps):
    agent, rollout, _ = start_rollouts(env_id, num_envs=4, num_steps=num_steps)
    assert rollout.starts[1:].any(), "no episode started inside the rollout: the test would prove nothing"
    assert rollout.initial_hidden.abs().sum() > 0
    with torch.no_grad():
        # The whole batch, and a minibatch of two envs, through the update's replay path.
        for env_ids in [torch.arange(4), torch.tensor([3, 1])]:
            log_probs, _, values = ppo_gru.replay(agent, rollout, env_ids, torch.device("cpu"))
            np.testing.assert_allclose(log_probs.numpy(), rollout.log_probs[:, env_ids], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(values.numpy(), rollout.values[:, env_ids], rtol=1e-5, atol=1e-5)
        # The same replay without the resets drifts: this is the bug the test exists to catch.
        no_resets = dataclasses.replace(rollout, starts=np.zeros_like(rollout.starts))
        _, _, values = ppo_gru.replay(agent, no_resets, torch.arange(4), torch.device("cpu"))
        assert not np.allclose(values.numpy(), rollout.values, atol=1e-3)


def test_masks_line_up_with_episode_ends():
    # Episodes of 3 steps (obs = 0, 1, 2, then the final obs 3), cut by the time limit.
    _, rollout, _ = start_rollouts("tests/CountingTruncated-v0", num_envs=2, num_steps=9, rollouts=1)
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
    masked = module.MaskVelocity(gym.make(env_id), module.VELOCITY_INDICES[env_id])
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
    # This run ends near 460; random play scores ~22 and ppo.py's MLP policy ~40 on the same masked task.
    assert np.mean(returns[-10:]) >= 300
