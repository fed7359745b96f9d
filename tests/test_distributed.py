"""ppo.py under torchrun: 2 ranks, gloo, on the CPU (a2c.py runs on one process only).

The checks run real torchrun launches: tests/distributed_worker.py for the ones that need to
look inside each rank, ppo.py itself for the command-line behaviour.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_scalars, run_dirs
from distributed_worker import (
    ENVS_PER_RANK,
    reference_agent,
    reference_rollout,
    score_rollout,
    stats_batches,
    update_args,
)

import ppo

TESTS = Path(__file__).resolve().parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def torchrun(script: Path, *args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    # faulthandler: a rank that aborts (SIGABRT, e.g. in gloo's C++) prints where its Python threads were
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    return subprocess.run(
        [*TORCHRUN, str(script), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


# A small run: 2 ranks x 4 envs x 128 steps = 1024 env steps of all ranks per logged update
TRAIN_FLAGS, STEPS_PER_UPDATE = ["--total-timesteps", "4096", "--num-steps", "128"], 1024


def run_worker(mode: str, tmp_path: Path, *flags: str) -> list:
    result = torchrun(TESTS / "distributed_worker.py", mode, str(tmp_path), *flags, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(2)]


def test_ranks_end_with_identical_parameters_and_rank_0_logs_its_episodes(tmp_path):
    rank0, rank1 = run_worker("train", tmp_path, *TRAIN_FLAGS)
    # Each rank acted on its own envs with its own seeds, yet the averaged gradients kept the weights equal.
    assert torch.equal(rank0["parameters"], rank1["parameters"])
    assert rank0["episodic_returns"] and rank1["episodic_returns"], "each rank should have finished episodes"
    assert rank0["episodic_returns"] != rank1["episodic_returns"], "the ranks should have played different episodes"
    [run_dir] = run_dirs(tmp_path)  # rank 0 alone writes TensorBoard, with its own episodes
    scalars = read_scalars(run_dir)
    assert [value for _, value in scalars["charts/episodic_return"]] == pytest.approx(rank0["episodic_returns"])
    # charts/SPS is logged at global steps that count the env steps of both ranks.
    assert all(step % STEPS_PER_UPDATE == 0 for step, _ in scalars["charts/SPS"])
    assert scalars["charts/SPS"][-1][0] == int(TRAIN_FLAGS[1]) // STEPS_PER_UPDATE * STEPS_PER_UPDATE


def test_one_ppo_update_on_two_ranks_equals_one_process_on_both_ranks_data(tmp_path):
    rank0, rank1 = run_worker("update", tmp_path)
    agent = reference_agent()
    both = reference_rollout(2 * ENVS_PER_RANK)
    score_rollout(agent, both)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3, eps=1e-5)
    args = update_args()
    ppo.ppo_update(
        agent, optimizer, both, ppo.dataclasses.replace(args, num_envs=2 * ENVS_PER_RANK), torch.device("cpu"), 0
    )
    single = torch.nn.utils.parameters_to_vector(agent.parameters()).detach()
    untrained = torch.nn.utils.parameters_to_vector(reference_agent().parameters()).detach()
    assert not torch.allclose(single, untrained), "the update must move the weights, or the test proves nothing"
    torch.testing.assert_close(rank0, single, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rank1, single, rtol=1e-5, atol=1e-6)


def test_merged_running_statistics_equal_those_of_one_process_that_saw_all_the_data(tmp_path):
    from gymnasium.wrappers.utils import RunningMeanStd

    rank0, rank1 = run_worker("stats", tmp_path)
    single = RunningMeanStd(shape=(3,))
    for round_ in range(2):
        for rank in range(2):
            for batch in stats_batches(rank, round_):
                single.update(batch)
    for merged in (rank0, rank1):
        np.testing.assert_allclose(merged["count"], single.count, rtol=1e-12)
        np.testing.assert_allclose(merged["mean"], single.mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(merged["var"], single.var, rtol=1e-9)


@pytest.mark.learning
def test_two_ranks_learn_cartpole(tmp_path):
    result = torchrun(Path(ppo.__file__), "--total-timesteps", "30000", "--seed", "1", cwd=tmp_path)
    assert result.returncode == 0, f"rank 0 printed:\n{result.stdout[-1500:]}\n{result.stderr[-3000:]}"
    [run_dir] = run_dirs(tmp_path)
    returns = [value for _, value in read_scalars(run_dir)["charts/episodic_return"]]
    assert np.mean(returns[-10:]) >= 200, f"last-10 mean {np.mean(returns[-10:]):.1f} (random play: about 22)"


def rank_pids(torchrun_pid: int) -> dict[int, int]:
    """rank -> pid of torchrun's worker processes, read from /proc (RANK is in their environment)."""
    ranks = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) == torchrun_pid and fields[0] != "Z":
            for entry in environ:
                if entry.startswith(b"RANK="):
                    ranks[int(entry[5:])] = int(stat.parent.name)
    return ranks


