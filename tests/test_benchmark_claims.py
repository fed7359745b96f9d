"""Each comparison with a published anchor in the suite tables (which the docs pages include) matches the
stored runs: the interval is recomputed from benchmark/results/SCRIPT.json, and the word beside each anchor
must be the one the rule gives (ahead: the whole interval above the anchor's mean; behind: below; level:
it covers it)."""

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmark"))
import run  # noqa: E402
import stats  # noqa: E402

# The scripts whose suites name published anchors.
SCRIPTS = [script for script, suites in run.SUITES.items() if any(e.anchors for es in suites.values() for e in es)]


def suite_rows(script: str) -> dict[tuple, list[str]]:
    """(suite, env, budget, label) -> the row's cells, from the stored SCRIPT_suites.md."""
    rows = {}
    for line in (run.RESULTS / f"{script}_suites.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 13 and cells[0] in run.SUITES[script]:
            rows[tuple(cells[:4])] = cells
    return rows


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_anchor_comparison_follows_the_rule_on_the_stored_runs(script):
    results = json.loads((run.RESULTS / f"{script}.json").read_text())
    groups = run.group_runs([r for r in results if r.get("label", "") in run.TASK_LABELS])
    rows = suite_rows(script)
    checked = 0
    for suite, entries in run.SUITES[script].items():
        for entry in entries:
            runs = groups.get((entry.env_id, entry.label, entry.budget))
            if not runs or not entry.anchors:
                continue
            cells = rows[(suite, entry.env_id, run.short_budget(entry.budget), entry.label or "default")]
            assert cells[4] == str(len(runs)), f"{entry.env_id}: the table's seed count is not the stored one"
            intervals = run.row_intervals(runs)
            if intervals["train"] is not None:
                assert cells[5] == stats.format_interval(*intervals["train"]["iqm"]), f"{entry.env_id}: stale IQM"
            for anchor in entry.anchors:
                ours = intervals["eval"] if anchor.evaluated else intervals["train"]
                [stated] = re.findall(re.escape(f"{anchor.text}: ") + r"(\*\*\w+\*\*|not compared)", cells[10])
                if ours is None:
                    assert stated == "not compared", f"{entry.env_id}: compared without an interval"
                else:
                    expected = f"**{stats.compare(*ours['iqm'][1:], anchor.mean)}**"
                    assert stated == expected, (entry.env_id, anchor.text)
                checked += 1
    assert checked, f"{script}: no stored run of an env with an anchor"


def test_the_headline_figures_in_the_readme_are_the_stored_runs():
    # The README and the benchmark overview show the same block, rebuilt from every script's stored runs.
    expected = run.format_headlines()
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- benchmark:headlines:start -->\n", 1)[1].split("<!-- benchmark:headlines:end -->")[0]
    assert block == expected, "README.md: rebuild with `python benchmark/run.py all --table-only`"
    assert (run.RESULTS / "headlines.md").read_text() == expected
    assert '--8<-- "benchmark/results/headlines.md"' in (ROOT / "docs" / "benchmarks.md").read_text()
    assert expected.count("\n") > 2 + len(run.HEADLINES), "a headline row per script at least"
