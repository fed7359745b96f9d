"""Benchmark one algorithm script over envs and seeds; write a table and learning curves.

    python benchmark/run.py ppo --env-ids CartPole-v1 Pendulum-v1 --seeds 1 2 3
    python benchmark/run.py ppo --env-ids CartPole-v1 --seeds 1 2 3 --label masked -- --mask-velocity

Each run is `python SCRIPT.py --env-id ENV --seed SEED [extra flags]` in benchmark/work/, one at a
time by default so steps/sec is not distorted by a neighbour. The TensorBoard scalars are read
back, and benchmark/results/ gets SCRIPT.json (every run, merged with earlier results),
SCRIPT.md (the table, also written into README.md between the benchmark:SCRIPT markers) and
SCRIPT_ENV[_LABEL].png (learning curves).
"""

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmark" / "results"
WORK = ROOT / "benchmark" / "work"


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def final_return(curve: list, window: int) -> float:
    """Mean of the last `window` training episodes' returns."""
    return float(np.mean([v for _, v in curve[-window:]])) if curve else float("nan")


def run_one(script: str, env_id: str, seed: int, extra: list[str], cwd: Path | None = None) -> dict:
    """Run one training command in cwd (a new folder under WORK by default); return its figures.

    Peak memory is the child's max RSS. The run's files land in cwd/runs/<run name>/.
    """
    cwd = cwd or WORK / f"{script}_{env_id}_{seed}_{os.getpid()}_{time.time_ns()}"
    cwd.mkdir(parents=True)
    command = [sys.executable, str(ROOT / f"{script}.py"), "--env-id", env_id, "--seed", str(seed), *extra]
    log_path = cwd / "output.log"
    start = time.time()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        # wait4 gives this child's own resource usage: ru_maxrss is its peak resident memory in KiB.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - start
    output = log_path.read_text()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{output[-2000:]}")
    [run_dir] = sorted((cwd / "runs").iterdir())
    scalars = read_scalars(run_dir)
    returns = scalars.get("charts/episodic_return", [])
    return {
        "script": script,
        "env_id": env_id,
        "seed": seed,
        "command": " ".join([f"{script}.py", "--env-id", env_id, "--seed", str(seed), *extra]),
        "total_steps": int(scalars["charts/SPS"][-1][0]) if "charts/SPS" in scalars else 0,
        "sps": float(scalars["charts/SPS"][-1][1]) if "charts/SPS" in scalars else float("nan"),
        "wall_s": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "curve": returns,
    }


def update_readme(key: str, text: str) -> None:
    """Replace the README block between <!-- benchmark:KEY:start --> and <!-- benchmark:KEY:end -->."""
    readme = ROOT / "README.md"
    content = readme.read_text()
    start, end = f"<!-- benchmark:{key}:start -->", f"<!-- benchmark:{key}:end -->"
    if start in content and end in content:
        before, rest = content.split(start, 1)
        readme.write_text(before + start + "\n" + text + rest[rest.index(end) :])


