"""Benchmark one algorithm script over envs and seeds; write a table and learning curves.

    python benchmark/run.py ppo --env-ids CartPole-v1 Pendulum-v1 --seeds 1 2 3
    python benchmark/run.py ppo --env-ids CartPole-v1 --seeds 1 2 3 --label masked -- --mask-velocity
    python benchmark/run.py ppo --suite discrete box --seeds 1 2 3 --jobs 2

Each run is `python SCRIPT.py --env-id ENV --seed SEED [extra flags]` in benchmark/work/, one at a
time by default so steps/sec is not distorted by a neighbour (`--jobs 2` runs two at once; the
table says so). A suite (SUITES below) is a list of envs, each with its own budget, target and
published anchors. The TensorBoard scalars are read back, and benchmark/results/ gets
SCRIPT.json (every run, merged with earlier results), SCRIPT.md (the table of the runs with default
flags, which the documentation pages in docs/ include), SCRIPT_suites.md for suites (default flags
too), SCRIPT_tried.md (the `--label`led runs: what was tried while choosing the defaults, a table of
its own under the default rows) and SCRIPT_ENV[_LABEL][_BUDGET].png (learning curves).

Resumable: each finished run is saved to SCRIPT.json at once, and a (env, seed, label, budget)
already there is not run again unless `--rerun` is given, so a stopped benchmark loses at most
the runs in flight.
"""

import argparse
import fcntl
import json
import os
import platform
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import stats

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmark" / "results"
WORK = ROOT / "benchmark" / "work"


@dataclass
class Anchor:
    """A published figure to compare with: its source (a Markdown link), its mean, the text shown beside it
    and whether it scores the final policy played without exploration noise (RL Zoo's figures do): then our
    saved models' evaluation is compared with it, else our last training episodes."""

    source: str
    mean: float
    text: str
    evaluated: bool = False


@dataclass
class SuiteEnv:
    """One env of a suite: the budget every run gets (None: the script's default), the target the issue
    set and the published anchors; the first anchor's mean is the score that means 1 in the suite's
    normalized aggregate (an env without anchors leaves its suite without one). A task label (TASK_FLAGS)
    names a variant of the env that is a task of its own, such as the velocity-masked one: its runs get the
    label's flags and its row is held to the target."""

    env_id: str
    budget: int | None
    target: str
    anchors: list[Anchor] = field(default_factory=list)
    label: str = ""

    def reference_score(self) -> float | None:
        return self.anchors[0].mean if self.anchors else None


def measured_here(table: str, env_id: str, name: str) -> list[Anchor]:
    """Another library's runs made on this machine (benchmark/sb3_*_anchors.py, stored in results/TABLE.json)
    as an anchor: the mean of its seeds' last-10 training episodes; none while that table has no run."""
    path = RESULTS / f"{table}.json"
    runs = [r for r in json.loads(path.read_text()) if r["env_id"] == env_id] if path.exists() else []
    if not runs:
        return []
    mean = float(np.mean([r["last10_train"] for r in runs]))
    seeds = f"{len(runs)} seed{'s' if len(runs) > 1 else ''}"
    return [Anchor(f"{name}, run here ({table} table)", mean, f"{mean:.0f} (training, {seeds})")]


