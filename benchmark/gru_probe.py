"""Does ppo_gru.py's memory carry the velocities the mask hides? A linear probe of the GRU state.

    python ppo_gru.py --env-id LunarLander-v3 --mask-velocity --total-timesteps 1000000 --save-model
    python benchmark/gru_probe.py runs/<run>/ppo_gru.pt [--episodes 40]

The saved agent plays --episodes episodes (deterministic actions, seeds 20_000 on) on the masked task it
was trained on, while the probe records, at every step t, the true velocities v_t that the mask zeroes
and four candidate inputs: the trained GRU's state h_t, the state of an untrained GRU of the same shape
fed the same observations (memory without learning), the masked observation o_t alone, and two
consecutive masked observations (o_t, o_{t-1}), from which a finite difference recovers a velocity.
A ridge regression from each input to v_t is fitted on the first 75% of the episodes and scored on the
rest: R^2 = 1 - sum (v - v_hat)^2 / sum (v - mean v)^2 per velocity, 1 a perfect read-out, 0 no better
than the mean. Writes benchmark/results/ppo_gru_probe_ENV.md.
"""

import argparse
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import ppo_gru  # noqa: E402

RIDGE = 1e-3  # a small penalty: keeps the least-squares fit stable when state units are nearly collinear


def ridge_r2(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> np.ndarray:
    """Held-out R^2 per output column of the ridge regression y ~ [x, 1] fitted on the training rows."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-8  # standardized inputs: one penalty fits every unit
    design = np.hstack([(train_x - mean) / std, np.ones((len(train_x), 1))])
    weights = np.linalg.solve(design.T @ design + RIDGE * np.eye(design.shape[1]), design.T @ train_y)
    predicted = np.hstack([(test_x - mean) / std, np.ones((len(test_x), 1))]) @ weights
    return 1 - ((test_y - predicted) ** 2).sum(0) / ((test_y - test_y.mean(0)) ** 2).sum(0)


def play(model_path: str, episodes: int) -> tuple[dict[str, list[np.ndarray]], ppo_gru.Args, float]:
    """Per episode, the (steps, dim) arrays of each probe input and of the true velocities; the mean return."""
    checkpoint = torch.load(model_path, map_location="cpu")
    args = ppo_gru.Args(**checkpoint["args"])
    if not args.mask_velocity:
        sys.exit(f"{model_path} was trained without --mask-velocity: there is nothing hidden to probe")
    env = gym.make(args.env_id)
    hidden_indices = ppo_gru.VELOCITY_INDICES[args.env_id]
    mask = np.ones(env.observation_space.shape, dtype=np.float32)
    mask[hidden_indices] = 0.0
    agent = ppo_gru.RecurrentAgent(env.observation_space.shape[0], env.action_space, args.hidden_size)
    agent.load_state_dict(checkpoint["model"])
    torch.manual_seed(0)
    untrained = ppo_gru.RecurrentAgent(env.observation_space.shape[0], env.action_space, args.hidden_size)
    if args.norm_obs:  # the saved, frozen statistics, as the agent saw them in training
        obs_mean, obs_var = (np.array(checkpoint["obs_rms"][key], dtype=np.float32) for key in ("mean", "var"))
    data = {name: [] for name in ["trained GRU state h_t", "untrained GRU state", "o_t", "o_t, o_t-1", "velocity"]}
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=20_000 + episode)
        hidden, untrained_hidden = torch.zeros(1, 1, args.hidden_size), torch.zeros(1, 1, args.hidden_size)
        start, done, total, previous = np.ones(1), False, 0.0, None
        rows = {name: [] for name in data}
        while not done:
            seen = obs * mask
            if args.norm_obs:
                seen = (seen - obs_mean) / np.sqrt(obs_var + 1e-8)  # gymnasium's NormalizeObservation, frozen
            action, _, _, hidden = agent.act(seen[None], hidden, start, deterministic=True)
            _, _, _, untrained_hidden = untrained.act(seen[None], untrained_hidden, start, deterministic=True)
            previous = seen if previous is None else previous
            rows["trained GRU state h_t"].append(hidden[0, 0].numpy().copy())
            rows["untrained GRU state"].append(untrained_hidden[0, 0].numpy().copy())
            rows["o_t"].append(seen)
            rows["o_t, o_t-1"].append(np.concatenate([seen, previous]))
            rows["velocity"].append(obs[hidden_indices])
            previous, start = seen, np.zeros(1)
            action = action[0] if agent.is_discrete else np.clip(action[0], env.action_space.low, env.action_space.high)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
        for name in data:
            data[name].append(np.array(rows[name]))
    return data, args, float(np.mean(returns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a ppo_gru.py model saved with --save-model, trained with --mask-velocity")
    parser.add_argument("--episodes", type=int, default=40)
    options = parser.parse_args()
    data, args, mean_return = play(options.model, options.episodes)
    split = int(0.75 * options.episodes)
    velocity_train, velocity_test = np.concatenate(data["velocity"][:split]), np.concatenate(data["velocity"][split:])
    names = [f"obs[{i}]" for i in ppo_gru.VELOCITY_INDICES[args.env_id]]
    rows = [
        f"Linear read-out of the hidden velocities of masked {args.env_id} (`python benchmark/gru_probe.py`): "
        f"held-out R^2 over {options.episodes - split} episodes, fitted on {split} "
        f"({len(velocity_train):,} steps); the agent's mean return {mean_return:.1f} "
        f"({args.total_timesteps:,} training steps, seed {args.seed}).",
        "",
        f"| probe input | {' | '.join(names)} |",
        "|---|" + "---|" * len(names),
    ]
    for name in data:
        if name == "velocity":
            continue
        inputs_train, inputs_test = np.concatenate(data[name][:split]), np.concatenate(data[name][split:])
        scores = ridge_r2(inputs_train, velocity_train, inputs_test, velocity_test)
        rows.append(f"| {name} | {' | '.join(f'{score:.2f}' for score in scores)} |")
    table = "\n".join(rows) + "\n"
    print(table)
    (ROOT / "benchmark" / "results" / f"ppo_gru_probe_{args.env_id}.md").write_text(table)


if __name__ == "__main__":
    main()
