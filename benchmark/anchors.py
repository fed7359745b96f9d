"""Shared by sb3_a2c_anchors.py and sb3_ddpg_anchors.py: a baseline library's runs, one per seed,
kept in a resumable JSON store, and the table of their last-10 training and evaluation returns."""

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def run_seeds_and_publish(
    description: str, key: str, title: str, train: Callable[[str, int, int], dict], default_seeds: list[int]
) -> None:
    """Parse --env-id/--seeds/--total-timesteps, train each seed not yet in results/KEY.json (the store is
    reread before and after each run, so two of these may share it), then write results/KEY.md."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--env-id", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=default_seeds)
    parser.add_argument("--total-timesteps", type=int, required=True)
    options = parser.parse_args()
    store = RESULTS / f"{key}.json"

    def stored() -> list[dict]:
        return json.loads(store.read_text()) if store.exists() else []

    for seed in options.seeds:
        wanted = (options.env_id, seed, options.total_timesteps)
        if any((r["env_id"], r["seed"], r["total_timesteps"]) == wanted for r in stored()):
            continue
        result = train(options.env_id, seed, options.total_timesteps)
        store.write_text(json.dumps(stored() + [result], indent=1))
        print({k: v for k, v in result.items() if k != "train_returns"})
    results = stored()
    lines = [
        f"{title} (`python benchmark/{key}.py`)",
        "",
        "| env | steps | per seed: last-10 training / 10 deterministic evaluation episodes | mean (training / eval) "
        "| steps/sec |",
        "|---|---|---|---|---|",
    ]
    for env_id, steps in dict.fromkeys((r["env_id"], r["total_timesteps"]) for r in results):
        runs = sorted(
            (r for r in results if (r["env_id"], r["total_timesteps"]) == (env_id, steps)), key=lambda r: r["seed"]
        )
        per_seed = ", ".join(f"{r['seed']}: {r['last10_train']:.0f} / {r['eval10']:.0f}" for r in runs)
        means = f"{np.mean([r['last10_train'] for r in runs]):.0f} / {np.mean([r['eval10'] for r in runs]):.0f}"
        lines.append(f"| {env_id} | {steps:,} | {per_seed} | {means} | {np.mean([r['sps'] for r in runs]):.0f} |")
    (RESULTS / f"{key}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