CLEANRL_PPO = "[CleanRL ppo](https://docs.cleanrl.dev/rl-algorithms/ppo/)"
CLEANRL_DDPG = "[CleanRL ddpg](https://docs.cleanrl.dev/rl-algorithms/ddpg/)"
RL_ZOO = "[RL Zoo](https://github.com/DLR-RM/rl-baselines3-zoo/blob/master/benchmark.md)"
IKOSTRIKOV = "[ikostrikov](https://github.com/ikostrikov/pytorch-a2c-ppo-acktr-gail)"
# The standard suites per script: SUITES[script][suite name] -> envs.
SUITES = {
    "ppo": {
        "discrete": [
            SuiteEnv("CartPole-v1", 500_000, ">= 490", [Anchor(CLEANRL_PPO, 490, "490 ± 6")]),
            SuiteEnv(
                "LunarLander-v3", 1_000_000, ">= 200", [Anchor(RL_ZOO, 242, "PPO 242 ± 32 (v2, 1M, evaluated)", True)]
            ),
        ],
        "box": [
            SuiteEnv("Pendulum-v1", None, ">= -200", [Anchor(RL_ZOO, -172, "PPO -172 ± 104 (gSDE, evaluated)", True)]),
            SuiteEnv(
                "HalfCheetah-v5",
                1_000_000,
                ">= 2500",
                [Anchor(CLEANRL_PPO, 1443, "1443 ± 46 (v4)"), Anchor(IKOSTRIKOV, 3115, "3115")],
            ),
            SuiteEnv(
                "Hopper-v5",
                1_000_000,
                ">= 2300",
                [Anchor(CLEANRL_PPO, 2383, "2383 ± 272 (v4)"), Anchor(RL_ZOO, 2410, "PPO 2410 (evaluated)", True)],
            ),
            SuiteEnv("InvertedPendulum-v5", 1_000_000, ">= 990", [Anchor(CLEANRL_PPO, 963, "963 ± 22 (v4)")]),
        ],
        # Envs no target names, run with the same defaults: do they carry over?
        "held-out": [
            SuiteEnv("Acrobot-v1", 500_000, "-"),
            SuiteEnv("BipedalWalker-v3", 1_000_000, "-"),
            SuiteEnv("Walker2d-v5", 1_000_000, "-"),
            SuiteEnv("InvertedDoublePendulum-v5", 1_000_000, "-"),
        ],
    },
    "a2c": {
        "discrete": [
            SuiteEnv("CartPole-v1", 500_000, ">= 490", [Anchor(RL_ZOO, 500, "A2C 500 (evaluated)", True)]),
            SuiteEnv(
                "LunarLander-v3",
                500_000,
                ">= 150",
                [Anchor(RL_ZOO, 156, "A2C 156 ± 80 (v2, 200k, evaluated)", True)]
                + measured_here("sb3_a2c_anchors", "LunarLander-v3", "SB3 A2C, RL Zoo settings"),
            ),
        ],
        "box": [
            SuiteEnv(
                "Pendulum-v1",
                1_000_000,
                ">= -200",
                [Anchor(RL_ZOO, -163, "A2C -163 ± 103 (1M, gSDE, evaluated)", True)],
            ),
            SuiteEnv(
                "HalfCheetah-v5",
                1_000_000,
                ">= 3000",
                [Anchor(RL_ZOO, 3041, "A2C 3041 ± 157 (v3, evaluated)", True)]
                + measured_here("sb3_a2c_anchors", "HalfCheetah-v5", "SB3 A2C, RL Zoo settings"),
            ),
            SuiteEnv("Hopper-v5", 1_000_000, ">= 1000", [Anchor(RL_ZOO, 733, "A2C 733 ± 377 (v3, evaluated)", True)]),
        ],
        "held-out": [
            SuiteEnv("Acrobot-v1", 500_000, "-"),
            SuiteEnv("Walker2d-v5", 1_000_000, "-"),
            SuiteEnv("InvertedDoublePendulum-v5", 1_000_000, "-"),
        ],
    },
    "ppo_gru": {
        # The tasks a memory is for: the velocities cut from the observation (--mask-velocity).
        "masked": [
            SuiteEnv(
                "CartPole-v1",
                None,
                ">= 475 on each seed",
                [Anchor(RL_ZOO, 500, "RecurrentPPO 500 ± 0 (CartPoleNoVel, 100k, evaluated)", True)],
                "masked",
            ),
            SuiteEnv("LunarLander-v3", 2_000_000, ">= 100, and 100 above ppo.py masked", [], "masked"),
            SuiteEnv(
                "Pendulum-v1",
                200_000,
                ">= -200 (blocked: issue 32)",
                [Anchor(RL_ZOO, -218, "RecurrentPPO -218 ± 140 (PendulumNoVel, 100k, evaluated)", True)],
                "masked",
            ),
        ],
        # Fully observed: the memory should cost little where nothing is hidden (PPO's published figures).
        "full": [
            SuiteEnv("Pendulum-v1", 200_000, "-", [Anchor(RL_ZOO, -172, "PPO -172 ± 104 (gSDE, evaluated)", True)]),
            SuiteEnv(
                "LunarLander-v3", 1_000_000, ">= 200", [Anchor(RL_ZOO, 242, "PPO 242 ± 32 (v2, 1M, evaluated)", True)]
            ),
            SuiteEnv("HalfCheetah-v5", 1_000_000, ">= 2500", [Anchor(CLEANRL_PPO, 1443, "PPO 1443 ± 46 (v4)")]),
        ],
        "held-out": [SuiteEnv("Acrobot-v1", 500_000, "-")],
    },
    "a3c": {
        "discrete": [SuiteEnv("LunarLander-v3", 1_000_000, ">= 150")],
        "box": [SuiteEnv("Pendulum-v1", 2_000_000, ">= -200")],
    },
    "ddpg": {
        "box": [
            SuiteEnv(
                "Pendulum-v1",
                20_000,
                "saved actor, 100 eval episodes: >= -160 on each seed (ddpg_eval table)",
                [Anchor(RL_ZOO, -152, "DDPG -152 ± 94 (evaluated)", True)],
            ),
            SuiteEnv(
                "LunarLanderContinuous-v3",
                300_000,
                ">= 200",
                [Anchor(RL_ZOO, 230, "DDPG 230 ± 92 (v2, evaluated)", True)],
            ),
            SuiteEnv(
                "HalfCheetah-v5",
                300_000,
                ">= 8000, and ahead of SB3 DDPG here (sb3_ddpg_anchors table)",
                [Anchor(CLEANRL_DDPG, 10374, "10374 ± 157 (v4, 1M)")]
                + measured_here("sb3_ddpg_anchors", "HalfCheetah-v5", "SB3 DDPG, RL Zoo settings"),
            ),
            SuiteEnv(
                "Hopper-v5",
                300_000,
                "at or above SB3 DDPG here (sb3_ddpg_anchors table)",
                [Anchor(CLEANRL_DDPG, 1577, "1577 ± 819 (v4, 1M)")]
                + measured_here("sb3_ddpg_anchors", "Hopper-v5", "SB3 DDPG, RL Zoo settings"),
            ),
            SuiteEnv(
                "InvertedPendulum-v5", 30_000, ">= 900 on each seed", [Anchor(CLEANRL_DDPG, 643, "643 ± 70 (v4, 1M)")]
            ),
        ],
        "held-out": [
            SuiteEnv("InvertedDoublePendulum-v5", 100_000, "-"),
            SuiteEnv("Walker2d-v5", 300_000, "-"),
            SuiteEnv("BipedalWalker-v3", 300_000, "-"),
        ],
    },
}


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
    # With --save-model the script plays the saved model after training (deterministic actions) and logs
    # each episode's return here: the policy without the exploration noise the training window includes.
    eval_returns = [value for _, value in scalars.get("eval/episodic_return", [])]
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
        "eval_returns": eval_returns,
        "machine": machine(),
    }


