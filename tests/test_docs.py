"""The documentation hooks (tools/docs_hooks.py) quote the scripts; a wrong quote must stop the build."""

import ast
import importlib.util
import re

import pytest
from conftest import ROOT, SCRIPTS

pytest.importorskip("mkdocs", reason="the docs hooks need mkdocs (test extra)")
from mkdocs.exceptions import PluginError  # noqa: E402

spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "tools" / "docs_hooks.py")
hooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hooks)


def test_a_quoted_function_is_its_source_with_its_line():
    markdown = hooks.on_page_markdown("before\n:::code ppo.py compute_gae\nafter", None, None, None)
    source = (ROOT / "ppo.py").read_text()
    [node] = [n for n in ast.parse(source).body if getattr(n, "name", None) == "compute_gae"]
    assert ast.get_source_segment(source, node) in markdown
    assert f'title="ppo.py, line {node.lineno}: compute_gae"' in markdown
    assert markdown.startswith("before\n```python") and markdown.endswith("```\nafter")


@pytest.mark.parametrize("directive", [":::code ppo.py no_such_function", ":::code no_such_script.py main",
                                       ":::outline no_such_script.py"])  # fmt: skip
def test_a_quote_of_something_missing_stops_the_build(directive):
    with pytest.raises(PluginError):
        hooks.on_page_markdown(directive, None, None, None)


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_flags_table_lists_every_flag(name):
    table = hooks.on_page_markdown(f":::flags {name}.py", None, None, None)
    module = __import__(name)
    for field in module.Args.__dataclass_fields__:
        assert f"| `--{field.replace('_', '-')}` |" in table


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_a_page_that_quotes_it(name):
    page = (ROOT / "docs" / f"{name}.md").read_text()
    for directive in [f":::code {name}.py docstring", f":::outline {name}.py", f":::flags {name}.py"]:
        assert directive in page
    assert f": {name}.md" in (ROOT / "mkdocs.yml").read_text(), "the page is not in the site's nav"


def test_the_readme_is_a_short_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 10_000
    assert re.search(r"<!-- test-command:start -->\n```bash\n.+\n```\n<!-- test-command:end -->", readme)
