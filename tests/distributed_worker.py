"""Launched by tests/test_distributed.py under torchrun: one rank of a check of ppo.py's data
parallelism. Each rank writes what it ends with to OUT_DIR/rank{R}.pt for the test to compare.

    torchrun --standalone --nproc-per-node 2 tests/distributed_worker.py MODE OUT_DIR [flags]

MODE train: ppo.main with the flags. update: one ppo_update on this rank's columns of a known rollout
(reference_rollout). stats: two rounds of running statistics merged across ranks.
"""

import os
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import tyro
from gymnasium.wrappers.utils import RunningMeanStd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import ppo  # noqa: E402

OBS_DIM, NUM_STEPS, ENVS_PER_RANK = 4, 8, 2


def reference_rollout(num_envs: int):
    """Fixed random data for num_envs envs (no episode ends), the same in every process."""
    rng = np.random.default_rng(0)
    rollout = ppo.empty_rollout(NUM_STEPS, num_envs, gym.spaces.Box(-1, 1, (OBS_DIM,)), gym.spaces.Discrete(2))
    rollout.obs[:] = rng.normal(size=rollout.obs.shape)
    rollout.actions[:] = rng.integers(0, 2, size=rollout.actions.shape)
    rollout.rewards[:] = rng.normal(size=rollout.rewards.shape)
    rollout.trainable[:] = True
    rollout.last_value[:] = rng.normal(size=num_envs)
    return rollout


def reference_agent() -> ppo.Agent:
    torch.manual_seed(0)
    return ppo.Agent(OBS_DIM, gym.spaces.Discrete(2))


def score_rollout(agent: ppo.Agent, rollout) -> None:
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


class StatsOnly(gym.vector.VectorWrapper):
    """A stand-in for the normalization wrappers: something that holds an obs_rms, for merge_running_stats."""

    def __init__(self, rms: RunningMeanStd):  # no env below: merge_running_stats only reads obs_rms
        self.obs_rms, self.env = rms, None


def main() -> None:
    mode, out_dir, flags = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    if mode == "train":
        # What the test compares: every rank's final weights and the episodes it finished itself
        # (result["episodic_returns"]: every rank keeps its own, rank 0 alone logs them).
        agents, broadcast = [], ppo.broadcast_parameters
        ppo.broadcast_parameters = lambda agent: (agents.append(agent), broadcast(agent))[1]
        result = ppo.main(tyro.cli(ppo.Args, args=flags))
        result["parameters"] = torch.nn.utils.parameters_to_vector(agents[0].parameters()).detach()
        torch.save(result, out_dir / f"rank{os.environ['RANK']}.pt")  # main has closed the process group
        return
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    if mode == "update":
        agent = reference_agent()
        full = reference_rollout(ENVS_PER_RANK * torch.distributed.get_world_size())
        columns = slice(rank * ENVS_PER_RANK, (rank + 1) * ENVS_PER_RANK)
        mine = type(full)(**{name: value[columns] if name == "last_value" else value[:, columns]
                             for name, value in vars(full).items()})  # fmt: skip
        score_rollout(agent, mine)
        optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3, eps=1e-5)
        ppo.ppo_update(agent, optimizer, mine, update_args(), torch.device("cpu"), 0)
        torch.save(torch.nn.utils.parameters_to_vector(agent.parameters()).detach(), out_dir / f"rank{rank}.pt")
    elif mode == "stats":
        rms = RunningMeanStd(shape=(3,))
        for round_ in range(2):
            for batch in stats_batches(rank, round_):
                rms.update(batch)
            ppo.merge_running_stats(StatsOnly(rms))
        torch.save({"mean": rms.mean, "var": rms.var, "count": rms.count}, out_dir / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