def same_curve(first: dict, second: dict) -> bool:
    """Whether two runs logged the same returns at the same steps (JSON stores the (step, return) pairs as lists)."""
    return [list(point) for point in first["curve"]] == [list(point) for point in second["curve"]]


def machine() -> dict:
    """What a run ran on: per-seed figures are reproducible on one machine, not across machines (floating-point
    sums differ in the last digits between CPUs and libraries, and training amplifies that)."""
    from importlib.metadata import version

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    return {
        "cpu": fields.get("model name", platform.processor() or platform.machine()),
        "cpu_family_model": f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}/{fields.get('stepping', '?')}",
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": version("torch"),
        "gymnasium": version("gymnasium"),
        "numpy": version("numpy"),
    }


def update_readme(key: str, text: str) -> None:
    """Replace the block between <!-- benchmark:KEY:start --> and <!-- benchmark:KEY:end --> in
    README.md or in the benchmark pages (benchmark/*.md), wherever it is."""
    start, end = f"<!-- benchmark:{key}:start -->", f"<!-- benchmark:{key}:end -->"
    for page in [ROOT / "README.md", *sorted((ROOT / "benchmark").glob("*.md"))]:
        content = page.read_text()
        if start in content and end in content:
            before, rest = content.split(start, 1)
            page.write_text(before + start + "\n" + text + rest[rest.index(end) :])