def format_table(results: list[dict], window: int) -> str:
    rows = [
        f"| env | label | seeds | steps | final return (last {window}, mean ± std over seeds) | steps/sec "
        "| wall time (s) | peak memory (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["env_id"], r.get("label", "")), []).append(r)
    for (env_id, label), runs in sorted(groups.items()):
        finals = [r["final_return"] for r in runs]
        seeds = ", ".join(str(seed) for seed in sorted(r["seed"] for r in runs))
        rows.append(
            f"| {env_id} | {label or 'default'} | {seeds} "
            f"| {runs[0]['total_steps']:,} | {np.mean(finals):.1f} ± {np.std(finals):.1f} "
            f"| {np.mean([r['sps'] for r in runs]):,.0f} | {np.mean([r['wall_s'] for r in runs]):.0f} "
            f"| {np.mean([r['peak_rss_mb'] for r in runs]):.0f} |"
        )
    return "\n".join(rows) + "\n"


def plot_curves(script: str, env_id: str, label: str, runs: list[dict], window: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    grid = np.linspace(0, max(r["total_steps"] for r in runs), 100)
    smoothed = []
    for r in sorted(runs, key=lambda r: r["seed"]):
        steps = np.array([s for s, _ in r["curve"]], dtype=float)
        values = np.array([v for _, v in r["curve"]], dtype=float)
        if len(values) == 0:
            continue
        width = min(window, len(values))
        rolling = np.convolve(values, np.ones(width) / width, mode="valid")
        steps = steps[width - 1 :]
        ax.plot(steps, rolling, alpha=0.35, linewidth=1, label=f"seed {r['seed']}")
        smoothed.append(np.interp(grid, steps, rolling, left=np.nan))
    if smoothed:
        with warnings.catch_warnings():  # grid points before any seed's first episode are all-NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_curve = np.nanmean(np.array(smoothed), axis=0)
        ax.plot(grid, mean_curve, color="black", linewidth=2, label="mean")
    ax.set_title(f"{script}.py on {env_id}" + (f" ({label})" if label else ""))
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"episodic return ({window}-episode mean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("script", help="algorithm script name without .py, e.g. ppo")
    parser.add_argument("--env-ids", nargs="+", default=[])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--label", default="", help="names a variant (e.g. a flag set) in the table and plots")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (>1 distorts steps/sec)")
    parser.add_argument(
        "--final-window",
        type=int,
        default=None,
        help="final return = mean of the last N episodes (default: the window SCRIPT.json was made with, else 10)",
    )
    parser.add_argument(
        "--table-only", action="store_true", help="rebuild table and plots from SCRIPT.json; run nothing"
    )
    argv = sys.argv[1:]
    # Everything after a lone "--" is passed to every run of the script.
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    options = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    options.extra = extra
    if not (ROOT / f"{options.script}.py").exists():
        parser.error(f"no script {options.script}.py at {ROOT}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / f"{options.script}.json"
    previous = json.loads(json_path.read_text()) if json_path.exists() else []
    # The window belongs to a script's results, so a later run without the flag keeps it.
    stored_windows = {r["final_window"] for r in previous if "final_window" in r}
    if options.final_window is None:
        options.final_window = stored_windows.pop() if len(stored_windows) == 1 else 10
    new_results = []
    if not options.table_only:
        jobs = [(env_id, seed) for env_id in options.env_ids for seed in options.seeds]
        with ThreadPoolExecutor(max_workers=options.jobs) as pool:
            futures = [pool.submit(run_one, options.script, env_id, seed, options.extra) for env_id, seed in jobs]
            for (env_id, seed), future in zip(jobs, futures, strict=True):
                result = future.result()
                result["label"] = options.label
                result["jobs"] = options.jobs
                print(
                    f"{env_id} seed {seed}: last-{options.final_window} mean "
                    f"{final_return(result['curve'], options.final_window):.1f}, {result['sps']:,.0f} steps/s"
                )
                new_results.append(result)
    replaced = {(r["env_id"], r["seed"], r["label"]) for r in new_results}
    results = [r for r in previous if (r["env_id"], r["seed"], r.get("label", "")) not in replaced] + new_results
    for result in results:
        result["final_return"] = final_return(result["curve"], options.final_window)
        result["final_window"] = options.final_window
    json_path.write_text(json.dumps(results, indent=1))
    table = format_table(results, options.final_window)
    (RESULTS / f"{options.script}.md").write_text(table)
    update_readme(options.script, table)
    print(table)
    for env_id, label in sorted({(r["env_id"], r.get("label", "")) for r in results}):
        runs = [r for r in results if r["env_id"] == env_id and r.get("label", "") == label]
        suffix = f"_{label}" if label else ""
        path = RESULTS / f"{options.script}_{env_id}{suffix}.png"
        plot_curves(options.script, env_id, label, runs, options.final_window, path)


if __name__ == "__main__":
    main()
