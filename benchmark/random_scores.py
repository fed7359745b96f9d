"""The score of a random policy on every suite env: the 0 of the suites' normalized aggregates.

    python benchmark/random_scores.py [--episodes 100]

Uniform random actions (action_space.sample()), the env reset once with seed 0 and its action space seeded
with 0, episodes played to termination or truncation. Writes benchmark/results/random_scores.json.
"""

import argparse
import json

import gymnasium as gym
import numpy as np
from run import RESULTS, SUITES


def random_return(env_id: str, episodes: int) -> dict:
    env = gym.make(env_id)
    env.action_space.seed(0)
    env.reset(seed=0)
    returns = []
    for _ in range(episodes):
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
        env.reset()
    env.close()
    return {"mean": float(np.mean(returns)), "std": float(np.std(returns)), "episodes": episodes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100)
    options = parser.parse_args()
    env_ids = sorted({entry.env_id for suites in SUITES.values() for entry in sum(suites.values(), [])})
    scores = {env_id: random_return(env_id, options.episodes) for env_id in env_ids}
    for env_id, score in scores.items():
        print(f"{env_id}: {score['mean']:.1f} ± {score['std']:.1f} over {score['episodes']} episodes")
    (RESULTS / "random_scores.json").write_text(json.dumps(scores, indent=1) + "\n")


if __name__ == "__main__":
    main()
