"""ppo.py env steps/sec with 1 and N torchrun ranks on this machine, interleaved.

    python benchmark/torchrun_scaling.py --rounds 3                  # 1 and 2 ranks
    python benchmark/torchrun_scaling.py --rounds 3 --ranks 1 2 4 8  # on a machine with 16 cores

Each round runs, with default flags (on the CPU: --no-cuda) and seed = round, every case once per
rank count: 1 rank as a plain process, N ranks as `torchrun --standalone --nproc-per-node N` (gloo),
ppo.py on CartPole-v1 and on HalfCheetah-v5, each at the same total budget (with N ranks each rank
runs 1/N of it). Steps/sec is the script's own last charts/SPS: env steps of all ranks over the
training wall time. Writes benchmark/results/torchrun_scaling.md (include it in docs/ppo.md once
measured). a2c.py has no torchrun mode since issue 29 (docs/a2c.md says why).
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interleaved import ROOT, WORK, interleave, mean_sps, publish, script_result  # noqa: E402

# (script, env, budget): the cases issues 22 and 29 name
CASES = [("ppo", "CartPole-v1", 200_000), ("ppo", "HalfCheetah-v5", 200_000)]


def start(script: str, flags: list[str], ranks: int) -> tuple[subprocess.Popen, Path]:
    cwd = WORK / f"scaling_{script}_{ranks}_{time.time_ns()}"
    cwd.mkdir(parents=True)
    launcher = [sys.executable]
    if ranks > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    command = [*launcher, str(ROOT / f"{script}.py"), *flags]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), cwd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds; round i uses seed i")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="rank counts to compare (1 first)")
    options = parser.parse_args()
    sides = {}
    for script, env_id, budget in CASES:
        for ranks in options.ranks:

            def run(seed, script=script, env_id=env_id, budget=budget, ranks=ranks):
                flags = ["--env-id", env_id, "--seed", str(seed), "--total-timesteps", str(budget), "--no-cuda"]
                return script_result(*start(script, flags, ranks))

            sides[f"{script}.py {env_id} {budget // 1000}k, {ranks} rank{'s' * (ranks > 1)}"] = run
    results = interleave(sides, options.rounds)
    lines = [
        f"Default flags, seeds 1-{options.rounds}, interleaved (`python benchmark/torchrun_scaling.py`)",
        "",
        "| script, env, budget | ranks | steps/sec (mean ± std) | final return (last 10, mean ± std) | speed-up |",
        "|---|---|---|---|---|",
    ]
    for script, env_id, budget in CASES:
        name = f"{script}.py {env_id} {budget // 1000}k"
        single = mean_sps(results[f"{name}, {options.ranks[0]} rank{'s' * (options.ranks[0] > 1)}"])
        for ranks in options.ranks:
            runs = results[f"{name}, {ranks} rank{'s' * (ranks > 1)}"]
            sps = [r["sps"] for r in runs]
            finals = [r["final_return"] for r in runs]
            lines.append(
                f"| {name} | {ranks} | {np.mean(sps):,.0f} ± {np.std(sps):,.0f} "
                f"| {np.mean(finals):.1f} ± {np.std(finals):.1f} | {mean_sps(runs) / single:.2f}x |"
            )
    publish("torchrun_scaling", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
