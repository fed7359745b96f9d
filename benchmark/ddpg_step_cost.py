"""Where a ddpg.py training step's time goes: each piece timed alone, against the whole loop.

    python benchmark/ddpg_step_cost.py --env-id HalfCheetah-v5 --hidden-size 256
    python benchmark/ddpg_step_cost.py --env-id Pendulum-v1 --hidden-size 256

Each piece of one step after learning starts (env step, acting, replay buffer, the critic's target,
the critic's and the actor's forward and backward passes, the two Adam steps, the soft updates) is
timed on its own with ddpg.py's own classes and functions: the best of 5 blocks of 300 calls, one
torch thread. The whole loop is then timed by running ddpg.main twice in this process, with 2,000
and 7,000 steps (learning starts at 1,000 in both), so the difference is 5,000 steps of learning
without start-up costs (the best of two such pairs). The gap between the loop and the sum of the
pieces is what the step costs beyond them. So the gradient step's pieces are also timed one after
another as main runs them, with a fresh batch each time (alone, each piece reuses one batch and repeats
with its data still in the caches); what the loop takes beyond the env step, acting and that sequence is
its own Python (noise, clipping, adding to the buffer, episode bookkeeping, logging).
Writes benchmark/results/ddpg_step_cost_<env>_<width>.md.
"""

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import RESULTS, machine, machine_text  # noqa: E402

import ddpg  # noqa: E402


def best_ms(function, calls: int = 300, blocks: int = 5) -> float:
    """Milliseconds per call: the best block, so a busy moment of the machine does not count."""
    for _ in range(20):
        function()
    times = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        times.append((time.perf_counter() - start) / calls * 1000)
    return min(times)


def piece_costs(env_id: str, hidden_size: int, batch_size: int) -> tuple[float, dict[str, float]]:
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # as ddpg.main sets them both
    env = gym.make(env_id)
    obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    actor, target_actor = (ddpg.Actor(obs_dim, env.action_space, hidden_size) for _ in range(2))
    critic, target_critic = (ddpg.Critic(obs_dim, action_dim, hidden_size) for _ in range(2))
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=1e-3, fused=True)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3, fused=True)
    rng = np.random.default_rng(0)
    buffer = ddpg.ReplayBuffer(1_000_000, obs_dim, action_dim, rng)
    fill = 10_000
    buffer.add(
        rng.standard_normal((fill, obs_dim)), rng.uniform(-1, 1, (fill, action_dim)), rng.standard_normal(fill),
        rng.standard_normal((fill, obs_dim)), np.zeros(fill),
    )  # fmt: skip
    noise = ddpg.GaussianNoise((1, action_dim), 0.1, rng)
    obs, _ = env.reset(seed=0)
    one = (obs[None], env.action_space.sample()[None], np.zeros(1), obs[None], np.zeros(1))

    def act():
        with torch.no_grad():
            action = actor(torch.as_tensor(obs[None], dtype=torch.float32)).numpy()
        np.clip(action + noise.sample(), env.action_space.low, env.action_space.high)

    envs = ddpg.make_vector_env(env_id, 1)  # as main steps it: the vector env and its episode statistics
    envs.reset(seed=0)
    actions = envs.action_space.sample()

    def env_step():
        envs.step(actions)  # the next step after an episode's end only resets that env (NEXT_STEP)

    def target(batch):
        _, _, b_rewards, b_next_obs, b_terminations = batch
        with torch.no_grad():
            next_q = target_critic(b_next_obs, target_actor(b_next_obs))
            return ddpg.critic_target(b_rewards, b_terminations, next_q, 0.99)

    def critic_pass(batch, targets):
        b_obs, b_actions = batch[:2]
        loss = (critic(b_obs, b_actions) - targets).pow(2).mean()
        critic_optimizer.zero_grad()
        loss.backward()

    actor_params = list(actor.parameters())

    def actor_pass(batch):
        loss = -critic(batch[0], actor(batch[0])).mean()
        actor_optimizer.zero_grad()
        loss.backward(inputs=actor_params)

    def soft_updates():
        ddpg.soft_update(target_actor, actor, 0.005), ddpg.soft_update(target_critic, critic, 0.005)

    def gradient_step():  # the pieces below one after another as main runs them, a fresh batch each time
        batch = buffer.sample(batch_size)
        critic_pass(batch, target(batch))
        critic_optimizer.step()
        actor_pass(batch)
        actor_optimizer.step()
        soft_updates()

    batch = buffer.sample(batch_size)  # float32 tensors: each piece alone reuses this one batch
    targets = target(batch)
    critic_pass(batch, targets), actor_pass(batch)  # gradients exist, so the optimizer steps do their full work
    in_sequence = best_ms(gradient_step)
    return in_sequence, {
        "env step (vector env, episode statistics)": best_ms(env_step),
        "acting (mu(s), noise, clip)": best_ms(act),
        "replay: add one, sample a batch, to tensors": best_ms(lambda: (buffer.add(*one), buffer.sample(batch_size))),
        "target: mu'(s'), Q'(s', a'), y (forward)": best_ms(lambda: target(batch)),
        "critic: forward + backward": best_ms(lambda: critic_pass(batch, targets)),
        "actor: forward + backward through Q": best_ms(lambda: actor_pass(batch)),
        "Adam steps (critic, actor)": best_ms(lambda: (critic_optimizer.step(), actor_optimizer.step())),
        "soft updates (actor, critic)": best_ms(soft_updates),
    }


