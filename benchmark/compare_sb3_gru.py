"""ppo_gru.py against sb3-contrib's RecurrentPPO on velocity-masked CartPole-v1, interleaved.

    pip install sb3-contrib && python benchmark/compare_sb3_gru.py --rounds 2 --total-timesteps 50000

RecurrentPPO runs with RL Zoo's settings for CartPoleNoVel-v1 (ppo_lstm.yml): 8 envs x 32
steps, batch 256, 20 epochs, lr 1e-3 and clip 0.2 both annealed, gamma 0.98, lambda 0.8,
observation normalization, a 64-unit LSTM for the actor and another for the critic, ReLU
64-unit heads. Its envs hide the velocities with the same zeroing as --mask-velocity (RL Zoo
drops those entries instead; the information is the same). ppo_gru.py runs with its defaults
(8 envs x 128 steps, replayed as 16-step sequences) and again with RL Zoo's layout (8 x 32,
each env's 32 steps replayed whole, as RecurrentPPO does). Each round runs every side once,
in its own process. Steps/sec is env steps over the training loop's wall time. Writes
benchmark/results/ppo_gru_vs_sb3.md, which the ppo_gru.py documentation page
includes.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interleaved import (  # noqa: E402
    comparison_table,
    interleave,
    learn_and_report,
    mean_sps,
    parse_options,
    publish,
    run_script,
    run_worker,
)

CART_POLE_VELOCITIES = [1, 3]
SB3 = "sb3-contrib RecurrentPPO (RL Zoo settings)"


def sb3_worker(seed: int, total_timesteps: int) -> None:
    """Runs inside a child process: train RecurrentPPO and print one JSON line of results."""
    import gymnasium as gym
    import torch
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    class ZeroVelocities(gym.ObservationWrapper):
        def observation(self, observation):
            observation = observation.copy()
            observation[CART_POLE_VELOCITIES] = 0.0
            return observation

    envs = make_vec_env("CartPole-v1", n_envs=8, seed=seed, wrapper_class=ZeroVelocities)
    envs = VecNormalize(envs, norm_obs=True, norm_reward=False)
    model = RecurrentPPO(
        "MlpLstmPolicy",
        envs,
        n_steps=32,
        batch_size=256,
        n_epochs=20,
        learning_rate=lambda progress_remaining: 1e-3 * progress_remaining,
        clip_range=lambda progress_remaining: 0.2 * progress_remaining,
        gamma=0.98,
        gae_lambda=0.8,
        ent_coef=0.0,
        policy_kwargs=dict(
            ortho_init=False,
            activation_fn=torch.nn.ReLU,
            lstm_hidden_size=64,
            enable_critic_lstm=True,
            net_arch=dict(pi=[64], vf=[64]),
        ),
        seed=seed,
        device="cpu",
    )
    learn_and_report(model, total_timesteps)


def main() -> None:
    options = parse_options(__doc__, rounds=2, total_timesteps=50_000)
    if options.sb3_worker:
        sb3_worker(options.seed, options.total_timesteps)
        return

    steps = ["--total-timesteps", str(options.total_timesteps)]
    rl_zoo_layout = ["--num-envs", "8", "--num-steps", "32", "--seq-len", "32"]
    results = interleave(
        {
            "ppo_gru.py (defaults: 8 envs x 128 steps, 16-step sequences)": lambda seed: run_script(
                "ppo_gru", ["--mask-velocity", "--seed", str(seed), *steps]
            ),
            "ppo_gru.py (8 envs x 32 steps, whole)": lambda seed: run_script(
                "ppo_gru", ["--mask-velocity", "--seed", str(seed), *steps, *rl_zoo_layout]
            ),
            SB3: lambda seed: run_worker(__file__, ["--seed", str(seed), *steps]),
        },
        options.rounds,
    )
    sb3 = mean_sps(results[SB3])
    title = (
        f"CartPole-v1 with the velocities masked, {options.total_timesteps:,} steps, seeds 1-{options.rounds}, "
        "interleaved (`python benchmark/compare_sb3_gru.py`)"
    )
    publish("ppo_gru_vs_sb3", comparison_table(title, results, "vs RecurrentPPO", lambda sps: sps / sb3))


if __name__ == "__main__":
    main()
