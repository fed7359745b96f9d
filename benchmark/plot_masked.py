"""ppo.py and ppo_gru.py on the same velocity-masked tasks, on one plot per env.

    python benchmark/run.py ppo_gru --env-ids CartPole-v1 Pendulum-v1 --label masked -- --mask-velocity
    python benchmark/run.py ppo --env-ids CartPole-v1 Pendulum-v1 --label masked -- --mask-velocity \
        --total-timesteps 150000
    python benchmark/plot_masked.py   # or: python benchmark/run.py all --table-only (every table and plot)

Reads the runs labelled "masked" from benchmark/results/ppo.json and ppo_gru.json (written by
the two commands above; a missing file counts as no runs) and draws, per env, each seed faintly
and each script's mean over seeds (one per budget) (10-episode rolling means) into
benchmark/results/masked_ENV.png. Where ppo.json also holds
default-flag runs of that env at the masked runs' budget (e.g. the LunarLander-v3 1M runs of
`run.py ppo --suite discrete`), they are drawn too, in grey: the same task with the velocities visible.
"""

import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import RESULTS, budget_of, short_budget  # noqa: E402

WINDOW = 10


def rolling(curve: list) -> tuple[np.ndarray, np.ndarray]:
    steps = np.array([s for s, _ in curve], dtype=float)
    values = np.array([v for _, v in curve], dtype=float)
    width = min(WINDOW, len(values))
    return steps[width - 1 :], np.convolve(values, np.ones(width) / width, mode="valid")


def main(results: Path = RESULTS) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, visible = [], []
    for script in ["ppo", "ppo_gru"]:
        path = results / f"{script}.json"
        stored = json.loads(path.read_text()) if path.exists() else []
        runs += [r for r in stored if r.get("label") == "masked"]
        if script == "ppo":
            visible = [dict(r, script="ppo (velocities visible)") for r in stored if r.get("label", "") == ""]
    for env_id in sorted({r["env_id"] for r in runs}):
        fig, ax = plt.subplots(figsize=(6, 4))
        budgets = {budget_of(r) for r in runs if r["env_id"] == env_id} - {None}  # explicit budgets only
        runs_here = runs + [r for r in visible if r["env_id"] == env_id and budget_of(r) in budgets]
        sides = [("ppo", "tab:red", "ppo.py"), ("ppo_gru", "tab:blue", "ppo_gru.py")]
        sides.append(("ppo (velocities visible)", "tab:gray", "ppo.py, velocities visible"))
        for script, color, name in sides:
            mine = [r for r in runs_here if r["script"] == script and r["env_id"] == env_id and r["curve"]]
            by_budget = {}
            for r in mine:
                by_budget.setdefault(budget_of(r), []).append(r)
            # One mean per budget: a shorter run's learning-rate schedule ends sooner, so its curve is another run.
            for index, (budget, same_budget) in enumerate(sorted(by_budget.items(), key=lambda item: item[0] or 0)):
                style = ["-", "--", ":"][index % 3]
                grid = np.linspace(0, max(r["total_steps"] for r in same_budget), 100)
                smoothed = []
                for r in same_budget:
                    steps, values = rolling(r["curve"])
                    ax.plot(steps, values, color=color, alpha=0.2, linewidth=1, linestyle=style)
                    smoothed.append(np.interp(grid, steps, values, left=np.nan))
                with warnings.catch_warnings():  # grid points before a seed's first episode are NaN
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean = np.nanmean(smoothed, axis=0)
                of_budget = f", {short_budget(budget) if budget else 'default budget'}" if len(by_budget) > 1 else ""
                ax.plot(grid, mean, color=color, linewidth=2, linestyle=style, label=f"{name} (mean{of_budget})")
        ax.set_title(f"{env_id} with --mask-velocity: MLP vs GRU policy")
        ax.set_xlabel("env steps")
        ax.set_ylabel(f"episodic return ({WINDOW}-episode mean)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(results / f"masked_{env_id}.png", dpi=90)
        plt.close(fig)
        print(f"wrote {results / f'masked_{env_id}.png'}")


if __name__ == "__main__":
    main()
