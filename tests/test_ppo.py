"""ppo.py: the math against independent references, rollout bookkeeping, saving, and learning."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import reference_gae

import ppo


def test_compute_gae_matches_a_plain_loop_with_terminations_and_truncations():
    rng = np.random.default_rng(0)
    num_steps, num_envs = 9, 4
    rewards = rng.normal(size=(num_steps, num_envs))
    values = rng.normal(size=(num_steps, num_envs))
    next_values = rng.normal(size=(num_steps, num_envs))
    terminations = np.zeros((num_steps, num_envs))
    truncations = np.zeros((num_steps, num_envs))
    terminations[2, 0] = terminations[6, 1] = terminations[8, 3] = 1
    truncations[4, 0] = truncations[1, 2] = truncations[8, 1] = 1
    dones = np.maximum(terminations, truncations)
    gamma, gae_lambda = 0.97, 0.9

    advantages, returns = ppo.compute_gae(rewards, values, next_values, terminations, dones, gamma, gae_lambda)
    expected = reference_gae(rewards, values, next_values, terminations, dones, gamma, gae_lambda)
    np.testing.assert_allclose(advantages, expected, rtol=1e-12)
    np.testing.assert_allclose(returns, expected + values, rtol=1e-12)


def test_compute_gae_hand_computed():
    # Step 0 is truncated with V(final obs) = 2, step 2 terminates; gamma 0.9, lambda 0.5.
    rewards = np.array([[1.0], [1.0], [1.0]])
    values = np.array([[0.5], [0.5], [0.5]])
    next_values = np.array([[2.0], [0.5], [9.0]])  # the 9 must be ignored: terminal
    terminations = np.array([[0.0], [0.0], [1.0]])
    dones = np.array([[1.0], [0.0], [1.0]])
    advantages, returns = ppo.compute_gae(rewards, values, next_values, terminations, dones, 0.9, 0.5)
    # A2 = 1 - 0.5 = 0.5; A1 = (1 + 0.9*0.5 - 0.5) + 0.45*0.5 = 1.175; A0 = 1 + 0.9*2 - 0.5 = 2.3
    np.testing.assert_allclose(advantages, [[2.3], [1.175], [0.5]])
    np.testing.assert_allclose(returns, [[2.8], [1.675], [1.0]])


def test_policy_loss_hand_computed():
    ratios = torch.tensor([1.5, 0.5, 1.0])
    old_log_prob = torch.tensor([-1.0, -2.0, -0.5])
    advantages = torch.tensor([1.0, 1.0, -1.0])
    loss, approx_kl, clipfrac = ppo.ppo_policy_loss(old_log_prob + ratios.log(), old_log_prob, advantages, 0.2)
    # per sample max(-A*r, -A*clip(r)): -1.2 (clipped at 1.2), -0.5, 1.0
    torch.testing.assert_close(loss, torch.tensor((-1.2 - 0.5 + 1.0) / 3))
    torch.testing.assert_close(clipfrac, torch.tensor(2 / 3))
    expected_kl = np.mean([0.5 - np.log(1.5), -0.5 - np.log(0.5), 0.0])
    torch.testing.assert_close(approx_kl, torch.tensor(expected_kl, dtype=torch.float32))


def test_value_loss_hand_computed():
    new_values, old_values, returns = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0]), torch.tensor([0.0, 2.5])
    # unclipped squared errors 1 and 0.25; clipped values 1.5 and 2.5 give 2.25 and 0
    torch.testing.assert_close(ppo.ppo_value_loss(new_values, old_values, returns, None), torch.tensor(0.3125))
    torch.testing.assert_close(ppo.ppo_value_loss(new_values, old_values, returns, 0.5), torch.tensor(0.625))


def test_explained_variance():
    target = np.array([1.0, 2.0, 3.0, 4.0])
    assert ppo.explained_variance(target, target) == pytest.approx(1.0)
    assert ppo.explained_variance(np.full(4, target.mean()), target) == pytest.approx(0.0)


def small_args(**overrides) -> ppo.Args:
    args = dict(num_envs=2, num_steps=16, gamma=0.9, gae_lambda=0.95, num_minibatches=1, update_epochs=1, ent_coef=0.0)
    args.update(overrides)
    return ppo.Args(**args)


def collect(env_id, num_envs, num_steps, seed=0, norm_obs=False):
    torch.manual_seed(seed)
    envs = ppo.make_vector_env(ppo.Args(env_id=env_id, num_envs=num_envs, norm_obs=norm_obs))
    agent = ppo.Agent(envs.single_observation_space.shape[0], envs.single_action_space)
    rollout = ppo.empty_rollout(num_steps, num_envs, envs.single_observation_space, envs.single_action_space)
    obs, _ = envs.reset(seed=seed)
    done = np.zeros(num_envs, dtype=bool)
    ppo.collect_rollout(agent, envs, rollout, obs, done, 0, torch.device("cpu"), ppo.NoWriter(), [])
    return envs, agent, rollout


@pytest.mark.parametrize("terminated", [False, True])
def test_episode_end_bootstraps_from_the_real_final_observation(terminated):
    envs, agent, rollout = collect("tests/CountingTerminated-v0" if terminated else "tests/CountingTruncated-v0", 1, 6)
    # NEXT_STEP: row 3 holds the final observation [3]; that step only resets and is not trained on.
    np.testing.assert_array_equal(rollout.obs[:, 0, 0], [0, 1, 2, 3, 0, 1])
    np.testing.assert_array_equal(rollout.trainable[:, 0], [True, True, True, False, True, True])
    np.testing.assert_array_equal(rollout.dones[:, 0], [0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(rollout.terminations[:, 0], [0, 0, float(terminated), 0, 0, 0])

    advantages, _ = ppo.rollout_advantages(rollout, gamma=0.9, gae_lambda=0.95)
    with torch.no_grad():
        v_final = agent.get_value(torch.tensor([[3.0]])).item()
        v_before = agent.get_value(torch.tensor([[2.0]])).item()
    bootstrap = 0.0 if terminated else 0.9 * v_final
    # step 2 (the third step) earns reward 3
    assert advantages[2, 0] == pytest.approx(3.0 + bootstrap - v_before, abs=1e-6)
    envs.close()


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_first_minibatch_ratio_is_exactly_one(env_id):
    envs, agent, rollout = collect(env_id, 2, 32, norm_obs=env_id == "Pendulum-v1")
    keep = torch.as_tensor(rollout.trainable.reshape(-1))
    obs = torch.as_tensor(rollout.obs).flatten(0, 1)[keep]
    actions = torch.as_tensor(rollout.actions).flatten(0, 1)[keep]
    with torch.no_grad():
        new_log_prob, _, _ = agent.evaluate_actions(obs, actions)
    stored = torch.as_tensor(rollout.log_probs).flatten()[keep]
    torch.testing.assert_close(new_log_prob, stored, rtol=0, atol=1e-5)

    # Through the real update path: one epoch, one minibatch, so the logged KL and clip
    # fraction are those of the first minibatch, computed before any gradient step.
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3)
    losses = ppo.ppo_update(agent, optimizer, rollout, small_args(), torch.device("cpu"), 0)
    assert abs(losses["losses/approx_kl"]) < 1e-6
    assert losses["losses/clipfrac"] == 0.0
    envs.close()


def test_continuous_actions_are_clipped_for_the_env_but_not_for_learning(monkeypatch):
    sent = []
    original_step = gym.vector.SyncVectorEnv.step

    def recording_step(self, actions):
        sent.append(np.array(actions))
        return original_step(self, actions)

    monkeypatch.setattr(gym.vector.SyncVectorEnv, "step", recording_step)
    torch.manual_seed(0)
    envs, agent, rollout = collect("Pendulum-v1", 2, 64)
    with torch.no_grad():
        agent.actor_logstd.fill_(1.5)  # wide policy: many samples fall outside [-2, 2]
    sent.clear()
    obs, _ = envs.reset(seed=1)
    ppo.collect_rollout(agent, envs, rollout, obs, np.zeros(2, bool), 0, torch.device("cpu"), ppo.NoWriter(), [])
    sent = np.stack(sent)
    assert np.abs(sent).max() <= 2.0
    assert np.abs(rollout.actions).max() > 2.0, "the stored action must be the sampled, unclipped one"
    envs.close()


def test_observation_statistics_survive_save_and_load(in_tmp_dir):
    args = small_args(env_id="Pendulum-v1", norm_obs=True, save_model=True, eval_episodes=1)
    envs = ppo.make_vector_env(args)
    envs.reset(seed=0)
    for _ in range(50):
        envs.step(envs.action_space.sample())
    live = envs.obs_rms
    (in_tmp_dir / "runs" / "run").mkdir(parents=True)

    # finish_run saves, then evaluates the saved file on a fresh env that holds the saved statistics,
    # frozen (watch): record what that env normalizes with.
    seen = []
    original_step = gym.wrappers.vector.NormalizeObservation.step

    def recording_step(self, actions):
        result = original_step(self, actions)
        seen.append((self.obs_rms.mean.copy(), self.obs_rms.var.copy(), self.update_running_mean))
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gym.wrappers.vector.NormalizeObservation, "step", recording_step)
        agent = ppo.Agent(3, envs.single_action_space)
        result = ppo.finish_run(args, "run", ppo.NoWriter(), None, 0, agent, envs, [])
    saved = torch.load(in_tmp_dir / "runs" / "run" / f"{args.exp_name}.pt")["obs_rms"]
    np.testing.assert_allclose(saved["mean"], live.mean)
    np.testing.assert_allclose(saved["var"], live.var)
    assert len(result["eval_returns"]) == 1
    assert len(seen) == 200  # one Pendulum episode
    for mean, var, updating in seen:
        np.testing.assert_allclose(mean, live.mean, err_msg="evaluation must use the saved statistics")
        np.testing.assert_allclose(var, live.var, err_msg="evaluation must use the saved statistics")
        assert not updating, "evaluation must not update the statistics"
    envs.close()


def test_non_finite_loss_stops_the_update():
    envs, agent, rollout = collect("CartPole-v1", 2, 16)
    rollout.rewards[0, 0] = np.nan
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3)
    with pytest.raises(FloatingPointError, match="non-finite .*value_loss.* at global step 123"):
        ppo.ppo_update(agent, optimizer, rollout, small_args(), torch.device("cpu"), 123)
    envs.close()


def test_per_kind_defaults_are_filled_and_explicit_flags_win():
    discrete = ppo.check_args(ppo.Args(env_id="CartPole-v1"))
    continuous = ppo.check_args(ppo.Args(env_id="Pendulum-v1", norm_reward=False))
    assert (discrete.norm_obs, discrete.norm_reward, discrete.ent_coef) == (False, False, 0.01)
    assert (continuous.norm_obs, continuous.norm_reward, continuous.ent_coef) == (True, False, 0.0)
    # The rest is one set for both kinds.
    for field in ["num_envs", "num_steps", "gamma", "gae_lambda", "num_minibatches", "update_epochs"]:
        assert getattr(discrete, field) == getattr(continuous, field), field


def test_box_learning_rate_follows_the_budget_and_an_explicit_flag_wins():
    rule = ppo.default_learning_rate
    assert rule(10_000) == rule(100_000) == 1e-3
    assert rule(400_000) == pytest.approx(5e-4)  # 1e-3 * sqrt(1/4)
    assert rule(1_000_000) == pytest.approx(1e-3 / np.sqrt(10))
    assert rule(10_000_000) == 3e-4
    box = ppo.Args(env_id="Pendulum-v1", total_timesteps=400_000)
    assert ppo.check_args(box).learning_rate == pytest.approx(5e-4)
    assert ppo.check_args(ppo.dataclasses.replace(box, learning_rate=0.01)).learning_rate == 0.01
    # Discrete policies keep 1e-3 at any budget.
    assert ppo.check_args(ppo.Args(env_id="CartPole-v1", total_timesteps=1_000_000)).learning_rate == 1e-3


def test_initial_action_std_is_a_fraction_of_each_half_range():
    # Asymmetric and unbounded dimensions: half-ranges 2, 0.5 and (unbounded) 1.
    low, high = np.array([-1.0, 0.0, -np.inf], np.float32), np.array([3.0, 1.0, np.inf], np.float32)
    space = gym.spaces.Box(low, high, dtype=np.float32)
    agent = ppo.Agent(4, space, init_action_std=0.5)
    torch.testing.assert_close(agent.actor_logstd.exp(), torch.tensor([[1.0, 0.25, 0.5]]))
    # The sampled actions really have that spread (the policy mean starts near 0).
    with torch.no_grad():
        actions = agent.act(torch.zeros(20_000, 4))
    torch.testing.assert_close(actions.std(0), torch.tensor([1.0, 0.25, 0.5]), rtol=0.03, atol=0)


@pytest.mark.learning
def test_learns_cartpole(in_tmp_dir, capsys):
    result = ppo.main(ppo.Args(env_id="CartPole-v1", seed=1, total_timesteps=30_000))
    last_10 = np.mean(result["episodic_returns"][-10:])
    assert last_10 >= 400, f"last-10 mean {last_10:.1f} (an untrained policy gets about 22)"


@pytest.mark.learning
def test_learns_pendulum(in_tmp_dir, capsys):
    result = ppo.main(ppo.Args(env_id="Pendulum-v1", seed=1, total_timesteps=40_000))
    last_10 = np.mean(result["episodic_returns"][-10:])
    assert last_10 >= -400, f"last-10 mean {last_10:.1f} (an untrained policy gets about -1200)"