def launch(cwd: Path, *flags: str, new_session: bool = False) -> subprocess.Popen:
    """Start a long 2-rank run of ppo.py under torchrun in cwd, its output captured."""
    command = [*TORCHRUN, ppo.__file__, "--total-timesteps", "100000000", *flags]
    return subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=new_session
    )


def wait_until_training(process: subprocess.Popen, cwd: Path) -> dict[int, int]:
    """Wait until rank 0 has logged its first update (both ranks are then past their start-up,
    in lockstep); return rank -> pid."""
    deadline = time.time() + 120
    while time.time() < deadline:
        dirs = run_dirs(cwd)
        if dirs and "charts/SPS" in read_scalars(dirs[0]):
            return rank_pids(process.pid)
        time.sleep(0.5)
    raise AssertionError("the run did not start training within 120 s")


def assert_gone(pids) -> None:
    """No process is left (a zombie awaiting its parent's wait() does not count)."""
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        assert state == "Z", f"pid {pid} still runs"


def test_a_killed_rank_stops_the_run_naming_it_and_leaves_no_process(tmp_path):
    process = launch(tmp_path, "--collective-timeout", "20")
    try:
        ranks = wait_until_training(process, tmp_path)
        os.kill(ranks[1], signal.SIGKILL)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode != 0
    # torchrun's summary names the rank that failed first.
    assert re.search(r"Root Cause.*?rank\s*:\s*1 ", stderr, re.S), stderr[-3000:]
    assert_gone(ranks.values())


def test_ctrl_c_stops_every_rank_and_rank_0_saves_the_model(tmp_path):
    # its own process group, as a terminal's foreground job
    process = launch(tmp_path, "--save-model", new_session=True)
    try:
        ranks = wait_until_training(process, tmp_path)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert stderr.count("interrupted by Ctrl-C") == 1, stderr[-2000:]  # rank 0 speaks for all
    [run_dir] = run_dirs(tmp_path)
    model = run_dir / "ppo.pt"
    assert model.exists(), stdout + stderr[-2000:]
    assert len(ppo.watch(ppo.Args(eval_model=str(model), eval_episodes=1))["eval_returns"]) == 1
    assert_gone(ranks.values())


def test_a_rank_that_stops_answering_makes_the_other_stop_after_the_collective_timeout(tmp_path):
    process = launch(tmp_path, "--collective-timeout", "3")
    try:
        ranks = wait_until_training(process, tmp_path)
        os.kill(ranks[1], signal.SIGSTOP)  # rank 1 hangs: alive, but never answers
        _, stderr = process.communicate(timeout=90)  # torchrun kills the stopped rank 30 s after rank 0 exits
    finally:
        process.kill()
    assert process.returncode != 0
    [line] = [line for line in stderr.splitlines() if line.startswith("ppo.py: error:")]
    assert line.startswith("ppo.py: error: rank 0: lost the other ranks at global step"), line
    assert_gone(ranks.values())