def budget_of(result: dict) -> int | None:
    """The --total-timesteps a run was given (None: the script's default); older results only
    kept it in their command line."""
    if "budget" in result:
        return result["budget"]
    words = result["command"].split()
    return int(words[words.index("--total-timesteps") + 1]) if "--total-timesteps" in words else None


def run_key(result: dict) -> tuple:
    return (result["env_id"], result["seed"], result.get("label", ""), budget_of(result))


def group_runs(results: list[dict]) -> dict[tuple, list[dict]]:
    """Runs grouped by (env, label, budget), seeds sorted."""
    groups: dict[tuple, list[dict]] = {}
    for r in sorted(results, key=lambda r: r["seed"]):
        groups.setdefault((r["env_id"], r.get("label", ""), budget_of(r)), []).append(r)
    return groups


def short_budget(budget: int | None) -> str:
    if budget is None:
        return "default"
    return f"{budget // 1_000_000}M" if budget % 1_000_000 == 0 else f"{budget // 1000}k"


def eval_score(result: dict) -> float | None:
    """The saved model's mean return over its evaluation episodes (None: the run stored no evaluation)."""
    return float(np.mean(result["eval_returns"])) if result.get("eval_returns") else None


def row_intervals(runs: list[dict]) -> dict:
    """A row's statistics over its seeds: training (last-window mean per seed) and, when every seed has one,
    the saved models' evaluation; each as {"iqm": (point, low, high), "mean": (...)}, None for one seed
    (nothing to resample: its figure stands alone)."""
    evals = [eval_score(r) for r in runs]
    return {
        "train": stats.intervals([r["final_return"] for r in runs]) if len(runs) > 1 else None,
        "eval": stats.intervals(evals) if None not in evals and len(runs) > 1 else None,
    }


def interval_text(intervals: dict, part: str, statistic: str, runs: list[dict]) -> str:
    """A row's "IQM [low, high]"; a single seed's figure alone; "-" where no run stored an evaluation."""
    if intervals[part] is not None:
        return stats.format_interval(*intervals[part][statistic])
    value = runs[0]["final_return"] if part == "train" else eval_score(runs[0])
    return "-" if value is None or len(runs) > 1 else f"{stats.format_value(value)} (1 seed)"


def anchor_text(anchor: Anchor, intervals: dict) -> str:
    """The anchor, and where our interval lies against its mean (the eval interval for an evaluated anchor)."""
    ours = intervals["eval"] if anchor.evaluated else intervals["train"]
    if ours is None:
        return f"{anchor.source} {anchor.text}: not compared (no interval: one seed, or no evaluation stored)"
    where = stats.compare(*ours["iqm"][1:], anchor.mean)
    return f"{anchor.source} {anchor.text}: **{where}**"


