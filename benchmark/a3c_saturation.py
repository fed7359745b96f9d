"""Why a3c.py's CartPole-v1 runs collapse: the critic's tanh units saturate.

    python benchmark/a3c_saturation.py --seeds 1 2 3 4 5 6 7 8 9 10 [--label NAME -- EXTRA FLAGS]

Each seed trains `a3c.py --num-workers 1 --save-model` (one worker: the run is reproducible, so
a collapse seen once is seen every time, and it cannot come from asynchrony), then loads the
final critic and plays 2,000 steps of the final policy. It reports the last-20 training mean and
the share of the critic's second-layer tanh units at |h| > 0.99 over those states. A saturated
unit passes no gradient and no difference between states: a critic saturated before the policy
is good can no longer tell a good state from a bad one, so the advantage R - V stops carrying
the credit the actor needs. Results: benchmark/results/a3c_saturation.json (resumable) and .md.
"""

import argparse
import fcntl
import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interleaved import script_result, start_script  # noqa: E402
from run import RESULTS, ROOT  # noqa: E402

STORE = RESULTS / "a3c_saturation.json"


def probe_critic(model_path: Path, seed: int, steps: int = 2000) -> dict:
    sys.path.insert(0, str(ROOT))
    import a3c

    checkpoint = torch.load(model_path)
    env = gym.make(checkpoint["args"]["env_id"])
    agent = a3c.Agent(env.observation_space.shape[0], env.action_space)
    agent.load_state_dict(checkpoint["model"])
    states, (obs, _) = [], env.reset(seed=seed)
    for _ in range(steps):
        states.append(obs)
        with torch.no_grad():
            action = agent.act(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))[0].item()
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
    batch = torch.as_tensor(np.array(states), dtype=torch.float32)
    with torch.no_grad():
        hidden = agent.critic[:4](batch)  # Linear, Tanh, Linear, Tanh: the second hidden layer
    return {"saturated": float((hidden.abs() > 0.99).float().mean())}


def load() -> list[dict]:
    return json.loads(STORE.read_text()) if STORE.exists() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(1, 11)))
    parser.add_argument("--label", default="default")
    parser.add_argument("extra", nargs="*", help="flags passed to a3c.py (after --)")
    options = parser.parse_args()
    for seed in options.seeds:
        if any(r["label"] == options.label and r["seed"] == seed for r in load()):
            continue
        flags = ["--seed", str(seed), "--num-workers", "1", "--save-model", *options.extra]
        process, cwd = start_script("a3c", flags)
        result = script_result(process, cwd, window=20)
        [model] = (cwd / "runs").glob("*/a3c.pt")
        result.update(probe_critic(model, seed), seed=seed, label=options.label, extra=options.extra)
        with open(STORE.with_suffix(".lock"), "w") as lock:  # another label may be running beside this one
            fcntl.flock(lock, fcntl.LOCK_EX)
            STORE.write_text(json.dumps([*load(), result], indent=1))
        print(result)
    results = load()
    lines = [
        "CartPole-v1, 1 worker, default budget (`python benchmark/a3c_saturation.py`): last-20 training mean and "
        "share of the critic's second-layer units saturated (|h| > 0.99) over 2,000 steps of the final policy",
        "",
        "| label | flags | solved (>= 475) | per seed: last-20 mean / saturated share |",
        "|---|---|---|---|",
    ]
    for label in dict.fromkeys(r["label"] for r in results):
        runs = sorted((r for r in results if r["label"] == label), key=lambda r: r["seed"])
        per_seed = ", ".join(f"{r['seed']}: {r['final_return']:.0f} / {r['saturated']:.2f}" for r in runs)
        solved = sum(r["final_return"] >= 475 for r in runs)
        flags = " ".join(runs[0]["extra"]) or "(defaults)"
        lines.append(f"| {label} | `{flags}` | {solved} of {len(runs)} | {per_seed} |")
    (RESULTS / "a3c_saturation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
