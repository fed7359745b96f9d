"""ppo.py against Stable-Baselines3's PPO with identical settings, interleaved, on CartPole-v1.

    python benchmark/compare_sb3.py --rounds 3 --total-timesteps 100000

The settings are CleanRL's PPO defaults: 4 envs, 128 steps, 4 minibatches of 128, 4 epochs,
Adam lr 2.5e-4 annealed to 0, gamma 0.99, GAE lambda 0.95, clip 0.2 (value clipping on),
entropy 0.01, vf 0.5, grad norm 0.5, separate 64-64 tanh actor and critic with orthogonal
init. Each round runs ppo.py, then SB3 (as shipped: its default torch thread count, and again
with one thread, as ppo.py uses), each in its own process, so slow drifts of the machine hit
every side alike. Steps/sec is env steps over the training loop's wall time. Writes
benchmark/results/ppo_vs_sb3.md, which the ppo.py documentation page includes.
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

PPO_FLAGS = (
    "--num-envs 4 --num-steps 128 --num-minibatches 4 --update-epochs 4 --learning-rate 2.5e-4 "
    "--gamma 0.99 --gae-lambda 0.95 --clip-coef 0.2 --clip-vloss --ent-coef 0.01 --vf-coef 0.5 --max-grad-norm 0.5"
).split()


def sb3_worker(seed: int, total_timesteps: int, threads: int | None) -> None:
    """Runs inside a child process: train SB3 PPO and print one JSON line of results."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    if threads is not None:
        torch.set_num_threads(threads)
    envs = make_vec_env("CartPole-v1", n_envs=4, seed=seed)
    model = PPO(
        "MlpPolicy",
        envs,
        n_steps=128,
        batch_size=128,
        n_epochs=4,
        learning_rate=lambda progress_remaining: 2.5e-4 * progress_remaining,
        gamma=0.99,
        gae_lambda=0.95,
        clip_range=0.2,
        clip_range_vf=0.2,
        ent_coef=0.01,
        vf_coef=0.5,
        max_grad_norm=0.5,
        seed=seed,
        device="cpu",
    )
    learn_and_report(model, total_timesteps)


def main() -> None:
    options = parse_options(__doc__, rounds=3, total_timesteps=100_000)
    if options.sb3_worker:
        sb3_worker(options.seed, options.total_timesteps, options.threads)
        return

    steps = ["--total-timesteps", str(options.total_timesteps)]
    results = interleave(
        {
            "ppo.py": lambda seed: run_script("ppo", ["--seed", str(seed), *steps, *PPO_FLAGS]),
            "SB3 PPO (default threads)": lambda seed: run_worker(__file__, ["--seed", str(seed), *steps]),
            "SB3 PPO (1 thread)": lambda seed: run_worker(__file__, ["--seed", str(seed), *steps, "--threads", "1"]),
        },
        options.rounds,
    )
    ours = mean_sps(results["ppo.py"])
    title = (
        f"CartPole-v1, CleanRL's PPO settings, {options.total_timesteps:,} steps, seeds 1-{options.rounds}, "
        "interleaved (`python benchmark/compare_sb3.py`)"
    )
    publish("ppo_vs_sb3", comparison_table(title, results, "ppo.py speed-up", lambda sps: ours / sps))


if __name__ == "__main__":
    main()