def loop_ms(env_id: str, hidden_size: int, batch_size: int, repeats: int = 2) -> float:
    """Milliseconds per learning step of ddpg.main itself, start-up costs cancelled out (best of `repeats`)."""
    per_step = []
    with tempfile.TemporaryDirectory() as folder:
        cwd = os.getcwd()
        os.chdir(folder)  # the runs/ folders land here
        try:
            for _ in range(repeats):
                walls = []
                for steps in (2_000, 7_000):
                    args = ddpg.Args(
                        env_id=env_id, total_timesteps=steps, hidden_size=hidden_size, batch_size=batch_size,
                        learning_starts=1_000,
                    )  # fmt: skip
                    start = time.perf_counter()
                    with contextlib.redirect_stdout(io.StringIO()):
                        ddpg.main(args)
                    walls.append(time.perf_counter() - start)
                per_step.append((walls[1] - walls[0]) / 5_000 * 1000)
        finally:
            os.chdir(cwd)
    return min(per_step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default="HalfCheetah-v5")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=256)
    options = parser.parse_args()
    in_sequence, costs = piece_costs(options.env_id, options.hidden_size, options.batch_size)
    whole = loop_ms(options.env_id, options.hidden_size, options.batch_size)
    passes = sum(v for k, v in costs.items() if k.startswith(("target", "critic", "actor")))
    total = sum(costs.values())
    acting = sum(v for k, v in costs.items() if k.startswith(("env step", "acting")))
    learning = total - acting  # the pieces of the gradient step, each timed alone
    width = options.hidden_size
    lines = [
        f"{options.env_id}, {width}-{width} networks, batch {options.batch_size}, one torch thread: one learning step "
        f"of ddpg.py (`python benchmark/ddpg_step_cost.py --env-id {options.env_id} --hidden-size {width}`)",
        "",
        "| piece | ms per step | share of the loop |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {ms:.3f} | {ms / whole:.0%} |" for name, ms in costs.items()]
    lines += [
        f"| **forward and backward passes (target, critic, actor)** | **{passes:.3f}** | **{passes / whole:.0%}** |",
        f"| sum of the pieces | {total:.3f} | {total / whole:.0%} |",
        f"| one gradient step, its pieces run in sequence (sample to soft updates) | {in_sequence:.3f} | "
        f"{in_sequence / whole:.0%} |",
        f"| of which running them in sequence, beyond the pieces alone | "
        f"{in_sequence - learning:.3f} | {(in_sequence - learning) / whole:.0%} |",
        f"| the loop's own Python (the loop minus the env step, acting and the gradient step in sequence) | "
        f"{whole - acting - in_sequence:.3f} | {(whole - acting - in_sequence) / whole:.0%} |",
        f"| **ddpg.main, measured** | **{whole:.3f}** ({1000 / whole:.0f} steps/s) | 100% |",
        "",
        # the ratio of the loop to its passes depends on the CPU: where matrix products are slower, the
        # same Python around them is a smaller share
        f"Loop / passes: {whole / passes:.2f}x. Machine: {machine_text(machine())}.",
    ]
    text = "\n".join(lines) + "\n"
    (RESULTS / f"ddpg_step_cost_{options.env_id}_{width}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
