"""How often a3c.py's CartPole-v1 run ends solved: many seeds, on an idle and on a busy machine.

    python benchmark/a3c_reliability.py --seeds 1 2 3 4 5 [--label NAME -- EXTRA FLAGS]

Each seed runs `a3c.py --seed S --num-workers 2 [EXTRA FLAGS]` twice: once on an otherwise idle
machine, once next to a second CPU-bound process (a busy loop, so the two workers share the two
cores with it and are descheduled at random moments, as under any other load). A run counts as
solved when the mean of its last 20 training episodes is >= 475. With two workers a run is not
reproducible (the order of their updates depends on the scheduler), so only a count over many
runs says how reliable the defaults are.

Results are kept in benchmark/results/a3c_reliability.json (resumable: a (label, seed, load)
already there is not run again); the table goes to a3c_reliability.md, which the a3c.py documentation page
includes.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interleaved import script_result, start_script  # noqa: E402
from run import RESULTS, update_readme  # noqa: E402

SOLVED = 475.0
STORE = RESULTS / "a3c_reliability.json"


def run(seed: int, busy: bool, extra: list[str]) -> dict:
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        return script_result(*start_script("a3c", ["--seed", str(seed), "--num-workers", "2", *extra]), window=20)
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()


def table(results: list[dict]) -> str:
    lines = [
        f"CartPole-v1, 2 workers, default budget; solved = last-20 mean >= {SOLVED:.0f} "
        "(`python benchmark/a3c_reliability.py`)",
        "",
        "| label | flags | machine | solved | last-20 mean per seed | steps/sec (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for label in dict.fromkeys(r["label"] for r in results):
        for busy in (False, True):
            runs = sorted((r for r in results if r["label"] == label and r["busy"] == busy), key=lambda r: r["seed"])
            if not runs:
                continue
            solved = sum(r["final_return"] >= SOLVED for r in runs)
            per_seed = ", ".join(f"{r['seed']}: {r['final_return']:.0f}" for r in runs)
            machine = "a busy loop beside" if busy else "idle"
            flags = " ".join(runs[0]["extra"]) or "(defaults)"
            lines.append(
                f"| {label} | `{flags}` | {machine} | {solved} of {len(runs)} | {per_seed} "
                f"| {np.mean([r['sps'] for r in runs]):,.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--label", default="default")
    parser.add_argument("extra", nargs="*", help="flags passed to a3c.py (after --)")
    options = parser.parse_args()
    results = json.loads(STORE.read_text()) if STORE.exists() else []
    for seed in options.seeds:
        for busy in (False, True):
            if any(r["label"] == options.label and r["seed"] == seed and r["busy"] == busy for r in results):
                continue
            result = run(seed, busy, options.extra)
            results.append({"label": options.label, "extra": options.extra, "seed": seed, "busy": busy, **result})
            STORE.write_text(json.dumps(results, indent=1))
            print(f"{options.label} seed {seed} {'busy' if busy else 'idle'}: {result['final_return']:.1f}", flush=True)
    text = table(results)
    (RESULTS / "a3c_reliability.md").write_text(text)
    update_readme("a3c_reliability", text)
    print(text)


if __name__ == "__main__":
    main()
