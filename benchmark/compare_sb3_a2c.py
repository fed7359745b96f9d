"""a2c.py against Stable-Baselines3's A2C with identical settings, interleaved, on CartPole-v1.

    python benchmark/compare_sb3_a2c.py --rounds 3 --total-timesteps 100000

The settings are SB3's A2C defaults, which are the paper's / Baselines': 8 envs x 5 steps,
RMSprop lr 7e-4 (constant), alpha 0.99, eps 1e-5, gamma 0.99, n-step returns (lambda 1),
entropy 0, vf 0.5, grad norm 0.5, separate 64-64 tanh actor and critic with orthogonal init.
Both sides run their envs in-process (a2c.py's SyncVectorEnv, SB3's DummyVecEnv); a2c.py with
--async-envs (one subprocess per env) is a fourth row. Each round runs every side once, each
in its own process, so slow drifts of the machine hit every side alike. Steps/sec is env
steps over the training loop's wall time. Writes benchmark/results/a2c_vs_sb3.md, which the
a2c.py documentation page includes.
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

# a2c.py's Discrete defaults differ from SB3's A2C in gamma (0.995), lr (8.3e-4) and the annealing:
# all three set to SB3's here.
A2C_FLAGS = ["--gamma", "0.99", "--learning-rate", "7e-4", "--no-anneal-lr"]


def sb3_worker(seed: int, total_timesteps: int, threads: int | None) -> None:
    """Runs inside a child process: train SB3 A2C and print one JSON line of results."""
    import torch
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_vec_env

    if threads is not None:
        torch.set_num_threads(threads)
    envs = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = A2C("MlpPolicy", envs, n_steps=5, seed=seed, device="cpu")  # SB3's defaults are the settings above
    learn_and_report(model, total_timesteps)


def main() -> None:
    options = parse_options(__doc__, rounds=3, total_timesteps=100_000)
    if options.sb3_worker:
        sb3_worker(options.seed, options.total_timesteps, options.threads)
        return

    steps = ["--total-timesteps", str(options.total_timesteps)]
    results = interleave(
        {
            "a2c.py": lambda seed: run_script("a2c", ["--seed", str(seed), *steps, *A2C_FLAGS]),
            "SB3 A2C (default threads)": lambda seed: run_worker(__file__, ["--seed", str(seed), *steps]),
            "SB3 A2C (1 thread)": lambda seed: run_worker(__file__, ["--seed", str(seed), *steps, "--threads", "1"]),
            "a2c.py --async-envs": lambda seed: run_script(
                "a2c", ["--seed", str(seed), *steps, *A2C_FLAGS, "--async-envs"]
            ),
        },
        options.rounds,
    )
    ours = mean_sps(results["a2c.py"])
    title = (
        f"CartPole-v1, SB3's A2C settings (8 envs x 5 steps), {options.total_timesteps:,} steps, "
        f"seeds 1-{options.rounds}, interleaved (`python benchmark/compare_sb3_a2c.py`)"
    )
    publish("a2c_vs_sb3", comparison_table(title, results, "a2c.py speed-up", lambda sps: ours / sps))


if __name__ == "__main__":
    main()
