"""Each script within its code-line budgets (the minimal-rewrite issue; the rule is in CONTRIBUTING.md).

Code lines: lines that are not blank, not comment-only and not inside a docstring (the module's, a
class's or function's first statement, and every string statement in a class body, as the `Args`
fields' docstrings are). Reading path: the code lines from the top of the file to the end of `main()`.
"""

import ast

import pytest
from conftest import ROOT, SCRIPTS

# script: (code lines, reading path)
BUDGETS = {
    "reinforce": (230, 170),
    "qac": (230, 170),
    "a2c": (330, 250),
    "a3c": (340, 270),
    "ddpg": (280, 210),
    "ppo": (400, 300),
    "ppo_gru": (400, 310),
}


def docstring_lines(tree: ast.Module) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) or not node.body:
            continue
        statements = node.body if isinstance(node, ast.ClassDef) else node.body[:1]
        for statement in statements:
            if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                if isinstance(statement.value.value, str):
                    lines.update(range(statement.lineno, statement.end_lineno + 1))
    return lines


def count_code_lines(source: str) -> tuple[int, int]:
    """(code lines of the whole file, code lines up to the end of main())."""
    tree = ast.parse(source)
    skip = docstring_lines(tree)
    code = [
        number
        for number, line in enumerate(source.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#") and number not in skip
    ]
    [main] = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main"]
    return len(code), sum(1 for number in code if number <= main.end_lineno)


def test_the_counting_rule():
    source = '"""Module\ndocstring."""\n\nimport os  # a comment\n\n\n# a comment line\nclass Args:\n'
    source += '    seed: int = 1\n    """a field docstring"""\n\n\ndef main():\n    """Doc."""\n    return 1\n\n'
    source += "def after():\n    return 2\n"
    # import, class, field, def main, return 1 | def after, return 2
    assert count_code_lines(source) == (7, 5)


def counts(name: str) -> tuple[int, int]:
    return count_code_lines((ROOT / f"{name}.py").read_text())


# What the minimal rewrite (issue 29) reached where it did not meet a budget: (code lines, reading path).
# A budget a script is over is an expected failure here (strict: once the script meets it, the test
# fails until its entry goes), and the counts are ceilings the script must not grow past meanwhile.
NOT_YET_WITHIN = {
    "reinforce": (266, 167),
    "qac": (276, 162),
    "a2c": (370, 237),
    "a3c": (457, 293),
    # ddpg: issue 29 ended at 345/224; 344/220 with a private foreach soft update, +1 for the public lerp_ again
    "ddpg": (345, 221),
    "ppo": (464, 279),
    "ppo_gru": (410, 282),
}


def budget_cases(which: int) -> list:
    cases = []
    for name in SCRIPTS:
        over = name in NOT_YET_WITHIN and NOT_YET_WITHIN[name][which] > BUDGETS[name][which]
        if over:
            reason = f"{NOT_YET_WITHIN[name][which]} after the rewrite, budget {BUDGETS[name][which]}"
            name = pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=reason))
        cases.append(name)
    return cases


@pytest.mark.parametrize("name", budget_cases(0))
def test_code_lines_are_within_their_budget(name):
    code = counts(name)[0]
    assert code <= BUDGETS[name][0], f"{name}.py has {code} code lines, budget {BUDGETS[name][0]}"


@pytest.mark.parametrize("name", budget_cases(1))
def test_reading_path_is_within_its_budget(name):
    reading_path = counts(name)[1]
    assert reading_path <= BUDGETS[name][1], f"{name}.py: {reading_path} code lines up to the end of main()"


@pytest.mark.parametrize("name", sorted(NOT_YET_WITHIN))
def test_no_growth_past_the_rewrite(name):
    code, reading_path = counts(name)
    code_ceiling, path_ceiling = NOT_YET_WITHIN[name]
    assert code <= code_ceiling, f"{name}.py has {code} code lines, {code_ceiling} after the rewrite"
    assert reading_path <= path_ceiling, f"{name}.py: {reading_path} lines to the end of main(), {path_ceiling} before"


def test_the_readme_states_each_script_s_counts():
    # README's table of scripts: | `name.py` | what it teaches | code lines (reading path) |
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0].endswith(".py`"):
            rows[cells[0].strip("`")[: -len(".py")]] = cells[2]
    assert sorted(rows) == sorted(SCRIPTS)
    for name in SCRIPTS:
        code, reading_path = counts(name)
        assert rows[name] == f"{code} ({reading_path})", f"README.md: {name}.py has {code} ({reading_path})"
