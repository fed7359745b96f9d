"""a3c.py env steps/sec with 1 and 2 workers on this machine, interleaved.

    python benchmark/a3c_scaling.py --rounds 3 --total-timesteps 200000

Each round runs, on CartPole-v1 with default flags and seed = round: a3c.py with one worker,
a3c.py with two workers, and, as the machine's own ceiling, two independent one-worker
a3c.py runs at the same time (no sharing at all between them; their summed steps/sec is
what two cores give this workload). Steps/sec is a3c.py's own charts/SPS (env steps over the
training time, start-up excluded). Writes benchmark/results/a3c_scaling.md, which the a3c.py
documentation page includes.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interleaved import comparison_table, interleave, mean_sps, publish, script_result, start_script  # noqa: E402


def start_a3c(seed: int, workers: int, total_timesteps: int):
    flags = ["--seed", str(seed), "--num-workers", str(workers), "--total-timesteps", str(total_timesteps)]
    return start_script("a3c", flags)


def two_single_runs_at_once(seed: int, total_timesteps: int) -> dict:
    """Two independent one-worker runs started together; their steps/sec summed."""
    started = [start_a3c(s, 1, total_timesteps) for s in (seed, seed + 100)]
    runs = [script_result(*run, window=20) for run in started]
    return {"sps": sum(r["sps"] for r in runs), "final_return": float(np.mean([r["final_return"] for r in runs]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds; round i uses seed i")
    parser.add_argument("--total-timesteps", type=int, default=200_000)
    options = parser.parse_args()
    steps = options.total_timesteps
    results = interleave(
        {
            "1 worker": lambda seed: script_result(*start_a3c(seed, 1, steps), window=20),
            "2 workers": lambda seed: script_result(*start_a3c(seed, 2, steps), window=20),
            "two 1-worker runs at once (sum)": lambda seed: two_single_runs_at_once(seed, steps),
        },
        options.rounds,
    )
    single = mean_sps(results["1 worker"])
    title = (
        f"CartPole-v1, default flags, {options.total_timesteps:,} steps, seeds 1-{options.rounds}, interleaved "
        "(`python benchmark/a3c_scaling.py`)"
    )
    publish("a3c_scaling", comparison_table(title, results, "vs 1 worker", lambda sps: sps / single, window=20))


if __name__ == "__main__":
    main()
