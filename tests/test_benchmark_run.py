"""benchmark/run.py's bookkeeping: suites with their budgets, resuming, and merging saved runs.

The runs themselves are faked (run_one is replaced), so nothing trains here.
"""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmark"))
import run  # noqa: E402


@pytest.fixture
def bench(tmp_path, monkeypatch):
    """run.main() writing into tmp_path, with a fake run_one that records what it was asked to run."""
    calls = []

    def fake_run_one(script, env_id, seed, extra, cwd=None):
        calls.append((env_id, seed, tuple(extra)))
        budget = int(extra[extra.index("--total-timesteps") + 1]) if "--total-timesteps" in extra else 1000
        curve = [(step, float(seed)) for step in range(0, budget, budget // 20)]
        command = " ".join([f"{script}.py", "--env-id", env_id, "--seed", str(seed), *extra])
        episodes = int(extra[extra.index("--eval-episodes") + 1]) if "--eval-episodes" in extra else 0
        return dict(script=script, env_id=env_id, seed=seed, command=command, total_steps=budget, sps=100.0,
                    wall_s=1.0, peak_rss_mb=1.0, curve=curve, eval_returns=[seed + 0.5] * episodes,
                    machine=None)  # fmt: skip

    (tmp_path / "README.md").write_text("<!-- benchmark:ppo:start -->\n<!-- benchmark:ppo:end -->\n")
    monkeypatch.setattr(run, "ROOT", tmp_path)
    monkeypatch.setattr(run, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(run, "run_one", fake_run_one)
    monkeypatch.setattr(run, "plot_curves", lambda *args, **kwargs: None)
    monkeypatch.setattr(run.stats, "plot_performance_profile", lambda *args, **kwargs: None)
    # The bookkeeping is under test here, not the intervals' precision (test_benchmark_stats.py): fewer resamples.
    monkeypatch.setattr(run.stats, "REPS", 200)
    (tmp_path / "ppo.py").write_text("")  # run.py checks that the script exists

    def main(*argv):
        monkeypatch.setattr(sys, "argv", ["run.py", "ppo", *argv])
        run.main()
        return json.loads((tmp_path / "results" / "ppo.json").read_text())

    main.calls = calls
    main.tmp_path = tmp_path
    return main


def test_a_suite_runs_each_env_at_its_own_budget(bench):
    results = bench("--suite", "discrete", "--seeds", "1", "2")
    expected = {(entry.env_id, entry.budget) for entry in run.SUITES["ppo"]["discrete"]}
    budgets = {(env_id, int(extra[extra.index("--total-timesteps") + 1])) for env_id, _, extra in bench.calls}
    assert budgets == expected
    assert len(bench.calls) == len(expected) * 2
    assert {(r["env_id"], r["budget"]) for r in results} == expected
    suite_table = (bench.tmp_path / "results" / "ppo_suites.md").read_text()
    for entry in run.SUITES["ppo"]["discrete"]:
        assert entry.env_id in suite_table and entry.target in suite_table


def test_a_labelled_variant_in_a_suite_table_is_not_held_to_the_target(bench):
    bench("--suite", "discrete", "--seeds", "1")
    bench("--env-ids", "CartPole-v1", "--seeds", "1", "--label", "masked", "--", "--total-timesteps", "500000")
    rows = (bench.tmp_path / "results" / "ppo_suites.md").read_text().splitlines()
    [default_row] = [row for row in rows if "| CartPole-v1 |" in row and "| default |" in row]
    [variant_row] = [row for row in rows if "| CartPole-v1 |" in row and "| masked |" in row]
    assert ">= 490" in default_row and "CleanRL" in default_row
    assert ">= 490" not in variant_row and "CleanRL" not in variant_row


def test_a_finished_run_is_not_run_again_unless_asked(bench):
    bench("--env-ids", "CartPole-v1", "--seeds", "1", "2")
    assert len(bench.calls) == 2
    results = bench("--env-ids", "CartPole-v1", "--seeds", "1", "2", "3")
    assert [seed for _, seed, _ in bench.calls[2:]] == [3], "seeds 1 and 2 were already saved"
    assert sorted(r["seed"] for r in results) == [1, 2, 3]
    # Another label or another budget is another run.
    bench("--env-ids", "CartPole-v1", "--seeds", "1", "--label", "other")
    bench("--env-ids", "CartPole-v1", "--seeds", "1", "--", "--total-timesteps", "2000")
    assert len(bench.calls) == 5
    results = bench("--env-ids", "CartPole-v1", "--seeds", "1", "--rerun")
    assert len(bench.calls) == 6
    assert len(results) == 5, "a rerun replaces the saved run instead of adding a second one"


def test_runs_saved_by_another_process_meanwhile_are_kept(bench, monkeypatch):
    bench("--env-ids", "CartPole-v1", "--seeds", "1")
    json_path = bench.tmp_path / "results" / "ppo.json"
    original = run.run_one

    def run_one_while_another_process_saves(script, env_id, seed, extra, cwd=None):
        # A second run.py of the same script finishes a run while this one is training.
        others = json.loads(json_path.read_text())
        json_path.write_text(json.dumps(others + [dict(others[0], env_id="Acrobot-v1")]))
        return original(script, env_id, seed, extra, cwd)

    monkeypatch.setattr(run, "run_one", run_one_while_another_process_saves)
    results = bench("--env-ids", "Pendulum-v1", "--seeds", "1")
    assert sorted(r["env_id"] for r in results) == ["Acrobot-v1", "CartPole-v1", "Pendulum-v1"]


def test_older_results_without_a_budget_read_it_from_their_command():
    assert run.budget_of({"command": "ppo.py --env-id X --seed 1 --total-timesteps 150000"}) == 150_000
    assert run.budget_of({"command": "ppo.py --env-id X --seed 1"}) is None
    assert run.short_budget(1_000_000) == "1M" and run.short_budget(500_000) == "500k"


def test_without_seeds_a_row_gets_the_protocol_seeds(bench):
    bench("--env-ids", "CartPole-v1", "Hopper-v5", "--", "--total-timesteps", "1000")
    seeds = {
        env_id: sorted(seed for e, seed, _ in bench.calls if e == env_id) for env_id in ["CartPole-v1", "Hopper-v5"]
    }
    assert seeds == {"CartPole-v1": list(range(1, 11)), "Hopper-v5": list(range(1, 6))}


def test_each_run_saves_and_evaluates_its_model_and_a_stored_run_without_evaluation_is_run_again(bench):
    results = bench("--env-ids", "CartPole-v1", "--seeds", "1", "--eval-episodes", "0")
    assert "--save-model" not in bench.calls[0][2] and results[0]["eval_returns"] == []
    [result] = bench("--env-ids", "CartPole-v1", "--seeds", "1")
    assert bench.calls[1][2][-3:] == ("--save-model", "--eval-episodes", "20")
    assert result["eval_returns"] == [1.5] * 20
    bench("--env-ids", "CartPole-v1", "--seeds", "1")
    assert len(bench.calls) == 2, "the run now has its evaluation"


def test_the_suite_table_states_where_each_interval_lies_against_its_anchors(bench, monkeypatch):
    # CartPole's anchor (CleanRL, 490, training episodes) against seeds whose last-10 means are 1..3: behind;
    # LunarLander's (RL Zoo, 242, evaluated) against the evaluations 1.5..3.5: behind too. Move the anchors
    # into and under the intervals and the words follow.
    suite = run.SUITES["ppo"]["discrete"]
    bench("--suite", "discrete", "--seeds", "1", "2", "3")
    table = (bench.tmp_path / "results" / "ppo_suites.md").read_text()
    assert table.count(": **behind**") == 2
    monkeypatch.setattr(suite[0].anchors[0], "mean", 2.0)
    monkeypatch.setattr(suite[1].anchors[0], "mean", 0.5)
    bench("--suite", "discrete", "--table-only")
    rows = (bench.tmp_path / "results" / "ppo_suites.md").read_text().splitlines()
    [cartpole] = [row for row in rows if "| CartPole-v1 |" in row]
    [lunar] = [row for row in rows if "| LunarLander-v3 |" in row]
    assert "490 ± 6: **level**" in cartpole and "(v2, 1M, evaluated): **ahead**" in lunar


def test_all_with_table_only_rebuilds_every_table_and_plot_from_the_stored_runs(bench, monkeypatch):
    bench("--env-ids", "CartPole-v1", "--seeds", "1", "2")
    bench("--env-ids", "CartPole-v1", "--seeds", "1", "--label", "masked", "--", "--mask-velocity")
    calls = list(bench.calls)
    (bench.tmp_path / "results" / "ppo.md").unlink()
    monkeypatch.setattr(sys, "argv", ["run.py", "all", "--table-only"])
    run.main()
    assert "| CartPole-v1 | default | 1,000 | 2 |" in (bench.tmp_path / "results" / "ppo.md").read_text()
    assert (bench.tmp_path / "results" / "masked_CartPole-v1.png").stat().st_size > 0  # plot_masked's figure
    evaluated = ("--save-model", "--eval-episodes", "20")
    assert bench.calls == calls == [("CartPole-v1", 1, evaluated), ("CartPole-v1", 2, evaluated),
                                    ("CartPole-v1", 1, ("--mask-velocity", *evaluated))]  # fmt: skip


def test_a_speed_table_shows_each_side_s_returns_as_an_iqm_with_its_interval_and_seeds_and_its_machine():
    import interleaved

    results = {
        "ours": [dict(sps=sps, final_return=value) for sps, value in [(100, -400.0), (110, -420.0), (90, -100.0)]],
        "theirs": [dict(sps=50, final_return=7.0)],
    }
    table = interleaved.comparison_table("title", results, "speed-up", lambda sps: 100 / sps)
    [ours, theirs] = [line for line in table.splitlines() if line.startswith(("| ours", "| theirs"))]
    interval = run.stats.format_interval(*run.stats.intervals([-400.0, -420.0, -100.0])["iqm"])
    assert f"| {interval} (3 seeds) | -400, -420, -100 | 1.00x |" in ours
    assert "| 50 ± 0 | 7.00 (1 seed) | 7.00 | 2.00x |" in theirs
    assert table.splitlines()[-1] == f"Machine: {run.machine_text(run.machine())}."


def test_a_suite_entry_with_a_task_label_runs_that_task_and_holds_it_to_its_target(bench, monkeypatch):
    anchor = run.Anchor("RL Zoo", 500, "RecurrentPPO 500 (evaluated)", True)
    monkeypatch.setitem(
        run.SUITES["ppo"], "masked", [run.SuiteEnv("CartPole-v1", 500_000, ">= 475", [anchor], "masked")]
    )
    results = bench("--suite", "discrete", "masked", "--seeds", "1", "2")
    masked_calls = [extra for env_id, _, extra in bench.calls if "--mask-velocity" in extra]
    assert len(masked_calls) == 2 and all("500000" in extra for extra in masked_calls)
    assert sorted({r["label"] for r in results if r["env_id"] == "CartPole-v1"}) == ["", "masked"]
    rows = (bench.tmp_path / "results" / "ppo_suites.md").read_text().splitlines()
    # Each task is a row under its own entry only, held to that entry's target and compared with its anchors.
    [masked_row] = [row for row in rows if "| CartPole-v1 |" in row and "| masked |" in row]
    [default_row] = [row for row in rows if "| CartPole-v1 |" in row and "| default |" in row]
    assert masked_row.startswith("| masked |") and ">= 475" in masked_row and "RecurrentPPO 500" in masked_row
    assert default_row.startswith("| discrete |") and ">= 490" in default_row and "RecurrentPPO" not in default_row
