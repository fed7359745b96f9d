"""qac.py: the TD target and the baseline against hand-computed numbers, and learning."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import qac


def test_td_target_terminated_vs_truncated_rows():
    rewards = torch.tensor([1.0, 1.0, 1.0])
    next_q = torch.tensor([2.0, 3.0, 4.0])  # row 2: Q of the real final observation of a truncated episode
    terminations = torch.tensor([0.0, 1.0, 0.0])
    # 1 + 0.9 * 2 = 2.8; terminated: 1; truncated still bootstraps: 1 + 0.9 * 4 = 4.6
    torch.testing.assert_close(qac.td_target(rewards, next_q, terminations, 0.9), torch.tensor([2.8, 1.0, 4.6]))


def test_expected_q_baseline_discrete():
    critic = qac.Critic(2, gym.spaces.Discrete(3))
    obs = torch.zeros(1, 2)
    with torch.no_grad():
        q_all = critic.net(obs)
    dist = torch.distributions.Categorical(probs=torch.tensor([[0.2, 0.3, 0.5]]))
    expected = (0.2 * q_all[0, 0] + 0.3 * q_all[0, 1] + 0.5 * q_all[0, 2]).item()
    assert critic.expected_q(obs, dist).item() == pytest.approx(expected, rel=1e-6)
    assert critic.q(obs, torch.tensor([2])).item() == pytest.approx(q_all[0, 2].item(), rel=1e-6)


def test_expected_q_baseline_box_uses_the_mean_action():
    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    critic, actor = qac.Critic(3, space), qac.Actor(3, space)
    obs = torch.randn(4, 3)
    dist = actor.distribution(obs)
    torch.testing.assert_close(critic.expected_q(obs, dist), critic.q(obs, dist.mean))


def test_masked_mean_ignores_reset_steps():
    values, mask = torch.tensor([1.0, 100.0, 3.0]), torch.tensor([1.0, 0.0, 1.0])
    assert qac.masked_mean(values, mask).item() == pytest.approx(2.0)


@pytest.mark.parametrize("expected_q_baseline", [True, False])
def test_both_forms_run(in_tmp_dir, capsys, expected_q_baseline):
    result = qac.main(qac.Args(total_timesteps=400, num_envs=2, expected_q_baseline=expected_q_baseline))
    assert result["episodic_returns"], "no episode finished"


def test_actor_loss_does_not_reach_the_critic():
    space = gym.spaces.Discrete(2)
    actor, critic = qac.Actor(4, space), qac.Critic(4, space)
    obs = torch.randn(5, 4)
    dist = actor.distribution(obs)
    action = dist.sample()
    score = critic.q(obs, action).detach()
    (-(dist.log_prob(action) * score).mean()).backward()
    assert all(p.grad is None for p in critic.parameters())
    assert any(p.grad is not None for p in actor.parameters())


def test_one_backward_gives_each_network_the_gradient_of_its_own_loss():
    # main() steps both networks from one backward of critic_loss + actor_loss: the two losses share no
    # parameter, so each network gets exactly the gradient its own loss alone would give it.
    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    actor, critic = qac.Actor(3, space), qac.Critic(3, space)
    obs, targets = torch.randn(5, 3), torch.randn(5)

    def losses():
        dist = actor.distribution(obs)
        action = dist.sample()
        q_values = critic.q(obs, action)
        with torch.no_grad():
            baseline = critic.expected_q(obs, dist)
        return (targets - q_values).pow(2).mean(), -(dist.log_prob(action) * (q_values.detach() - baseline)).mean()

    torch.manual_seed(0)
    critic_loss, actor_loss = losses()
    critic_loss.backward()
    actor_loss.backward()
    separate = [p.grad.clone() for p in [*actor.parameters(), *critic.parameters()]]
    actor.zero_grad()
    critic.zero_grad()
    torch.manual_seed(0)
    sum(losses()).backward()
    for grad, param in zip(separate, [*actor.parameters(), *critic.parameters()], strict=True):
        torch.testing.assert_close(param.grad, grad, rtol=0, atol=0)


def test_box_actions_are_clipped_on_their_way_to_the_env():
    env = qac.make_env("Pendulum-v1")  # torque bounds [-2, 2]
    for action, clipped in [(5.0, 2.0), (-5.0, -2.0), (1.5, 1.5)]:
        assert env.action(np.array([action], dtype=np.float32)).tolist() == [clipped]
    assert not isinstance(qac.make_env("CartPole-v1"), gym.wrappers.ClipAction)


@pytest.mark.learning
def test_learns_cartpole(in_tmp_dir, capsys):
    result = qac.main(qac.Args(env_id="CartPole-v1", seed=1, total_timesteps=80_000))
    last_20 = np.mean(result["episodic_returns"][-20:])
    assert last_20 >= 300, f"last-20 mean {last_20:.1f} (an untrained policy gets about 22)"
