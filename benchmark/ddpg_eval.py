"""ddpg.py on Pendulum-v1 scored as RL Baselines3 Zoo scores it: the final actor, no noise, many starts.

    python benchmark/ddpg_eval.py --seeds 1 2 3 4 5 6 7 8

Issue 4's target is the mean of the last ten *training* episodes, and a one-env Pendulum run
plays those ten episodes from start states its seed picks (see pendulum_optimum.py). The
-152 +- 94 that issue 4 quotes for RL Zoo's DDPG at 20k steps is another measure: the trained
policy, played deterministically from many random starts. For each seed this script runs
`ddpg.py --seed S --save-model` (default flags otherwise) in benchmark/work/, plays the saved
actor's mu(s) from the same N start states for every seed (`ddpg.evaluate`, reset seeds
EVAL_SEED .. EVAL_SEED + N - 1), and plays pendulum_optimum.py's near-optimal controller from
those starts too, so each seed's evaluation comes with the best return those starts allow.

Writes benchmark/results/ddpg_eval.md and the block between the benchmark:ddpg_eval markers in
benchmark/ddpg_pendulum.md.
"""

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmark"))
sys.path.insert(0, str(ROOT))
from interleaved import publish  # noqa: E402
from pendulum_optimum import GridValue, PendulumModel, start_states  # noqa: E402
from run import WORK, final_return, run_one  # noqa: E402

import ddpg  # noqa: E402

EVAL_SEED = 10_000  # episode i of the evaluation starts from reset(seed=EVAL_SEED + i), for every seed


def train_and_evaluate(seed: int, eval_episodes: int) -> tuple[float, list[float]]:
    """Train with default flags; return the last-10 training mean and the saved actor's eval returns."""
    workdir = WORK / f"ddpg_eval_{seed}_{os.getpid()}_{time.time_ns()}"
    result = run_one("ddpg", "Pendulum-v1", seed, ["--save-model"], cwd=workdir)
    [model_path] = workdir.glob("runs/*/ddpg.pt")
    # ddpg.watch plays episode i from reset(seed=seed + 10_000 + i): seed 0 gives EVAL_SEED + i
    watch_args = ddpg.Args(eval_model=str(model_path), eval_episodes=eval_episodes, seed=EVAL_SEED - 10_000, cuda=False)
    eval_returns = ddpg.watch(watch_args)["eval_returns"]
    return final_return(result["curve"], 10), eval_returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--eval-episodes", type=int, default=100, help="evaluation starts, the same for every seed")
    parser.add_argument("--jobs", type=int, default=2, help="training runs at a time")
    parser.add_argument("--grid", type=int, nargs=3, default=[401, 321, 81], metavar=("THETAS", "SPEEDS", "TORQUES"))
    options = parser.parse_args()

    with ThreadPoolExecutor(max_workers=options.jobs) as pool:
        runs = list(pool.map(lambda seed: train_and_evaluate(seed, options.eval_episodes), options.seeds))

    torch.set_num_threads(2)
    starts = start_states(EVAL_SEED, options.eval_episodes, seed_every_episode=True)  # as ddpg.watch resets
    episode_steps = gym.spec("Pendulum-v1").max_episode_steps
    value = GridValue(PendulumModel(), episode_steps, *options.grid)
    optimum = float(np.mean([value.play(start, episode_steps) for start in starts]))

    n = options.eval_episodes
    lines = [
        f"Pendulum-v1, 20,000 steps, default flags; the final actor's mu(s) from the same {n} starts for every seed, "
        f"where near-optimal control scores {optimum:.1f} "
        f"(`python benchmark/ddpg_eval.py --seeds {' '.join(map(str, options.seeds))}`)",
        "",
        f"| seed | training, last-10 mean | evaluated, mean ± std over {n} starts | short of near-optimal by |",
        "|---|---|---|---|",
    ]
    trained = [training for training, _ in runs]
    evaluated = [float(np.mean(eval_returns)) for _, eval_returns in runs]
    spreads = [float(np.std(eval_returns)) for _, eval_returns in runs]
    for seed, training, mean, spread in zip(options.seeds, trained, evaluated, spreads, strict=True):
        lines.append(f"| {seed} | {training:.1f} | {mean:.1f} ± {spread:.1f} | {optimum - mean:.1f} |")
    lines.append(
        f"| mean | {np.mean(trained):.1f} | {np.mean(evaluated):.1f} (seeds: ± {np.std(evaluated):.1f}) "
        f"| {optimum - np.mean(evaluated):.1f} |"
    )
    publish("ddpg_eval", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
