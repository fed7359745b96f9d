"""Helpers for the interleaved speed comparisons (compare_sb3*.py, a3c_scaling.py).

Each comparison runs every side once per round, each in its own process, so slow drifts of the
machine hit all sides alike, and reports steps/sec and the final return of every side.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stats  # noqa: E402
from run import (  # noqa: E402
    RESULTS,
    ROOT,
    WORK,
    interval_text,
    machine,
    machine_text,
    read_scalars,
    row_intervals,
    update_readme,
)


def start_script(script: str, flags: list[str]) -> tuple[subprocess.Popen, Path]:
    """Start `python SCRIPT.py FLAGS` in a fresh folder under benchmark/work/."""
    cwd = WORK / f"compare_{script}_{time.time_ns()}"
    cwd.mkdir(parents=True)
    process = subprocess.Popen([sys.executable, str(ROOT / f"{script}.py"), *flags], cwd=cwd, stdout=subprocess.DEVNULL)
    return process, cwd


def script_result(process: subprocess.Popen, cwd: Path, window: int = 10) -> dict:
    """Wait for a started script; its last charts/SPS and the mean of its last `window` returns."""
    if process.wait() != 0:
        raise RuntimeError(f"{' '.join(map(str, process.args))} failed in {cwd}")
    [run_dir] = sorted((cwd / "runs").iterdir())
    scalars = read_scalars(run_dir)
    returns = [v for _, v in scalars["charts/episodic_return"]]
    return {"sps": scalars["charts/SPS"][-1][1], "final_return": float(np.mean(returns[-window:]))}


def run_script(script: str, flags: list[str], window: int = 10) -> dict:
    return script_result(*start_script(script, flags), window)


def run_worker(comparison_file: str, flags: list[str]) -> dict:
    """Run `python COMPARISON_FILE --sb3-worker FLAGS` (a library run in a child process) and
    read the JSON line it ends with (see learn_and_report())."""
    command = [sys.executable, comparison_file, "--sb3-worker", *flags]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def learn_and_report(model, total_timesteps: int) -> None:
    """Inside a worker: train an SB3 model, then print its steps/sec (training time only) and
    last-10 mean return as the JSON line run_worker() reads."""
    start = time.time()
    model.learn(total_timesteps=total_timesteps)
    elapsed = time.time() - start
    returns = [info["r"] for info in model.ep_info_buffer]
    print(json.dumps({"sps": model.num_timesteps / elapsed, "final_return": float(np.mean(returns[-10:]))}))


def parse_options(description: str, rounds: int, total_timesteps: int, env_id: str | None = None) -> argparse.Namespace:
    """A comparison's command line: --rounds and --total-timesteps (and --env-id where the comparison
    takes one), plus the hidden --sb3-worker, --seed and --threads with which it runs its library
    side in a child process."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=rounds, help="rounds; round i uses seed i")
    parser.add_argument("--total-timesteps", type=int, default=total_timesteps)
    if env_id is not None:
        parser.add_argument("--env-id", default=env_id)
    parser.add_argument("--sb3-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def comparison_table(title: str, results: dict[str, list[dict]], ratio_header: str, ratio, window: int = 10) -> str:
    """Markdown table, one row per side: steps/sec (mean ± std over rounds), the final return of each round
    with their IQM and 95% interval (the project's rule for every return it shows), and ratio(mean steps/sec
    of the row) under ratio_header, then the machine it ran on (speed ratios move between CPUs). The rounds
    are short runs: their returns show that both sides learn alike, they are not learning results."""
    lines = [
        title,
        "",
        f"| implementation | steps/sec (mean ± std) | final return (last {window}): IQM [95% CI] | per round "
        f"| {ratio_header} |",
        "|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        sps = [r["sps"] for r in runs]
        finals = [r["final_return"] for r in runs]
        # the benchmark tables' own cell: "IQM [low, high]", or one seed's figure marked "(1 seed)"
        returns = interval_text(row_intervals(runs), "train", "iqm", runs)
        returns += f" ({len(runs)} seeds)" if len(runs) > 1 else ""
        per_round = ", ".join(stats.format_value(value) for value in finals)
        lines.append(
            f"| {name} | {np.mean(sps):,.0f} ± {np.std(sps):,.0f} | {returns} | {per_round} "
            f"| {ratio(np.mean(sps)):.2f}x |"
        )
    lines += ["", f"Machine: {machine_text(machine())}."]
    return "\n".join(lines) + "\n"


def interleave(sides: dict, rounds: int) -> dict[str, list[dict]]:
    """Run every side (name -> function of the seed) once per round; round i uses seed i."""
    results: dict[str, list[dict]] = {name: [] for name in sides}
    for seed in range(1, rounds + 1):
        for name, run in sides.items():
            results[name].append(run(seed))
        print(f"round {seed}: " + ", ".join(f"{name} {runs[-1]['sps']:,.0f} steps/s" for name, runs in results.items()))
    return results


def mean_sps(runs: list[dict]) -> float:
    return float(np.mean([r["sps"] for r in runs]))


def publish(key: str, table: str) -> None:
    """Print the table and write benchmark/results/KEY.md (the documentation pages include it)."""
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{key}.md").write_text(table)
    update_readme(key, table)