def format_table(results: list[dict], window: int) -> str:
    rows = [
        f"| env | label | steps | seeds | last {window} training episodes: IQM [95% CI] | mean [95% CI] "
        "| saved model, deterministic: IQM [95% CI] | steps/sec | wall time (s) | peak memory (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (env_id, label, _budget), runs in sorted(group_runs(results).items(), key=lambda item: str(item[0])):
        intervals = row_intervals(runs)
        rows.append(
            f"| {env_id} | {label or 'default'} | {runs[0]['total_steps']:,} | {len(runs)} "
            f"| {interval_text(intervals, 'train', 'iqm', runs)} | {interval_text(intervals, 'train', 'mean', runs)} "
            f"| {interval_text(intervals, 'eval', 'iqm', runs)} "
            f"| {np.mean([r['sps'] for r in runs]):,.0f}{jobs_mark(runs)} | {np.mean([r['wall_s'] for r in runs]):.0f} "
            f"| {np.mean([r['peak_rss_mb'] for r in runs]):.0f} |"
        )
    return with_footnotes(rows, results)


def jobs_mark(runs: list[dict]) -> str:
    return "\\*" if any(r.get("jobs", 1) > 1 for r in runs) else ""


def with_footnotes(rows: list[str], results: list[dict]) -> str:
    """The table's lines, the footnote that explains jobs_mark when any run has it, and the machines."""
    if jobs_mark(results):
        rows.append(
            "\n\\* two runs at a time on the 2 cores (`--jobs 2`, or two benchmarks side by side): "
            "steps/sec is lower than alone."
        )
    episodes = sorted({len(r["eval_returns"]) for r in results if r.get("eval_returns")})
    if episodes:
        rows.append(f"\nSaved model: each seed's final model played for {'/'.join(map(str, episodes))} episodes.")
    machines = sorted({machine_text(r.get("machine")) for r in results})
    rows.append(f"\nMachine{'s' if len(machines) > 1 else ''}: {'; '.join(machines)}.")
    return "\n".join(rows) + "\n"


def machine_text(machine: dict | None) -> str:
    if machine is None:
        return "not recorded (runs made before the machine was stored)"
    return (
        f"{machine['cpu']} (family/model/stepping {machine['cpu_family_model']}), {machine['cores']} cores, "
        f"torch {machine['torch']}, gymnasium {machine['gymnasium']}"
    )


def format_per_seed(runs: list[dict]) -> str:
    """seed: training[/eval] for each seed."""
    return ", ".join(
        f"{r['seed']}: {r['final_return']:.0f}" + (f"/{eval_score(r):.0f}" if eval_score(r) is not None else "")
        for r in runs
    )


def format_suite_table(script: str, results: list[dict], window: int) -> str:
    """Per suite env: the IQM and mean of the seeds with their intervals, the saved models' evaluation, the
    per-seed figures, the target and the published anchors with where our interval lies against each."""
    rows = [
        f"| suite | env | budget | label | seeds | last {window} training episodes: IQM [95% CI] | mean [95% CI] "
        "| saved model: IQM [95% CI] | per seed (training/saved model) | target | anchors | steps/sec "
        "| wall time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups = group_runs(results)
    # A row under its own entry; a task the suites do not list (a masked variant) under the env's plain entry.
    listed = {(e.env_id, e.label, e.budget) for entries in SUITES.get(script, {}).values() for e in entries}
    for suite, entries in SUITES.get(script, {}).items():
        for entry in entries:
            matching = [
                (key, runs)
                for key, runs in groups.items()
                if key[0] == entry.env_id
                and key[2] == entry.budget
                and (key[1] == entry.label or (not entry.label and key not in listed))
            ]
            for (_, label, _), runs in sorted(matching):
                intervals = row_intervals(runs)
                # The target and the anchors are for the entry's task; another task's row is not held to them.
                own_task = label == entry.label
                target = entry.target if own_task else "-"
                anchors = "; ".join(anchor_text(a, intervals) for a in entry.anchors) if own_task else ""
                rows.append(
                    f"| {suite} | {entry.env_id} | {short_budget(entry.budget)} | {label or 'default'} | {len(runs)} "
                    f"| {interval_text(intervals, 'train', 'iqm', runs)} "
                    f"| {interval_text(intervals, 'train', 'mean', runs)} "
                    f"| {interval_text(intervals, 'eval', 'iqm', runs)} | {format_per_seed(runs)} "
                    f"| {target} | {anchors or '-'} | {np.mean([r['sps'] for r in runs]):,.0f}{jobs_mark(runs)} "
                    f"| {np.mean([r['wall_s'] for r in runs]):.0f} |"
                )
    return with_footnotes(rows, results) + format_aggregates(script, results)


def suite_scores(script: str, results: list[dict], suite: str, randoms: dict) -> tuple[np.ndarray, list[int]] | None:
    """The suite's normalized training scores, (seeds, envs), over the seeds every env has; None when an env
    has no reference, no random score or no run."""
    entries = SUITES[script][suite]
    groups = group_runs(results)
    by_env = [{r["seed"]: r for r in groups.get((e.env_id, e.label, e.budget), [])} for e in entries]
    if any(e.reference_score() is None or e.env_id not in randoms for e in entries) or not all(by_env):
        return None
    seeds = sorted(set.intersection(*(set(runs) for runs in by_env)))
    if not seeds:
        return None
    columns = [
        stats.normalized([runs[seed]["final_return"] for seed in seeds], randoms[e.env_id]["mean"], e.reference_score())
        for e, runs in zip(entries, by_env, strict=True)
    ]
    return np.stack(columns, axis=1), seeds


def format_aggregates(script: str, results: list[dict]) -> str:
    """Per suite: the normalized IQM and mean over all its envs and seeds (0: a random policy, 1: the
    reference), and the performance profile of the same scores (SCRIPT_profile.png)."""
    random_path = RESULTS / "random_scores.json"  # benchmark/random_scores.py
    randoms = json.loads(random_path.read_text()) if random_path.exists() else {}
    rows = [
        "\n| suite | envs (reference = 1, random policy = 0) | seeds in every env | normalized IQM [95% CI] "
        "| normalized mean [95% CI] |",
        "|---|---|---|---|---|",
    ]
    profiles = {}
    for suite, entries in SUITES.get(script, {}).items():
        scored = suite_scores(script, results, suite, randoms)
        references = ", ".join(
            f"{e.env_id} {e.reference_score():g}" if e.reference_score() is not None else f"{e.env_id} (none)"
            for e in entries
        )
        if scored is None:
            rows.append(f"| {suite} | {references} | - | not computed: an env lacks a reference or runs | - |")
            continue
        matrix, seeds = scored
        profiles[suite] = matrix
        if len(seeds) == 1:  # one run per env: nothing to resample within an env
            rows.append(
                f"| {suite} | {references} | 1 | {stats.format_value(stats.iqm(matrix))} (no interval) "
                f"| {stats.format_value(float(matrix.mean()))} (no interval) |"
            )
            continue
        intervals = stats.intervals(matrix)
        rows.append(
            f"| {suite} | {references} | {len(seeds)} | {stats.format_interval(*intervals['iqm'])} "
            f"| {stats.format_interval(*intervals['mean'])} |"
        )
    if profiles:
        stats.plot_performance_profile(profiles, f"{script}.py: normalized training scores", profile_path(script))
    return "\n".join(rows) + "\n"


# The rows the README and the benchmark overview show for each script: (env, label, budget).
HEADLINES = {
    "reinforce": [("CartPole-v1", "", None)],
    "qac": [("CartPole-v1", "", None)],
    "a2c": [("CartPole-v1", "", 500_000), ("Pendulum-v1", "", 1_000_000)],
    "a3c": [("LunarLander-v3", "", 1_000_000), ("Pendulum-v1", "", 2_000_000)],
    "ddpg": [("Pendulum-v1", "", 20_000), ("HalfCheetah-v5", "", 300_000)],
    "ppo": [("LunarLander-v3", "", 1_000_000), ("HalfCheetah-v5", "", 1_000_000), ("Hopper-v5", "", 1_000_000)],
    "ppo_gru": [("CartPole-v1", "masked", None)],
}


def format_headlines() -> str:
    """The headline rows of every script, from the stored runs, in the table format of the suite tables."""
    rows = [
        "| script | env | budget | task | seeds | last training episodes: IQM [95% CI] | saved model: IQM [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for script, keys in HEADLINES.items():
        json_path = RESULTS / f"{script}.json"
        groups = group_runs(json.loads(json_path.read_text())) if json_path.exists() else {}
        for env_id, label, budget in keys:
            runs = groups.get((env_id, label, budget))
            if not runs:
                continue
            intervals = row_intervals(runs)
            rows.append(
                f"| {script}.py | {env_id} | {short_budget(budget)} | {label or 'default'} | {len(runs)} "
                f"| {interval_text(intervals, 'train', 'iqm', runs)} "
                f"| {interval_text(intervals, 'eval', 'iqm', runs)} |"
            )
    return "\n".join(rows) + "\n"


def write_headlines() -> None:
    table = format_headlines()
    (RESULTS / "headlines.md").write_text(table)
    update_readme("headlines", table)


def profile_path(script: str) -> Path:
    return RESULTS / f"{script}_profile.png"


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


def plot_path(script: str, env_id: str, label: str, budget: int | None) -> Path:
    suffix = (f"_{label}" if label else "") + (f"_{short_budget(budget)}" if budget is not None else "")
    return RESULTS / f"{script}_{env_id}{suffix}.png"


def planned_runs(options: argparse.Namespace) -> list[tuple[str, int | None, int, str, list[str]]]:
    """(env id, budget, seed, label, flags) for every run asked for: --env-ids with --label and the extra
    flags (the budget read from them, if any), then each --suite env with its own budget and task label."""
    extra_budget = None
    if "--total-timesteps" in options.extra:
        extra_budget = int(options.extra[options.extra.index("--total-timesteps") + 1])
    envs = [(env_id, extra_budget, options.label, options.extra) for env_id in options.env_ids]
    for suite in options.suite:
        for entry in SUITES[options.script][suite]:
            budget_flags = ["--total-timesteps", str(entry.budget)] if entry.budget else []
            envs.append(
                (entry.env_id, entry.budget, entry.label, options.extra + TASK_FLAGS[entry.label] + budget_flags)
            )
    return [
        (env_id, budget, seed, label, flags)
        for env_id, budget, label, flags in envs
        for seed in options.seeds or protocol_seeds(env_id)
    ]


def protocol_seeds(env_id: str) -> list[int]:
    """The seeds a row gets unless --seeds says otherwise: 10 for classic control and Box2D, 5 for MuJoCo
    (a MuJoCo run at 1M steps costs 5-15 minutes here)."""
    import gymnasium as gym

    entry_point = str(gym.spec(env_id).entry_point)
    return list(range(1, 6)) if entry_point.startswith("gymnasium.envs.mujoco") else list(range(1, 11))


# Labels that name a task, not a change of flags, and the flags that make the task: default flags on the
# velocity-masked task (--mask-velocity).
TASK_FLAGS = {"": [], "masked": ["--mask-velocity"]}
TASK_LABELS = set(TASK_FLAGS)


def write_tables(script: str, results: list[dict], window: int) -> None:
    """SCRIPT.md and SCRIPT_suites.md: the runs with default flags; SCRIPT_tried.md: the labelled runs (the
    variants tried while choosing the defaults), a table of their own that a page shows under the defaults."""
    defaults = [r for r in results if r.get("label", "") in TASK_LABELS]
    tried = [r for r in results if r.get("label", "") not in TASK_LABELS]
    tables = {script: format_table(defaults, window)}
    if tried:
        tables[f"{script}_tried"] = format_table(tried, window)
    if script in SUITES:
        tables[f"{script}_suites"] = format_suite_table(script, defaults, window)
    for name, table in tables.items():
        (RESULTS / f"{name}.md").write_text(table)
        update_readme(name, table)
        print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "script", help="algorithm script name without .py, e.g. ppo; 'all' with --table-only: every script's tables"
    )
    parser.add_argument("--env-ids", nargs="+", default=[])
    parser.add_argument("--suite", nargs="+", default=[], help="suites from SUITES[script], e.g. discrete box")
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=None, help="default: 1-10, or 1-5 for MuJoCo envs (protocol_seeds)"
    )
    parser.add_argument(
        "--eval-episodes",
        type=int,
        default=20,
        help="each run saves its model and evaluates it for N episodes (--save-model --eval-episodes N); 0: no eval",
    )
    parser.add_argument("--label", default="", help="names a variant (e.g. a flag set) in the table and plots")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (>1 distorts steps/sec)")
    parser.add_argument("--rerun", action="store_true", help="run again what SCRIPT.json already holds")
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
    if options.script == "all":
        if not options.table_only:
            parser.error("'all' only rebuilds tables and plots: add --table-only")
        for json_path in sorted(RESULTS.glob("*.json")):
            if (ROOT / f"{json_path.stem}.py").exists():
                results = json.loads(json_path.read_text())
                rebuild(json_path.stem, results, stored_window(results) or 10)
        write_headlines()
        import plot_masked  # it imports run.py's names, so it is imported here, not at the top

        plot_masked.main(RESULTS)
        return
    if not (ROOT / f"{options.script}.py").exists():
        parser.error(f"no script {options.script}.py at {ROOT}")
    unknown = [suite for suite in options.suite if suite not in SUITES.get(options.script, {})]
    if unknown:
        parser.error(f"unknown suite(s) {unknown} for {options.script}; known: {list(SUITES.get(options.script, {}))}")
    if options.suite and "--total-timesteps" in extra:
        parser.error("a suite sets each env's budget; do not pass --total-timesteps after --")

    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / f"{options.script}.json"
    results = json.loads(json_path.read_text()) if json_path.exists() else []
    # The window belongs to a script's results, so a later run without the flag keeps it.
    if options.final_window is None:
        options.final_window = stored_window(results) or 10

    def save(new_result: dict | None = None) -> None:
        """Merge with what is on disk now (another run.py of this script may have added runs), add
        new_result, and write back, holding an exclusive lock on SCRIPT.json.lock meanwhile."""
        with open(json_path.with_suffix(".json.lock"), "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            on_disk = json.loads(json_path.read_text()) if json_path.exists() else []
            merged = {run_key(r): r for r in results + on_disk}
            if new_result is not None:
                merged[run_key(new_result)] = new_result
            results[:] = list(merged.values())
            for result in results:
                result["final_return"] = final_return(result["curve"], options.final_window)
                result["final_window"] = options.final_window
            json_path.write_text(json.dumps(results, indent=1))

    if not options.table_only:
        # A stored run without the evaluation asked for is run again (same seed, same curve, now with its eval).
        done = {run_key(r) for r in results if r.get("eval_returns") or not options.eval_episodes}
        planned = planned_runs(options)
        todo = [
            (env_id, budget, seed, label, flags)
            for env_id, budget, seed, label, flags in planned
            if options.rerun or (env_id, seed, label, budget) not in done
        ]
        skipped = len(planned) - len(todo)
        if skipped:
            print(f"{skipped} run(s) already in {json_path.name}, not run again (--rerun to repeat them)")
        lock = threading.Lock()

        def run_and_save(env_id: str, budget: int | None, seed: int, label: str, flags: list[str]) -> None:
            if options.eval_episodes:
                flags = flags + ["--save-model", "--eval-episodes", str(options.eval_episodes)]
            result = run_one(options.script, env_id, seed, flags)
            result.update(label=label, jobs=options.jobs, budget=budget)
            eval_text = f", eval {eval_score(result):.1f}" if result["eval_returns"] else ""
            with lock:  # saved at once, so a stopped benchmark keeps every finished run
                stored = next((r for r in results if run_key(r) == run_key(result)), None)
                same = "" if stored is None else f", same curve as the stored run: {same_curve(stored, result)}"
                print(
                    f"{env_id} ({short_budget(budget)}) seed {seed}: last-{options.final_window} mean "
                    f"{final_return(result['curve'], options.final_window):.1f}{eval_text}, "
                    f"{result['sps']:,.0f} steps/s{same}",
                    flush=True,
                )
                save(result)

        with ThreadPoolExecutor(max_workers=options.jobs) as pool:
            for future in [pool.submit(run_and_save, *job) for job in todo]:
                future.result()
    save()
    rebuild(options.script, results, options.final_window)
    write_headlines()


def stored_window(results: list[dict]) -> int | None:
    windows = {r["final_window"] for r in results if "final_window" in r}
    return windows.pop() if len(windows) == 1 else None


def rebuild(script: str, results: list[dict], window: int) -> None:
    """Every table and plot of a script from its stored results."""
    write_tables(script, results, window)
    for (env_id, label, budget), runs in group_runs(results).items():
        plot_curves(script, env_id, label, runs, window, plot_path(script, env_id, label, budget))


if __name__ == "__main__":
    main()
