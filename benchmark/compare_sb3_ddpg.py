"""ddpg.py against Stable-Baselines3's DDPG with identical settings, interleaved.

    python benchmark/compare_sb3_ddpg.py --env-id Pendulum-v1 --rounds 3 --total-timesteps 20000
    python benchmark/compare_sb3_ddpg.py --env-id HalfCheetah-v5 --rounds 2 --total-timesteps 20000

The same on both sides: actor and critic with two hidden layers of 256 ReLU units (SB3's DDPG
defaults to 400-300, so both are set), batch 256, Adam lr 1e-3, gamma 0.99, tau 0.005, one env,
uniform random actions for the first 1,000 steps, then one gradient step of critic and actor per
env step, Gaussian exploration noise with sigma 0.1 of the action half-range, a 1M buffer. Each
round runs both sides once, each in its own process. Steps/sec is env steps over the training
loop's wall time. Writes benchmark/results/ddpg_vs_sb3_<env>.md.
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

DDPG_FLAGS = ["--hidden-size", "256", "--batch-size", "256", "--learning-starts", "1000"]
DDPG_FLAGS += ["--noise-type", "gaussian", "--exploration-noise", "0.1"]


def sb3_worker(env_id: str, seed: int, total_timesteps: int, threads: int | None) -> None:
    """Runs inside a child process: train SB3 DDPG and print one JSON line of results."""
    import gymnasium as gym
    import numpy as np
    import torch
    from stable_baselines3 import DDPG
    from stable_baselines3.common.noise import NormalActionNoise

    torch.set_num_threads(threads or 1)  # ddpg.py runs one thread: measured faster for these sizes
    env = gym.make(env_id)
    half_range = (env.action_space.high - env.action_space.low) / 2
    noise = NormalActionNoise(mean=np.zeros_like(half_range), sigma=0.1 * half_range)
    model = DDPG(
        "MlpPolicy", env, learning_rate=1e-3, buffer_size=1_000_000, learning_starts=1000, batch_size=256,
        tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, action_noise=noise,
        policy_kwargs=dict(net_arch=[256, 256]), seed=seed, device="cpu",
    )  # fmt: skip
    learn_and_report(model, total_timesteps)


def main() -> None:
    options = parse_options(__doc__, rounds=3, total_timesteps=20_000, env_id="Pendulum-v1")
    if options.sb3_worker:
        sb3_worker(options.env_id, options.seed, options.total_timesteps, options.threads)
        return

    flags = ["--env-id", options.env_id, "--total-timesteps", str(options.total_timesteps)]
    results = interleave(
        {
            "ddpg.py": lambda seed: run_script("ddpg", ["--seed", str(seed), *flags, *DDPG_FLAGS]),
            "SB3 DDPG": lambda seed: run_worker(__file__, ["--seed", str(seed), *flags]),
        },
        options.rounds,
    )
    ours = mean_sps(results["ddpg.py"])
    title = (
        f"{options.env_id}, 256-256 networks, batch 256, one update per step, {options.total_timesteps:,} steps, "
        f"seeds 1-{options.rounds}, interleaved (`python benchmark/compare_sb3_ddpg.py`)"
    )
    key = f"ddpg_vs_sb3_{options.env_id}"
    publish(key, comparison_table(title, results, "ddpg.py speed-up", lambda sps: ours / sps))


if __name__ == "__main__":
    main()
