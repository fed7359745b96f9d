"""The anchors of issue 21's MuJoCo targets: Stable-Baselines3's DDPG with RL Zoo's MuJoCo settings.

    python benchmark/sb3_ddpg_anchors.py --env-id HalfCheetah-v5 --seeds 1 2 --total-timesteps 300000
    python benchmark/sb3_ddpg_anchors.py --env-id Hopper-v5 --seeds 1 2 --total-timesteps 300000

ddpg.py is to be ahead of SB3's DDPG on HalfCheetah and Hopper at 300k steps, on this machine's
env versions. Settings, RL Zoo's MuJoCo defaults for DDPG (hyperparams/ddpg.yml): actor and
critic 400-300, Adam lr 1e-3, batch 256, 10,000 steps of uniform random actions first, Gaussian
noise with sigma 0.1 of the action half-range, one gradient step per env step, and SB3's DDPG
defaults for the rest (1M buffer, gamma 0.99, tau 0.005). One env, one torch thread, CPU.
Reported: the last-10 training episodes (the metric of our tables) and 10 deterministic
evaluation episodes. Results: benchmark/results/sb3_ddpg_anchors.json (resumable) and .md.
"""

import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anchors import run_seeds_and_publish  # noqa: E402


def train(env_id: str, seed: int, total_timesteps: int) -> dict:
    from stable_baselines3 import DDPG
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.noise import NormalActionNoise

    torch.set_num_threads(1)  # as ddpg.py, and so two runs share the 2 cores without contention
    env = Monitor(gym.make(env_id))
    half_range = (env.action_space.high - env.action_space.low) / 2
    model = DDPG(
        "MlpPolicy", env, learning_rate=1e-3, batch_size=256, learning_starts=10_000, train_freq=1, gradient_steps=1,
        action_noise=NormalActionNoise(mean=np.zeros_like(half_range), sigma=0.1 * half_range),
        policy_kwargs=dict(net_arch=[400, 300]), seed=seed, device="cpu",
    )  # fmt: skip
    start = time.time()
    model.learn(total_timesteps)
    wall = time.time() - start
    train_returns = [float(r) for r in env.get_episode_rewards()]
    eval_returns = []
    for episode in range(10):
        eval_env = gym.make(env_id)
        obs, _ = eval_env.reset(seed=10_000 + episode)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = eval_env.step(action)
            total, done = total + float(reward), terminated or truncated
        eval_returns.append(total)
    return {
        "env_id": env_id,
        "seed": seed,
        "total_timesteps": total_timesteps,
        "last10_train": float(np.mean(train_returns[-10:])),
        "eval10": float(np.mean(eval_returns)),
        "sps": total_timesteps / wall,
        "train_returns": train_returns,
    }


def main() -> None:
    title = "Stable-Baselines3 DDPG with RL Zoo's MuJoCo settings on this machine"
    run_seeds_and_publish(__doc__.split("\n\n")[0], "sb3_ddpg_anchors", title, train, [1, 2])


if __name__ == "__main__":
    main()
