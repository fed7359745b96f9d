"""The published A2C anchors of issue 20, re-measured: Stable-Baselines3's A2C with RL Zoo's settings.

    python benchmark/sb3_a2c_anchors.py --env-id LunarLander-v3 --seeds 1 2 3 --total-timesteps 500000
    python benchmark/sb3_a2c_anchors.py --env-id HalfCheetah-v5 --seeds 1 2 --total-timesteps 1000000

RL Zoo's A2C figures (LunarLander-v2 156 ± 80, HalfCheetah-v3 3041 ± 157, Hopper-v3 733 ± 377)
come from older env versions and are evaluated with the deterministic policy. This runs the same
library with the same settings on this machine's env versions, so a2c.py can be compared with
what the anchor's own code reaches here. Settings, from RL Zoo's hyperparams/a2c.yml:
LunarLander: 8 envs, gamma 0.995, n_steps 5, learning rate 8.3e-4 decaying linearly to 0,
entropy 1e-5. MuJoCo: `normalize: true` (VecNormalize: observations and rewards), otherwise
SB3's A2C defaults (1 env, n_steps 5, lr 7e-4 constant, gamma 0.99). Reported: the last-10
training episodes (the metric of our tables) and 10 deterministic evaluation episodes.
Results: benchmark/results/sb3_a2c_anchors.json (resumable) and .md.
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
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    box = isinstance(gym.make(env_id).action_space, gym.spaces.Box)
    if box:
        envs = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed))
        model = A2C("MlpPolicy", envs, seed=seed, device="cpu")
    else:
        envs = make_vec_env(env_id, n_envs=8, seed=seed)
        model = A2C(
            "MlpPolicy", envs, gamma=0.995, n_steps=5, ent_coef=1e-5, learning_rate=lambda left: 8.3e-4 * left,
            seed=seed, device="cpu",
        )  # fmt: skip
    start = time.time()
    model.learn(total_timesteps)
    wall = time.time() - start
    monitors = envs.venv.envs if box else envs.envs
    # Every env's finished episodes, in the order they ended.
    episodes = sorted(
        (t, r) for m in monitors for t, r in zip(m.get_episode_times(), m.get_episode_rewards(), strict=True)
    )
    train_returns = [r for _, r in episodes]
    if box:
        envs.training, envs.norm_reward = False, False  # frozen statistics, raw rewards
    eval_returns = []
    for episode in range(10):
        env = gym.make(env_id)
        obs, _ = env.reset(seed=10_000 + episode)
        done, total = False, 0.0
        while not done:
            policy_obs = envs.normalize_obs(obs) if box else obs
            action, _ = model.predict(policy_obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + float(reward), terminated or truncated
        eval_returns.append(total)
    return {
        "env_id": env_id,
        "seed": seed,
        "total_timesteps": total_timesteps,
        "last10_train": float(np.mean(train_returns[-10:])),
        "eval10": float(np.mean(eval_returns)),
        "sps": total_timesteps / wall,
    }


def main() -> None:
    title = "Stable-Baselines3 A2C with RL Zoo's settings on this machine"
    run_seeds_and_publish(__doc__.split("\n\n")[0], "sb3_a2c_anchors", title, train, [1, 2, 3])


if __name__ == "__main__":
    main()
