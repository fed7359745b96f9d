"""Launched by tests/test_distributed.py under torchrun: one rank of a check of the data
parallelism of ppo.py or a2c.py. Each rank writes what it ends with to OUT_DIR/rank{R}.pt for the
test to compare.

    torchrun --standalone --nproc-per-node 2 tests/distributed_worker.py MODE SCRIPT OUT_DIR [flags]

MODE train: SCRIPT.main with the flags. update (ppo only): one ppo_update on this rank's columns
of a known rollout (reference_rollout). stats: two rounds of running statistics synced across ranks.
"""

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import ppo  # noqa: E402

OBS_DIM, NUM_STEPS, ENVS_PER_RANK = 4, 8, 2


def reference_rollout(num_envs: int) -> ppo.Rollout:
    """Fixed random data for num_envs envs (no episode ends), the same in every process."""
    rng = np.random.default_rng(0)
    rollout = ppo.Rollout.empty(NUM_STEPS, num_envs, (OBS_DIM,), ())
    rollout.obs[:] = rng.normal(size=rollout.obs.shape)
    rollout.actions[:] = rng.integers(0, 2, size=rollout.actions.shape)
    rollout.rewards[:] = rng.normal(size=rollout.rewards.shape)
    rollout.trainable[:] = True
    rollout.last_value[:] = rng.normal(size=num_envs)
    return rollout


def reference_agent() -> ppo.Agent:
    torch.manual_seed(0)
    import gymnasium as gym

    return ppo.Agent(OBS_DIM, gym.spaces.Discrete(2))


def score_rollout(agent: ppo.Agent, rollout: ppo.Rollout) -> None:
    """log pi_old and V_old from the agent before the update, as collect_rollout records them."""
    with torch.no_grad():
        log_probs, _, values = agent.evaluate_actions(
            torch.as_tensor(rollout.obs).flatten(0, 1), torch.as_tensor(rollout.actions).flatten(0, 1)
        )
    rollout.log_probs[:] = log_probs.view(rollout.log_probs.shape).numpy()
    rollout.values[:] = values.view(rollout.values.shape).numpy()


def update_args() -> ppo.Args:
    # One minibatch per epoch and no advantage normalization: the mean of the ranks' gradients
    # is then exactly the gradient of one process on both ranks' data together.
    return ppo.Args(
        num_envs=ENVS_PER_RANK, num_steps=NUM_STEPS, num_minibatches=1, update_epochs=3, norm_adv=False, ent_coef=0.01
    )


def stats_batches(rank: int, round_: int) -> list[np.ndarray]:
    rng = np.random.default_rng(100 * rank + round_)
    return [rng.normal(loc=rank + round_, scale=1 + rank, size=(size, 3)) for size in (5 + rank, 17)]


def main() -> None:
    mode, script, out_dir, flags = sys.argv[1], importlib.import_module(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]
    if mode == "train":
        result = script.main(tyro.cli(script.Args, args=flags))
        rank = int(os.environ["RANK"])  # main has closed the process group
        torch.save(result, out_dir / f"rank{rank}.pt")
        return
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    if mode == "update":
        agent = reference_agent()
        full = reference_rollout(ENVS_PER_RANK * torch.distributed.get_world_size())
        columns = slice(rank * ENVS_PER_RANK, (rank + 1) * ENVS_PER_RANK)
        mine = ppo.Rollout(**{name: value[columns] if name == "last_value" else value[:, columns]
                              for name, value in vars(full).items()})  # fmt: skip
        score_rollout(agent, mine)
        optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3, eps=1e-5)
        ppo.ppo_update(agent, optimizer, mine, update_args(), torch.device("cpu"), 0)
        torch.save(torch.nn.utils.parameters_to_vector(agent.parameters()).detach(), out_dir / f"rank{rank}.pt")
    elif mode == "stats":
        from gymnasium.wrappers.utils import RunningMeanStd

        rms = RunningMeanStd(shape=(3,))
        base = script.moments(rms)
        for round_ in range(2):
            for batch in stats_batches(rank, round_):
                rms.update(batch)
            base = script.sync_running_stats(rms, base, torch.device("cpu"))
        torch.save({"mean": rms.mean, "var": rms.var, "count": rms.count}, out_dir / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
